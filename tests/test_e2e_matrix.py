"""End-to-end: the default matrix (what `make test-arm64` runs), cells in parallel, and every
report it writes (needs `make setup`)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import kcidb_io
import pytest

from harness import matrix
from conftest import ROOT

pytestmark = pytest.mark.e2e


def test_default_matrix_runs_in_parallel_and_writes_every_report(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "matrix", "default", "-j", "2", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "matrix.json").read_text())
    declared = matrix.find_matrix("default").cells
    assert doc["verdict"] == "PASS" and doc["cells_run"] == len(declared)
    verdicts = {c["id"]: c["verdict"] for c in doc["cells"]}
    assert verdicts["v9/virt-mmio/s2idle-rtc"] == verdicts["v6/virt-mmio/s2idle-rtc"] == "SKIP"
    assert {v for k, v in verdicts.items() if not k.startswith(("v6/", "v9/"))} == {"PASS"}
    for profile in ("virt-mmio", "virt-gicv3", "virt-smp1"):
        cell = next(c for c in doc["cells"] if c["id"] == f"v9-backport-6.12/{profile}/s2idle-rtc")
        results = json.loads((tmp_path / cell["results"]).read_text())
        # the embedded 6.12 tree's kernel, at the point release Debian serves now (not a fixed one)
        assert results["tree"]["version"].startswith("6.12.") and results["versions"]["qemu"]
        assert results["versions"]["kernel"].startswith(results["tree"]["version"])
        assert set(results["timings"]) >= {"apply", "build", "boot", "cycles"}
        assert {c["name"]: c["verdict"] for c in results["cycles"][0]["checks"]}["noirq-before-normal"] == "PASS"
        assert results["command"].startswith("harness run --profile " + profile)
    # the era row: the same verdict pattern on Linux 7.x (whichever 7.x Debian serves now)
    for profile in ("virt-mmio", "virt-gicv3", "virt-smp1"):
        base = next(c for c in doc["cells"] if c["id"] == f"baseline-7.2@debian-7.2/{profile}/s2idle-rtc")
        port = next(c for c in doc["cells"] if c["id"] == f"v9-backport-7.2@debian-7.2/{profile}/s2idle-rtc")
        assert base["tree"] == port["tree"] == "debian-7.2"
        assert base["expected_failures"] == {n: "3/3" for n in ("noirq-callback", "noirq-before-normal",
                                                                "noirq-request", "consumer-ready")}, base
        results = json.loads((tmp_path / port["results"]).read_text())
        assert results["versions"]["kernel"].startswith("7.") and results["tree"]["describe"].startswith("debian/7.")
        assert {c["verdict"] for cy in results["cycles"] for c in cy["checks"]} <= {"PASS", "SKIP"}
        baseline = json.loads((tmp_path / base["results"]).read_text())
        ready = next(c for c in baseline["cycles"][0]["checks"] if c["name"] == "consumer-ready")
        assert ready["verdict"] == "XFAIL" and any("provider=not-ready" in e for e in ready["evidence"]), ready
    kcidb_io.schema.V5_0.validate(json.loads((tmp_path / "kcidb.json").read_text()))
    suites = ET.parse(tmp_path / "junit.xml").getroot().findall("testsuite")
    assert len(suites) == len(declared)
    html = (tmp_path / "report.html").read_text()
    assert html.count('<g class="row provider"') >= len(declared) - 2 and "Side by side" in html
