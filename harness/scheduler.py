"""Run the cells of a matrix on a thread pool, each in its own guest, and keep
``matrix.json`` current as they finish.

The scheduler knows cells, not kernels: each cell is one :func:`harness.pipeline.run_cell`,
and the builds they share are :class:`harness.pipeline.SharedArtifacts`.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from harness import results
from harness.cache import Cache
from harness.matrix import Cell, Matrix, unfetchable
from harness.paths import DATA_ROOT
from harness.pipeline import CellHooks, Say, SharedArtifacts, reproducer, run_cell
from harness.proc import CommandLog


@dataclass
class MatrixResult:
    """The cells' results in matrix order, and the directory they were written to."""

    matrix: Matrix
    out_dir: Path
    cells: list[tuple[Cell, results.RunResult]] = field(default_factory=list)
    seconds: float = 0.0


def _skipped(cell: Cell, out: Path) -> results.RunResult:
    res = results.RunResult(command="", out_dir=out / cell.dirname, profile=cell.request.profile, cell=cell.id,
                           defect=cell.defect, skipped=cell.skip,
                           started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    results.write_results(res)
    return res


def run_matrix(mx: Matrix, out: Path, cache: Cache, say: Say, jobs: int | None = None,
               stage: Callable[[Cell, str], None] | None = None) -> MatrixResult:
    """Run the cells of ``mx`` into ``out/<cell dir>``, up to ``jobs`` at once (default: the CPU
    count), each with its own guest, disk image and console log; builds are shared
    (:class:`SharedArtifacts`).  ``matrix.json`` is rewritten as cells finish, in matrix order.
    ``stage(cell, text)`` hears every cell's stages.  On KeyboardInterrupt every running guest
    is stopped, the finished cells are kept, and the interrupt propagates."""
    result = MatrixResult(mx, out)
    start = time.monotonic()
    hooks_base = CellHooks(artifacts=SharedArtifacts(cache))
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
        say(f"{tag} {cell.id}")
        expect = str(cell.expect.relative_to(DATA_ROOT)) if cell.expect and cell.expect.is_relative_to(DATA_ROOT) else None
        return run_cell(cell.request, [cell.scenario], out / cell.dirname, cache, lambda m: say(f"{tag} {m}"),
                        cell.expect, reproducer(cell.request, [cell.scenario], expect), cell.defect, cell.id, hooks)

    def record(k: int, res: results.RunResult) -> None:
        done[k] = (mx.cells[k], res)
        result.cells = [done[i] for i in sorted(done)]
        result.seconds = time.monotonic() - start
        results.write_matrix(result)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs or os.cpu_count() or 1))
    futures = {pool.submit(one, k, cell): k for k, cell in enumerate(mx.cells)}
    try:
        pending = set(futures)
        while pending:
            finished, pending = concurrent.futures.wait(pending, timeout=0.5,
                                                        return_when=concurrent.futures.FIRST_COMPLETED)
            for f in finished:
                record(futures[f], f.result())
    except BaseException:
        hooks_base.stop.set()
        for session in list(hooks_base.sessions):
            session.close()
        pool.shutdown(wait=True, cancel_futures=True)
        for f, k in futures.items():
            if f.done() and not f.cancelled() and f.exception() is None and k not in done:
                record(k, f.result())
        raise
    finally:
        pool.shutdown(wait=True)
        result.seconds = time.monotonic() - start
        results.write_matrix(result)
    return result
