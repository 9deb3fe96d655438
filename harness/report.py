"""Reports of a run: ``results.json`` and the terminal summary.

``results.json`` is the machine-readable record (per-cycle data, timings in
seconds, versions, the reproducer command line); the terminal summary shows
per-cycle verdicts and, for the last resume, which devices ran in each
resume phase.
"""

from __future__ import annotations

import json
import sys
from email.utils import parseaddr
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness import __version__
from harness.cache import atomic_write
from harness.checks import CheckResult, overall
from harness.dmesg import PmTimeline, Transition
from harness.suspend import CycleRecord, GuestFacts


@dataclass(frozen=True)
class CycleResult:
    """A cycle's record, its parsed timeline, its checks and where its dmesg was saved."""

    record: CycleRecord
    timeline: PmTimeline
    checks: tuple[CheckResult, ...]
    dmesg_file: str

    @property
    def verdict(self) -> str:
        return overall([c.verdict for c in self.checks])


@dataclass
class RunResult:
    """Everything about one run; filled in stage by stage by the CLI.

    ``timings`` maps stage to seconds; ``error`` holds the message of the
    exception that ended the run early, with ``verdict`` ERROR/HANG/FAIL.
    """

    command: str
    out_dir: Path
    profile: str
    versions: dict[str, str] = field(default_factory=dict)
    tree: dict = field(default_factory=dict)
    build: dict = field(default_factory=dict)
    initramfs: dict = field(default_factory=dict)
    qemu_argv: list[str] = field(default_factory=list)
    guest: GuestFacts | None = None
    cycles: list[CycleResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    console_log: str | None = None
    error: str | None = None
    error_verdict: str | None = None
    expectations: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        verdicts = [c.verdict for c in self.cycles]
        if self.error_verdict:
            verdicts.append(self.error_verdict)
        return overall(verdicts) if verdicts else "ERROR"


def _phase_devices(tr: Transition) -> dict[str, list[dict]]:
    return {p.name: [{"driver": e.driver, "device": e.device, "callback": e.callback, "rc": e.rc,
                      "usecs": e.usecs, "seq": e.seq} for e in p.events] for p in tr.resume_phases}


def to_json(run: RunResult) -> dict:
    """Return the ``results.json`` document for ``run``."""
    cycles = []
    for c in run.cycles:
        rec = asdict(c.record)
        rec.pop("dmesg")
        tr = c.timeline.transitions[-1] if c.timeline.transitions else None
        cycles.append({
            **rec,
            "verdict": c.verdict,
            "dmesg_file": c.dmesg_file,
            "checks": [asdict(ch) for ch in c.checks],
            "resume_devices": _phase_devices(tr) if tr else {},
        })
    return {
        "harness_version": __version__,
        "verdict": run.verdict,
        "command": run.command,
        "profile": run.profile,
        "versions": run.versions,
        "tree": run.tree,
        "build": run.build,
        "initramfs": run.initramfs,
        "qemu_argv": run.qemu_argv,
        "guest": asdict(run.guest) if run.guest else None,
        "timings": {k: round(v, 3) for k, v in run.timings.items()},
        "console_log": run.console_log,
        "expectations": run.expectations,
        "error": run.error,
        "cycles": cycles,
    }


def write_results(run: RunResult) -> Path:
    """Write ``results.json`` into the run's directory (atomically) and return its path."""
    return atomic_write(run.out_dir / "results.json", json.dumps(to_json(run), indent=2) + "\n")


_UNBOUND_SLOT = ("platform", ".virtio_mmio")
_STYLE = {"PASS": "green", "XFAIL": "yellow", "SKIP": "dim", "FAIL": "bold red", "XPASS": "bold red",
          "ERROR": "bold red", "HANG": "bold red"}


def _styled(verdict: str) -> str:
    return f"[{_STYLE.get(verdict, 'bold')}]{verdict}[/]"


def _device_cell(events) -> str:
    shown, unbound = [], 0
    for e in events:
        if e.driver == _UNBOUND_SLOT[0] and e.device.endswith(_UNBOUND_SLOT[1]):
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
                if ch.verdict == "SKIP" or key in shown or (ch.verdict == "PASS" and not last_of_scenario):
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
