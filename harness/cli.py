"""Command line: ``harness setup|series|apply|build|boot|run|matrix|bisect|report|parse``.

This module and ``matrix.py`` are the only ones that know the whole
pipeline; every stage below is usable alone, as in kunit_tool.  Typed errors
from the stages are caught here and turned into exit codes:
0 pass, 1 a check failed, 2 usage/configuration, 3 series, 4 apply,
5 build, 6 boot, 7 guest hang, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from harness import (__version__, bisect, bisect_report, bisect_run, ci, dmesg, fetch, kconfig, lava, matrix,
                     model, proc, qemu, report, scenarios, series, timeouts, toolchain, tree)
from harness.cache import Cache, atomic_write
from harness.matrix import ROOT
from harness.errors import HarnessError, UsageError
from harness.guest import GuestSession
from harness.proc import CommandLog
from harness.verdict import Verdict

_LOG = logging.getLogger("harness")

#: The exit status of a run or matrix by its verdict (bisect has its own: 0 good, 1 bad, 125 skip).
VERDICT_EXIT = {Verdict.PASS: 0, Verdict.XFAIL: 0, Verdict.SKIP: 0, Verdict.FAIL: 1, Verdict.XPASS: 1,
                Verdict.ERROR: 1, Verdict.HANG: 7}
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
    p.add_argument("--tree", metavar="PATH|NAME", help=TREE_HELP)
    p.add_argument("--base", metavar="REF",
                   help="commit to apply the series on (default: its base-commit if the tree has it, else HEAD)")
    p.add_argument("--upto", type=int, metavar="K", help="apply only the first K patches of the series")
    p.add_argument("--kconfig", metavar="FRAGMENT", action="append",
                   help=f"kconfig fragment name in kconfigs/ or path; repeatable "
                        f"(default: {' '.join(kconfig.DEFAULT_FRAGMENTS)})")
    p.add_argument("-j", "--jobs", type=int, help="make -j (default: number of CPUs)")


TREE_HELP = (f"kernel git tree: a path to your checkout (never written to), or an embedded tree: "
             f"{', '.join(f'{n} ({s.description})' for n, s in fetch.EMBEDDED_TREES.items())} "
             f"(default: {fetch.DEFAULT_TREE})")

GIT_BISECT_RUN_HELP = """\
With --bisect-exit, `git bisect run harness run --tree . --bisect-exit --check NAME` works:
the harness builds the checked-out commit in a worktree of its own (the tree is never written
to) and exits
    0    good: NAME passed (with --first-fixed: NAME failed)
    1    bad:  NAME failed in at least --threshold cycles (with --first-fixed: passed)
  125    skip: the patch did not apply, the tree did not build, a kconfig symbol did not
         survive olddefconfig, or NAME did not run in any cycle
  128    error, answer unknown (harness or input error, guest crash): git aborts the bisect
  134    the guest did not boot (128 + 6)      135  the guest hung (128 + 7)
  130    interrupted
Without --check the run's verdict against the expectations decides (PASS good, FAIL bad)."""

BISECT_HELP = """\
Find where a check changes, by binary search with real builds, boots and suspend cycles.

  harness bisect --series patches/defects/double-reinit --check devices-work
  harness bisect --series patches/v9-backport-6.12 --check consumer-ready --first-fixed
  harness bisect --revisions patches/v9-backport-6.12 patches/defects/late-provider \\
                 patches/defects/no-noirq-wiring --check consumer-ready --then-patches

Over the patches of a revision (--series) step k is its first k patches applied on the base
(0 = the base itself); --good/--bad (default 0 and N) are taken on trust while the search
narrows and tested when they border the answer, so both the last good and the first bad step
come with evidence.  Over revisions (--revisions) the first revision is tested first and the
search finds the first revision whose outcome differs from it.

A step is bad when a --check failed (FAIL, or XFAIL: expectations do not matter here) in at
least --threshold cycles (default 1), or with --verdict when its verdict is not PASS; with
--first-fixed the search looks for the first step where the check passes.  A step that cannot
be tested (patch did not apply, build or kconfig failure) is skipped and a neighbour is tried;
a step that ends in an error (hang, boot failure, harness failure) is run once more, and a
second error stops the bisect with the reason: never counted good or bad.  Each step's results
directory is kept under DIR/steps/ and in the cache, and reused when the same step (base,
patches, kconfig, scenario, profile, expectations, guest recipe) is asked again.

Leaves DIR/bisect.json (steps, outcomes, the answer, a reproducer per step), DIR/bisect.log
(git bisect log form) and DIR/report.html (the last good and first bad step side by side).

Exit: 0 a first bad patch or revision named; 1 no single answer (skips hide it, or an end
is not what it was said to be); 2 usage; 3 series error; the step's code (6 boot, 7 hang, ...)
when a step failed twice; 130 interrupted."""


def _add_criterion_options(p) -> None:
    p.add_argument("--check", action="append", metavar="NAME",
                   help="check whose failure makes a step bad; repeatable (any of them)")
    p.add_argument("--threshold", type=int, default=1, metavar="M",
                   help="bad only when the check failed in at least M cycles (default 1)")
    p.add_argument("--first-fixed", action="store_true",
                   help="look for the first step where the check passes (terms broken/fixed)")


def _add_guest_options(p: argparse.ArgumentParser) -> None:
    _add_series_options(p)
    _add_tree_options(p)
    p.add_argument("--profile", default="virt-mmio", help="QEMU profile in qemu-profiles/ (default: virt-mmio)")
    p.add_argument("--boot-timeout", type=float, default=timeouts.BOOT, metavar="SECONDS",
                   help=f"seconds to wait for the guest shell (default: {timeouts.BOOT:g})")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for all subcommands."""
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    # -v/-q on every command that runs (not on the groups: a group's default would reset them)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="also show every host command and guest command (-vv: their output too)")
    common.add_argument("-q", "--quiet", action="count", default=0, help="show only warnings and errors")

    p = sub.add_parser("setup", parents=[common], help="download guest packages and import the embedded kernel trees into the cache")
    p.add_argument("--tree", action="append", metavar="NAME", choices=sorted(tree.EMBEDDED_TREES),
                   help="embedded tree to fetch and import; repeatable (default: those matrices/default.yaml uses)")

    p = sub.add_parser("series", help="inspect a series revision")
    ssub = p.add_subparsers(dest="series_command", required=True)
    p = ssub.add_parser("show", parents=[common], help="table of a revision: version, index, subject, author, msgid, base")
    _add_series_options(p, positional=True)

    p = sub.add_parser("apply", parents=[common], help="apply a revision with git am in its own worktree; print path and commits")
    _add_series_options(p, positional=True)
    _add_tree_options(p)

    p = sub.add_parser("build", parents=[common], help="configure and build a kernel Image and modules")
    _add_series_options(p)
    _add_tree_options(p)

    p = sub.add_parser("boot", parents=[common], help="build, then boot the guest with its console on this terminal")
    _add_guest_options(p)

    p = sub.add_parser("run", parents=[common], help="build, boot, run suspend/resume cycles, check and report",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--cycle-timeout", type=float, default=timeouts.CYCLE, metavar="SECONDS",
                   help=f"seconds a suspend may take before the guest counts as hung (default {timeouts.CYCLE:g})")
    g = p.add_argument_group("git bisect run", GIT_BISECT_RUN_HELP)
    g.add_argument("--bisect-exit", action="store_true",
                   help="exit with git bisect run's statuses (table above) instead of the harness's")
    _add_criterion_options(g)

    p = sub.add_parser("matrix", parents=[common], help="run every cell (revision x profile x scenario) of a matrix file")
    p.add_argument("matrix", nargs="?", default="default",
                   help="name in matrices/ or path to a matrix YAML file (default: default)")
    p.add_argument("--out", metavar="DIR", help="results directory (default: $HARNESS_CACHE/runs/matrix-<name>-<time>)")
    p.add_argument("--kconfig", metavar="FRAGMENT", action="append", help="kconfig fragments for every cell")
    p.add_argument("-j", "--jobs", type=int, metavar="N",
                   help="cells run at once, each with its own guest (default: number of CPUs); "
                        "builds run one at a time with make -j<CPUs>")
    p.add_argument("--boot-timeout", type=float, default=timeouts.BOOT, metavar="SECONDS",
                   help=f"seconds to wait for each guest shell (default: {timeouts.BOOT:g})")
    p.add_argument("--list", action="store_true", help="list the cells and exit")
    p.add_argument("--cell", action="append", metavar="PATTERN",
                   help="run only the cells whose id (revision/profile/scenario) matches; glob, repeatable")

    p = sub.add_parser("bisect", parents=[common], help="find the patch of a revision, or the revision, at which a check changes",
                       description=BISECT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--series", metavar="SERIES",
                      help="bisect the patches of this revision: step k = its first k patches on the base")
    what.add_argument("--revisions", nargs="+", metavar="SERIES",
                      help="bisect over these revisions, in order: the first whose outcome differs from the first one")
    p.add_argument("--series-version", type=int, metavar="N", help="with a message-id: which revision (b4 am -v N)")
    p.add_argument("--b4-local-mbox", type=Path, metavar="MBOX",
                   help="with a message-id: let b4 read this mbox instead of lore (b4 am -m)")
    p.add_argument("--tree", metavar="PATH|NAME", help=TREE_HELP)
    p.add_argument("--base", metavar="REF", help="commit to apply on (default: the series' base-commit, else HEAD)")
    p.add_argument("--kconfig", metavar="FRAGMENT", action="append",
                   help=f"kconfig fragment; repeatable (default: {' '.join(kconfig.DEFAULT_FRAGMENTS)})")
    p.add_argument("-j", "--jobs", type=int, help="make -j (default: number of CPUs)")
    p.add_argument("--profile", default="virt-mmio", help="QEMU profile in qemu-profiles/ (default: virt-mmio)")
    p.add_argument("--boot-timeout", type=float, default=timeouts.BOOT, metavar="SECONDS",
                   help=f"seconds to wait for the guest shell (default: {timeouts.BOOT:g})")
    p.add_argument("--scenario", default="s2idle-rtc:3", metavar="NAME[:CYCLES]",
                   help="what each step runs (default: s2idle-rtc:3)")
    _add_criterion_options(p)
    p.add_argument("--verdict", action="store_true",
                   help="a step is bad when its verdict against the revision's expectations is not PASS "
                        "(instead of --check)")
    p.add_argument("--good", type=int, metavar="K", help="patches mode: a step known good (default 0, the base)")
    p.add_argument("--bad", type=int, metavar="K", help="patches mode: a step known bad (default N, all patches)")
    p.add_argument("--then-patches", action="store_true",
                   help="revisions mode: then bisect the patches of the revision found")
    p.add_argument("--out", metavar="DIR", help="bisect directory (default: $HARNESS_CACHE/runs/bisect-<time>)")
    p.add_argument("--no-reuse", action="store_true",
                   help="run every step again instead of reusing the results of an identical earlier step")
    p.add_argument("--reply", type=Path, metavar="FILE",
                   help="write a plain-text reply to the first bad patch's mail (RFC 2822) into FILE; nothing is sent")
    p.add_argument("--reply-from", default="virtio-pm-harness <virtio-pm-harness@localhost>", metavar="ADDRESS",
                   help="From: of the reply (default: %(default)s)")

    p = sub.add_parser("ci", help="CI workflow definitions from a matrix")
    csub = p.add_subparsers(dest="ci_command", required=True)
    p = csub.add_parser("generate", parents=[common], help="write a GitHub Actions workflow and a GitLab CI pipeline, one job per cell")
    p.add_argument("matrix", nargs="?", default="default", help="name in matrices/ or path (default: default)")
    p.add_argument("--out", type=Path, default=ROOT / "ci", help="directory to write into (default: ci/)")

    p = sub.add_parser("lava", help="LAVA job definitions for a distributed lab")
    lsub = p.add_subparsers(dest="lava_command", required=True)
    p = lsub.add_parser("export", parents=[common], help="build each cell's kernel and initramfs, write one LAVA job per cell "
                                       "and a qemu device dictionary per profile, validated with lava-common")
    p.add_argument("matrix", nargs="?", default="default", help="name in matrices/ or path (default: default)")
    p.add_argument("--cell", action="append", metavar="PATTERN", help="only the cells whose id matches (glob)")
    p.add_argument("--out", type=Path, required=True, help="directory for jobs, device dictionaries and disk images")

    p = sub.add_parser("report", parents=[common], help="re-render junit.xml, kcidb.json and report.html from a saved run directory")
    p.add_argument("run_dir", type=Path, metavar="RESULTS_DIR", help="a harness run or matrix output directory")

    p = sub.add_parser("parse", parents=[common], help="parse a saved dmesg or console log into PM phases")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print the stable JSON form")
    return parser


def _say(message: str) -> None:
    """A progress line: logged at INFO to the ``harness`` logger, which prints it on stderr
    (stdout carries the report) and into the run's ``harness.log``."""
    _LOG.info(message)


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is at the time, so that a live progress
    table (rich, which redirects stderr while it draws) prints the lines above itself."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(verbosity: int) -> None:
    """Send the ``harness`` logger to stderr as ``harness: <message>``: progress (INFO) by
    default, host and guest commands (DEBUG) from ``verbosity`` 1, their output
    (:data:`harness.proc.OUTPUT`) from 2, only warnings below 0."""
    root = logging.getLogger("harness")
    for handler in list(root.handlers):
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("harness: %(message)s"))
    handler.setLevel(proc.OUTPUT if verbosity > 1 else logging.DEBUG if verbosity == 1 else
                     logging.INFO if verbosity == 0 else logging.WARNING)
    root.addHandler(handler)
    root.setLevel(proc.OUTPUT)
    root.propagate = False


@contextlib.contextmanager
def run_log(path: Path):
    """While in the block, everything logged (DEBUG and up) is also written to ``path``
    (a run's or a matrix's ``harness.log``), with the time of each line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    logging.getLogger("harness").addHandler(handler)
    try:
        yield path
    finally:
        logging.getLogger("harness").removeHandler(handler)
        handler.close()


def _request(args) -> matrix.Request:
    return matrix.Request(series=getattr(args, "series", None), tree=args.tree, base=args.base, upto=args.upto,
                          series_version=getattr(args, "series_version", None),
                          b4_local_mbox=getattr(args, "b4_local_mbox", None),
                          kconfig=tuple(args.kconfig) if args.kconfig else None, jobs=args.jobs,
                          profile=getattr(args, "profile", "virt-mmio"),
                          boot_timeout=getattr(args, "boot_timeout", timeouts.BOOT))


def _parse_scenario(spec: str) -> model.Scenario:
    """``NAME`` or ``NAME:CYCLES``."""
    name, _, count = spec.partition(":")
    scenario = scenarios.find_scenario(name)
    if count:
        if not count.isdigit():
            raise UsageError(f"--scenario {spec}: the cycle count after ':' must be a number")
        scenario = scenarios.with_cycles(scenario, int(count), f"--scenario {spec}: ")
    return scenario


def _scenarios(args) -> list[model.Scenario]:
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
    names = args.tree or matrix.trees_used(matrix.find_matrix("default"))
    print(f"cache:    {cache.root}")
    print(f"sysroot:  {sysroot}")
    for name in names:
        kt = tree.embedded_tree(cache, log, name, _say)
        print(f"tree:     {name}: {kt.path} ({kt.describe}, {kt.commit[:12]}, Linux {kt.version})")
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
    return error_exit if error_exit is not None else VERDICT_EXIT[verdict]


def cmd_run(args, cache: Cache) -> int:
    out = Path(args.out) if args.out else cache.root / "runs" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    req = _request(args)
    scenarios = _scenarios(args)
    expect_path = matrix.expectations_file(req.series, args.expect)
    defect = matrix.defect_name(Path(req.series)) if req.series else None
    revision = Path(req.series).name if req.series else "baseline"
    cell = f"{revision}/{req.profile}/{'+'.join(s.name for s in scenarios)}"
    criterion = _criterion(args)
    with run_log(out.resolve() / "harness.log"):
        result = matrix.run_cell(req, scenarios, out.resolve(), cache, _say, expect_path,
                                 matrix.reproducer(req, scenarios, args.expect), defect, cell)
    report.print_summary(result)
    _write_reports(out.resolve())
    if args.bisect_exit:
        judgement = bisect.judge(report.to_json(result), criterion)
        code = bisect.git_bisect_exit(judgement, criterion, result.exit_code)
        print(f"bisect: {judgement.reason}; exit {code}")
        return code
    return _exit_code(result.verdict, result.exit_code)


def _criterion(args) -> bisect.Criterion:
    """The bisect criterion of ``--check``/``--threshold``/``--first-fixed``; UsageError for
    unknown checks."""
    criterion = bisect.Criterion(tuple(args.check or ()), args.threshold, args.first_fixed)
    bisect_run.check_names(criterion)
    return criterion


def cmd_bisect(args, cache: Cache) -> int:
    criterion = _criterion(args)
    if bool(criterion.checks) == bool(args.verdict):
        raise UsageError("harness bisect needs --check NAME (repeatable) or --verdict, not both")
    if args.revisions and (args.good is not None or args.bad is not None):
        raise UsageError("--good/--bad are positions of patches; with --revisions the list's order says it")
    if args.then_patches and not args.revisions:
        raise UsageError("--then-patches goes with --revisions")
    scenario = _parse_scenario(args.scenario)
    out = (Path(args.out) if args.out else cache.root / "runs" / (
        "bisect-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with run_log(out / "harness.log"):
        return _bisect(args, cache, criterion, scenario, out)


def _bisect(args, cache: Cache, criterion: bisect.Criterion, scenario: model.Scenario, out: Path) -> int:
    """The bisect of :func:`cmd_bisect`'s checked arguments into ``out``; returns the exit status."""
    log = CommandLog(out / "commands.log")
    base_req = matrix.Request(tree=args.tree, base=args.base, series_version=args.series_version,
                              b4_local_mbox=args.b4_local_mbox,
                              kconfig=tuple(args.kconfig) if args.kconfig else None, jobs=args.jobs,
                              profile=args.profile, boot_timeout=args.boot_timeout)
    start = time.monotonic()

    def said(step: bisect.Step) -> None:
        _say(f"step {step.label}: {step.outcome.value} ({step.judgement.reason})")

    if args.revisions:
        plan = bisect_run.plan_revisions(args.revisions, base_req, cache, log, _say)
        runner = bisect_run.StepRunner(plan, scenario, criterion, out, cache, _say, not args.no_reuse)
        steps, conclusion, error, worst, ref_failing = bisect_run.bisect_revisions(plan, runner, said)
        inner = None
        if args.then_patches and conclusion.status == "found" and plan.positions[conclusion.first_new].request.series:
            found = plan.positions[conclusion.first_new]
            spec = found.request.series
            inner_crit = replace(criterion, first_fixed=bool(ref_failing))
            good = bisect_run.shared_prefix(plan.positions[0], found)
            _say(f"bisect the patches of {spec}: first patch where {inner_crit.describe()}"
                 + (f"; its first {good} patches are {plan.positions[0].label}, so the search starts there"
                    if good else ""))
            inner_plan = bisect_run.plan_patches(spec, replace(base_req, base=found.request.base), cache, log, _say,
                                                 good or None, None)
            inner_runner = bisect_run.StepRunner(inner_plan, scenario, inner_crit, out / "patches", cache, _say,
                                                 not args.no_reuse)
            i_start = time.monotonic()
            i_steps, i_conc, i_err, i_worst = bisect_run.bisect_patches(inner_plan, inner_runner, inner_crit, said)
            inner = bisect_report.BisectRun(inner_plan, inner_crit, scenario, tuple(i_steps), i_conc, i_err, i_worst,
                                            time.monotonic() - i_start, out / "patches")
            bisect_report.write(inner)
    else:
        plan = bisect_run.plan_patches(args.series, base_req, cache, log, _say, args.good, args.bad)
        runner = bisect_run.StepRunner(plan, scenario, criterion, out, cache, _say, not args.no_reuse)
        steps, conclusion, error, worst = bisect_run.bisect_patches(plan, runner, criterion, said)
        inner = None
    run = bisect_report.BisectRun(plan, criterion, scenario, tuple(steps), conclusion, error, worst,
                                  time.monotonic() - start, out, inner)
    paths = bisect_report.write(run)
    bisect_report.print_run(run)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    if args.reply:
        try:
            print(f"reply: {bisect_report.write_reply(run, args.reply, args.reply_from)}")
        except ValueError as e:
            _say(f"no reply written: {e}")
    final = inner if inner is not None else run
    if final.error is not None:
        return _step_exit(final.error)
    return 0 if final.conclusion.status == "found" else 1


def _step_exit(step: bisect.Step) -> int:
    """The harness exit code a step's error had (from its results.json), 1 if unknown."""
    try:
        doc = json.loads((step.results / "results.json").read_text())
        return int(doc.get("exit_code") or 1)
    except (OSError, ValueError, TypeError):
        return 1


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
    with run_log(out.resolve() / "harness.log"), report.MatrixProgress(mx.cells) as progress:
        _say(f"matrix {mx.name}: {len(mx.cells)} cells into {out}")
        result = matrix.run_matrix(mx, out.resolve(), cache, _say, args.jobs, progress.stage)
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
             "run": cmd_run, "matrix": cmd_matrix, "bisect": cmd_bisect, "report": cmd_report, "ci": cmd_ci, "lava": cmd_lava, "parse": cmd_parse}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``harness`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    bisect_exit = "--bisect-exit" in argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        if bisect_exit and e.code not in (0, None):  # a usage error must not read as "bad" to git bisect
            return bisect.GIT_BISECT_ERROR
        raise
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    configure_logging(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))
    cache = Cache.from_env()
    try:
        return _COMMANDS[args.command](args, cache)
    except HarnessError as e:
        print(f"harness {args.command}: error: {e}", file=sys.stderr)
        if bisect_exit:
            return bisect.git_bisect_exit_for_error(type(e).__name__, e.exit_code)
        return e.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (harness parse ... | head): stop as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 128 + signal.SIGPIPE
