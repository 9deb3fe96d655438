"""Command line: ``harness setup|build|boot|run|parse``.

This module and (later) ``matrix.py`` are the only ones that know the whole
pipeline; every stage below is usable alone, as in kunit_tool.  Typed errors
from the stages are caught here and turned into exit codes:
0 pass, 1 a check failed, 2 usage/configuration, 3 series, 4 apply,
5 build, 6 boot, 7 guest hang, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness import (__version__, build, checks, dmesg, fetch, kconfig, modules, qemu, report, rootfs, series,
                     suspend, toolchain, tree)
from harness.cache import Cache
from harness.errors import HarnessError, UsageError
from harness.guest import GuestSession
from harness.proc import CommandLog

#: The repository root (kconfigs/, qemu-profiles/, guest-rootfs/ live here).
ROOT = Path(__file__).resolve().parent.parent

_VERDICT_EXIT = {"PASS": 0, "FAIL": 1, "XPASS": 1, "ERROR": 1, "HANG": 7}


@dataclass(frozen=True)
class GuestArtifacts:
    """What a guest needs: the tree and build it came from, the initramfs, the profile."""

    tree: tree.AppliedTree
    build: build.BuildResult
    modules: tuple[modules.GuestModule, ...]
    initramfs: rootfs.Initramfs
    profile: qemu.QemuProfile


def _add_series_options(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("series", metavar="SERIES", help="mbox, patch directory, lore message-id, or patches/NAME")
    else:
        p.add_argument("--series", metavar="SERIES",
                       help="revision to apply: mbox, patch directory, lore message-id, or patches/NAME")
    p.add_argument("--series-version", type=int, metavar="N", help="with a message-id: which revision (b4 am -v N)")
    p.add_argument("--b4-local-mbox", type=Path, metavar="MBOX",
                   help="with a message-id: let b4 read this mbox instead of lore (b4 am -m)")


def _add_tree_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tree", metavar="PATH", help="kernel git tree (default: the embedded linux-source-6.12)")
    p.add_argument("--base", metavar="REF",
                   help="commit to apply the series on (default: its base-commit if the tree has it, else HEAD)")
    p.add_argument("--upto", type=int, metavar="K", help="apply only the first K patches of the series")
    p.add_argument("--kconfig", metavar="FRAGMENT", action="append",
                   help=f"kconfig fragment name in kconfigs/ or path; repeatable "
                        f"(default: {' '.join(kconfig.DEFAULT_FRAGMENTS)})")
    p.add_argument("-j", "--jobs", type=int, help="make -j (default: number of CPUs)")


def _add_guest_options(p: argparse.ArgumentParser) -> None:
    _add_series_options(p)
    _add_tree_options(p)
    p.add_argument("--profile", default="virt-mmio", help="QEMU profile in qemu-profiles/ (default: virt-mmio)")
    p.add_argument("--boot-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="seconds to wait for the guest shell (default: 120)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for all subcommands."""
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("setup", help="download guest packages and import the default kernel tree into the cache")

    p = sub.add_parser("series", help="inspect a series revision")
    ssub = p.add_subparsers(dest="series_command", required=True)
    p = ssub.add_parser("show", help="table of a revision: version, index, subject, author, msgid, base")
    _add_series_options(p, positional=True)

    p = sub.add_parser("apply", help="apply a revision with git am in its own worktree; print path and commits")
    _add_series_options(p, positional=True)
    _add_tree_options(p)

    p = sub.add_parser("build", help="configure and build a kernel Image and modules")
    _add_series_options(p)
    _add_tree_options(p)

    p = sub.add_parser("boot", help="build, then boot the guest with its console on this terminal")
    _add_guest_options(p)

    p = sub.add_parser("run", help="build, boot, run suspend/resume cycles, check and report")
    _add_guest_options(p)
    p.add_argument("--out", metavar="DIR", help="results directory (default: $HARNESS_CACHE/runs/<time>)")
    p.add_argument("--expect", metavar="FILE",
                   help="expect.yaml naming the checks this revision should fail (default: the series' own, "
                        "or patches/baseline-6.12/expect.yaml without a series)")
    p.add_argument("--rtc-cycles", type=int, default=3, help="s2idle cycles woken by the PL031 alarm (default 3)")
    p.add_argument("--pm-test-cycles", type=int, default=1, help="pm_test=platform cycles (default 1)")
    p.add_argument("--hibernate-cycles", type=int, default=0,
                   help="hibernation test_resume cycles with swap on the virtio-blk disk (default 0)")
    p.add_argument("--wake-seconds", type=int, default=2, help="RTC alarm delay in seconds (default 2)")
    p.add_argument("--cycle-timeout", type=float, default=90.0, metavar="SECONDS",
                   help="seconds a suspend may take before the guest counts as hung (default 90)")

    p = sub.add_parser("parse", help="parse a saved dmesg or console log into PM phases")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print the stable JSON form")
    return parser


def _say(message: str) -> None:
    """Progress line on stderr (stdout carries the report)."""
    print(f"harness: {message}", file=sys.stderr, flush=True)


def _load_series(args, cache: Cache, log: CommandLog) -> series.Series | None:
    spec = getattr(args, "series", None)
    if not spec:
        return None
    rev, _ = series.load_revision(spec, cache, log, version=args.series_version, local_mbox=args.b4_local_mbox)
    return rev


def _applied_tree(args, cache: Cache, log: CommandLog) -> tree.AppliedTree:
    """The worktree to build: the tree at its base, with the series (or its first --upto patches)."""
    kt = tree.resolve_tree(args.tree, cache, log)
    rev = _load_series(args, cache, log)
    base, warning = tree.resolve_base(kt, args.base, rev.base_commit if rev else None, log)
    if warning:
        _say(f"warning: {warning}")
    patches = ()
    if rev:
        upto = rev.total if args.upto is None else args.upto
        if not 0 <= upto <= rev.total:
            raise UsageError(f"--upto {args.upto}: the revision has {rev.total} patches")
        patches = rev.patches[:upto]
        _say(f"apply v{rev.version} patches 1-{upto} of {rev.total} on {base[:12]}")
    elif args.upto is not None:
        raise UsageError("--upto needs --series")
    return tree.apply_series(kt, base, patches, cache, log, rev.version if rev else None,
                             rev.base_commit if rev else None)


def _build(args, cache: Cache, log: CommandLog,
           timings: dict[str, float]) -> tuple[tree.AppliedTree, build.BuildResult, toolchain.Toolchain]:
    tc = toolchain.arm64(cache, args.jobs)
    applied = _applied_tree(args, cache, log)
    requests = kconfig.merge(kconfig.fragment_paths(ROOT / "kconfigs", args.kconfig or kconfig.DEFAULT_FRAGMENTS))
    _say(f"build {applied.describe} ({applied.commit[:12]}) for {tc.arch} ...")
    start = time.monotonic()
    built = build.build(applied, requests, tc, log)
    timings["build"] = time.monotonic() - start
    _say(f"build: {'cache hit' if built.cache_hit else f'{built.seconds:.1f} s'}, {built.image}")
    return applied, built, tc


def _prepare_guest(args, cache: Cache, log: CommandLog, timings: dict[str, float]) -> GuestArtifacts:
    kt, built, tc = _build(args, cache, log, timings)
    mods = modules.build_modules(ROOT / "guest-rootfs" / "modules", kt.path, built, tc, log)
    sysroot = fetch.guest_sysroot(cache, log)
    initramfs = rootfs.build_initramfs(ROOT / "guest-rootfs", sysroot, kt.path, cache, log,
                                       tuple((m.ko, m.guest_path) for m in mods))
    profile = qemu.find_profile(ROOT / "qemu-profiles", args.profile)
    return GuestArtifacts(kt, built, tuple(mods), initramfs, profile)


def expectations_file(args) -> Path | None:
    """``--expect``, else ``expect.yaml`` beside the series (patches/NAME), else the baseline's
    when no series is applied; None when the series has none (everything expected to pass)."""
    if getattr(args, "expect", None):
        return Path(args.expect)
    spec = getattr(args, "series", None)
    if spec:
        beside = Path(spec) / "expect.yaml"
        return beside if beside.is_file() else None
    return ROOT / "patches" / "baseline-6.12" / "expect.yaml"


def _argv(art: GuestArtifacts, out_dir: Path) -> list[str]:
    disk = qemu.make_disk(out_dir / "disk.img", art.profile.disk_mb)
    return qemu.render_argv(art.profile, kernel=art.build.image, initrd=art.initramfs.path, disk=disk)


def _scenarios(args) -> list[suspend.Scenario]:
    wanted = [("s2idle-rtc", "rtc", args.rtc_cycles), ("pm-test-platform", "pm_test", args.pm_test_cycles),
              ("hibernate-test-resume", "hibernate", args.hibernate_cycles)]
    for name, _, n in wanted:
        if n < 0:
            raise UsageError(f"cycle count for {name} must be >= 0, got {n}")
    return [suspend.Scenario(name, kind, n, wake_seconds=args.wake_seconds, timeout=args.cycle_timeout)
            for name, kind, n in wanted if n > 0]


def _reproducer(args) -> str:
    argv = ["harness", "run", "--profile", args.profile]
    if args.tree:
        argv += ["--tree", str(Path(args.tree).resolve())]
    for opt in ("series", "base", "upto", "series_version", "expect"):
        if getattr(args, opt, None) is not None:
            argv += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    for frag in args.kconfig or []:
        argv += ["--kconfig", frag]
    argv += ["--rtc-cycles", str(args.rtc_cycles), "--pm-test-cycles", str(args.pm_test_cycles),
             "--hibernate-cycles", str(args.hibernate_cycles), "--wake-seconds", str(args.wake_seconds)]
    return shlex.join(argv)


def cmd_setup(args, cache: Cache) -> int:
    log = CommandLog(cache.root / "setup.log")
    toolchain.check_host_tools()
    sysroot = fetch.guest_sysroot(cache, log)
    kt = tree.embedded_tree(cache, log)
    print(f"cache:    {cache.root}")
    print(f"sysroot:  {sysroot}")
    print(f"tree:     {kt.path} ({kt.describe}, {kt.commit[:12]}, Linux {kt.version})")
    print(f"compiler: {toolchain.arm64(cache).gcc_version}")
    print(f"qemu:     {toolchain.qemu_version()}")
    return 0


def cmd_series(args, cache: Cache) -> int:
    log = CommandLog(cache.root / "series.log")
    rev, manifest = series.load_revision(args.series, cache, log, version=args.series_version,
                                         local_mbox=args.b4_local_mbox)
    report.print_series(rev, manifest)
    return 0


def cmd_apply(args, cache: Cache) -> int:
    log = CommandLog(cache.root / "apply.log")
    if not args.series:
        raise UsageError("harness apply needs a series")
    applied = _applied_tree(args, cache, log)
    print(f"worktree: {applied.path}")
    print(f"base:     {applied.base}")
    for index, subject, sha in applied.patch_commits:
        print(f"  {index:>2} {sha[:12]} {subject}")
    print(f"HEAD:     {applied.commit}")
    return 0


def cmd_build(args, cache: Cache) -> int:
    log = CommandLog(cache.root / "build.log")
    _, result = _build(args, cache, log, {})
    print(f"Image: {result.image}")
    print(f"build: {result.out_dir} ({'cache hit' if result.cache_hit else f'{result.seconds:.1f} s'})")
    return 0


def cmd_boot(args, cache: Cache) -> int:
    out = cache.root / "runs" / ("boot-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    log = CommandLog(out / "commands.log")
    art = _prepare_guest(args, cache, log, {})
    with GuestSession(_argv(art, out), out / "console.log", log, boot_timeout=args.boot_timeout) as session:
        print(f"guest up after {session.boot_seconds:.2f} s; Ctrl-] leaves (QEMU is then stopped)")
        session.interact()
    return 0


def cmd_run(args, cache: Cache) -> int:
    out = Path(args.out) if args.out else cache.root / "runs" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = CommandLog(out / "commands.log")
    scenarios = _scenarios(args)
    result = report.RunResult(command=_reproducer(args), out_dir=out, profile=args.profile)
    result.versions = {"harness": __version__, "qemu": toolchain.qemu_version()}
    exit_code = None
    try:
        expect_path = expectations_file(args)
        expect = checks.load_expectations(expect_path) if expect_path else {}
        result.expectations = {"file": str(expect_path) if expect_path else None, "expect": expect}
        art = _prepare_guest(args, cache, log, result.timings)
        result.tree = {"path": str(art.tree.source.path), "worktree": str(art.tree.path),
                       "commit": art.tree.commit, "base": art.tree.base, "describe": art.tree.describe,
                       "version": art.tree.version, "embedded": art.tree.embedded,
                       "series_version": art.tree.series_version,
                       "patches": [{"index": i, "subject": s, "commit": c} for i, s, c in art.tree.patch_commits]}
        result.build = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(art.build).items()}
        result.initramfs = {"path": str(art.initramfs.path), "sha256": art.initramfs.sha256}
        result.versions["gcc"] = art.build.gcc_version
        result.qemu_argv = _argv(art, out)
        result.console_log = str(out / "console.log")
        _say(f"boot {art.profile.name}, console log {result.console_log}")
        with GuestSession(result.qemu_argv, out / "console.log", log, boot_timeout=args.boot_timeout) as session:
            result.timings["boot"] = session.boot_seconds or 0.0
            _say(f"guest shell after {result.timings['boot']:.2f} s")
            facts = suspend.prepare(session)
            result.guest = facts
            result.versions["kernel"] = facts.kernel_release
            start = time.monotonic()
            for scenario in scenarios:
                for i in range(1, scenario.cycles + 1):
                    rec = suspend.run_cycle(session, scenario, i)
                    dmesg_file = out / f"{scenario.name}-{i}.dmesg"
                    dmesg_file.write_text(rec.dmesg + "\n")
                    timeline = dmesg.parse(rec.dmesg)
                    result.cycles.append(report.CycleResult(
                        rec, timeline, tuple(checks.check_cycle(rec, facts, timeline, expect)), dmesg_file.name))
                    _say(f"{scenario.name} #{i}/{scenario.cycles}: {result.cycles[-1].verdict} ({rec.seconds:.2f} s)")
            result.timings["cycles"] = time.monotonic() - start
    except HarnessError as e:
        result.error = f"{type(e).__name__}: {e}"
        result.error_verdict = e.verdict
        exit_code = e.exit_code
    except KeyboardInterrupt:
        result.error, result.error_verdict = "interrupted (Ctrl-C or SIGTERM); QEMU was stopped", "ERROR"
        raise
    finally:
        report.write_results(result)
        disk = out / "disk.img"
        if disk.exists() and exit_code is None and result.verdict == "PASS":
            disk.unlink()  # up to disk_mb of swap; kept only when the run needs a look
    report.print_summary(result)
    return exit_code if exit_code is not None else _VERDICT_EXIT[result.verdict]


def cmd_parse(args, cache: Cache) -> int:
    try:
        # bytes, not read_text(): universal newlines would split "\r\r\n" into two lines
        text = args.file.read_bytes().decode(errors="replace")
    except OSError as e:
        raise UsageError(f"cannot read {args.file}: {e.strerror}") from e
    timeline = dmesg.parse(text)
    if args.json:
        json.dump(timeline.to_json(), sys.stdout, indent=2)
        print()
        return 0
    if not timeline.transitions:
        print(f"{args.file}: no suspend or hibernation transitions found")
    for n, tr in enumerate(timeline.transitions, 1):
        print(f"transition {n}: {tr.kind}{' (' + tr.label + ')' if tr.label else ''}"
              f"{' pm_test' if tr.pm_test else ''} lines {tr.start_seq}-{tr.end_seq}"
              f"{f' wake IRQ {tr.wakeup_irq}' if tr.wakeup_irq is not None else ''}")
        for p in tr.phases:
            print(f"  {p.name:<14} {len(p.events):3d} callbacks"
                  f"{f'  {p.msecs:.3f} ms' if p.msecs is not None else ''}{'  ABORTED' if p.aborted else ''}")
            for e in p.events:
                print(f"      #{e.seq:<6} {e.driver or '-'} {e.device} {e.callback}"
                      f"{' [' + e.module + ']' if e.module else ''} rc={e.rc} {e.usecs}us")
    for w in timeline.warnings:
        print(f"problem #{w.seq} {w.kind}: {w.text}")
    return 0


_COMMANDS = {"setup": cmd_setup, "series": cmd_series, "apply": cmd_apply, "build": cmd_build, "boot": cmd_boot, "run": cmd_run, "parse": cmd_parse}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``harness`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    cache = Cache.from_env()
    try:
        return _COMMANDS[args.command](args, cache)
    except HarnessError as e:
        print(f"harness {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
