"""Scenario and matrix files: loading, validation errors that name file and key, expansion
into cells, and how a run of a defect is judged (an undetected defect is a FAIL)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from conftest import FIXTURES, load_facts, load_record
from harness import checks, dmesg, expectations, matrix, pipeline, results, scenarios, scheduler, series, terminal
from harness.cache import Cache
from harness.errors import ConfigError, FetchError
from harness.proc import CommandLog
from conftest import ROOT

DEFECTS = sorted(p.parent.name for p in (ROOT / "patches" / "defects").glob("*/defect.yaml"))


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_loads_and_is_named_after_its_file(path):
    s = scenarios.load_scenario(path)
    assert s.name == path.stem and s.cycles >= 1 and s.description


def test_uniform_scenario_repeats_one_step_and_its_count_can_change():
    s = scenarios.find_scenario("restore-noirq-fails")
    assert s.cycles == 1 and s.steps[0].checks == ("noirq-failure-handled",)
    assert s.steps[0].before == ("echo 1 > /sys/module/virtio_pm_probe/parameters/fail_restore_noirq",)
    assert s.steps[0].expect["devices-work"] == "fail"
    assert scenarios.with_cycles(s, 4).cycles == 4


def test_scenario_of_distinct_steps_keeps_its_count():
    s = scenarios.find_scenario("non-noirq-safe-transport")
    assert [st.label for st in s.steps] == ["bound-to-pci", "unbound"]
    assert s.steps[0].checks == ("freeze-refused",) and s.steps[1].expect == {}
    with pytest.raises(ConfigError, match="has distinct steps"):
        scenarios.with_cycles(s, 5)


@pytest.mark.parametrize("text, message", [
    ("name: x\nkind: sleep\n", ":2: kind: expected one of rtc, pm_test, hibernate, got 'sleep'"),
    ("name: x\nkind: rtc\ncycles: 0\n", ":3: cycles: expected an integer >= 1, got 0"),
    ("name: x\nkind: pm_test\npm_test_level: cpu\n", ":3: pm_test_level: expected one of devices, platform"),
    ("name: x\nkind: rtc\nexpect: {noirq-order: fail}\n", ":3: expect: unknown key 'noirq-order' (allowed: "),
    ("name: x\nkind: rtc\nexpect: {devices-work: maybe}\n",
     ":3: expect.devices-work: expected one of pass, fail, any, got 'maybe'"),
    ("name: x\nkind: rtc\nchecks: [freeze-accepted]\n",
     ":3: checks[0]: expected one of noirq-failure-handled, freeze-refused, got 'freeze-accepted'"),
    ("name: x\nkind: rtc\ncycles: 2\nsteps: [{label: a}]\n", ":3: cycles: not allowed with 'steps'"),
    ("name: x\nkind: rtc\nsteps: [{lable: a}]\n", ":3: steps[0]: unknown key 'lable' (allowed: before, checks"),
    ("name: x\nkind: rtc\nwake: 3\n", ":3: unknown key 'wake' (allowed: "),
    ("name: x\nkind: rtc\nbefore: ['echo a\n\n  echo b']\n", ":3: before[0]: expected a one-line guest shell command"),
    ("name: x\nkind: rtc\nwake_seconds: 2.5\n", ":3: wake_seconds: expected an integer >= 1, got 2.5"),
])
def test_scenario_errors_name_the_file_and_key(tmp_path, text, message):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        scenarios.load_scenario(path)
    assert f"{path}{message}" in str(err.value)


def test_unknown_scenario_lists_the_known_ones():
    with pytest.raises(ConfigError, match="no scenario 'suspend-forever'.*s2idle-rtc"):
        scenarios.find_scenario("suspend-forever")


def test_defects_matrix_has_every_defect_five_cycles_the_error_paths_and_fifty_clean_cycles():
    mx = matrix.find_matrix("defects")
    by_id = {c.id: c for c in mx.cells}
    for d in DEFECTS:
        cell = by_id[f"defects/{d}/virt-mmio/s2idle-rtc"]
        assert cell.defect == d and cell.scenario.cycles == 5
        assert cell.request.series == str(ROOT / "patches" / "defects" / d)
        assert cell.expect == ROOT / "patches" / "defects" / d / "expect.yaml"
    for s in ("restore-noirq-fails", "non-noirq-safe-transport", "pm-test-devices"):
        assert by_id[f"v9-backport-6.12/virt-mmio/{s}"].defect is None
    assert by_id["v9-backport-6.12/virt-mmio/s2idle-rtc"].scenario.cycles == 50


def test_default_matrix_runs_the_bare_tree_with_the_baseline_expectations():
    cells = {c.id: c for c in matrix.find_matrix("default").cells}
    base = cells["baseline-6.12/virt-mmio/s2idle-rtc"]
    assert base.request.series is None and base.expect == ROOT / "patches" / "baseline-6.12" / "expect.yaml"
    assert cells["v9-backport-6.12/virt-mmio/hibernate-test-resume"].request.series == \
        str(ROOT / "patches" / "v9-backport-6.12")


@pytest.mark.parametrize("rows, message", [
    ("  - {revision: v7, scenarios: [s2idle-rtc]}\n", "rows[0]: no revision 'v7' under patches/"),
    ("  - {revision: 'defects/zz*', scenarios: [s2idle-rtc]}\n", "rows[0]: revision pattern 'defects/zz*' matches nothing"),
    ("  - {revision: v9-backport-6.12, scenarios: [non-noirq-safe-transport], cycles: 3}\n", "has distinct steps"),
    ("  - {revision: v9-backport-6.12, scenarios: [s2idle-rtc], profiles: [virt-riscv]}\n", "virt-riscv"),
    ("  - {revision: v9-backport-6.12, scenarios: [s2idle-rtc]}\n"
     "  - {revision: v9-backport-6.12, scenarios: [s2idle-rtc]}\n",
     "cells declared twice: v9-backport-6.12/virt-mmio/s2idle-rtc"),
    ("  - {revision: v9-backport-6.12}\n", "m.yaml:3: rows[0]: missing key 'scenarios'"),
    ("  - {revision: v9-backport-6.12, scenarios: [s2idle-rtc, suspend-forever]}\n",
     "m.yaml:3: rows[0].scenarios[1]: no scenario 'suspend-forever'"),
])
def test_matrix_errors_name_the_file_and_row(tmp_path, rows, message):
    path = write(tmp_path / "m.yaml", "name: m\nrows:\n" + rows)
    with pytest.raises(ConfigError) as err:
        matrix.load_matrix(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_matrix_command_lists_cells_and_rejects_a_bad_file(tmp_path, capsys):
    from harness import cli
    assert cli.main(["matrix", "defects", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    # every defect and error path on the LTS tree, then again on the 7.x tree
    assert len(listed) == 2 * (len(DEFECTS) + 4) and "(50 cycles)" in listed[len(DEFECTS) + 3]
    assert listed[-1].startswith("v9-backport-7.2@debian-7.2/virt-mmio/s2idle-rtc") and "(20 cycles)" in listed[-1]
    assert "defects/late-provider@debian-7.2/virt-mmio/s2idle-rtc  (5 cycles, defect late-provider)" in listed
    assert cli.main(["matrix", str(write(tmp_path / "m.yaml", "name: m\nrows: []\n"))]) == 2
    assert "m.yaml:2: rows: expected a non-empty list of mappings, got an empty list" in capsys.readouterr().err


# --- judging a defect's run ----------------------------------------------------------------------

TRACED = FIXTURES / "backport-traced"


def _run(defect, expect_file, out):
    """A RunResult over two real backport cycles, judged with ``expect_file``."""
    expect = expectations.load_expectations(expect_file)
    run = results.RunResult(command="harness run ...", out_dir=out, profile="virt-mmio", defect=defect)
    for stem in ("s2idle-rtc-1", "s2idle-rtc-2"):
        rec = load_record(stem, TRACED)
        tl = dmesg.parse(rec.dmesg)
        run.cycles.append(results.CycleResult(rec, tl, tuple(checks.check_cycle(rec, load_facts(TRACED), tl, expect)),
                                             f"{stem}.dmesg"))
    return run


def test_a_defect_that_goes_undetected_is_a_fail_naming_the_defect(tmp_path):
    # the clean backport's cycles judged as if they were the sleep-in-noirq defect's:
    # the check that should catch it passes, so the defect went undetected
    run = _run("sleep-in-noirq", ROOT / "patches" / "defects" / "sleep-in-noirq" / "expect.yaml", tmp_path)
    assert [c.verdict for c in run.cycles] == ["XPASS", "XPASS"]
    assert run.verdict == "FAIL"
    # (both captures are cycle #1 of their own one-cycle scenario run)
    assert run.undetected == ["defect sleep-in-noirq went undetected in s2idle-rtc #1: no-sleep-in-noirq passed"] * 2
    results.write_results(run)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["verdict"] == "FAIL" and doc["defect"] == "sleep-in-noirq" and len(doc["undetected"]) == 2
    assert doc["tally"]["failed_checks"] == 2 and doc["tally"]["per_check"]["no-sleep-in-noirq"] == {"XPASS": 2}


def test_clean_cycles_are_counted_with_no_failed_check(tmp_path):
    run = _run(None, ROOT / "patches" / "baseline-6.12" / "expect.yaml", tmp_path)
    # the baseline's expectations on the backport: checks 1-4 pass where they should fail
    assert run.tally()["failed_checks"] == 8 and run.verdict == "XPASS"
    clean = results.RunResult(command="", out_dir=tmp_path, profile="virt-mmio")
    clean.cycles = [results.CycleResult(c.record, c.timeline, tuple(checks.check_cycle(
        c.record, load_facts(TRACED), c.timeline)), c.dmesg_file) for c in run.cycles]
    assert clean.tally()["cycles"] == 2 and clean.tally()["failed_checks"] == 0 and clean.verdict == "PASS"


def test_matrix_report_counts_detections_per_cell_and_false_alarms_of_clean_cells(tmp_path):
    from rich.console import Console
    mx = matrix.find_matrix("defects")
    by_id = {c.id: c for c in mx.cells}
    caught = _run("sleep-in-noirq", ROOT / "patches" / "defects" / "sleep-in-noirq" / "expect.yaml", tmp_path)
    # the defect's own capture: the expected check fails, so it is XFAIL
    sleepy = FIXTURES / "defect-sleep-in-noirq"
    expect = expectations.load_expectations(ROOT / "patches" / "defects" / "sleep-in-noirq" / "expect.yaml")
    caught.cycles = []
    for stem in ("s2idle-rtc-1", "s2idle-rtc-2"):
        rec = load_record(stem, sleepy)
        tl = dmesg.parse(rec.dmesg)
        caught.cycles.append(results.CycleResult(rec, tl, tuple(checks.check_cycle(rec, load_facts(sleepy), tl,
                                                                                  expect)), f"{stem}.dmesg"))
    clean = _run(None, ROOT / "patches" / "v9-backport-6.12" / "expect.yaml", tmp_path)
    mr = scheduler.MatrixResult(mx, tmp_path, [(by_id["defects/sleep-in-noirq/virt-mmio/s2idle-rtc"], caught),
                                            (by_id["v9-backport-6.12/virt-mmio/s2idle-rtc"], clean)])
    doc = results.matrix_to_json(mr)
    assert [c["expected_failures"] for c in doc["cells"]] == [{"no-sleep-in-noirq": "2/2"}, {}]
    assert doc["clean"] == {"cycles": 2, "failed_checks": 0}
    assert doc["verdict"] == "ERROR"  # 2 of 9 declared cells ran
    console = Console(record=True, width=200)
    terminal.print_matrix(mr, console)
    text = console.export_text()
    assert "no-sleep-in-noirq 2/2" in text
    assert "noirq trace line 21: cpu 0: virtio_mmio_restore_noirq > virtio_device_restore_noirq > __might_sleep" in text
    assert "cells without an injected defect: 2 cycles, 0 failed checks" in text


def test_lore_revisions_run_when_their_mbox_can_be_had_and_skip_with_the_b4_command_otherwise(monkeypatch,
                                                                                              tmp_path):
    cells = {c.id: c for c in matrix.find_matrix("default").cells}
    v9 = cells["v9/virt-mmio/s2idle-rtc"]
    assert v9.skip is None  # loading a matrix never asks the network

    def unreachable(msgid, cache, log, version=None, local_mbox=None):
        raise FetchError(f"b4 could not fetch {msgid}: Failed to resolve 'lore.kernel.org'")
    monkeypatch.setattr(series, "fetch_msgid", unreachable)
    reason = matrix.unfetchable(v9, Cache(tmp_path), CommandLog())
    assert reason.startswith("lore unreachable and no local mbox: `b4 am -o patches/v9 "
                             "20260516015756.20948-1-baver.bae@gmail.com`") and "patches/v9/series.yaml" in reason
    assert "no mainline tree" not in reason and "tree" not in reason.split("`")[0]
    assert matrix.unfetchable(cells["v9-backport-6.12/virt-mmio/s2idle-rtc"], Cache(tmp_path), CommandLog()) is None
    assert series.load_manifest(ROOT / "patches" / "v9" / "series.yaml").tree == "debian-7.2"
    assert cells["v9-backport-6.12/virt-gicv3/s2idle-rtc"].skip is None
    assert "v9-backport-6.12/virt-gicv3/hibernate-test-resume" not in cells  # -cpu max hangs in hibernation


def test_a_skipped_cell_is_reported_as_skip_in_every_format(tmp_path):
    from harness import junit, kcidb
    cell = {c.id: c for c in matrix.find_matrix("default").cells}["v9/virt-mmio/s2idle-rtc"]
    cell = replace(cell, skip="lore unreachable and no local mbox: `b4 am -o patches/v9 x@y`")
    res = scheduler._skipped(cell, tmp_path)
    assert res.verdict == "SKIP"
    doc = json.loads((tmp_path / cell.dirname / "results.json").read_text())
    assert doc["verdict"] == "SKIP" and doc["skipped"] == cell.skip
    assert '<skipped message="lore unreachable and no local mbox' in junit.render([doc])
    import kcidb_io
    kc = kcidb.render([doc])
    kcidb_io.schema.V5_0.validate(kc)
    assert [t["status"] for t in kc["tests"]] == ["SKIP"] and kc["builds"][0]["status"] == "SKIP"


def test_shared_artifacts_build_each_request_once_and_one_build_at_a_time(monkeypatch):
    import threading
    import time as _time
    from harness.errors import BuildError
    calls, running, peak = [], [0], [0]

    def fake_prepare(req, cache, log, say):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        _time.sleep(0.05)
        running[0] -= 1
        calls.append(req.series)
        if req.series == "broken":
            raise BuildError("drivers/virtio/virtio.c:1: error: boom")
        return pipeline.GuestArtifacts(None, None, None, (), None, type("P", (), {"name": req.profile})(),
                                       apply_seconds=1.0, build_seconds=2.0)

    monkeypatch.setattr(pipeline, "prepare_guest", fake_prepare)
    shared = pipeline.SharedArtifacts(cache=None)
    errors, got = [], []

    def cell(series, profile):
        try:
            got.append(shared(pipeline.Request(series=series, profile=profile), None, print))
        except BuildError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=cell, args=(s, "virt-mmio")) for s in ("a", "b", "broken") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == ["a", "b", "broken"] and peak[0] == 1
    assert len(got) == 6 and errors == ["drivers/virtio/virtio.c:1: error: boom"] * 3
    # the cell that built records its apply; the ones that shared it record 0 and their wait
    assert sorted(g.apply_seconds for g in got) == [0.0] * 4 + [1.0] * 2
    assert all(g.build_seconds == 2.0 or g.build_seconds < 1.0 for g in got)


@pytest.mark.parametrize("codes, want", [([0, 0], 0), ([0, 1, 0], 1), ([1, 5], 5), ([5, 7, 1], 7), ([], 0)])
def test_matrix_exit_status_puts_hangs_before_input_errors_before_failed_checks(codes, want):
    from harness import commands
    assert commands.matrix_exit(codes) == want


def test_skip_cells_exit_zero():
    from harness import commands
    assert commands.exit_code("SKIP", None) == 0


def test_setup_fetches_the_trees_the_default_matrix_uses_and_cells_name_their_tree():
    mx = matrix.find_matrix("default")
    assert matrix.trees_used(mx) == ["debian-6.12", "debian-7.2"]
    by_id = {c.id: c for c in mx.cells}
    era = by_id["v9-backport-7.2@debian-7.2/virt-mmio/s2idle-rtc"]
    assert era.tree == "debian-7.2" and era.request.tree == "debian-7.2"
    assert by_id["v9-backport-6.12/virt-mmio/s2idle-rtc"].tree == "debian-6.12"
    # the reproducer keeps an embedded tree's name (a path would be resolved against the cwd)
    assert "--tree debian-7.2 " in pipeline.reproducer(era.request, [era.scenario])


def test_workers_take_the_longest_cells_first_and_skips_last():
    """The defects matrix's 50-cycle cell is its longest (about 3 minutes): started ninth, as in
    matrix order, it would end minutes after the others."""
    mx = matrix.find_matrix("defects")
    order = [mx.cells[k] for k in scheduler.start_order(mx.cells)]
    assert order[0].id == "v9-backport-6.12/virt-mmio/s2idle-rtc" and order[0].scenario.cycles == 50
    assert order[1].id == "v9-backport-7.2@debian-7.2/virt-mmio/s2idle-rtc"
    seconds = [scheduler.expected_seconds(c) for c in order]
    assert seconds == sorted(seconds, reverse=True)
    five = [c.id for c in order if c.defect and c.request.tree is None]  # equal estimates: matrix order
    assert five == [c.id for c in mx.cells if c.defect and c.request.tree is None]
    skipped = replace(mx.cells[0], skip="no tree")
    assert scheduler.start_order([skipped, mx.cells[5]]) == [1, 0]
