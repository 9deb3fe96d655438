"""End-to-end: the verdicts do not depend on how the guest's printk is configured.  The
baseline and the backport run the same cycles three ways: as usual, with ``printk.time=0``
(no time on any kernel line: the parser orders by log position; profile virt-mmio-notime)
and with ``CONFIG_PRINTK_CALLER`` (``[   12.345678][  T123]`` prefixes; kconfigs/printk-caller),
and every check of every cycle must end the same (needs `make setup`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from harness import kconfig

pytestmark = pytest.mark.e2e

ROWS = """
rows:
  - revision: baseline-6.12
    scenarios: [s2idle-rtc, pm-test-platform]
    cycles: 2
  - revision: v9-backport-6.12
    scenarios: [s2idle-rtc, pm-test-platform]
    cycles: 2
"""


def _run(tmp_path, name: str, head: str) -> dict[str, list[dict]]:
    """Run a matrix; return its results.json per ``revision/scenario``."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{head}{ROWS}")
    out = tmp_path / name
    proc = subprocess.run([sys.executable, "-m", "harness", "matrix", str(path), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "matrix.json").read_text())
    runs = {}
    for cell in doc["cells"]:
        revision, profile, scenario = cell["id"].split("/")
        runs.setdefault(profile, {})[f"{revision}/{scenario}"] = json.loads((out / cell["results"]).read_text())
    return runs


def _verdicts(results: dict) -> list[dict[str, str]]:
    return [{ch["name"]: ch["verdict"] for ch in c["checks"]} for c in results["cycles"]]


def test_no_printk_time_and_printk_caller_give_the_verdicts_of_a_plain_run(tmp_path):
    usual = _run(tmp_path, "usual", "profiles: [virt-mmio, virt-mmio-notime]\n")
    caller = _run(tmp_path, "caller", "kconfig: [" + ", ".join((*kconfig.DEFAULT_FRAGMENTS, "printk-caller")) + "]\n")
    plain, notime, with_caller = usual["virt-mmio"], usual["virt-mmio-notime"], caller["virt-mmio"]
    assert sorted(plain) == sorted(notime) == sorted(with_caller) and len(plain) == 4
    for key, results in plain.items():
        assert len(results["cycles"]) in (1, 2)
        assert _verdicts(notime[key]) == _verdicts(results), key
        assert _verdicts(with_caller[key]) == _verdicts(results), key
    # the baseline still fails its noirq checks and the backport passes them, both ways
    for variant in (plain, notime, with_caller):
        assert _verdicts(variant["baseline-6.12/s2idle-rtc"])[0]["noirq-before-normal"] == "XFAIL"
        assert _verdicts(variant["v9-backport-6.12/s2idle-rtc"])[0]["noirq-before-normal"] == "PASS"
    notime_log = (tmp_path / "usual").glob("v9-backport-6.12__virt-mmio-notime__s2idle-rtc/s2idle-rtc-1.dmesg")
    text = next(notime_log).read_text()
    assert "PM: suspend entry (s2idle)" in text and not any(line.startswith("[") for line in text.splitlines())
    # the variants were real: no time on any kernel line; a caller id after the time on every one
    caller_log = next((tmp_path / "caller").glob("v9-backport-6.12__virt-mmio__s2idle-rtc/s2idle-rtc-1.dmesg"))
    lines = [line for line in caller_log.read_text().splitlines() if line.strip()]
    assert lines and all(re.match(r"\[\s*\d+\.\d+\]\[\s*[TC]\d+\] ", line) for line in lines), lines[:3]
