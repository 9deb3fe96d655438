"""What a person sees on the terminal: a run's summary, a revision's patches, a matrix's
table (rich tables on stdout) and the live progress table of a matrix (on stderr)."""

from __future__ import annotations

import sys
import threading
import time
from email.utils import parseaddr

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from harness import results
from harness.results import RunResult
from harness.verdict import Verdict


#: The terminal's rendering of each verdict (rich markup styles).
STYLE = {Verdict.PASS: "green", Verdict.XFAIL: "yellow", Verdict.SKIP: "dim", Verdict.FAIL: "bold red",
         Verdict.XPASS: "bold red", Verdict.ERROR: "bold red", Verdict.HANG: "bold red"}


def _styled(verdict: str) -> str:
    return f"[{STYLE.get(verdict, 'bold')}]{verdict}[/]"


def _device_cell(events) -> str:
    shown, unbound = [], 0
    for e in events:
        if e.unbound_virtio_slot:
            unbound += 1
            continue
        mark = "" if e.rc == 0 else f" rc={e.rc}"
        shown.append(f"{e.driver} {e.device} {e.callback}{' [' + e.module + ']' if e.module else ''}"
                     f" {e.usecs if e.usecs is not None else '?'}us{mark}")
    if unbound:
        shown.append(f"(+{unbound} unbound virtio_mmio slots, platform_pm_*)")
    return "\n".join(shown) or "-"


def print_summary(run: RunResult, console: Console | None = None) -> None:
    """Print per-cycle verdicts, the last resume's devices per phase, and the run verdict."""
    console = console or Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    t = run.timings
    console.print(f"[bold]virtio-pm-harness[/] {run.tree.get('describe', '?')} "
                  f"({run.guest.kernel_release if run.guest else '?'}) on {run.profile}")
    console.print("  " + " | ".join(f"{k} {v:.2f} s" for k, v in t.items())
                  + (" (build cache hit)" if run.build.get("cache_hit") else ""))
    if run.cycles:
        table = Table(title="checks per cycle")
        table.add_column("check")
        for c in run.cycles:
            table.add_column(f"{c.record.scenario}\n#{c.record.index}")
        for i, ch in enumerate(run.cycles[0].checks):
            table.add_row(ch.name, *[_styled(c.checks[i].verdict) for c in run.cycles])
        table.add_row("seconds", *[f"{c.record.seconds:.2f}" for c in run.cycles])
        table.add_row("[bold]cycle verdict[/]", *[_styled(c.verdict) for c in run.cycles])
        console.print(table)
        shown = set()
        for c in run.cycles:
            last_of_scenario = c is [x for x in run.cycles if x.record.scenario == c.record.scenario][-1]
            for ch in c.checks:
                key = (ch.name, ch.verdict, ch.summary)
                if ch.verdict == Verdict.SKIP or key in shown or (ch.verdict == Verdict.PASS and not last_of_scenario):
                    continue
                shown.add(key)
                console.print(escape(f"{c.record.scenario} #{c.record.index} {ch.name}: "), _styled(ch.verdict),
                              escape(f" {ch.summary}"), sep="", markup=True, highlight=False)
                for line in ch.evidence[:8]:
                    console.print(f"    {line}", markup=False)
        last_of_kind = {}
        for c in run.cycles:
            if c.timeline.transitions:
                last_of_kind[c.timeline.transitions[-1].kind] = c
        for last in last_of_kind.values():
            tr = last.timeline.transitions[-1]
            table = Table(title=f"last resume: {last.record.scenario} #{last.record.index} ({tr.kind}"
                                f"{', ' + tr.label if tr.label else ''}{', pm_test' if tr.pm_test else ''})")
            table.add_column("phase")
            table.add_column("devices (driver device callback time), in log order")
            for p in tr.resume_phases:
                table.add_row(p.name, escape(_device_cell(p.events)))
            console.print(table)
    for finding in run.undetected:
        console.print(finding, style="bold red", markup=False)
    if run.error:
        console.print(run.error, style="red", markup=False)
    if run.console_log:
        console.print(f"console log: {run.console_log}")
    console.print(f"results: {run.out_dir / 'results.json'}")
    console.print(f"[bold]verdict: {run.verdict}[/]")


def print_series(rev, manifest=None, console: Console | None = None) -> None:
    """Print a revision as a table: version, index, subject, author, Message-ID, base."""
    console = console or Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    console.print(f"[bold]{rev.title}[/]", markup=True)
    rfc = " RFC" if rev.patches[0].rfc else ""
    console.print(f"  v{rev.version}{rfc}, {rev.total} patches, base-commit: {rev.base_commit or '(none given)'}"
                  f"{', cover ' + rev.cover.msgid if rev.cover else ''}", markup=False)
    console.print(f"  source: {rev.source}" + (f" (manifest {manifest.path})" if manifest else ""), markup=False)
    table = Table()
    for col in ("v", "#", "subject", "author", "message-id", "+/-"):
        table.add_column(col)
    for p in ((rev.cover,) if rev.cover else ()) + rev.patches:
        added = sum(a for _, a, _ in p.diffstat)
        removed = sum(r for _, _, r in p.diffstat)
        table.add_row(str(p.version), f"{p.index}/{p.total}", p.subject, parseaddr(p.author)[0] or p.author, p.msgid,
                      f"+{added}/-{removed}" if p.index else "")
    console.print(table)


def _cycles_cell(run: RunResult) -> str:
    if not run.cycles:
        return _styled(run.verdict)
    verdicts = [c.verdict for c in run.cycles]
    if len(set(verdicts)) == 1:
        return f"{_styled(verdicts[0])} x{len(verdicts)}"
    return " ".join(_styled(v) for v in verdicts)


def print_matrix(mr, console: Console | None = None) -> None:
    """Print one row per cell (per-cycle verdicts, which checks caught a defect in how many
    cycles), then each cell's expected failures with evidence, then findings and the verdict."""
    console = console or Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    doc = results.matrix_to_json(mr)
    table = Table(title=f"matrix {mr.matrix.name}: {doc['cells_run']}/{doc['cells_declared']} cells, "
                        f"{mr.seconds:.0f} s")
    for col in ("revision", "profile", "scenario", "cycles", "expected failures (cycles failed)", "verdict"):
        table.add_column(col)
    for (cell, run), row in zip(mr.cells, doc["cells"]):
        caught = ", ".join(f"{k} {v}" for k, v in row["expected_failures"].items()) or "-"
        table.add_row(escape(cell.id.rsplit("/", 2)[0]), cell.request.profile, escape(cell.scenario.name),
                      _cycles_cell(run),
                      escape(caught), _styled(run.verdict))
    console.print(table)
    for cell, run in mr.cells:
        shown = set()
        for c in run.cycles:
            for ch in c.checks:
                if ch.verdict not in (Verdict.XFAIL, Verdict.XPASS, Verdict.FAIL) or ch.name in shown:
                    continue
                shown.add(ch.name)
                console.print(escape(f"{cell.id} {c.record.scenario} #{c.record.index} {ch.name}: "),
                              _styled(ch.verdict), escape(f" {ch.summary}"), sep="")
                for line in ch.evidence[:3]:
                    console.print(f"    {line}", markup=False)
        for finding in run.undetected:
            console.print(finding, style="bold red", markup=False)
        if run.error:
            console.print(f"{cell.id}: {run.error}", style="red", markup=False)
    console.print(f"cells without an injected defect: {doc['clean']['cycles']} cycles, "
                  f"{doc['clean']['failed_checks']} failed checks (false alarms)")
    console.print(f"results: {mr.out_dir / 'matrix.json'}")
    console.print(f"[bold]verdict: {doc['verdict']}[/]")


class MatrixProgress:
    """A live table of the cells of a matrix run: each cell's stage (build, boot,
    ``s2idle-rtc 3/5``, its verdict) and seconds since it started.  On a terminal it redraws
    in place (rich Live on stderr, which prints what is written to stderr meanwhile, the
    ``harness`` logger's progress lines, above itself); elsewhere it stays silent and the
    progress lines are the record.  Use as a context manager; :meth:`stage` is thread-safe."""

    def __init__(self, cells, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self._rows = {c.id: ["waiting", None, None] for c in cells}  # stage, started, finished
        self._lock = threading.Lock()
        self._live = Live(self._table(), console=self.console, refresh_per_second=2,
                          get_renderable=self._table) if self.console.is_terminal else None

    def _table(self) -> Table:
        table = Table(title="cells", show_edge=False)
        for col in ("cell", "stage", "seconds"):
            table.add_column(col)
        now = time.monotonic()
        with self._lock:
            for cid, (text, t0, t1) in self._rows.items():
                table.add_row(escape(cid), _styled(text) if text in STYLE else escape(text),
                              f"{(t1 or now) - t0:.0f}" if t0 is not None else "")
        return table

    def stage(self, cell, text: str) -> None:
        with self._lock:
            row = self._rows[cell.id]
            row[0] = text
            now = time.monotonic()
            if row[1] is None:
                row[1] = now
            if text in STYLE:  # a verdict: the cell is done, its clock stops
                row[2] = now

    def __enter__(self) -> "MatrixProgress":
        if self._live:
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live:
            self._live.__exit__(*exc)
