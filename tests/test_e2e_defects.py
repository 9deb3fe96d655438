"""End-to-end: every injected defect (patches/defects/*) is caught, on a real kernel,
by exactly the checks its expect.yaml names (needs `make setup`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness import checks
from harness.matrix import ROOT

pytestmark = pytest.mark.e2e

DEFECTS = sorted(p.parent.name for p in (ROOT / "patches" / "defects").glob("*/defect.yaml"))


@pytest.mark.parametrize("defect", DEFECTS)
def test_defect_is_caught_by_its_expected_checks(defect, tmp_path):
    expect = checks.load_expectations(ROOT / "patches" / "defects" / defect / "expect.yaml")
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--series", f"patches/defects/{defect}",
                           "--rtc-cycles", "2", "--pm-test-cycles", "0", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=3000)
    results = json.loads((tmp_path / "results.json").read_text())
    assert proc.returncode == 0 and results["verdict"] == "PASS", proc.stdout[-3000:] + proc.stderr
    first = {c["name"]: c["verdict"] for c in results["cycles"][0]["checks"]}
    must_fail = sorted(n for n, v in expect.items() if v == "fail")
    assert must_fail and all(first[n] == "XFAIL" for n in must_fail), first
    for cycle in results["cycles"]:
        verdicts = {c["name"]: c["verdict"] for c in cycle["checks"]}
        assert all(verdicts[n] == "XFAIL" for n in must_fail), (cycle["index"], verdicts)
        assert not {n for n, v in verdicts.items() if v in ("FAIL", "XPASS")}, verdicts
