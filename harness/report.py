"""Reports of a run: ``results.json`` and the terminal summary.

``results.json`` is the machine-readable record (per-cycle data, timings in
seconds, versions, the reproducer command line); the terminal summary shows
per-cycle verdicts and, for the last resume, which devices ran in each
resume phase.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from email.utils import parseaddr
from dataclasses import asdict, dataclass, field
from pathlib import Path

import kcidb_io
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from harness import __version__, junit, kcidb, timeline
from harness.cache import atomic_write
from harness.checks import CheckResult
from harness.verdict import BAD, Verdict, overall
from harness.dmesg import PmTimeline, Transition
from harness.errors import UsageError
from harness.model import CycleRecord, GuestFacts


@dataclass(frozen=True)
class CycleResult:
    """A cycle's record, its parsed timeline, its checks and where its dmesg was saved."""

    record: CycleRecord
    timeline: PmTimeline
    checks: tuple[CheckResult, ...]
    dmesg_file: str

    @property
    def verdict(self) -> Verdict:
        return overall([c.verdict for c in self.checks])


@dataclass
class RunResult:
    """Everything about one run; filled in stage by stage by the CLI.

    ``timings`` maps stage to seconds; ``error`` holds the message of the
    exception that ended the run early, with ``error_verdict`` ERROR/HANG/FAIL, its class
    name ``error_type`` (ApplyError, BuildError, GuestHang, ...) and ``exit_code``.
    """

    command: str
    out_dir: Path
    profile: str
    cell: str = ""
    started: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    tree: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict)
    build: dict = field(default_factory=dict)
    initramfs: dict = field(default_factory=dict)
    qemu_argv: list[str] = field(default_factory=list)
    guest: GuestFacts | None = None
    cycles: list[CycleResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    console_log: str | None = None
    error: str | None = None
    error_verdict: Verdict | None = None
    error_type: str | None = None
    exit_code: int | None = None
    expectations: dict = field(default_factory=dict)
    defect: str | None = None
    skipped: str | None = None

    @property
    def undetected(self) -> list[str]:
        """For a defect run: where an expected failure did not happen (XPASS), as sentences."""
        if not self.defect:
            return []
        return [f"defect {self.defect} went undetected in {c.record.scenario} #{c.record.index}: "
                f"{ch.name} passed" for c in self.cycles for ch in c.checks if ch.verdict == Verdict.XPASS]

    @property
    def verdict(self) -> Verdict:
        """The run's verdict; a defect that went undetected in any cycle makes it FAIL; a cell
        that cannot run here is SKIP."""
        if self.skipped:
            return Verdict.SKIP
        verdicts = [c.verdict for c in self.cycles]
        if self.error_verdict:
            verdicts.append(self.error_verdict)
        if self.undetected:
            verdicts.append(Verdict.FAIL)
        return overall(verdicts) if verdicts else Verdict.ERROR

    def tally(self) -> dict:
        """Counts over all cycles: ``cycles``, ``failed_checks`` (FAIL, XPASS, ERROR or HANG:
        the false alarms of a clean revision), and per check the number of cycles per verdict."""
        per_check: dict[str, dict[str, int]] = {}
        for c in self.cycles:
            for ch in c.checks:
                counts = per_check.setdefault(ch.name, {})
                counts[ch.verdict] = counts.get(ch.verdict, 0) + 1
        failed = sum(1 for c in self.cycles for ch in c.checks if ch.verdict in BAD)
        return {"cycles": len(self.cycles), "failed_checks": failed, "per_check": per_check}


def _phase_devices(tr: Transition) -> dict[str, list[dict]]:
    return {p.name: [{"driver": e.driver, "device": e.device, "callback": e.callback, "rc": e.rc,
                      "usecs": e.usecs, "seq": e.seq} for e in p.events] for p in tr.resume_phases}


def to_json(run: RunResult) -> dict:
    """Return the ``results.json`` document for ``run``."""
    cycles = []
    for c in run.cycles:
        rec = asdict(c.record)
        rec.pop("dmesg")
        rec.pop("noirq_trace")
        tr = c.timeline.transitions[-1] if c.timeline.transitions else None
        cycles.append({
            **rec,
            "verdict": c.verdict,
            "dmesg_file": c.dmesg_file,
            "noirq_trace_file": f"{c.record.scenario}-{c.record.index}.noirq-trace"
            if c.record.noirq_trace is not None else None,
            "checks": [asdict(ch) for ch in c.checks],
            "resume_devices": _phase_devices(tr) if tr else {},
        })
    return {
        "harness_version": __version__,
        "verdict": run.verdict,
        "cell": run.cell,
        "started": run.started,
        "command": run.command,
        "profile": run.profile,
        "versions": run.versions,
        "tree": run.tree,
        "series": run.series,
        "build": run.build,
        "initramfs": run.initramfs,
        "qemu_argv": run.qemu_argv,
        "guest": asdict(run.guest) if run.guest else None,
        "timings": {k: round(v, 3) for k, v in run.timings.items()},
        "console_log": run.console_log,
        "expectations": run.expectations,
        "defect": run.defect,
        "skipped": run.skipped,
        "undetected": run.undetected,
        "tally": run.tally(),
        "error": run.error,
        "error_verdict": run.error_verdict,
        "error_type": run.error_type,
        "exit_code": run.exit_code,
        "cycles": cycles,
    }


def write_results(run: RunResult) -> Path:
    """Write ``results.json`` into the run's directory (atomically) and return its path."""
    return atomic_write(run.out_dir / "results.json", json.dumps(to_json(run), indent=2) + "\n")


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


# --- Matrices ----------------------------------------------------------------------------------

def _expected_failures(tally: dict) -> dict[str, str]:
    """check -> ``k/N``: in how many cycles each expected-to-fail check failed, from a
    :meth:`RunResult.tally`."""
    out = {}
    for name, counts in tally["per_check"].items():
        xfail, xpass = counts.get(Verdict.XFAIL, 0), counts.get(Verdict.XPASS, 0)
        if xfail or xpass:
            out[name] = f"{xfail}/{sum(counts.values())}"
    return out


def matrix_to_json(mr) -> dict:
    """The ``matrix.json`` document of a :class:`harness.matrix.MatrixResult`."""
    cells = []
    clean_cycles = clean_failed = 0
    for cell, run in mr.cells:
        tally = run.tally()
        if cell.defect is None:
            clean_cycles += tally["cycles"]
            clean_failed += tally["failed_checks"]
        cells.append({
            "id": cell.id, "revision": cell.revision, "tree": cell.tree, "profile": cell.request.profile,
            "scenario": cell.scenario.name, "defect": cell.defect, "verdict": run.verdict,
            "cycle_verdicts": [c.verdict for c in run.cycles],
            "failed_checks": tally["failed_checks"], "expected_failures": _expected_failures(tally),
            "undetected": run.undetected, "error": run.error, "skipped": run.skipped,
            "results": f"{cell.dirname}/results.json", "command": run.command,
        })
    verdicts = [c["verdict"] for c in cells]
    versions: dict[str, set] = {}
    for _, run in mr.cells:
        for key, value in run.versions.items():
            versions.setdefault(key, set()).add(value)
    return {
        "harness_version": __version__,
        "versions": {k: sorted(v) for k, v in versions.items()},
        "matrix": mr.matrix.name,
        "file": str(mr.matrix.path),
        "verdict": overall(verdicts) if len(cells) == len(mr.matrix.cells) and cells else
        (overall(verdicts + [Verdict.ERROR])),
        "cells_run": len(cells),
        "cells_declared": len(mr.matrix.cells),
        "seconds": round(mr.seconds, 3),
        "clean": {"cycles": clean_cycles, "failed_checks": clean_failed},
        "cells": cells,
    }


def write_matrix(mr) -> Path:
    """Write ``matrix.json`` into the matrix run's directory (atomically) and return its path."""
    mr.out_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write(mr.out_dir / "matrix.json", json.dumps(matrix_to_json(mr), indent=2) + "\n")


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
    doc = matrix_to_json(mr)
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


# --- Reports re-rendered from saved results ------------------------------------------------------

def _with_defaults(doc: dict, cell: str) -> dict:
    """Fields that results.json of older harness versions lacks, filled so reports render."""
    for key, value in (("cell", cell), ("defect", None), ("started", ""), ("series", {}), ("error", None),
                       ("versions", {}), ("tree", {}), ("build", {}), ("timings", {})):
        if doc.get(key) is None:
            doc[key] = value
    return doc


def load_results(run_dir: Path) -> list[tuple[Path, dict]]:
    """The (cell directory, results.json document) pairs of a saved run: the cells of its
    ``matrix.json`` in order, or the ``results.json`` of a ``harness run`` directory.

    Raises :class:`~harness.errors.UsageError` naming the directory when it holds neither."""
    try:
        if (run_dir / "matrix.json").is_file():
            doc = json.loads((run_dir / "matrix.json").read_text())
            pairs = []
            for cell in doc["cells"]:
                path = run_dir / cell["results"]
                pairs.append((path.parent, _with_defaults(json.loads(path.read_text()), cell["id"])))
            return pairs
        if (run_dir / "results.json").is_file():
            return [(run_dir, _with_defaults(json.loads((run_dir / "results.json").read_text()), run_dir.name))]
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"{run_dir}: unreadable results ({e}); rerun the matrix or restore the files") from e
    raise UsageError(f"{run_dir}: no matrix.json or results.json here (is it a harness run directory?)")


def write_reports(run_dir: Path, title: str | None = None) -> dict[str, Path]:
    """Render ``junit.xml``, ``kcidb.json`` (validated against KCIDB v5.0) and ``report.html``
    into ``run_dir`` from its saved results; return their paths by kind.  Atomic writes."""
    pairs = load_results(run_dir)
    docs = [doc for _, doc in pairs]
    kc = kcidb.render(docs)
    kcidb_io.schema.V5_0.validate(kc)
    return {
        "junit": atomic_write(run_dir / "junit.xml", junit.render(docs)),
        "kcidb": atomic_write(run_dir / "kcidb.json", json.dumps(kc, indent=2) + "\n"),
        "html": atomic_write(run_dir / "report.html",
                             timeline.render(pairs, title or f"virtio-pm-harness: {run_dir.name}")),
    }


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
