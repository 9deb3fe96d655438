"""The subcommands: each ``cmd_NAME(args, cache)`` composes the stages for ``harness NAME``
and returns the exit status (typed errors propagate to :func:`harness.cli.main`)."""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from harness import (bisect, bisect_report, bisect_run, ci, doctor, fetch, gc, lava, matrix, model, parse_log, pipeline,
                     prebuilt, qemu, report, results, scenarios, scheduler, series, ssh, terminal, timeouts, toolchain,
                     tree)
from harness.cache import Cache, atomic_write
from harness.errors import HarnessError, UsageError
from harness.guest import GuestSession
from harness.logs import run_log, say
from harness.proc import CommandLog
from harness.verdict import Verdict

#: The exit status of a run or matrix by its verdict (bisect has its own: 0 good, 1 bad, 125 skip).
VERDICT_EXIT = {Verdict.PASS: 0, Verdict.XFAIL: 0, Verdict.SKIP: 0, Verdict.FAIL: 1, Verdict.XPASS: 1,
                Verdict.ERROR: 1, Verdict.HANG: 7}
#: Which exit status a matrix reports when its cells ended differently: an interrupt, then an
#: internal error, a full disk, then a hang, a host command past its limit, SSH, then errors of the inputs (usage,
#: series, apply, build, boot), then a failed check.
MATRIX_EXIT_ORDER = (130, 10, 9, 7, 8, 11, 2, 3, 4, 5, 6, 1)


def _request(args) -> pipeline.Request:
    return pipeline.Request(series=getattr(args, "series", None), tree=args.tree, base=args.base, upto=args.upto,
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
        kt = tree.embedded_tree(cache, log, name, say)
        print(f"tree:     {name}: {kt.path} ({kt.describe}, {kt.commit[:12]}, Linux {kt.version})")
    print(f"compiler: {toolchain.arm64(cache).gcc_version}")
    print(f"qemu:     {toolchain.qemu_version()}")
    return 0


def cmd_doctor(args, cache: Cache) -> int:
    return doctor.main(cache, as_json=args.json, network=not args.offline)


def cmd_gc(args, cache: Cache) -> int:
    return gc.main(cache, args.dry_run, args.max_size, args.older_than, args.trees, args.json, args.wait, say)


def cmd_series(args, cache: Cache) -> int:
    log = CommandLog(cache.root / "series.log")
    rev, manifest = series.load_revision(args.series, cache, log, version=args.series_version,
                                         local_mbox=args.b4_local_mbox)
    terminal.print_series(rev, manifest)
    return 0


def cmd_apply(args, cache: Cache) -> int:
    log = CommandLog(cache.root / "apply.log")
    if not args.series:
        raise UsageError("harness apply needs a series")
    applied, _ = pipeline.applied_tree(_request(args), cache, log, say)
    with cache.sources_lock():  # the user reads the files: a released worktree gets them back
        tree.ensure_checkout(applied.path, log)
    print(f"worktree: {applied.path}")
    print(f"base:     {applied.base}")
    for index, subject, sha in applied.patch_commits:
        print(f"  {index:>2} {sha[:12]} {subject}")
    print(f"HEAD:     {applied.commit}")
    return 0


def cmd_build(args, cache: Cache) -> int:
    log = CommandLog(cache.root / "build.log")
    result = pipeline.build_kernel(_request(args), cache, log, say).build
    print(f"Image: {result.image}")
    print(f"build: {result.out_dir} ({'cache hit' if result.cache_hit else f'{result.seconds:.1f} s'})")
    return 0


def cmd_boot(args, cache: Cache) -> int:
    out = cache.root / "runs" / ("boot-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    log = CommandLog(out / "commands.log")
    art = pipeline.prepare_guest(_request(args), cache, log, say)
    if not args.ssh:
        with GuestSession(pipeline.guest_argv(art, out), out / "console.log", log,
                          boot_timeout=args.boot_timeout) as session:
            print(f"guest up after {session.boot_seconds:.2f} s; Ctrl-] leaves (QEMU is then stopped)")
            session.interact()
        return 0
    session, target = pipeline.boot_with_ssh(art, out, log, args.boot_timeout, say)
    try:
        with session:
            if target is None:
                raise UsageError(f"--ssh: the profile {art.profile.name} forwards no port to the guest's sshd "
                                 "(no hostfwd with {{ ssh_port }} in its -netdev)")
            ssh.connect(target.port, target.key).close()  # dropbear answers: the printed line works
            print(f"guest up after {session.boot_seconds:.2f} s; Ctrl-] leaves (QEMU is then stopped)")
            print(target.command(), flush=True)
            session.interact()
    finally:
        if target is not None:
            ssh.PORTS.release(target.port)
    return 0


def exit_code(verdict: str, error_exit: int | None) -> int:
    """The exit status of a run: its error's (``error_exit``), else its verdict's."""
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
        result = pipeline.run_cell(req, scenarios, out.resolve(), cache, say, expect_path,
                                 pipeline.reproducer(req, scenarios, args.expect), defect, cell)
    terminal.print_summary(result)
    _write_reports(out.resolve())
    if args.bisect_exit:
        judgement = bisect.judge(results.to_json(result), criterion)
        code = bisect.git_bisect_exit(judgement, criterion, result.exit_code)
        print(f"bisect: {judgement.reason}; exit {code}")
        return code
    return exit_code(result.verdict, result.exit_code)


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
    base_req = pipeline.Request(tree=args.tree, base=args.base, series_version=args.series_version,
                              b4_local_mbox=args.b4_local_mbox,
                              kconfig=tuple(args.kconfig) if args.kconfig else None, jobs=args.jobs,
                              profile=args.profile, boot_timeout=args.boot_timeout)
    start = time.monotonic()

    def said(step: bisect.Step) -> None:
        say(f"step {step.label}: {step.outcome.value} ({step.judgement.reason})")

    if args.revisions:
        plan = bisect_run.plan_revisions(args.revisions, base_req, cache, log, say)
        runner = bisect_run.StepRunner(plan, scenario, criterion, out, cache, say, not args.no_reuse)
        steps, conclusion, error, worst, ref_failing = bisect_run.bisect_revisions(plan, runner, said)
        inner = None
        if args.then_patches and conclusion.status == "found" and plan.positions[conclusion.first_new].request.series:
            found = plan.positions[conclusion.first_new]
            spec = found.request.series
            inner_crit = replace(criterion, first_fixed=bool(ref_failing))
            good = bisect_run.shared_prefix(plan.positions[0], found)
            say(f"bisect the patches of {spec}: first patch where {inner_crit.describe()}"
                 + (f"; its first {good} patches are {plan.positions[0].label}, so the search starts there"
                    if good else ""))
            inner_plan = bisect_run.plan_patches(spec, replace(base_req, base=found.request.base), cache, log, say,
                                                 good or None, None)
            inner_runner = bisect_run.StepRunner(inner_plan, scenario, inner_crit, out / "patches", cache, say,
                                                 not args.no_reuse)
            i_start = time.monotonic()
            i_steps, i_conc, i_err, i_worst = bisect_run.bisect_patches(inner_plan, inner_runner, inner_crit, said)
            inner = bisect_report.BisectRun(inner_plan, inner_crit, scenario, tuple(i_steps), i_conc, i_err, i_worst,
                                            time.monotonic() - i_start, out / "patches")
            bisect_report.write(inner)
    else:
        plan = bisect_run.plan_patches(args.series, base_req, cache, log, say, args.good, args.bad)
        runner = bisect_run.StepRunner(plan, scenario, criterion, out, cache, say, not args.no_reuse)
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
            say(f"no reply written: {e}")
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
    with run_log(out.resolve() / "harness.log"), terminal.MatrixProgress(mx.cells) as progress:
        say(f"matrix {mx.name}: {len(mx.cells)} cells into {out}")
        artifacts = prebuilt.PrebuiltArtifacts(args.prebuilt.resolve()) if args.prebuilt else None
        if artifacts:
            say(f"boot prebuilt artifacts from {artifacts.root} (no builds)")
        keep = (args.keep_alive, args.keep_alive_seconds) if args.keep_alive else None
        if keep and not any(fnmatch.fnmatchcase(c.id, args.keep_alive) for c in mx.cells):
            raise UsageError(f"--keep-alive {args.keep_alive}: no cell of matrix {mx.name} matches "
                             f"(harness matrix {mx.path.stem} --list)")
        result = scheduler.run_matrix(mx, out.resolve(), cache, say, args.jobs, progress.stage, artifacts=artifacts,
                                      keep_alive=keep)
    terminal.print_matrix(result)
    _write_reports(out.resolve())
    if args.gc is not None:
        gc.after_run(cache, args.gc, say)
    return matrix_exit([exit_code(run.verdict, run.exit_code) for _, run in result.cells])


def cmd_prebuild(args, cache: Cache) -> int:
    """``harness prebuild``: each distinct build of the selected cells into ``--out/<build id>/``
    (:func:`harness.prebuilt.export`).  A build that fails, or whose series cannot be had, is
    recorded there too (the cells booting it report the same error or SKIP); the exit status
    is the worst of the builds' (as a matrix's), 0 when all were built."""
    mx = matrix.find_matrix(args.matrix, kconfig_override=tuple(args.kconfig) if args.kconfig else None,
                            jobs=args.jobs)
    if args.cell:
        mx = matrix.select_cells(mx, args.cell)
    builds = prebuilt.distinct_builds(mx.cells)
    if args.build:
        unknown = [b for b in args.build if b not in builds]
        if unknown:
            raise UsageError(f"--build {', '.join(unknown)}: not a build of matrix {mx.name} "
                             f"(see harness prebuild {mx.path.stem} --list: {', '.join(builds)})")
        builds = {b: cells for b, cells in builds.items() if b in args.build}
    if args.list:
        for bid, cells in builds.items():
            print(f"{bid}  ({len(cells)} cells: {', '.join(c.id for c in cells)})")
        return 0
    if args.out is None:
        raise UsageError("harness prebuild needs --out DIR (or --list)")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = CommandLog(out / "commands.log")
    codes = []
    for bid, cells in builds.items():
        cell = cells[0]
        start = time.monotonic()
        try:
            reason = cell.skip or matrix.unfetchable(cell, cache, log)
            art = reason if reason else pipeline.prepare_guest(cell.request, cache, log, say)
        except HarnessError as e:
            art = e
            codes.append(e.exit_code)
            say(f"{bid}: {type(e).__name__}: {e}")
        where = prebuilt.export(cell.request, art, out)
        what = ("SKIP: " + art) if isinstance(art, str) else "ERROR" if isinstance(art, HarnessError) else "built"
        print(f"{where}  ({what}, {time.monotonic() - start:.0f} s, for {len(cells)} cell(s))")
    return matrix_exit(codes)


def matrix_exit(codes: list[int]) -> int:
    """The exit status of a matrix run from its cells' exit statuses (see MATRIX_EXIT_ORDER)."""
    return next((c for c in MATRIX_EXIT_ORDER if c in codes), 0)


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
    shared = pipeline.SharedArtifacts(cache)
    jobs = []
    for cell in mx.cells:
        if cell.skip or cell.scenario.kind == "hibernate":
            print(f"skip {cell.id}: {cell.skip or 'hibernation is not exported (swap set-up)'}")
            continue
        art = shared(cell.request, log, say)
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


#: The function of each subcommand: ``(args, cache) -> exit status``.
COMMANDS = {"setup": cmd_setup, "doctor": cmd_doctor, "series": cmd_series, "apply": cmd_apply, "build": cmd_build,
            "boot": cmd_boot, "run": cmd_run, "matrix": cmd_matrix, "prebuild": cmd_prebuild, "bisect": cmd_bisect, "report": cmd_report, "ci": cmd_ci, "lava": cmd_lava, "parse": parse_log.cmd_parse,
            "gc": cmd_gc}
