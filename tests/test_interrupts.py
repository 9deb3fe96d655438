"""Interrupting a matrix: every cell stops within seconds, its commands are killed, and
matrix.json keeps the finished cells and says ``interrupted`` for the others; an unexpected
exception in one cell makes that cell ERROR while the others go on.

The cells' work is a real host command (``sleep``) run through :func:`harness.proc.run`, as a
build's make is; the guests' side is tested in tests/test_guest_protocol.py and, with QEMU,
in tests/test_faults.py."""

from __future__ import annotations

import _thread
import json
import os
import threading
import time

import pytest

from harness import matrix, pipeline, proc, results, scheduler
from harness.cache import Cache


@pytest.fixture
def children():
    yield proc.CHILDREN
    proc.CHILDREN.reset()


def _pids_running(marker: str) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(d))
            except OSError:
                pass
    return found


def _fake_cells(monkeypatch, work):
    """The default matrix's cells, each running ``work(cell_id, out)`` instead of a build/boot."""
    mx = matrix.find_matrix("default")
    monkeypatch.setattr(scheduler, "unfetchable", lambda *a: None)

    def fake_run_cell(req, scen, out, cache, say, expect, command, defect, cell, hooks):
        res = results.RunResult(command=command, out_dir=out, profile=req.profile, cell=cell, defect=defect)
        try:
            work(cell, out)
            if hooks.keep_alive is not None:  # as run_cell does after the cycles
                hooks.keep_alive(None)
        except pipeline.HarnessError:
            if hooks.stop.is_set():
                res.error, res.error_verdict, res.exit_code = pipeline.INTERRUPTED, "ERROR", 130
            else:
                raise
        results.write_results(res)
        return res
    monkeypatch.setattr(scheduler, "run_cell", fake_run_cell)
    return mx


def test_an_interrupt_stops_every_cell_within_seconds_and_keeps_what_finished(tmp_path, monkeypatch, children):
    marker = f"harness-test-{os.getpid()}-{time.monotonic_ns()}"
    first = None

    def work(cell, out):
        nonlocal first
        if first is None:
            first = cell
            return  # the first cell finishes at once
        proc.run(["sh", "-c", f"exec sleep 60 # {marker}"], proc.CommandLog(out / "commands.log"))

    mx = _fake_cells(monkeypatch, work)
    threading.Timer(1.5, _thread.interrupt_main).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        scheduler.run_matrix(mx, tmp_path, Cache(tmp_path / "cache"), say=lambda m: None, jobs=2)
    assert time.monotonic() - start < 1.5 + scheduler.STOP_GRACE
    assert _pids_running(marker) == []
    doc = json.loads((tmp_path / "matrix.json").read_text())
    assert doc["cells_run"] == len(mx.cells) and doc["verdict"] == "ERROR"
    by_id = {c["id"]: c for c in doc["cells"]}
    assert by_id[first]["error"] is None  # finished before the interrupt
    others = [c for cid, c in by_id.items() if cid != first]
    assert others and all("interrupted" in (c["error"] or "") or c["verdict"] == "SKIP" for c in others)
    assert any("interrupted" in (c["error"] or "") for c in others)


def test_an_unexpected_exception_in_one_cell_is_that_cells_error(tmp_path, monkeypatch, children):
    bad = None

    def work(cell, out):
        nonlocal bad
        if bad is None:
            bad = cell
            raise ZeroDivisionError("a bug of the harness")

    mx = _fake_cells(monkeypatch, work)
    mr = scheduler.run_matrix(mx, tmp_path, Cache(tmp_path / "cache"), say=lambda m: None, jobs=2)
    verdicts = {cell.id: res.verdict for cell, res in mr.cells}
    assert len(verdicts) == len(mx.cells) and verdicts[bad] == "ERROR"
    assert all(res.error is None for cell, res in mr.cells if cell.id != bad)
    broken = next(res for cell, res in mr.cells if cell.id == bad)
    assert broken.exit_code == 10 and "ZeroDivisionError" in broken.error
    assert "ZeroDivisionError" in (tmp_path / mx.cells[[c.id for c in mx.cells].index(bad)].dirname
                                   / "internal-error.log").read_text()


def test_no_command_starts_once_the_harness_is_stopping(tmp_path, children):
    children.stop()
    with pytest.raises(proc.Interrupted):
        proc.run(["true"], proc.CommandLog())


def test_a_kept_guest_holds_its_cell_until_its_seconds_pass(tmp_path, monkeypatch, children):
    mx = _fake_cells(monkeypatch, lambda cell, out: None)
    kept = mx.cells[0].id
    said = []
    start = time.monotonic()
    mr = scheduler.run_matrix(mx, tmp_path, Cache(tmp_path / "cache"), say=said.append, jobs=2,
                              keep_alive=(kept, 1.0))
    assert time.monotonic() - start >= 1.0
    assert all(res.error is None for _, res in mr.cells)
    assert any(f"{kept}: guest kept running for 1 s" in line for line in said)


def test_ctrl_c_with_only_kept_guests_left_ends_them_not_the_run(tmp_path, monkeypatch, children):
    mx = _fake_cells(monkeypatch, lambda cell, out: None)
    mx = matrix.select_cells(mx, [c.id for c in mx.cells[:2]])  # both cells run at once and are kept
    threading.Timer(1.0, _thread.interrupt_main).start()
    start = time.monotonic()
    mr = scheduler.run_matrix(mx, tmp_path, Cache(tmp_path / "cache"), say=lambda m: None, jobs=2,
                              keep_alive=("*", 600.0))  # no KeyboardInterrupt comes out
    assert time.monotonic() - start < 10
    assert len(mr.cells) == len(mx.cells) and all(res.error is None for _, res in mr.cells)


def test_ctrl_c_while_another_cell_runs_still_interrupts_the_run(tmp_path, monkeypatch, children):
    marker = f"harness-test-keep-{os.getpid()}-{time.monotonic_ns()}"
    mx = _fake_cells(monkeypatch, lambda cell, out: proc.run(["sh", "-c", f"exec sleep 60 # {marker}"],
                                                              proc.CommandLog()) if cell != mx.cells[0].id else None)
    threading.Timer(1.5, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        scheduler.run_matrix(mx, tmp_path, Cache(tmp_path / "cache"), say=lambda m: None, jobs=2,
                             keep_alive=(mx.cells[0].id, 600.0))
    assert _pids_running(marker) == []
