"""The command line's grammar: every subcommand, its options and their help."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import __version__, fetch, gc, kconfig, logs, model, parse_log, timeouts, tree
from harness.paths import DATA_ROOT


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


def _size(text: str) -> int:
    """argparse type of a size (``20G``, ``500M``): bytes."""
    try:
        return gc.parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _days(text: str) -> float:
    """argparse type of a number of days (>= 0)."""
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days (>= 0)")
    return days


GC_HELP = f"""\
Remove what the cache holds and has not used for a while: worktrees, their O= build
directories, the pristine checkouts worktrees link, run and bisect-step results, b4 fetches, initramfs archives, downloads and
what interrupted writes left, least recently used first.

  harness gc --dry-run --max-size 20G     what would go to fit the cache in 20 GiB
  harness gc --older-than 14              remove what was not used for two weeks

Without --older-than or --max-size: --older-than {gc.DEFAULT_MAX_AGE_DAYS:g}.  Never removed: the
embedded kernel trees (unless --trees) and their source tarballs, ccache/ (ccache -M sets its
size), the apt lists, the guest sysroot in use, and anything used in the last hour.  A build
goes before its worktree, a worktree with its builds, a pristine checkout after the worktrees
that link it.  gc takes the lock a harness holds while
it applies and builds: while another harness holds it gc exits 2 (--wait: waits).  The git
records of removed worktrees are dropped; a user's tree keeps everything else."""


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for all subcommands."""
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    # -v/-q on every command that runs (not on the groups: a group's default would reset them)
    common = argparse.ArgumentParser(add_help=False)
    logs.add_verbosity_options(common)

    p = sub.add_parser("setup", parents=[common], help="download guest packages and import the embedded kernel trees into the cache")
    p.add_argument("--tree", action="append", metavar="NAME", choices=sorted(tree.EMBEDDED_TREES),
                   help="embedded tree to fetch and import; repeatable (default: those matrices/default.yaml uses)")

    p = sub.add_parser("doctor", parents=[common],
                       help="check the host tools, cached downloads, disk and network the harness needs, "
                            "with the command that fixes each gap (exit 2 when something required is missing)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--offline", action="store_true", help="do not probe lore.kernel.org")

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
    p.add_argument("--ssh", action="store_true",
                   help="also print an ssh command line that logs in to the guest (127.0.0.1 only, the run's key)")

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
    p.add_argument("--wake-seconds", type=int, default=model.DEFAULT_WAKE_SECONDS,
                   help=f"RTC alarm delay in seconds (default {model.DEFAULT_WAKE_SECONDS})")
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
                   help="cells run at once, each with its own guest (default: number of CPUs + 1: a guest in s2idle leaves its CPU idle); "
                        "builds run one at a time with make -j<CPUs>")
    p.add_argument("--boot-timeout", type=float, default=timeouts.BOOT, metavar="SECONDS",
                   help=f"seconds to wait for each guest shell (default: {timeouts.BOOT:g})")
    p.add_argument("--list", action="store_true", help="list the cells and exit")
    p.add_argument("--cell", action="append", metavar="PATTERN",
                   help="run only the cells whose id (revision/profile/scenario) matches; glob, repeatable")
    p.add_argument("--keep-alive", metavar="CELL",
                   help="keep the guest of the cells matching this glob running after their cycles and print "
                        "how to SSH into it; Ctrl-C (once the other cells are done) or --keep-alive-seconds ends it")
    p.add_argument("--keep-alive-seconds", type=float, default=timeouts.KEEP_ALIVE, metavar="SECONDS",
                   help=f"how long --keep-alive keeps a guest (default: {timeouts.KEEP_ALIVE:g})")
    p.add_argument("--gc", type=_size, metavar="SIZE",
                   help="after the run, remove least recently used cache entries until the cache fits in SIZE "
                        "(20G, 500M), as harness gc --max-size SIZE")
    p.add_argument("--prebuilt", type=Path, metavar="DIR",
                   help="boot the kernels, modules and initramfs `harness prebuild --out DIR` wrote instead of "
                        "building (no tree, no compiler); refuses a build whose recorded key is not the cell's")

    p = sub.add_parser("prebuild", parents=[common],
                       help="build the guest artifacts of a matrix's distinct builds into DIR/<build id>/ "
                            "for `harness matrix --prebuilt DIR` (build once, boot many)")
    p.add_argument("matrix", nargs="?", default="default",
                   help="name in matrices/ or path to a matrix YAML file (default: default)")
    p.add_argument("--cell", action="append", metavar="PATTERN",
                   help="only the builds these cells need (glob on the cell id, repeatable)")
    p.add_argument("--build", action="append", metavar="ID",
                   help="only this build (an id from --list); repeatable")
    p.add_argument("--list", action="store_true", help="list the distinct builds and their cells, and exit")
    p.add_argument("--kconfig", metavar="FRAGMENT", action="append", help="kconfig fragments for every cell")
    p.add_argument("-j", "--jobs", type=int, metavar="N", help="make -j (default: number of CPUs)")
    p.add_argument("--out", type=Path, metavar="DIR", help="directory to write DIR/<build id>/ into (required "
                                                            "unless --list)")

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
    p.add_argument("--out", type=Path, default=DATA_ROOT / "ci", help="directory to write into (default: ci/)")

    p = sub.add_parser("lava", help="LAVA job definitions for a distributed lab")
    lsub = p.add_subparsers(dest="lava_command", required=True)
    p = lsub.add_parser("export", parents=[common], help="build each cell's kernel and initramfs, write one LAVA job per cell "
                                       "and a qemu device dictionary per profile, validated with lava-common")
    p.add_argument("matrix", nargs="?", default="default", help="name in matrices/ or path (default: default)")
    p.add_argument("--cell", action="append", metavar="PATTERN", help="only the cells whose id matches (glob)")
    p.add_argument("--out", type=Path, required=True, help="directory for jobs, device dictionaries and disk images")

    p = sub.add_parser("gc", parents=[common], help="remove cache entries not used for DAYS days or beyond a size budget, "
                                                    "least recently used first", description=GC_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--dry-run", action="store_true", help="list what would go, with sizes; remove nothing")
    p.add_argument("--max-size", type=_size, metavar="SIZE",
                   help="remove until the cache fits in SIZE: 20G, 500M, 1.5T (powers of 1024, as du -h)")
    p.add_argument("--older-than", type=_days, metavar="DAYS",
                   help=f"remove what was not used for DAYS days (default {gc.DEFAULT_MAX_AGE_DAYS:g} "
                        "when --max-size is not given)")
    p.add_argument("--trees", action="store_true",
                   help="let the embedded kernel trees and their source tarballs go too (downloaded and imported "
                        "again on next use)")
    p.add_argument("--wait", action="store_true",
                   help="wait for a running harness to release the cache instead of exiting 2")
    p.add_argument("--json", action="store_true", help="print what goes and the sizes as JSON")

    p = sub.add_parser("report", parents=[common], help="re-render junit.xml, kcidb.json and report.html from a saved run directory")
    p.add_argument("run_dir", type=Path, metavar="RESULTS_DIR", help="a harness run or matrix output directory")

    p = sub.add_parser("parse", parents=[common], help=parse_log.HELP, description=parse_log.HELP)
    parse_log.add_arguments(p)
    return parser
