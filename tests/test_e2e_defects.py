"""End-to-end: `harness matrix defects` on real kernels (needs `make setup`).

Every injected defect (patches/defects/*) is caught in each of its five cycles by exactly
the checks its expect.yaml names; the series' error paths behave as v6+ says; and fifty
clean cycles of the backport produce no failed check."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness import expectations
from conftest import ROOT

pytestmark = pytest.mark.e2e

DEFECTS = sorted(p.parent.name for p in (ROOT / "patches" / "defects").glob("*/defect.yaml"))
#: The LTS tree's cells have no tree in their id; the 7.x tree's carry it.
TREES = {"debian-6.12": ("", "v9-backport-6.12"), "debian-7.2": ("@debian-7.2", "v9-backport-7.2")}


@pytest.fixture(scope="module")
def defects_matrix(tmp_path_factory):
    out = tmp_path_factory.mktemp("defects")
    proc = subprocess.run([sys.executable, "-m", "harness", "matrix", "defects", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=4800)
    doc = json.loads((out / "matrix.json").read_text())
    cells = {c["id"]: c for c in doc["cells"]}
    results = {cid: json.loads((out / c["results"]).read_text()) for cid, c in cells.items()}
    return proc, doc, cells, results


def test_the_matrix_passes_with_every_cell_run(defects_matrix):
    proc, doc, cells, _ = defects_matrix
    assert proc.returncode == 0 and doc["verdict"] == "PASS", proc.stdout[-4000:] + proc.stderr[-2000:]
    assert doc["cells_run"] == doc["cells_declared"] == 2 * (len(DEFECTS) + 4)
    # 50 clean s2idle cycles + the error-path cells' 4 cycles, whose expected failures are XFAIL
    assert f"without an injected defect: {doc['clean']['cycles']} cycles, 0 failed checks" in proc.stdout

@pytest.mark.parametrize("tree", TREES)
@pytest.mark.parametrize("defect", DEFECTS)
def test_defect_is_caught_in_every_cycle_by_exactly_its_checks(defects_matrix, defect, tree):
    _, _, cells, results = defects_matrix
    cell = cells[f"defects/{defect}{TREES[tree][0]}/virt-mmio/s2idle-rtc"]
    assert results[cell["id"]]["tree"]["describe"].startswith("debian/" + tree.split("-")[1])
    must_fail = sorted(n for n, v in expectations.load_expectations(
        ROOT / "patches" / "defects" / defect / "expect.yaml").items() if v == "fail")
    assert cell["verdict"] == "PASS" and cell["undetected"] == [], cell
    assert len(cell["cycle_verdicts"]) == 5
    assert must_fail and all(cell["expected_failures"][n] == "5/5" for n in must_fail), cell["expected_failures"]
    for cycle in results[cell["id"]]["cycles"]:
        verdicts = {c["name"]: c["verdict"] for c in cycle["checks"]}
        assert all(verdicts[n] == "XFAIL" for n in must_fail), (cycle["index"], verdicts)
        assert not {n for n, v in verdicts.items() if v in ("FAIL", "XPASS", "ERROR", "HANG")}, verdicts


@pytest.mark.parametrize("tree", TREES)
def test_restore_noirq_failure_ends_failed_with_no_fallback(defects_matrix, tree):
    _, _, _, results = defects_matrix
    on, backport = TREES[tree]
    (cycle,) = results[f"{backport}{on}/virt-mmio/restore-noirq-fails"]["cycles"]
    verdicts = {c["name"]: c for c in cycle["checks"]}
    assert verdicts["noirq-failure-handled"]["verdict"] == "PASS", verdicts["noirq-failure-handled"]
    assert any("FAILED" in e for e in verdicts["noirq-failure-handled"]["evidence"])


@pytest.mark.parametrize("tree", TREES)
def test_virtio_pci_refuses_to_freeze_and_the_next_cycle_is_clean(defects_matrix, tree):
    _, _, cells, results = defects_matrix
    on, backport = TREES[tree]
    first, second = results[f"{backport}{on}/virt-mmio/non-noirq-safe-transport"]["cycles"]
    v1 = {c["name"]: c["verdict"] for c in first["checks"]}
    assert first["step"] == "bound-to-pci" and first["write_status"] != 0
    assert v1["freeze-refused"] == "PASS" and v1["devices-work"] == "PASS"
    assert second["step"] == "unbound" and second["verdict"] == "PASS"
    assert {c["verdict"] for c in second["checks"]} <= {"PASS", "SKIP"}
    assert cells[f"{backport}{on}/virt-mmio/pm-test-devices"]["verdict"] == "PASS"


@pytest.mark.parametrize("tree,cycles", [("debian-6.12", 50), ("debian-7.2", 20)])
def test_clean_backport_cycles_raise_no_false_alarm(defects_matrix, tree, cycles):
    _, doc, _, results = defects_matrix
    on, backport = TREES[tree]
    tally = results[f"{backport}{on}/virt-mmio/s2idle-rtc"]["tally"]
    assert tally["cycles"] == cycles and tally["failed_checks"] == 0
    assert tally["per_check"]["noirq-before-normal"] == {"PASS": cycles}
    assert tally["per_check"]["no-sleep-in-noirq"] == {"PASS": cycles}
    assert doc["clean"]["failed_checks"] == 0 and doc["clean"]["cycles"] >= 50
