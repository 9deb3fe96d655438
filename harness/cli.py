"""Command line: ``harness setup|series|apply|build|boot|run|matrix|report|parse``.

This module and ``matrix.py`` are the only ones that know the whole
pipeline; every stage below is usable alone, as in kunit_tool.  Typed errors
from the stages are caught here and turned into exit codes:
0 pass, 1 a check failed, 2 usage/configuration, 3 series, 4 apply,
5 build, 6 boot, 7 guest hang, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from harness import (__version__, ci, dmesg, fetch, kconfig, lava, matrix, qemu, report, scenarios, series,
                     suspend, toolchain, tree)
from harness.cache import Cache, atomic_write
from harness.matrix import ROOT
from harness.errors import HarnessError, UsageError
from harness.guest import GuestSession
from harness.proc import CommandLog

_VERDICT_EXIT = {"PASS": 0, "SKIP": 0, "FAIL": 1, "XPASS": 1, "ERROR": 1, "HANG": 7}
#: Which exit status a matrix reports when its cells ended differently: an interrupt, then a
#: hang, then errors of the inputs (usage, series, apply, build, boot), then a failed check.
_MATRIX_EXIT_ORDER = (130, 7, 2, 3, 4, 5, 6, 1)


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
    p.add_argument("--scenario", action="append", metavar="NAME[:CYCLES]",
                   help="scenario in scenarios/ to run, with an optional cycle count; repeatable, in order "
                        "(default: s2idle-rtc, pm-test-platform and hibernate-test-resume with the counts below)")
    p.add_argument("--rtc-cycles", type=int, default=3, help="s2idle cycles woken by the PL031 alarm (default 3)")
    p.add_argument("--pm-test-cycles", type=int, default=1, help="pm_test=platform cycles (default 1)")
    p.add_argument("--hibernate-cycles", type=int, default=0,
                   help="hibernation test_resume cycles with swap on the virtio-blk disk (default 0)")
    p.add_argument("--wake-seconds", type=int, default=2, help="RTC alarm delay in seconds (default 2)")
    p.add_argument("--cycle-timeout", type=float, default=90.0, metavar="SECONDS",
                   help="seconds a suspend may take before the guest counts as hung (default 90)")

    p = sub.add_parser("matrix", help="run every cell (revision x profile x scenario) of a matrix file")
    p.add_argument("matrix", nargs="?", default="default",
                   help="name in matrices/ or path to a matrix YAML file (default: default)")
    p.add_argument("--out", metavar="DIR", help="results directory (default: $HARNESS_CACHE/runs/matrix-<name>-<time>)")
    p.add_argument("--kconfig", metavar="FRAGMENT", action="append", help="kconfig fragments for every cell")
    p.add_argument("-j", "--jobs", type=int, metavar="N",
                   help="cells run at once, each with its own guest (default: number of CPUs); "
                        "builds run one at a time with make -j<CPUs>")
    p.add_argument("--boot-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="seconds to wait for each guest shell (default: 120)")
    p.add_argument("--list", action="store_true", help="list the cells and exit")
    p.add_argument("--cell", action="append", metavar="PATTERN",
                   help="run only the cells whose id (revision/profile/scenario) matches; glob, repeatable")

    p = sub.add_parser("ci", help="CI workflow definitions from a matrix")
    csub = p.add_subparsers(dest="ci_command", required=True)
    p = csub.add_parser("generate", help="write a GitHub Actions workflow and a GitLab CI pipeline, one job per cell")
    p.add_argument("matrix", nargs="?", default="default", help="name in matrices/ or path (default: default)")
    p.add_argument("--out", type=Path, default=ROOT / "ci", help="directory to write into (default: ci/)")

    p = sub.add_parser("lava", help="LAVA job definitions for a distributed lab")
    lsub = p.add_subparsers(dest="lava_command", required=True)
    p = lsub.add_parser("export", help="build each cell's kernel and initramfs, write one LAVA job per cell "
                                       "and a qemu device dictionary per profile, validated with lava-common")
    p.add_argument("matrix", nargs="?", default="default", help="name in matrices/ or path (default: default)")
    p.add_argument("--cell", action="append", metavar="PATTERN", help="only the cells whose id matches (glob)")
    p.add_argument("--out", type=Path, required=True, help="directory for jobs, device dictionaries and disk images")

    p = sub.add_parser("report", help="re-render junit.xml, kcidb.json and report.html from a saved run directory")
    p.add_argument("run_dir", type=Path, metavar="RESULTS_DIR", help="a harness run or matrix output directory")

    p = sub.add_parser("parse", help="parse a saved dmesg or console log into PM phases")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print the stable JSON form")
    return parser


def _say(message: str) -> None:
    """Progress line on stderr (stdout carries the report)."""
    print(f"harness: {message}", file=sys.stderr, flush=True)


def _request(args) -> matrix.Request:
    return matrix.Request(series=getattr(args, "series", None), tree=args.tree, base=args.base, upto=args.upto,
                          series_version=getattr(args, "series_version", None),
                          b4_local_mbox=getattr(args, "b4_local_mbox", None),
                          kconfig=tuple(args.kconfig) if args.kconfig else None, jobs=args.jobs,
                          profile=getattr(args, "profile", "virt-mmio"),
                          boot_timeout=getattr(args, "boot_timeout", 120.0))


def _parse_scenario(spec: str) -> suspend.Scenario:
    """``NAME`` or ``NAME:CYCLES``."""
    name, _, count = spec.partition(":")
    scenario = scenarios.find_scenario(name)
    if count:
        if not count.isdigit():
            raise UsageError(f"--scenario {spec}: the cycle count after ':' must be a number")
        scenario = scenarios.with_cycles(scenario, int(count), f"--scenario {spec}: ")
    return scenario


def _scenarios(args) -> list[suspend.Scenario]:
    """``--scenario`` as given, else the default three with the --*-cycles counts."""
    if args.scenario:
        return [_parse_scenario(s) for s in args.scenario]
    wanted = [("s2idle-rtc", args.rtc_cycles), ("pm-test-platform", args.pm_test_cycles),
              ("hibernate-test-resume", args.hibernate_cycles)]
    out = []
    for name, n in wanted:
        if n < 0:
            raise UsageError(f"cycle count for {name} must be >= 0, got {n}")
        if n > 0:
            s = scenarios.with_cycles(scenarios.find_scenario(name), n)
            out.append(replace(s, wake_seconds=args.wake_seconds, timeout=args.cycle_timeout))
    return out


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
    applied, _ = matrix.applied_tree(_request(args), cache, log, _say)
    print(f"worktree: {applied.path}")
    print(f"base:     {applied.base}")
    for index, subject, sha in applied.patch_commits:
        print(f"  {index:>2} {sha[:12]} {subject}")
    print(f"HEAD:     {applied.commit}")
    return 0


def cmd_build(args, cache: Cache) -> int:
    log = CommandLog(cache.root / "build.log")
    _, _, result, _ = matrix.build_kernel(_request(args), cache, log, _say, {})
    print(f"Image: {result.image}")
    print(f"build: {result.out_dir} ({'cache hit' if result.cache_hit else f'{result.seconds:.1f} s'})")
    return 0


def cmd_boot(args, cache: Cache) -> int:
    out = cache.root / "runs" / ("boot-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    log = CommandLog(out / "commands.log")
    art = matrix.prepare_guest(_request(args), cache, log, _say, {})
    with GuestSession(matrix.guest_argv(art, out), out / "console.log", log,
                      boot_timeout=args.boot_timeout) as session:
        print(f"guest up after {session.boot_seconds:.2f} s; Ctrl-] leaves (QEMU is then stopped)")
        session.interact()
    return 0


def _exit_code(verdict: str, error_exit: int | None) -> int:
    return error_exit if error_exit is not None else _VERDICT_EXIT[verdict]


def cmd_run(args, cache: Cache) -> int:
    out = Path(args.out) if args.out else cache.root / "runs" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    req = _request(args)
    scenarios = _scenarios(args)
    expect_path = matrix.expectations_file(req.series, args.expect)
    defect = matrix.defect_name(Path(req.series)) if req.series else None
    revision = Path(req.series).name if req.series else "baseline"
    cell = f"{revision}/{req.profile}/{'+'.join(s.name for s in scenarios)}"
    result = matrix.run_cell(req, scenarios, out.resolve(), cache, _say, expect_path,
                             matrix.reproducer(req, scenarios, args.expect), defect, cell)
    report.print_summary(result)
    _write_reports(out.resolve())
    return _exit_code(result.verdict, result.exit_code)


def _write_reports(run_dir: Path) -> None:
    for kind, path in report.write_reports(run_dir).items():
        print(f"{kind}: {path}")


def cmd_matrix(args, cache: Cache) -> int:
    mx = matrix.find_matrix(args.matrix, kconfig_override=tuple(args.kconfig) if args.kconfig else None,
                            boot_timeout=args.boot_timeout)
    if args.cell:
        mx = matrix.select_cells(mx, args.cell)
    if args.list:
        for cell in mx.cells:
            print(f"{cell.id}  ({cell.scenario.cycles} cycles{', defect ' + cell.defect if cell.defect else ''})"
                  + (f"  SKIP: {cell.skip}" if cell.skip else ""))
        return 0
    out = Path(args.out) if args.out else cache.root / "runs" / (
        f"matrix-{mx.name}-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    _say(f"matrix {mx.name}: {len(mx.cells)} cells into {out}")
    with report.MatrixProgress(mx.cells) as progress:
        result = matrix.run_matrix(mx, out.resolve(), cache, progress.say, args.jobs, progress.stage)
    report.print_matrix(result)
    _write_reports(out.resolve())
    return matrix_exit([_exit_code(run.verdict, run.exit_code) for _, run in result.cells])


def matrix_exit(codes: list[int]) -> int:
    """The exit status of a matrix run from its cells' exit statuses (see _MATRIX_EXIT_ORDER)."""
    return next((c for c in _MATRIX_EXIT_ORDER if c in codes), 0)


def cmd_ci(args, cache: Cache) -> int:
    mx = matrix.find_matrix(args.matrix)
    for name, text in ci.render(mx).items():
        print(atomic_write(args.out / name, text))
    return 0


def cmd_lava(args, cache: Cache) -> int:
    mx = matrix.find_matrix(args.matrix)
    if args.cell:
        mx = matrix.select_cells(mx, args.cell)
    out = args.out.resolve()
    log = CommandLog(out / "commands.log")
    shared = matrix.SharedArtifacts(cache)
    jobs = []
    for cell in mx.cells:
        if cell.skip or cell.scenario.kind == "hibernate":
            print(f"skip {cell.id}: {cell.skip or 'hibernation is not exported (swap set-up)'}")
            continue
        art = shared(cell.request, log, _say, {})
        device = lava.dump(out / f"device-{art.profile.name}.yaml", lava.device_dictionary(art.profile))
        disk = qemu.make_disk(out / cell.dirname / "disk.img", art.profile.disk_mb)
        jobs.append(lava.dump(out / cell.dirname / "job.yaml", lava.job(
            cell.id, cell.scenario, art.profile, art.build.image, art.initramfs.path, disk)))
        print(f"{jobs[-1]}  (device {device.name})")
    lava.validate(jobs)
    print(f"{len(jobs)} job(s) pass LAVA's schema; run one with: lava-run --job-id 1 --output-dir DIR "
          f"--device {out}/device-PROFILE.yaml JOB")
    return 0


def cmd_report(args, cache: Cache) -> int:
    _write_reports(args.run_dir)
    return 0


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


_COMMANDS = {"setup": cmd_setup, "series": cmd_series, "apply": cmd_apply, "build": cmd_build, "boot": cmd_boot,
             "run": cmd_run, "matrix": cmd_matrix, "report": cmd_report, "ci": cmd_ci, "lava": cmd_lava, "parse": cmd_parse}


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
