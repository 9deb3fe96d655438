"""Reports rendered from saved results (JUnit XML, KCIDB v5, the HTML timeline), built from
real captured cycles written out the way a matrix run writes them."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import kcidb_io
import pytest

from conftest import FIXTURES, PROBE_BASELINE, load_facts, load_record
from harness import (checks, cli, dmesg, expectations, junit, kcidb, matrix, report, results, scheduler, terminal,
                     timeline)
from harness.errors import UsageError
from conftest import ROOT

TRACED = FIXTURES / "backport-traced"
SLEEPY = FIXTURES / "defect-sleep-in-noirq"


def _cell_result(out, cell, capture, stems, expect_file, defect=None):
    """A RunResult of real captured cycles, saved with its dmesg files as run_cell saves them."""
    expect = expectations.load_expectations(expect_file) if expect_file else {}
    run = results.RunResult(command=f"harness run ... {cell.id}", out_dir=out / cell.dirname, profile="virt-mmio",
                           cell=cell.id, started="2026-11-21T12:00:00+00:00", defect=defect)
    run.tree = {"commit": "d68cc9f5f251" + "0" * 28, "base": "d68cc9f5f251" + "0" * 28, "embedded": True,
                "describe": "debian/6.12.117-1_deb12u1"}
    run.build = {"image": "/x/Image", "gcc_version": "aarch64-linux-gnu-gcc 12.2.0", "seconds": 40.0,
                 "config": ["base-virt-arm64", "probe"]}
    run.versions = {"kernel": "6.12.117+", "qemu": "7.2.22"}
    (out / cell.dirname).mkdir(parents=True)
    for i, stem in enumerate(stems, 1):
        rec = load_record(stem, capture)
        shutil.copy(capture / f"{stem}.dmesg", out / cell.dirname / f"{stem}.dmesg")
        tl = dmesg.parse(rec.dmesg)
        run.cycles.append(results.CycleResult(rec, tl, tuple(checks.check_cycle(rec, load_facts(capture), tl, expect)),
                                             f"{stem}.dmesg"))
    results.write_results(run)
    return run


@pytest.fixture
def saved_run(tmp_path):
    """A defects-matrix run of three cells: the sleep-in-noirq defect caught, the same defect
    judged on clean cycles (undetected), and the baseline with its expected failures."""
    cells = {c.id: c for c in matrix.find_matrix("defects").cells}
    sleepy = cells["defects/sleep-in-noirq/virt-mmio/s2idle-rtc"]
    clean = cells["v9-backport-6.12/virt-mmio/s2idle-rtc"]
    base = matrix.find_matrix("default").cells[0]
    expect_defect = ROOT / "patches" / "defects" / "sleep-in-noirq" / "expect.yaml"
    runs = [
        (sleepy, _cell_result(tmp_path, sleepy, SLEEPY, ["s2idle-rtc-1", "s2idle-rtc-2"], expect_defect,
                              "sleep-in-noirq")),
        (clean, _cell_result(tmp_path, clean, TRACED, ["s2idle-rtc-1"], expect_defect, "sleep-in-noirq")),
        (base, _cell_result(tmp_path, base, PROBE_BASELINE, ["s2idle-rtc-1"], base.expect)),
    ]
    mr = scheduler.MatrixResult(matrix.find_matrix("defects"), tmp_path, runs)
    results.write_matrix(mr)
    return tmp_path


def test_junit_has_a_suite_per_cell_and_maps_verdicts(saved_run):
    root = ET.fromstring(junit.render([d for _, d in results.load_results(saved_run)]))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["defects/sleep-in-noirq/virt-mmio/s2idle-rtc",
                                              "v9-backport-6.12/virt-mmio/s2idle-rtc",
                                              "baseline-6.12/virt-mmio/s2idle-rtc"]
    caught = {c.get("name"): c for c in suites[0].findall("testcase")}
    xfail = caught["no-sleep-in-noirq [s2idle-rtc #1]"]
    assert xfail.find("failure") is None and xfail.find("properties/property").get("value") == "XFAIL"
    assert suites[0].get("failures") == "0" and suites[0].get("tests") == str(2 * len(checks.ALL_CHECKS) - 4)
    missed = {c.get("name"): c for c in suites[1].findall("testcase")}["no-sleep-in-noirq [s2idle-rtc #1]"]
    failure = missed.find("failure")
    assert failure.get("type") == "XPASS" and "noirq callback(s) traced" in failure.get("message")
    assert "virtio_mmio_freeze_noirq()" in failure.text  # the evidence lines
    assert root.get("failures") == "1" and root.get("errors") == "0"
    skipped = {c.get("name"): c for c in suites[2].findall("testcase")}["no-second-reinit [s2idle-rtc #1]"]
    assert skipped.find("skipped") is not None


def test_junit_reports_a_run_that_ended_early_as_an_error():
    doc = {"cell": "v9/virt-mmio/s2idle-rtc", "verdict": "ERROR", "cycles": [],
           "error": "BuildError: drivers/virtio/virtio.c:12: error: expected ';'\nmake: *** [...] Error 1"}
    case = ET.fromstring(junit.render([doc])).find("testsuite/testcase")
    assert case.get("name") == "run" and case.find("error").get("type") == "ERROR"
    assert "make: ***" in case.find("error").text


def test_kcidb_document_validates_against_the_v5_schema(saved_run):
    doc = kcidb.render([d for _, d in results.load_results(saved_run)])
    kcidb_io.schema.V5_0.validate(doc)
    assert len(doc["checkouts"]) == 1 and doc["checkouts"][0]["patchset_hash"] == ""
    assert len(doc["builds"]) == 1 and doc["builds"][0]["architecture"] == "arm64"
    by_cell = {}
    for t in doc["tests"]:
        by_cell.setdefault(t["misc"]["cell"], {})[(t["misc"]["cycle"], t["path"])] = t
    caught = by_cell["defects/sleep-in-noirq/virt-mmio/s2idle-rtc"][(1, "pm.s2idle_rtc.no_sleep_in_noirq")]
    assert caught["status"] == "PASS" and caught["misc"]["verdict"] == "XFAIL"
    assert "__might_sleep" in caught["log_excerpt"]
    missed = by_cell["v9-backport-6.12/virt-mmio/s2idle-rtc"][(1, "pm.s2idle_rtc.no_sleep_in_noirq")]
    assert missed["status"] == "FAIL" and missed["misc"]["verdict"] == "XPASS"
    assert len({t["id"] for t in doc["tests"]}) == len(doc["tests"])


def test_kcidb_patchset_hash_is_the_sha256_of_the_patch_hashes():
    patches = [{"sha256": "a" * 64}, {"sha256": "b" * 64}]
    import hashlib
    want = hashlib.sha256(("a" * 64 + "\n" + "b" * 64 + "\n").encode()).hexdigest()
    doc = kcidb.render([{"cell": "x/y/z", "series": {"patchset_hash": want, "patches": patches,
                                                     "cover_message_id": "<20260516015756.20948-1-baver.bae@gmail.com>"},
                         "tree": {"base": "d" * 40, "commit": "e" * 40}, "build": {}, "cycles": []}])
    kcidb_io.schema.V5_0.validate(doc)
    assert doc["checkouts"][0]["patchset_hash"] == want
    assert doc["checkouts"][0]["message_id"] == "20260516015756.20948-1-baver.bae@gmail.com"


def test_timeline_puts_the_provider_in_the_noirq_band_with_the_series_and_not_without():
    with_series = timeline.build_timeline(load_record("s2idle-rtc-1", TRACED).dmesg, "backport", [])
    provider = next(r for r in with_series.rows if r.role == "provider")
    assert provider.label == "virtio-mmio a003e00.virtio_mmio"
    assert provider.bars[0].phase == "resume_noirq" and provider.bars[0].callback == "virtio_mmio_restore_noirq"
    assert [b.name for b in with_series.bands] == ["resume_noirq", "resume_early", "resume"]
    noirq = with_series.bands[0]
    assert noirq.start <= provider.bars[0].start < provider.bars[0].start + provider.bars[0].length <= noirq.end
    rec = load_record("s2idle-rtc-1", PROBE_BASELINE)
    failed = [{"name": "noirq-before-normal", "verdict": "XFAIL", "summary": "", "evidence": []}]
    without = timeline.build_timeline(rec.dmesg, "baseline", failed)
    provider = next(r for r in without.rows if r.role == "provider")
    assert {b.phase for b in provider.bars} == {"resume"}
    assert without.first_normal is not None and without.first_normal < provider.bars[0].start


def test_html_report_is_self_contained_and_compares_revisions(saved_run):
    paths = report.write_reports(saved_run)
    html = paths["html"].read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert "Side by side" in html and html.count('<g class="row provider"') >= 3
    assert 'data-phase="resume_noirq"' in html and "first normal-phase callback" in html
    assert json.loads(paths["kcidb"].read_text())["version"] == {"major": 5, "minor": 0}
    assert ET.parse(paths["junit"]).getroot().tag == "testsuites"


def test_report_command_rerenders_and_rejects_a_directory_without_results(saved_run, tmp_path, capsys):
    for name in ("junit.xml", "kcidb.json", "report.html"):
        (saved_run / name).unlink(missing_ok=True)
    assert cli.main(["report", str(saved_run)]) == 0
    assert all((saved_run / n).is_file() for n in ("junit.xml", "kcidb.json", "report.html"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["report", str(empty)]) == 2
    assert "no matrix.json or results.json here" in capsys.readouterr().err
    with pytest.raises(UsageError):
        results.load_results(empty)


def test_junit_file_reads_back_in_a_junit_consumer(saved_run):
    from junitparser import JUnitXml
    report.write_reports(saved_run)
    xml = JUnitXml.fromfile(str(saved_run / "junit.xml"))
    suites = list(xml)
    assert len(suites) == 3
    kinds = {}
    for suite in suites:
        for case in suite:
            for r in case.result:
                kinds.setdefault(type(r).__name__, set()).add(case.name.split(" ")[0])
    assert kinds["Failure"] == {"no-sleep-in-noirq"}      # the undetected defect (XPASS)
    assert "no-second-reinit" in kinds["Skipped"]          # SKIP on the baseline
    assert "Error" not in kinds
    assert suites[1].failures == 1 and suites[0].failures == 0


def test_progress_table_shows_each_cells_stage_on_a_terminal():
    from rich.console import Console
    cells = matrix.find_matrix("defects").cells[:2]
    console = Console(force_terminal=True, record=True, width=160)
    with terminal.MatrixProgress(cells, console) as progress:
        progress.stage(cells[0], "s2idle-rtc 3/5")
        progress.stage(cells[1], "FAIL")
        console.print(progress._table())
    text = console.export_text()
    assert "defects/double-reinit/virt-mmio/s2idle-rtc" in text and "s2idle-rtc 3/5" in text and "FAIL" in text


@pytest.mark.parametrize("ended, junit_tag, kcidb_status", [
    ("ERROR", "error", "MISS"), ("HANG", "error", "ERROR"), ("FAIL", "failure", "FAIL")])
def test_a_run_that_ended_early_is_reported_by_the_verdict_it_ended_with(ended, junit_tag, kcidb_status):
    doc = {"cell": "v9/virt-mmio/s2idle-rtc", "verdict": ended, "cycles": [], "error_verdict": ended,
           "error": f"{ {'ERROR': 'BootError', 'HANG': 'GuestHang', 'FAIL': 'GuestCrash'}[ended]}: guest gone"}
    case = ET.fromstring(junit.render([doc])).find("testsuite/testcase")
    assert case.find(junit_tag).get("type") == ended
    kc = kcidb.render([doc])
    kcidb_io.schema.V5_0.validate(kc)
    assert [t["status"] for t in kc["tests"]] == [kcidb_status]


def test_progress_clock_stops_when_a_cell_has_its_verdict(monkeypatch):
    from rich.console import Console
    clock = [1000.0]
    monkeypatch.setattr(terminal.time, "monotonic", lambda: clock[0])
    cells = matrix.find_matrix("defects").cells[:2]
    progress = terminal.MatrixProgress(cells, Console(record=True, width=160))
    progress.stage(cells[0], "boot")
    progress.stage(cells[1], "boot")
    clock[0] += 7
    progress.stage(cells[1], "PASS")
    clock[0] += 100
    table = progress._table()
    assert list(table.columns[2].cells) == ["107", "7"]


def test_results_json_carries_its_schema_and_older_documents_are_migrated_in_one_place(saved_run):
    (cell_dir, doc), *_ = results.load_results(saved_run)
    assert doc["schema"] == results.SCHEMA == 2
    saved = json.loads((cell_dir / "results.json").read_text())
    assert saved["schema"] == 2
    # a schema-1 document (before the number existed) lacked these fields
    old = {k: v for k, v in saved.items() if k not in ("schema", "cell", "defect", "started", "versions")}
    (cell_dir / "results.json").write_text(json.dumps(old))
    (_, migrated), *_ = results.load_results(saved_run)
    assert migrated["schema"] == 2 and migrated["cell"] == "defects/sleep-in-noirq/virt-mmio/s2idle-rtc"
    assert (migrated["defect"], migrated["started"], migrated["versions"]) == (None, "", {})
    assert "junit" in report.write_reports(saved_run)
    (cell_dir / "results.json").write_text(json.dumps({**saved, "schema": 3}))
    with pytest.raises(UsageError, match="schema 3: this harness reads up to 2"):
        results.load_results(saved_run)
