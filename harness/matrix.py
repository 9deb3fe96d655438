"""The whole chain, per cell: apply, build, boot, cycles, checks, report.

A *cell* is one (revision x QEMU profile x scenario); it boots its own guest.
A *matrix* (``matrices/NAME.yaml``) declares rows of revisions and the
scenarios (``scenarios/NAME.yaml``, :mod:`harness.scenarios`) to run on them; :func:`run_matrix` runs
its cells in order and writes ``matrix.json`` beside one directory per cell.
Builds are keyed by commit and configuration in the cache, so cells of the
same revision build once.

This module and ``cli.py`` are the only ones that know the whole pipeline.
"""

from __future__ import annotations

import concurrent.futures
import copy
import fnmatch
import functools
import glob
import hashlib
import os
import shlex
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from harness import (__version__, build, checks, dmesg, fetch, kconfig, model, modules, qemu, report, rootfs,
                     series, suspend, timeouts, toolchain, tree)
from harness.scenarios import find_scenario, uniform, with_cycles
from harness.cache import Cache
from harness.config import check_keys, load_yaml_mapping
from harness.errors import ConfigError, FetchError, HarnessError, UsageError
from harness.guest import GuestSession
from harness.proc import CommandLog
from harness.paths import DATA_ROOT
from harness.verdict import Verdict

#: Where kconfigs/, qemu-profiles/, guest-rootfs/, scenarios/, matrices/ and patches/ are: the checkout,
#: or the copy a non-editable install ships (harness/paths.py).
ROOT = DATA_ROOT
#: The expectations of the embedded tree without any series.
BASELINE_EXPECT = ROOT / "patches" / "baseline-6.12" / "expect.yaml"

Say = Callable[[str], None]

#: The error a run ends with when it was interrupted.
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM); QEMU was stopped"


@dataclass(frozen=True)
class Request:
    """What to build and boot: the series spec (None for the bare tree), the tree (None for the
    embedded default), ``base`` ref, ``upto`` patches, b4 options, kconfig fragment names (None
    for the defaults), ``make -j`` jobs, QEMU profile name and boot timeout in seconds."""

    series: str | None = None
    tree: str | None = None
    base: str | None = None
    upto: int | None = None
    series_version: int | None = None
    b4_local_mbox: Path | None = None
    kconfig: tuple[str, ...] | None = None
    jobs: int | None = None
    profile: str = "virt-mmio"
    boot_timeout: float = timeouts.BOOT

    @property
    def fragments(self) -> tuple[str, ...]:
        """The kconfig fragment names this request builds with (its own, else the defaults)."""
        return tuple(self.kconfig or kconfig.DEFAULT_FRAGMENTS)

    def fragment_files(self) -> list[Path]:
        """The fragment files under ``kconfigs/``.  Raises ConfigError for an unknown name."""
        return kconfig.fragment_paths(ROOT / "kconfigs", self.fragments)


@dataclass(frozen=True)
class GuestArtifacts:
    """What a guest needs: the tree and build it came from, the initramfs, the profile."""

    tree: tree.AppliedTree
    series: series.Series | None
    build: build.BuildResult
    modules: tuple[modules.GuestModule, ...]
    initramfs: rootfs.Initramfs
    profile: qemu.QemuProfile


def applied_tree(req: Request, cache: Cache, log: CommandLog,
                 say: Say) -> tuple[tree.AppliedTree, series.Series | None]:
    """The worktree to build: the tree at its base, with the series (or its first ``upto`` patches),
    and the series itself (None without one).  Without a tree in ``req``, a manifest's own
    ``tree:`` (v6/v9: the embedded 7.x tree) is used, else the default tree.

    Raises SeriesError (3), ApplyError (4) or UsageError (2)."""
    rev, manifest = (series.load_revision(req.series, cache, log, version=req.series_version,
                                          local_mbox=req.b4_local_mbox, tree=req.tree)
                     if req.series else (None, None))
    kt = tree.resolve_tree(req.tree or (manifest.tree if manifest else None), cache, log, say)
    base, warning = tree.resolve_base(kt, req.base, rev.base_commit if rev else None, log)
    if warning:
        say(f"warning: {warning}")
    patches = ()
    if rev:
        upto = rev.total if req.upto is None else req.upto
        if not 0 <= upto <= rev.total:
            raise UsageError(f"--upto {req.upto}: the revision has {rev.total} patches")
        patches = rev.patches[:upto]
        say(f"apply v{rev.version} patches 1-{upto} of {rev.total} on {base[:12]}")
    elif req.upto is not None:
        raise UsageError("--upto needs --series")
    return tree.apply_series(kt, base, patches, cache, log, rev.version if rev else None,
                             rev.base_commit if rev else None), rev


def build_kernel(req: Request, cache: Cache, log: CommandLog, say: Say, timings: dict[str, float]
                 ) -> tuple[tree.AppliedTree, series.Series | None, build.BuildResult, toolchain.Toolchain]:
    """Apply and build; ``timings['apply']``/``['build']`` get the seconds.  Raises BuildError (5)
    and the above."""
    tc = toolchain.arm64(cache, req.jobs)
    start = time.monotonic()
    applied, rev = applied_tree(req, cache, log, say)
    timings["apply"] = time.monotonic() - start
    requests = kconfig.merge(req.fragment_files())
    say(f"build {applied.describe} ({applied.commit[:12]}) for {tc.arch} ...")
    start = time.monotonic()
    built = build.build(applied, requests, tc, log)
    timings["build"] = time.monotonic() - start
    say(f"build: {'cache hit' if built.cache_hit else f'{built.seconds:.1f} s'}, {built.image}")
    return applied, rev, built, tc


def prepare_guest(req: Request, cache: Cache, log: CommandLog, say: Say,
                  timings: dict[str, float]) -> GuestArtifacts:
    """Build the kernel, the guest modules against it, and the initramfs; find the profile."""
    kt, rev, built, tc = build_kernel(req, cache, log, say, timings)
    mods = modules.build_modules(ROOT / "guest-rootfs" / "modules", kt.path, built, tc, log)
    sysroot = fetch.guest_sysroot(cache, log)
    initramfs = rootfs.build_initramfs(ROOT / "guest-rootfs", sysroot, kt.path, cache, log,
                                       tuple((m.ko, m.guest_path) for m in mods))
    profile = qemu.find_profile(ROOT / "qemu-profiles", req.profile)
    return GuestArtifacts(kt, rev, built, tuple(mods), initramfs, profile)


def guest_argv(art: GuestArtifacts, out_dir: Path) -> list[str]:
    """QEMU's argv for ``art``, with a fresh disk image in ``out_dir``."""
    disk = qemu.make_disk(out_dir / "disk.img", art.profile.disk_mb)
    return qemu.render_argv(art.profile, kernel=art.build.image, initrd=art.initramfs.path, disk=disk)


def defect_name(rev_dir: Path) -> str | None:
    """The injected defect's name when ``rev_dir`` is a defect revision (``defect.yaml``), else None."""
    return rev_dir.name if (rev_dir / "defect.yaml").is_file() else None


def expectations_file(series_spec: str | None, explicit: str | None = None) -> Path | None:
    """``explicit``, else ``expect.yaml`` beside the series (patches/NAME), else the baseline's
    when no series is applied; None when the series has none (everything expected to pass)."""
    if explicit:
        return Path(explicit)
    if series_spec:
        beside = Path(series_spec) / "expect.yaml"
        return beside if beside.is_file() else None
    return BASELINE_EXPECT


# --- Cells ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One (revision x profile x scenario): ``revision`` is its name under patches/
    (``baseline-6.12`` is the bare tree), ``request`` what to build and boot, ``expect``
    the revision's expectations file, ``defect`` the injected defect's name if any, and
    ``skip`` the reason it cannot run here (reported as SKIP, never left out)."""

    revision: str
    request: Request
    scenario: model.Scenario
    expect: Path | None
    defect: str | None = None
    skip: str | None = None

    @property
    def tree(self) -> str:
        """The tree's name: an embedded tree's (``debian-7.2``), or a checkout's directory name."""
        t = self.request.tree or tree.DEFAULT_TREE
        return t if t in tree.EMBEDDED_TREES else Path(t).name

    @property
    def id(self) -> str:
        """``revision/profile/scenario``, unique within a matrix; a revision on another tree than the
        default carries it (``defects/late-provider@debian-7.2/virt-mmio/s2idle-rtc``)."""
        on = "" if self.tree == tree.DEFAULT_TREE else f"@{self.tree}"
        return f"{self.revision}{on}/{self.request.profile}/{self.scenario.name}"

    @property
    def dirname(self) -> str:
        return self.id.replace("/", "__")


def reproducer(req: Request, scenarios: list[model.Scenario], expect: str | None = None) -> str:
    """The ``harness run`` command line that reruns one cell (or a run) by itself."""
    argv = ["harness", "run", "--profile", req.profile]
    if req.tree:
        argv += ["--tree", req.tree if req.tree in tree.EMBEDDED_TREES else str(Path(req.tree).resolve())]
    for opt in ("series", "base", "upto", "series_version"):
        if getattr(req, opt) is not None:
            argv += [f"--{opt.replace('_', '-')}", str(getattr(req, opt))]
    if expect:
        argv += ["--expect", expect]
    for frag in req.kconfig or ():
        argv += ["--kconfig", frag]
    for s in scenarios:
        argv += ["--scenario", f"{s.name}:{s.cycles}" if uniform(s) else s.name]
    return shlex.join(argv)


def series_record(rev: series.Series | None, applied: int) -> dict:
    """What results.json says of the series: version, title, cover Message-ID, and per applied
    patch its index, subject, Message-ID and the sha256 of the mail; ``patchset_hash`` is
    KernelCI's (sha256 over the newline-terminated sha256 of each patch, "" without patches)."""
    if rev is None:
        return {"patchset_hash": "", "patches": []}
    patches = [{"index": p.index, "subject": p.subject, "message_id": p.msgid,
                "sha256": hashlib.sha256(p.raw).hexdigest()} for p in rev.patches[:applied]]
    return {"version": rev.version, "title": rev.title, "total": rev.total,
            "cover_message_id": rev.cover.msgid if rev.cover else None,
            "patchset_hash": hashlib.sha256("".join(p["sha256"] + "\n" for p in patches).encode()).hexdigest()
            if patches else "", "patches": patches}


@dataclass
class CellHooks:
    """How a cell run reports and is controlled from outside (the matrix runner).

    ``stage(text)`` is told each stage (``build``, ``boot``, ``cycle 2/5``, ``PASS``);
    ``artifacts(req, log, say, timings)`` builds or returns the shared guest artifacts;
    ``sessions`` holds the running guests so an interrupt can stop them; ``stop`` is set
    when the run was interrupted."""

    stage: Callable[[str], None] = lambda text: None
    artifacts: Callable[..., GuestArtifacts] | None = None
    sessions: set = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)


def run_cell(req: Request, scenarios: list[model.Scenario], out: Path, cache: Cache, say: Say,
             expect_path: Path | None, command: str, defect: str | None = None, cell: str = "",
             hooks: CellHooks | None = None) -> report.RunResult:
    """Build, boot one guest, run ``scenarios`` in order in it, check every cycle; return the result.

    Never raises a :class:`HarnessError`: it ends the result with ``error`` and its verdict
    (ERROR/HANG/FAIL).  ``results.json`` is written to ``out`` whatever happens.
    KeyboardInterrupt propagates after QEMU is stopped and results are written.
    """
    hooks = hooks or CellHooks()
    out.mkdir(parents=True, exist_ok=True)
    log = CommandLog(out / "commands.log")
    result = report.RunResult(command=command, out_dir=out, profile=req.profile, defect=defect, cell=cell,
                              started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    result.versions = {"harness": __version__, "qemu": toolchain.qemu_version()}
    try:
        base_expect = checks.load_expectations(expect_path) if expect_path else {}
        result.expectations = {"file": str(expect_path) if expect_path else None, "expect": base_expect}
        hooks.stage("build")
        art = (hooks.artifacts or functools.partial(prepare_guest, cache=cache))(
            req, log=log, say=say, timings=result.timings)
        result.tree = {"path": str(art.tree.source.path), "worktree": str(art.tree.path),
                       "commit": art.tree.commit, "base": art.tree.base, "describe": art.tree.describe,
                       "version": art.tree.version, "embedded": art.tree.embedded, "name": art.tree.source.name,
                       "series_version": art.tree.series_version,
                       "patches": [{"index": i, "subject": s, "commit": c} for i, s, c in art.tree.patch_commits]}
        result.series = series_record(art.series, len(art.tree.patch_commits))
        result.build = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(art.build).items()}
        result.build["config"] = list(req.fragments)
        result.initramfs = {"path": str(art.initramfs.path), "sha256": art.initramfs.sha256}
        result.versions["gcc"] = art.build.gcc_version
        result.qemu_argv = guest_argv(art, out)
        result.console_log = str(out / "console.log")
        say(f"boot {art.profile.name}, console log {result.console_log}")
        hooks.stage("boot")
        with GuestSession(result.qemu_argv, out / "console.log", log, boot_timeout=req.boot_timeout) as session:
            hooks.sessions.add(session)
            result.timings["boot"] = session.boot_seconds or 0.0
            say(f"guest shell after {result.timings['boot']:.2f} s")
            facts = suspend.prepare(session)
            result.guest = facts
            result.versions["kernel"] = facts.kernel_release
            start = time.monotonic()
            for scenario in scenarios:
                for i in range(1, scenario.cycles + 1):
                    step = scenario.steps[i - 1]
                    hooks.stage(f"{scenario.name} {i}/{scenario.cycles}")
                    rec = suspend.run_cycle(session, scenario, i, facts)
                    dmesg_file = out / f"{scenario.name}-{i}.dmesg"
                    dmesg_file.write_text(rec.dmesg + "\n")
                    if rec.noirq_trace is not None:
                        (out / f"{scenario.name}-{i}.noirq-trace").write_text(rec.noirq_trace + "\n")
                    timeline = dmesg.parse(rec.dmesg)
                    verdicts = checks.check_cycle(rec, facts, timeline, {**base_expect, **step.expect}, step.checks)
                    result.cycles.append(report.CycleResult(rec, timeline, tuple(verdicts), dmesg_file.name))
                    say(f"{scenario.name} #{i}/{scenario.cycles}{' ' + step.label if step.label else ''}: "
                        f"{result.cycles[-1].verdict} ({rec.seconds:.2f} s)")
            result.timings["cycles"] = time.monotonic() - start
            hooks.sessions.discard(session)
    except HarnessError as e:
        if hooks.stop.is_set():
            result.error, result.error_verdict, result.error_type = INTERRUPTED, Verdict.ERROR, "KeyboardInterrupt"
            result.exit_code = 130
        else:
            result.error = f"{type(e).__name__}: {e}"
            result.error_verdict = e.verdict
            result.error_type = type(e).__name__
            result.exit_code = e.exit_code
    except KeyboardInterrupt:
        result.error, result.error_verdict, result.error_type = INTERRUPTED, Verdict.ERROR, "KeyboardInterrupt"
        result.exit_code = 130
        raise
    finally:
        report.write_results(result)
        disk = out / "disk.img"
        if disk.exists() and result.error is None and result.verdict == Verdict.PASS:
            disk.unlink()  # up to disk_mb of swap; kept only when the run needs a look
        hooks.stage(result.verdict)
    return result


# --- Matrices ------------------------------------------------------------------------------

_MATRIX_KEYS = {"name", "description", "profiles", "kconfig", "rows"}
_ROW_KEYS = {"revision", "scenarios", "cycles", "profiles", "expect", "tree"}


@dataclass(frozen=True)
class Matrix:
    """A loaded matrix file: its ``name``, ``path``, ``description`` and expanded ``cells``."""

    name: str
    path: Path
    description: str
    cells: tuple[Cell, ...]


def _revision_dirs(where: str, pattern: str) -> list[Path]:
    if any(ch in pattern for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(str(ROOT / "patches" / pattern)) if Path(p).is_dir())
        if not found:
            raise ConfigError(f"{where}: revision pattern {pattern!r} matches nothing under patches/")
        return found
    path = ROOT / "patches" / pattern
    if not path.is_dir():
        known = sorted(p.name for p in (ROOT / "patches").iterdir() if p.is_dir())
        raise ConfigError(f"{where}: no revision {pattern!r} under patches/ (known: {', '.join(known)})")
    return [path]


def _is_bare(rev_dir: Path) -> bool:
    """A revision directory with only an expect.yaml: the tree itself, no series."""
    return not any(p.name != "expect.yaml" for p in rev_dir.iterdir())


def _skip_reason(rev_dir: Path) -> str | None:
    """Why a manifest revision (``series.yaml``) cannot run, known without the network: its
    ``mbox:`` names a file that is not there.  Whether lore can be reached is found out when
    the cell runs (:func:`unfetchable`)."""
    if not (rev_dir / "series.yaml").is_file():
        return None
    manifest = series.load_manifest(rev_dir / "series.yaml")
    if manifest.mbox is not None and not manifest.mbox.is_file():
        return f"mbox {manifest.mbox} (named in {manifest.path}) does not exist"
    return None


def unfetchable(cell: "Cell", cache: Cache, log: CommandLog) -> str | None:
    """For a manifest cell (v6, v9): None when its series can be had (a local ``mbox:``, b4's cache,
    or lore now), else why not and the command that gets it where lore is reachable."""
    rev_dir = ROOT / "patches" / cell.revision
    if not (rev_dir / "series.yaml").is_file():
        return None
    try:
        series.load_revision(str(rev_dir), cache, log)
    except FetchError:
        manifest = series.load_manifest(rev_dir / "series.yaml")
        return (f"lore unreachable and no local mbox: `b4 am -o patches/{cell.revision} {manifest.message_id}` "
                f"where lore is reachable, then set mbox: in {manifest.path.relative_to(ROOT)} "
                f"(or run `harness run --series patches/{cell.revision}` there)")
    return None


def load_matrix(path: Path, kconfig_override: tuple[str, ...] | None = None, jobs: int | None = None,
                boot_timeout: float = timeouts.BOOT) -> Matrix:
    """Load a matrix file (``matrices/NAME.yaml``) and expand its rows into cells.

    Each row names a ``revision`` (a directory under patches/, glob allowed:
    ``defects/*``), its ``scenarios`` (names in scenarios/), optionally
    ``cycles`` (overrides every uniform scenario's count), ``profiles``,
    ``expect`` (a file relative to the repository) and ``tree`` (a kernel git
    tree or an embedded tree's name; default the default tree).  A manifest revision whose
    mbox cannot be had (no local ``mbox:``, lore unreachable) becomes a SKIP cell with the
    reason when it runs (:func:`unfetchable`).  Raises ConfigError naming file and row."""
    data = load_yaml_mapping(path)
    where = str(path)
    check_keys(where, data, _MATRIX_KEYS, {"name", "rows"})
    profiles = data.get("profiles") or ["virt-mmio"]
    frags = kconfig_override or (tuple(data["kconfig"]) if data.get("kconfig") else None)
    if not isinstance(data["rows"], list) or not data["rows"]:
        raise ConfigError(f"{where}: rows: must be a non-empty list")
    cells: list[Cell] = []
    for n, row in enumerate(data["rows"]):
        rw = f"{where}: rows[{n}]"
        check_keys(rw, row, _ROW_KEYS, {"revision", "scenarios"})
        if not isinstance(row["scenarios"], list) or not row["scenarios"]:
            raise ConfigError(f"{rw}.scenarios: must be a non-empty list of scenario names")
        scenarios = [find_scenario(str(s)) for s in row["scenarios"]]
        if "cycles" in row:
            if not isinstance(row["cycles"], int):
                raise ConfigError(f"{rw}.cycles: must be an integer")
            scenarios = [with_cycles(s, row["cycles"], f"{rw}: ") for s in scenarios]
        for profile in row.get("profiles") or profiles:
            try:
                qemu.find_profile(ROOT / "qemu-profiles", profile)  # ConfigError now, not mid-run
            except ConfigError as e:
                raise ConfigError(f"{rw}: {e}") from None
            for rev_dir in _revision_dirs(rw, str(row["revision"])):
                name = rev_dir.relative_to(ROOT / "patches").as_posix()
                spec = None if _is_bare(rev_dir) else str(rev_dir)
                expect = (ROOT / row["expect"] if row.get("expect") else
                          rev_dir / "expect.yaml" if spec is None else expectations_file(spec))
                defect = defect_name(rev_dir)
                tree_path = str(row["tree"]) if row.get("tree") else None
                req = Request(series=spec, tree=tree_path, kconfig=frags, jobs=jobs, profile=profile,
                              boot_timeout=boot_timeout)
                skip = _skip_reason(rev_dir)
                for s in scenarios:
                    cells.append(Cell(name, req, s, expect, defect, skip))
    ids = [c.id for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"{where}: cells declared twice: {', '.join(dupes)}")
    return Matrix(str(data["name"]), path, str(data.get("description") or "").strip(), tuple(cells))


def trees_used(mx: Matrix) -> list[str]:
    """The embedded trees (names) the cells of ``mx`` build on, the default tree first."""
    names = [c.request.tree or tree.DEFAULT_TREE for c in mx.cells if not c.skip]
    return [n for n in dict.fromkeys([tree.DEFAULT_TREE] + names) if n in tree.EMBEDDED_TREES]


def find_matrix(name: str, **kw) -> Matrix:
    """Load ``matrices/<name>.yaml`` (or a path to a matrix file)."""
    path = Path(name) if name.endswith(".yaml") else ROOT / "matrices" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (ROOT / "matrices").glob("*.yaml"))
        raise ConfigError(f"no matrix {name!r} (matrices/: {', '.join(known)})")
    return load_matrix(path, **kw)


class SharedArtifacts:
    """Guest artifacts per distinct :class:`Request`, built once and one build at a time: a
    build already uses every core (``make -j``), and worktree creation takes git's locks.
    A failed build is remembered, so every cell that needs it fails the same way at once.
    A cell that reuses a build records ``apply`` 0 and ``build`` as the seconds it waited."""

    def __init__(self, cache: Cache):
        self._cache = cache
        self._lock = threading.Lock()
        self._done: dict[Request, GuestArtifacts | HarnessError] = {}

    def __call__(self, req: Request, log: CommandLog, say: Say, timings: dict[str, float]) -> GuestArtifacts:
        key = replace(req, boot_timeout=0.0, profile="")
        start = time.monotonic()
        with self._lock:
            if key not in self._done:
                try:
                    self._done[key] = prepare_guest(req, self._cache, log, say, timings)
                except HarnessError as e:
                    self._done[key] = e
            else:  # built for an earlier cell: this one only waited for it
                say("build: shared with an earlier cell")
                timings.update(apply=0.0, build=time.monotonic() - start)
        got = self._done[key]
        if isinstance(got, HarnessError):
            raise copy.copy(got)
        if got.profile.name != req.profile:
            return replace(got, profile=qemu.find_profile(ROOT / "qemu-profiles", req.profile))
        return got


def select_cells(mx: Matrix, patterns: list[str]) -> Matrix:
    """``mx`` with only the cells whose id matches one of the glob ``patterns``.

    Raises ConfigError naming a pattern that matches no cell."""
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(c.id, pat) for c in mx.cells):
            raise ConfigError(f"{mx.path}: --cell {pat!r} matches no cell (see harness matrix {mx.path.stem} --list)")
    return replace(mx, cells=tuple(c for c in mx.cells if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)))


@dataclass
class MatrixResult:
    """The cells' results in matrix order, and the directory they were written to."""

    matrix: Matrix
    out_dir: Path
    cells: list[tuple[Cell, report.RunResult]] = field(default_factory=list)
    seconds: float = 0.0


def _skipped(cell: Cell, out: Path) -> report.RunResult:
    res = report.RunResult(command="", out_dir=out / cell.dirname, profile=cell.request.profile, cell=cell.id,
                           defect=cell.defect, skipped=cell.skip,
                           started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    report.write_results(res)
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
    done: dict[int, tuple[Cell, report.RunResult]] = {}

    def one(k: int, cell: Cell) -> report.RunResult:
        tag = f"[{k + 1}/{len(mx.cells)}]"
        if cell.skip:
            say(f"{tag} {cell.id}: SKIP: {cell.skip}")
            return _skipped(cell, out)
        if reason := unfetchable(cell, cache, CommandLog(out / cell.dirname / "commands.log")):
            say(f"{tag} {cell.id}: SKIP: {reason}")
            return _skipped(replace(cell, skip=reason), out)
        hooks = replace(hooks_base, stage=lambda text: stage(cell, text) if stage else None)
        say(f"{tag} {cell.id}")
        expect = str(cell.expect.relative_to(ROOT)) if cell.expect and cell.expect.is_relative_to(ROOT) else None
        return run_cell(cell.request, [cell.scenario], out / cell.dirname, cache, lambda m: say(f"{tag} {m}"),
                        cell.expect, reproducer(cell.request, [cell.scenario], expect), cell.defect, cell.id, hooks)

    def record(k: int, res: report.RunResult) -> None:
        done[k] = (mx.cells[k], res)
        result.cells = [done[i] for i in sorted(done)]
        result.seconds = time.monotonic() - start
        report.write_matrix(result)

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
        report.write_matrix(result)
    return result
