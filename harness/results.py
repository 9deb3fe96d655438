"""The results of a run, as values and as files: :class:`RunResult` (one cell's run, its
:class:`CycleResult` per cycle), ``results.json`` (:func:`to_json`, versioned by
:data:`SCHEMA` and read back by :func:`load_results` through :func:`migrate`) and
``matrix.json``.

``results.json`` is the machine-readable record (per-cycle data, timings in seconds,
versions, the reproducer command line); every other report (JUnit, KCIDB, HTML,
:mod:`harness.report`) is rendered from it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import __version__
from harness.cache import atomic_write
from harness.checks import CheckResult
from harness.dmesg import PmTimeline, Transition
from harness.errors import UsageError
from harness.model import CycleRecord, GuestFacts
from harness.verdict import BAD, Verdict, overall

#: The version of the ``results.json`` shape this harness writes (``"schema"``); older
#: documents are brought up to it by :func:`migrate`.
SCHEMA = 2


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
    ssh: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

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
        "schema": SCHEMA,
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
        "ssh": run.ssh,
        "notes": run.notes,
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


# --- Saved results ------------------------------------------------------------------------------

def migrate(doc: dict, cell: str) -> dict:
    """Bring a ``results.json`` document of any earlier schema up to :data:`SCHEMA`, the one place
    that knows the old shapes.  Schema 1 (no ``schema`` key, before 0.1.0 settled) lacked some
    fields: ``cell`` (taken from the cell directory), ``defect``, ``started``, ``series``,
    ``error``, ``versions``, ``tree``, ``build``, ``timings``.  Raises UsageError for a schema
    newer than this harness reads."""
    schema = doc.get("schema", 1)
    if not isinstance(schema, int) or schema > SCHEMA:
        raise UsageError(f"results of schema {schema!r}: this harness reads up to {SCHEMA}; upgrade it")
    if schema < 2:
        for key, value in (("cell", cell), ("defect", None), ("started", ""), ("series", {}), ("error", None),
                           ("versions", {}), ("tree", {}), ("build", {}), ("timings", {})):
            if doc.get(key) is None:
                doc[key] = value
    doc["schema"] = SCHEMA
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
                pairs.append((path.parent, migrate(json.loads(path.read_text()), cell["id"])))
            return pairs
        if (run_dir / "results.json").is_file():
            return [(run_dir, migrate(json.loads((run_dir / "results.json").read_text()), run_dir.name))]
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"{run_dir}: unreadable results ({e}); rerun the matrix or restore the files") from e
    raise UsageError(f"{run_dir}: no matrix.json or results.json here (is it a harness run directory?)")
