"""Run the cells of a matrix on a thread pool, each in its own guest, and keep
``matrix.json`` current as they finish.

The scheduler knows cells, not kernels: each cell is one :func:`harness.pipeline.run_cell`,
and the builds they share are :class:`harness.pipeline.SharedArtifacts`.
"""

from __future__ import annotations

import fnmatch
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from harness import results
from harness.cache import Cache
from harness.errors import HarnessError, InternalError
from harness.matrix import Cell, Matrix, unfetchable
from harness.paths import DATA_ROOT
from harness.pipeline import (CellHooks, Say, SharedArtifacts, end_interrupted, end_with_error,
                               end_with_internal_error, reproducer, run_cell)
from harness.proc import CHILDREN, CommandLog


@dataclass
class MatrixResult:
    """The cells' results in matrix order, and the directory they were written to."""

    matrix: Matrix
    out_dir: Path
    cells: list[tuple[Cell, results.RunResult]] = field(default_factory=list)
    seconds: float = 0.0


def _cell_result(cell: Cell, out: Path, **fields) -> results.RunResult:
    """A result for ``cell`` that run_cell did not make (a SKIP, an interrupt, an error outside it)."""
    return results.RunResult(command="", out_dir=out / cell.dirname, profile=cell.request.profile, cell=cell.id,
                             defect=cell.defect, started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             **fields)


def _skipped(cell: Cell, out: Path) -> results.RunResult:
    res = _cell_result(cell, out, skipped=cell.skip)
    results.write_results(res)
    return res


#: After an interrupt, how long (seconds) the running cells get to end (their commands and
#: guests are killed at once; this covers writing their results).
STOP_GRACE = 5.0


#: A cell's rough wall seconds on a warm cache (QEMU 7.2 TCG, 2 cores; README "Speed"), for
#: starting the longest cells first: boot, SSH and reports about 5 s; an s2idle cycle its
#: alarm plus 1.4 s; a pm_test cycle 1 s; a hibernation cycle 10 s.
CELL_SECONDS = 5.0
CYCLE_SECONDS = {"rtc": 1.4, "pm_test": 1.0, "hibernate": 10.0}


def expected_seconds(cell: Cell) -> float:
    """A rough estimate of ``cell``'s wall time in seconds (:data:`CYCLE_SECONDS`), 0 for a SKIP."""
    if cell.skip:
        return 0.0
    sc = cell.scenario
    return CELL_SECONDS + sc.cycles * (CYCLE_SECONDS.get(sc.kind, 1.0) + (sc.wake_seconds if sc.kind == "rtc" else 0))


def start_order(cells: list[Cell]) -> list[int]:
    """The indices of ``cells`` in the order the workers take them: longest first
    (:func:`expected_seconds`; a matrix takes at least as long as its longest cell, so that one
    must not start last), matrix order among equals.  Results stay in matrix order."""
    return sorted(range(len(cells)), key=lambda k: (-expected_seconds(cells[k]), k))


def _interrupted(cell: Cell, out: Path) -> results.RunResult:
    """The result of a cell that did not finish before an interrupt (not written to its own
    directory: a still-running worker may yet write its results.json there)."""
    res = _cell_result(cell, out)
    end_interrupted(res)
    return res


def default_jobs() -> int:
    """Cells at once by default: one more than the CPUs.  A guest in s2idle waits out its alarm
    with its vCPUs idle, so a third guest on two cores uses that time: the default matrix, warm,
    took 229 s at -j2, 179 s at -j3 and 168 s at -j4 (boots 3.7, 5.2 and 7.0 s on average)."""
    return (os.cpu_count() or 1) + 1


def run_matrix(mx: Matrix, out: Path, cache: Cache, say: Say, jobs: int | None = None,
               stage: Callable[[Cell, str], None] | None = None, artifacts=None,
               keep_alive: tuple[str, float] | None = None) -> MatrixResult:
    """Run the cells of ``mx`` into ``out/<cell dir>``, up to ``jobs`` at once (default:
    :func:`default_jobs`), each with its own guest, disk image and console log; builds are shared
    (:class:`SharedArtifacts`).  ``matrix.json`` is rewritten as cells finish, in matrix order.
    ``stage(cell, text)`` hears every cell's stages.

    An unexpected exception in one cell makes that cell ERROR and the others go on.  On
    KeyboardInterrupt (SIGINT, and SIGTERM/SIGHUP through :mod:`harness.cli`) every command
    and guest of the run is killed at once (:data:`harness.proc.CHILDREN`), the running cells
    get :data:`STOP_GRACE` seconds to write their results, ``matrix.json`` is written with the
    finished cells and ``interrupted`` for the others, and the interrupt propagates.  The
    workers are daemon threads: one that does not end in time cannot hold the process.

    ``keep_alive`` is (glob on the cell id, seconds): such a cell's guest keeps running after
    its cycles (its results written), with its SSH command printed, until the seconds pass or
    Ctrl-C, which then only releases the kept guests when no other cell is still running."""
    result = MatrixResult(mx, out)
    start = time.monotonic()
    hooks_base = CellHooks(artifacts=artifacts or SharedArtifacts(cache))
    done: dict[int, tuple[Cell, results.RunResult]] = {}

    def one(k: int, cell: Cell) -> results.RunResult:
        tag = f"[{k + 1}/{len(mx.cells)}]"
        if cell.skip:
            say(f"{tag} {cell.id}: SKIP: {cell.skip}")
            return _skipped(cell, out)
        if reason := unfetchable(cell, cache, CommandLog(out / cell.dirname / "commands.log")):
            say(f"{tag} {cell.id}: SKIP: {reason}")
            return _skipped(replace(cell, skip=reason), out)
        hooks = replace(hooks_base, stage=lambda text: stage(cell, text) if stage else None)
        if keep_alive and fnmatch.fnmatchcase(cell.id, keep_alive[0]):
            hooks = replace(hooks, keep_alive=lambda target: hold(k, cell, target))
        say(f"{tag} {cell.id}")
        expect = str(cell.expect.relative_to(DATA_ROOT)) if cell.expect and cell.expect.is_relative_to(DATA_ROOT) else None
        return run_cell(cell.request, [cell.scenario], out / cell.dirname, cache, lambda m: say(f"{tag} {m}"),
                        cell.expect, reproducer(cell.request, [cell.scenario], expect), cell.defect, cell.id, hooks)

    def guarded(k: int, cell: Cell) -> results.RunResult:
        res = _cell_result(cell, out)
        try:
            return one(k, cell)
        except HarnessError as e:  # outside run_cell (a SKIP's lookup): this cell only
            if hooks_base.stop.is_set():
                end_interrupted(res)
            else:
                end_with_error(res, e)
        except Exception as e:  # a fault of the harness: this cell is an ERROR, the others go on
            end_with_internal_error(res, e, out / cell.dirname, cache)
        results.write_results(res)
        return res

    release = threading.Event()
    holding: set[int] = set()

    def hold(k: int, cell: Cell, target) -> None:
        seconds = keep_alive[1] if keep_alive else 0.0
        how = target.command() if target is not None else "(no SSH: the profile forwards no port)"
        say(f"[{k + 1}/{len(mx.cells)}] {cell.id}: guest kept running for {seconds:.0f} s (Ctrl-C ends it "
            f"once the other cells are done): {how}")
        holding.add(k)
        try:
            end = time.monotonic() + seconds
            while not (release.is_set() or hooks_base.stop.is_set()) and time.monotonic() < end:
                release.wait(0.5)
        finally:
            holding.discard(k)

    def record(k: int, res: results.RunResult) -> None:
        done[k] = (mx.cells[k], res)
        result.cells = [done[i] for i in sorted(done)]
        result.seconds = time.monotonic() - start
        results.write_matrix(result)

    todo: queue.Queue[int] = queue.Queue()
    for k in start_order(mx.cells):
        todo.put(k)
    finished: queue.Queue[tuple[int, results.RunResult]] = queue.Queue()

    def worker() -> None:
        while not hooks_base.stop.is_set():
            try:
                k = todo.get_nowait()
            except queue.Empty:
                return
            finished.put((k, guarded(k, mx.cells[k])))

    workers = [threading.Thread(target=worker, name=f"cell-worker-{i}", daemon=True)
               for i in range(max(1, min(jobs or default_jobs(), len(mx.cells))))]
    for t in workers:
        t.start()
    try:
        while len(done) < len(mx.cells):
            try:
                record(*finished.get(timeout=0.5))
            except queue.Empty:
                if not any(t.is_alive() for t in workers) and finished.empty():
                    raise InternalError("the matrix's workers ended with cells left") from None
            except KeyboardInterrupt:
                if holding and holding == set(range(len(mx.cells))) - set(done):
                    say("keep-alive: Ctrl-C, stopping the kept guest(s)")
                    release.set()  # only kept guests were left: this Ctrl-C ends them, not the run
                    continue
                raise
    except BaseException:
        hooks_base.stop.set()
        killed = CHILDREN.stop()
        say(f"interrupted: stopping {len(mx.cells) - len(done)} cell(s), {killed} process group(s) killed")
        end = time.monotonic() + STOP_GRACE
        while any(t.is_alive() for t in workers) and time.monotonic() < end:
            try:
                k, res = finished.get(timeout=0.1)
                done[k] = (mx.cells[k], res)
            except queue.Empty:
                pass
        while not finished.empty():
            k, res = finished.get_nowait()
            done[k] = (mx.cells[k], res)
        for k, cell in enumerate(mx.cells):
            if k not in done:
                done[k] = (cell, _interrupted(cell, out))
        result.cells = [done[i] for i in sorted(done)]
        raise
    finally:
        result.seconds = time.monotonic() - start
        results.write_matrix(result)
    return result
