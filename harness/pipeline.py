"""One cell's pipeline: apply a revision, build it, boot a guest, run suspend/resume cycles,
check each one and write the run's results.

:func:`run_cell` is what ``harness run``, every cell of ``harness matrix``
(:mod:`harness.scheduler`) and every step of ``harness bisect`` (:mod:`harness.bisect_run`)
call; it and :mod:`harness.cli` are the only code that knows the whole chain.  Builds are
keyed by commit and configuration in the cache, so cells of the same revision build once
(:class:`SharedArtifacts` within a matrix).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import shlex
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from harness import (__version__, build, checks, dmesg, expectations, fetch, kcidb, kconfig, model, modules, qemu,
                     results, rootfs, series, ssh, suspend, timeouts, toolchain, tree)
from harness.cache import Cache
from harness.errors import BootError, HarnessError, Interrupted, UsageError, disk_full
from harness.guest import GuestSession
from harness.paths import DATA_ROOT
from harness.proc import CommandLog
from harness.scenarios import uniform
from harness.verdict import Verdict

#: A progress callback: one line for the user (the CLI logs it at INFO).
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
        return kconfig.fragment_paths(DATA_ROOT / "kconfigs", self.fragments)


@dataclass(frozen=True)
class KernelBuild:
    """An applied and built kernel: the worktree, the series (None without one), the build, the
    toolchain, and the seconds the apply and the build took (0 for a cache hit's make)."""

    tree: tree.AppliedTree
    series: series.Series | None
    build: build.BuildResult
    toolchain: toolchain.Toolchain
    apply_seconds: float
    build_seconds: float


@dataclass(frozen=True)
class GuestArtifacts:
    """What a guest needs: the tree and build it came from, the initramfs, the profile, and the
    seconds the apply and the kernel build took for this cell (a cell that shares an earlier
    cell's build: 0 and the seconds it waited).  Artifacts booted from a ``harness prebuild``
    directory (:mod:`harness.prebuilt`) carry it as ``prebuilt`` and the recorded series as
    ``series_doc`` (the :func:`series_record` of the build job; ``series`` is then None)."""

    tree: tree.AppliedTree
    series: series.Series | None
    build: build.BuildResult
    modules: tuple[modules.GuestModule, ...]
    initramfs: rootfs.Initramfs
    profile: qemu.QemuProfile
    apply_seconds: float = 0.0
    build_seconds: float = 0.0
    prebuilt: Path | None = None
    series_doc: dict | None = None


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
                             rev.base_commit if rev else None, say), rev


def build_kernel(req: Request, cache: Cache, log: CommandLog, say: Say) -> KernelBuild:
    """Apply and build.  Raises BuildError (5) and the above."""
    tc = toolchain.arm64(cache, req.jobs)
    start = time.monotonic()
    applied, rev = applied_tree(req, cache, log, say)
    apply_seconds = time.monotonic() - start
    requests = kconfig.merge(req.fragment_files())
    say(f"build {applied.describe} ({applied.commit[:12]}) for {tc.arch} ...")
    start = time.monotonic()
    built = build.build(applied, requests, tc, log, progress=lambda p: say(p.line()))
    build_seconds = time.monotonic() - start
    say(f"build: {'cache hit' if built.cache_hit else f'{built.seconds:.1f} s'}, {built.image}")
    return KernelBuild(applied, rev, built, tc, apply_seconds, build_seconds)


def prepare_guest(req: Request, cache: Cache, log: CommandLog, say: Say) -> GuestArtifacts:
    """Build the kernel, the guest modules against it, and the initramfs; find the profile.
    Holds the cache's sources lock meanwhile (another harness process on the same cache waits)."""
    with cache.sources_lock():
        kb = build_kernel(req, cache, log, say)
        mods = modules.build_modules(DATA_ROOT / "guest-rootfs" / "modules", kb.tree.path, kb.build, kb.toolchain,
                                     log)
        sysroot = fetch.guest_sysroot(cache, log)
        initramfs = rootfs.build_initramfs(DATA_ROOT / "guest-rootfs", sysroot, kb.tree.path, cache, log,
                                           tuple((m.ko, m.guest_path) for m in mods))
    profile = qemu.find_profile(DATA_ROOT / "qemu-profiles", req.profile)
    return GuestArtifacts(kb.tree, kb.series, kb.build, tuple(mods), initramfs, profile, kb.apply_seconds,
                          kb.build_seconds)


def guest_argv(art: GuestArtifacts, out_dir: Path, ssh_key: ssh.SshKey | None = None, ssh_port: int = 0) -> list[str]:
    """QEMU's argv for ``art``, with a fresh disk image in ``out_dir``; with ``ssh_key`` its
    public half on the kernel command line (:func:`harness.ssh.cmdline_entry`) and
    ``ssh_port`` forwarded from 127.0.0.1 to the guest's port 22 (if the profile does)."""
    disk = qemu.make_disk(out_dir / "disk.img", art.profile.disk_mb)
    return qemu.render_argv(art.profile, kernel=art.build.image, initrd=art.initramfs.path, disk=disk,
                            extra_append=ssh.cmdline_entry(ssh_key) if ssh_key else "", ssh_port=ssh_port)


#: How many times a boot is tried with a new SSH port when QEMU could not bind the one given
#: (another process took it between :meth:`harness.ssh.PortPool.allocate` and QEMU's bind).
SSH_PORT_TRIES = 3


def boot_with_ssh(art: GuestArtifacts, out: Path, log: CommandLog, boot_timeout: float,
                  say: Say = lambda text: None) -> tuple[GuestSession, ssh.SshTarget | None]:
    """Start a guest (entered :class:`GuestSession`) with a new key in ``out/ssh/`` and a free
    loopback port; the target is None when the profile forwards no port (no SSH).  Retries
    the boot with a new port, at most :data:`SSH_PORT_TRIES` times, when QEMU could not bind
    it; the caller closes the session and gives the port back (``ssh.PORTS.release``).
    Raises what :class:`GuestSession` raises."""
    key = ssh.new_key(out / "ssh" / "id_ed25519")
    for attempt in range(1, SSH_PORT_TRIES + 1):
        port = ssh.PORTS.allocate()
        argv = guest_argv(art, out, key, port)
        target = ssh.SshTarget(port, key) if qemu.forwards_ssh(argv, port) else None
        if target is None:
            ssh.PORTS.release(port)
        session = GuestSession(argv, out / "console.log", log, boot_timeout=boot_timeout)
        try:
            session.__enter__()
            return session, target
        except BootError:
            if target is not None:
                ssh.PORTS.release(port)
            busy = (out / "console.log").is_file() and qemu.HOSTFWD_BUSY in (out / "console.log").read_text(
                errors="replace")
            if not busy or attempt == SSH_PORT_TRIES:
                raise
            say(f"QEMU could not bind 127.0.0.1:{port} for SSH (taken meanwhile); booting again with a new port")
    raise AssertionError("unreachable")


#: The prefix of the lines that carry each pull command's exit status (:func:`pull_guest_state`).
_PULL_STATUS = "harness-pull-status: "


def pull_guest_state(link: ssh.SshLink, into: Path, last_dmesg: str | None) -> tuple[dict, list[str]]:
    """After the cycles, fetch over SFTP (``link``'s connection) into ``into``: the whole kernel
    log (``dmesg.txt``), ``interrupts.txt`` and ``suspend_stats.txt``
    (:data:`harness.suspend.SUSPEND_STATS`: one
    ``/sys/power/suspend_stats/NAME:VALUE`` line each, as sysfs files are not copied whole:
    busybox tar takes a sysfs file's 4096-byte st_size for its length).  Return
    (what was fetched: file name -> bytes, notes).  A note says when ``last_dmesg`` (the last
    cycle's log read on the console) has lines the SFTP dmesg lacks, or why a pull failed;
    nothing here fails the run."""
    into.mkdir(parents=True, exist_ok=True)
    files, notes = {}, []
    pulls = (("dmesg.txt", "dmesg > /tmp/harness-dmesg.txt", "/tmp/harness-dmesg.txt"),
             ("interrupts.txt", "cat /proc/interrupts > /tmp/harness-interrupts.txt", "/tmp/harness-interrupts.txt"),
             ("suspend_stats.txt", f"{suspend.SUSPEND_STATS} > /tmp/harness-stats.txt", "/tmp/harness-stats.txt"))
    # One exec channel for the three commands (a channel costs a round trip, and dropbear now
    # and then refuses one opened right after another closed), each followed by its exit status;
    # each one's stderr goes to the channel before that status line.
    script = "; ".join(f"{{ {command}; }} 2>&1; echo \"{_PULL_STATUS}{name} $?\"" for name, command, _ in pulls)
    try:
        s, _ = link.session(timeouts.SSH_RECONNECT)
        out, _ = s.run(script)
        status, said, lines = {}, {}, []  # each command's output is what comes before its status line
        for line in out.splitlines():
            if line.startswith(_PULL_STATUS) and " " in line:
                name, rc = line[len(_PULL_STATUS):].rsplit(" ", 1)
                status[name], said[name], lines = rc, "\n".join(lines).strip(), []
            else:
                lines.append(line)
        for name, command, remote in pulls:
            if status.get(name) != "0":
                notes.append(f"ssh pull: `{command}` exited {status.get(name, '(no status)')}: "
                             f"{said.get(name, '')[:200] or '(no output)'}")
                continue
            files[name] = s.get(remote, into / name).stat().st_size
    except HarnessError as e:
        link.drop()
        notes.append(f"ssh pull: {e}")
    if last_dmesg is not None and "dmesg.txt" in files:
        note = dmesg_mismatch((into / "dmesg.txt").read_text(errors="replace"), last_dmesg)
        if note:
            notes.append(note)
    return files, notes


def dmesg_mismatch(pulled: str, console: str) -> str | None:
    """A note when the kernel log fetched over SFTP (``pulled``) lacks lines of the one read on
    the console for the last cycle (``console``), else None.  The SFTP copy is read later, so
    it may have more lines; fewer means one of the two ways lost some."""
    have = set(pulled.splitlines())
    missing = [line for line in console.splitlines() if line.strip() and line not in have]
    if not missing:
        return None
    return (f"dmesg over SFTP lacks {len(missing)} of the last cycle's console-read lines, "
            f"first: {missing[0][:200]!r}")


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
    KCIDB's (:func:`harness.kcidb.patchset_hash`)."""
    if rev is None:
        return {"patchset_hash": "", "patches": []}
    patches = [{"index": p.index, "subject": p.subject, "message_id": p.msgid,
                "sha256": hashlib.sha256(p.raw).hexdigest()} for p in rev.patches[:applied]]
    return {"version": rev.version, "title": rev.title, "total": rev.total,
            "cover_message_id": rev.cover.msgid if rev.cover else None,
            "patchset_hash": kcidb.patchset_hash([p["sha256"] for p in patches]), "patches": patches}


@dataclass
class CellHooks:
    """How a cell run reports and is controlled from outside (the matrix runner).

    ``stage(text)`` is told each stage (``build``, ``boot``, ``cycle 2/5``, ``PASS``);
    ``artifacts(req, log, say)`` builds or returns the shared guest artifacts; ``stop`` is
    set when the run was interrupted (the matrix runner then also kills every command and
    guest, :data:`harness.proc.CHILDREN`), and the cell ends before its next cycle;
    ``keep_alive(ssh_target)``, when set, is called after the cycles with the guest still
    running and returns when it may be stopped (``harness matrix --keep-alive``)."""

    stage: Callable[[str], None] = lambda text: None
    artifacts: Callable[..., GuestArtifacts] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    keep_alive: Callable[["ssh.SshTarget | None"], None] | None = None


def end_with_error(result: results.RunResult, e: HarnessError) -> None:
    """End ``result`` with the typed error ``e``: its message, verdict, class name and exit code."""
    result.error, result.error_verdict = f"{type(e).__name__}: {e}", e.verdict
    result.error_type, result.exit_code = type(e).__name__, e.exit_code


def end_interrupted(result: results.RunResult) -> None:
    """End ``result`` as interrupted (SIGINT/SIGTERM/SIGHUP): ERROR, exit 130."""
    result.error, result.error_verdict, result.error_type = INTERRUPTED, Verdict.ERROR, "KeyboardInterrupt"
    result.exit_code = 130


def end_with_internal_error(result: results.RunResult, e: Exception, out: Path, cache: Cache) -> None:
    """End ``result`` with an unexpected exception ``e`` (being handled): a full disk under the
    cache is :class:`~harness.errors.DiskFull` (exit 9); anything else an internal error (exit
    10) with the traceback in ``out/internal-error.log``."""
    if isinstance(e, OSError) and (full := disk_full(e, str(cache.root))) is not None:
        end_with_error(result, full)
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "internal-error.log").write_text(traceback.format_exc())
    result.error = (f"InternalError: {type(e).__name__}: {e} (traceback in {out / 'internal-error.log'}; "
                    "please report it)")
    result.error_verdict, result.error_type, result.exit_code = Verdict.ERROR, "InternalError", 10


def run_cell(req: Request, scenarios: list[model.Scenario], out: Path, cache: Cache, say: Say,
             expect_path: Path | None, command: str, defect: str | None = None, cell: str = "",
             hooks: CellHooks | None = None) -> results.RunResult:
    """Build, boot one guest, run ``scenarios`` in order in it, check every cycle; return the result.

    Never raises a :class:`HarnessError`: it ends the result with ``error`` and its verdict
    (ERROR/HANG/FAIL).  ``results.json`` is written to ``out`` whatever happens.
    KeyboardInterrupt propagates after QEMU is stopped and results are written.
    """
    hooks = hooks or CellHooks()
    target: ssh.SshTarget | None = None
    out.mkdir(parents=True, exist_ok=True)
    log = CommandLog(out / "commands.log")
    result = results.RunResult(command=command, out_dir=out, profile=req.profile, defect=defect, cell=cell,
                              started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    result.versions = {"harness": __version__, "qemu": toolchain.qemu_version(cache=cache)}
    try:
        base_expect = expectations.load_expectations(expect_path) if expect_path else {}
        result.expectations = {"file": str(expect_path) if expect_path else None, "expect": base_expect}
        hooks.stage("build")
        art = (hooks.artifacts or functools.partial(prepare_guest, cache=cache))(
            req, log=log, say=say)
        result.timings.update(apply=art.apply_seconds, build=art.build_seconds)
        result.tree = {"path": str(art.tree.source.path), "worktree": str(art.tree.path),
                       "commit": art.tree.commit, "base": art.tree.base, "describe": art.tree.describe,
                       "version": art.tree.version, "embedded": art.tree.embedded, "name": art.tree.source.name,
                       "series_version": art.tree.series_version,
                       "patches": [{"index": i, "subject": s, "commit": c} for i, s, c in art.tree.patch_commits]}
        result.series = (art.series_doc if art.series_doc is not None
                         else series_record(art.series, len(art.tree.patch_commits)))
        result.build = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(art.build).items()}
        result.build["config"] = list(req.fragments)
        if art.prebuilt is not None:
            result.build["prebuilt"] = str(art.prebuilt)
        result.initramfs = {"path": str(art.initramfs.path), "sha256": art.initramfs.sha256}
        result.versions["gcc"] = art.build.gcc_version
        result.console_log = str(out / "console.log")
        say(f"boot {art.profile.name}, console log {result.console_log}")
        hooks.stage("boot")
        session, target = boot_with_ssh(art, out, log, req.boot_timeout, say)
        with session, (ssh.SshLink(target) if target else contextlib.nullcontext()) as link:
            result.qemu_argv = session.argv
            result.timings["boot"] = session.boot_seconds or 0.0
            say(f"guest shell after {result.timings['boot']:.2f} s")
            facts = suspend.prepare(session)
            result.guest = facts
            result.versions["kernel"] = facts.kernel_release
            if target is not None:
                start = time.monotonic()
                s, _ = link.session()  # dropbear must answer before any cycle; the cycles keep it
                release, _ = s.run("uname -r")
                result.timings["ssh_connect"] = time.monotonic() - start
                result.ssh = {"port": target.port, "key": str(target.key.path), "uname_r": release.strip(),
                              "command": target.command()}
                say(f"ssh: {target.command()}")
            start = time.monotonic()
            for scenario in scenarios:
                for i in range(1, scenario.cycles + 1):
                    if hooks.stop.is_set():
                        raise Interrupted(f"interrupted before {scenario.name} cycle {i}")
                    step = scenario.steps[i - 1]
                    hooks.stage(f"{scenario.name} {i}/{scenario.cycles}")
                    rec = suspend.run_cycle(session, scenario, i, facts, link)
                    dmesg_file = out / f"{scenario.name}-{i}.dmesg"
                    dmesg_file.write_text(rec.dmesg + "\n")
                    if rec.noirq_trace is not None:
                        (out / f"{scenario.name}-{i}.noirq-trace").write_text(rec.noirq_trace + "\n")
                    timeline = dmesg.parse(rec.dmesg)
                    verdicts = checks.check_cycle(rec, facts, timeline, {**base_expect, **step.expect}, step.checks)
                    result.cycles.append(results.CycleResult(rec, timeline, tuple(verdicts), dmesg_file.name))
                    retried = f", tried {len(rec.early_wakes) + 1} times: the wake alarm came early" \
                        if rec.early_wakes else ""
                    say(f"{scenario.name} #{i}/{scenario.cycles}{' ' + step.label if step.label else ''}: "
                        f"{result.cycles[-1].verdict} ({rec.seconds:.2f} s{retried})")
            result.timings["cycles"] = time.monotonic() - start
            last_traffic = result.cycles[-1].record.net_traffic if result.cycles else None
            if target is not None and last_traffic is not None and not last_traffic.ok and not last_traffic.skipped:
                result.notes.append("ssh pull: not tried, the last cycle's net-traffic failed (it would wait out "
                                    f"{timeouts.SSH_RECONNECT:.0f} s for nothing)")
            elif target is not None:
                start = time.monotonic()
                pulled, notes = pull_guest_state(link, out / "ssh", result.cycles[-1].record.dmesg
                                                 if result.cycles else None)
                result.ssh["pulled"] = pulled
                result.notes += notes
                result.timings["ssh_pull"] = time.monotonic() - start
            if hooks.keep_alive is not None:
                results.write_results(result)  # judged: the results stand while the guest is kept
                hooks.keep_alive(target)
    except HarnessError as e:
        if hooks.stop.is_set() or isinstance(e, Interrupted):
            end_interrupted(result)
        else:
            end_with_error(result, e)
    except KeyboardInterrupt:
        end_interrupted(result)
        raise
    except Exception as e:  # a fault of the harness: this cell is an ERROR, a matrix's other cells go on
        end_with_internal_error(result, e, out, cache)
    finally:
        if target is not None:
            ssh.PORTS.release(target.port)
        results.write_results(result)  # on a full disk this raises: DiskFull at the CLI
        disk = out / "disk.img"
        if disk.exists() and result.error is None and result.verdict == Verdict.PASS:
            disk.unlink()  # up to disk_mb of swap; kept only when the run needs a look
        hooks.stage(result.verdict)
    return result


class SharedArtifacts:
    """Guest artifacts per distinct :class:`Request`, built once and one build at a time: a
    build already uses every core (``make -j``), and worktree creation takes git's locks.
    A failed build is remembered, so every cell that needs it fails the same way at once.
    A cell that reuses a build records ``apply`` 0 and ``build`` as the seconds it waited."""

    def __init__(self, cache: Cache):
        self._cache = cache
        self._lock = threading.Lock()
        self._done: dict[Request, GuestArtifacts | HarnessError] = {}

    def __call__(self, req: Request, log: CommandLog, say: Say) -> GuestArtifacts:
        key = replace(req, boot_timeout=0.0, profile="")
        start = time.monotonic()
        shared = False
        with self._lock:
            if key not in self._done:
                try:
                    self._done[key] = prepare_guest(req, self._cache, log, say)
                except HarnessError as e:
                    self._done[key] = e
            else:  # built for an earlier cell: this one only waited for it
                say("build: shared with an earlier cell")
                shared = True
        got = self._done[key]
        if isinstance(got, HarnessError):
            raise copy.copy(got)
        if shared:
            got = replace(got, apply_seconds=0.0, build_seconds=time.monotonic() - start)
        if got.profile.name != req.profile:
            got = replace(got, profile=qemu.find_profile(DATA_ROOT / "qemu-profiles", req.profile))
        return got
