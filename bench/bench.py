#!/usr/bin/env python3
"""``make bench``: the harness's speed and size figures, printed as a table and written to
``bench.json``.  A script, not a test: these machines are noisy, so each figure is a ratio or
a pair measured in the same run.

Figures (each skipped with a reason when its input is missing):

* parser: MB/s of ``dmesg.parse`` and of ``harness parse --json`` over the real captures of
  ``tests/fixtures`` concatenated to at least 10 MB, the best of three; the worst case of the
  old parser (one phase with 20,000 open calls); peak memory over the text (tracemalloc) per MB,
  and the peak RSS of ``harness parse --json`` (the process) per MB of input, beside its RSS
  on an empty log (the interpreter and the imports)
* cache: bytes per embedded tree, per pristine checkout, per worktree (checked out or
  released), per ``O=`` build directory, ccache, downloads, in ``$HARNESS_CACHE``
* ``--run``: warm ``harness run``s of the backport, one per scenario (3 s2idle cycles, 3
  ``pm_test`` cycles): the harness overhead (wall time minus the waits on the compiler, on QEMU
  to reach the shell and inside the state writes, as a share of the wall time); per scenario
  the cycle's wall time against its alarm or its state write, and the share of the health
  probes and of the SSH round trip; the peak RSS of the harness process and of QEMU
  (``VmHWM``) beside the profile's ``-m``; what the overhead is made of (the guest's console
  commands other than the state write, SSH, the rest) and, beside it, the harness's own CPU
* ``--sleepgraph``: ``harness parse --json`` against sleepgraph (its PyPI package, 5.6,
  downloaded into the cache) on the same input: the real 6.12 captures with the
  ``PM: Syncing filesystems`` line sleepgraph 5.6 starts a run at (kernels before 5.x printed
  it), cut in files of 20 runs (sleepgraph 5.6 fails on more: ``idchar[num]``)
* ``--switch``: the rebuild after a revision switch (backport -> defect, baseline -> backport)
  with ccache warm, wall and make seconds, against the cold build of the tree (``--cold``)
* ``--cold``: in an empty temporary cache, ``harness setup`` and the default matrix: the cold
  build seconds per tree and the cold ``make test-arm64`` (host packages aside)
* ``--matrix``: the whole default matrix warm at the default ``-j`` (CPUs + 1; the warm
  ``make test-arm64`` figure) with the harness process's peak RSS and own CPU over it and the
  largest guest's QEMU peak RSS beside its ``-m``, and its 6.12 virt-mmio s2idle and
  ``pm_test`` cells (:data:`SCALING_CELLS`) at ``-j1`` and ``-j2``: wall seconds and the speed-up
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import dmesg, tree  # noqa: E402
from harness.cache import Cache, disk_usage  # noqa: E402


def _captures(min_bytes: int) -> str:
    files = sorted((ROOT / "tests" / "fixtures").glob("*/*.dmesg")) + sorted(
        (ROOT / "tests" / "fixtures").glob("*/console.log"))
    one = "".join(f.read_bytes().decode(errors="replace") for f in files)
    return one * (min_bytes // len(one) + 1)


def bench_parser() -> dict:
    text = _captures(10_000_000)
    mb = len(text.encode()) / 1e6
    best = min(_timed(lambda: dmesg.parse(text)) for _ in range(3))
    path = Path("/tmp") / f"bench-parse-{os.getpid()}.log"
    path.write_text(text)
    try:
        cli = min(_timed(lambda: subprocess.run([sys.executable, "-m", "harness", "parse", "--json", str(path)],
                                                cwd=ROOT, stdout=subprocess.DEVNULL, check=True, timeout=600))
                  for _ in range(3))
        cli_rss_mb = _peak_rss_mb([sys.executable, "-m", "harness", "parse", "--json", str(path)])
        empty = path.with_suffix(".empty")
        empty.write_text("")
        base_rss_mb = _peak_rss_mb([sys.executable, "-m", "harness", "parse", "--json", str(empty)])
        empty.unlink()
    finally:
        path.unlink()
    lines = ["[    1.000000] PM: suspend entry (s2idle)"]
    lines += [f"[    1.{i:06d}] virtio-mmio a{i}.virtio_mmio: PM: calling pm_generic_resume @ 1, parent: platform"
              for i in range(20000)]
    lines += [f"[    2.{i:06d}] virtio-mmio a{i}.virtio_mmio: PM: pm_generic_resume returned 0 after 3 usecs"
              for i in range(20000)]
    worst = _timed(lambda: dmesg.parse("\n".join(lines)))
    tracemalloc.start()
    dmesg.parse(text)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"input_mb": round(mb, 1), "parse_seconds": round(best, 3), "parse_mb_per_s": round(mb / best, 1),
            "cli_json_seconds": round(cli, 3), "cli_json_mb_per_s": round(mb / cli, 1),
            "open_calls_20000_seconds": round(worst, 3), "peak_mb_over_text_per_mb": round(peak / 1e6 / mb, 2),
            "cli_peak_rss_mb": round(cli_rss_mb, 1), "cli_peak_rss_per_input_mb": round(cli_rss_mb / mb, 2),
            "cli_rss_without_input_mb": round(base_rss_mb, 1),
            "cli_rss_over_that_per_input_mb": round((cli_rss_mb - base_rss_mb) / mb, 2)}


def _peak_rss_mb(cmd: list[str]) -> float:
    """The peak RSS (MB) of ``cmd``, run by a child Python that reads its children's ru_maxrss."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=600).stdout
    return int(out.split()[-1]) / 1024


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_cache(cache: Cache) -> dict:
    """Bytes (allocated, as ``du``) per top-level cache directory, per pristine checkout, and per
    worktree (its own files: the hard links it shares with its pristine checkout count there
    once, as ``du`` over both counts them) and per ``O=`` build directory in it; the total is
    those and the rest of the cache, in one walk of it."""
    root = cache.root
    if not root.is_dir():
        return {"skipped": f"no cache at {root}"}
    seen: set = set()
    walked: list[Path] = []
    counted = 0

    def usage(path: Path, skip: list[Path] | tuple = ()) -> int:
        nonlocal counted
        walked.append(path)
        size = disk_usage(path, skip=skip, seen=seen)[0]
        counted += size
        return size

    parts: dict = {"pristine": {p.name: usage(p) for p in sorted((root / "pristine").glob("*"))
                                if (p / tree.PRISTINE_RECORD).is_file()}}
    worktrees = []
    for rec in sorted((root / "worktrees").glob("*.json")):
        wt = rec.with_suffix("")
        if wt.is_dir():
            builds = {b.name: usage(b) for b in wt.glob("build-*")}
            source = usage(wt, skip=[wt / b for b in builds])
            worktrees.append({"worktree": wt.name, "checked_out": json.loads(rec.read_text()).get("checked_out", True),
                              "source": source, "builds": builds})
    parts["worktrees"] = worktrees
    for name in ("trees", "src", "ccache", "debs", "sysroot", "rootfs", "runs"):
        if (root / name).is_dir():
            parts[name] = usage(root / name)
    return {"root": str(root), "total": counted + disk_usage(root, skip=walked, seen=seen)[0], **parts}


def _hwm_kb(pid: int) -> int:
    """The peak resident set (``VmHWM``, KiB) of a live process, 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
    except OSError:
        return 0


def _qemu_guests(out: Path) -> dict[int, int]:
    """The QEMU processes whose command line names ``out`` (their disk image is under it): pid
    -> the guest's memory in MB (its ``-m``, 0 when absent)."""
    guests = {}
    for d in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0") if d.isdigit() else []
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and any(str(out).encode() in a for a in argv):
            try:
                guests[int(d)] = int(argv[argv.index(b"-m") + 1].rstrip(b"M"))
            except (ValueError, IndexError):
                guests[int(d)] = 0
    return guests


#: Runs ``python -m harness ARGS`` in this process and writes its own CPU seconds (user, system;
#: all its threads, none of its children: QEMU, git, make) to the file named first.
_SELF_CPU = ("import atexit, json, resource, runpy, sys\n"
             "out = sys.argv.pop(1)\n"
             "def done():\n"
             "    r = resource.getrusage(resource.RUSAGE_SELF)\n"
             "    open(out, 'w').write(json.dumps([r.ru_utime, r.ru_stime]))\n"
             "atexit.register(done)\n"
             "sys.argv[0] = 'harness'\n"
             "runpy.run_module('harness', run_name='__main__', alter_sys=True)\n")


def _run_sampled(args: list[str], out: Path) -> dict:
    """Run ``harness ARGS``, whose guests' disks are under ``out``; return its wall seconds
    (``wall``), the harness process's peak RSS in KiB (``harness_kb``, all its threads: a matrix
    runs its cells in threads of one process), the largest peak RSS of one of its QEMU guests in
    KiB (``qemu_kb``) and that guest's ``-m`` in MB (``guest_memory_mb``), the RSS sampled every
    0.2 s, and the harness process's own CPU seconds (``harness_cpu``)."""
    cpu_file = out.with_name(out.name + ".cpu.json")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _SELF_CPU, str(cpu_file), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    harness_kb = qemu_kb = memory_mb = 0
    while proc.poll() is None:
        harness_kb = max(harness_kb, _hwm_kb(proc.pid))
        for pid, memory in _qemu_guests(out).items():
            if (kb := _hwm_kb(pid)) > qemu_kb:
                qemu_kb, memory_mb = kb, memory
        time.sleep(0.2)
        if time.perf_counter() - start > 3600:
            proc.kill()
    wall = time.perf_counter() - start
    cpu = sum(json.loads(cpu_file.read_text())) if cpu_file.is_file() else float("nan")
    cpu_file.unlink(missing_ok=True)
    return {"wall": wall, "harness_kb": harness_kb, "qemu_kb": qemu_kb, "guest_memory_mb": memory_mb,
            "harness_cpu": cpu}


def _guest_seconds(commands_log: Path, pick) -> float:
    """Seconds of the guest commands in a run's transcript whose command line ``pick`` accepts."""
    import re
    text = commands_log.read_text(errors="replace")
    return sum(float(m[2]) for m in re.finditer(r"# guest\$ (.*)\n# status=\d+ seconds=([\d.]+)", text) if pick(m[1]))


def bench_run(cache: Cache) -> dict:
    """Warm ``harness run``s of the backport (the build made first if it is not in the cache):
    per scenario the cycle's cost, and over both the harness overhead and what it is made of."""
    from harness import suspend
    probes = tuple(command.split("$")[0][:30] for _name, command, _ok in suspend.HEALTH_PROBES)
    figures: dict = {}
    totals = dict.fromkeys(("wall", "waited", "guest_commands", "ssh", "harness_cpu"), 0.0)
    _build("patches/v9-backport-6.12")
    for scenario, waits_on in (("s2idle-rtc:3", "alarm"), ("pm-test-platform:3", "state write")):
        out = Path("/tmp") / f"bench-run-{os.getpid()}-{scenario.split(':')[0]}"
        args = ["run", "--series", "patches/v9-backport-6.12", "--scenario", scenario, "--out", str(out)]
        sampled = _run_sampled(args, out)
        wall, cpu = sampled["wall"], sampled["harness_cpu"]
        doc = json.loads((out / "results.json").read_text())
        cycles, timings = doc["cycles"], doc["timings"]
        writes = sum(c["seconds"] for c in cycles)
        waited = timings.get("build", 0.0) + timings.get("boot", 0.0) + writes
        commands = _guest_seconds(out / "commands.log", lambda c: True) - writes
        ssh_seconds = sum((c.get("net_traffic") or {}).get("seconds", 0.0) for c in cycles)
        for key, value in (("wall", wall), ("waited", waited), ("guest_commands", commands),
                           ("ssh", ssh_seconds + timings.get("ssh_connect", 0.0) + timings.get("ssh_pull", 0.0)),
                           ("harness_cpu", cpu)):
            totals[key] += value
        per_cycle = timings["cycles"] / len(cycles)
        probe_seconds = _guest_seconds(out / "commands.log", lambda c: c.startswith(probes))
        figures[scenario.split(":")[0]] = {
            "cycles": len(cycles), "verdict": doc["verdict"], "wall_seconds": round(wall, 2),
            "cycle_seconds": round(per_cycle, 2), "state_write_seconds": round(writes / len(cycles), 2),
            "waits_on": waits_on,
            "alarm_seconds": _alarm(scenario) if waits_on == "alarm" else None,
            "probes_share_of_cycle": round(probe_seconds / timings["cycles"], 3),
            "ssh_share_of_cycle": round(ssh_seconds / timings["cycles"], 3),
            "harness_peak_rss_mb": round(sampled["harness_kb"] / 1024, 1),
            "qemu_peak_rss_mb": round(sampled["qemu_kb"] / 1024, 1), "guest_memory_mb": sampled["guest_memory_mb"],
            "harness_cpu_seconds": round(cpu, 2), "timings": timings}
        shutil.rmtree(out, ignore_errors=True)
    wall = totals["wall"]
    figures["overhead_share"] = round((wall - totals["waited"]) / wall, 3)
    # What the overhead is made of, as shares of the same wall time that add up to it: the
    # guest's commands on the console other than the state writes (set-up, arming, reads,
    # probes, dmesg), SSH (connect, payload round trips, pull), and the rest (interpreter
    # start, QEMU start and stop, the reports).  The harness process's own CPU is beside them,
    # not one of them: most of it is spent while a guest command or SSH runs (pexpect and
    # paramiko reading), so subtracting it too counted it twice (a rest of -1.3 % in one run).
    figures["overhead_parts"] = {
        "guest_commands": round(totals["guest_commands"] / wall, 3), "ssh": round(totals["ssh"] / wall, 3),
        "rest": round((wall - totals["waited"] - totals["guest_commands"] - totals["ssh"]) / wall, 3)}
    figures["harness_cpu_share"] = round(totals["harness_cpu"] / wall, 3)
    return figures


def _alarm(scenario: str) -> int:
    from harness import scenarios
    return scenarios.find_scenario(scenario.split(":")[0]).wake_seconds


def bench_sleepgraph(cache: Cache) -> dict:
    import zipfile
    tools = cache.root / "tools" / "sleepgraph-5.6"
    script = tools / "sleepgraph-5.6.data" / "scripts" / "sleepgraph.py"
    if not script.is_file():
        wheel_dir = cache.root / "tools" / ".sleepgraph-wheel"
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheel_dir),
                              "sleepgraph==5.6"], capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            return {"skipped": f"pip download sleepgraph==5.6 failed: {res.stderr.strip()[-200:]}"}
        with zipfile.ZipFile(next(wheel_dir.glob("sleepgraph-5.6-*.whl"))) as z:
            z.extractall(tools)
    files = sorted((ROOT / "tests" / "fixtures").glob("linux-6.12*/*.dmesg"))
    one = "".join(f.read_text(errors="replace") for f in files)
    one = one.replace("Filesystems sync:", "PM: Syncing filesystems ... done. Filesystems sync:")
    runs: list[str] = []
    for line in one.splitlines(keepends=True):  # a run starts at its "PM: Syncing filesystems" line
        if "PM: Syncing filesystems" in line or not runs:
            runs.append("")
        runs[-1] += line
    work = Path("/tmp") / f"bench-sleepgraph-{os.getpid()}"
    work.mkdir(exist_ok=True)
    chunks: list[str] = []
    while sum(map(len, chunks)) < 2_000_000:  # files of 20 runs each, about 2 MB in all
        start = (len(chunks) * 20) % max(1, len(runs) - 19)
        chunks.append("".join(runs[start:start + 20]))
    paths = []
    for i, chunk in enumerate(chunks):
        paths.append(work / f"in-{i}.log")
        paths[-1].write_text(chunk)
    whole = work / "all.log"
    whole.write_text("".join(chunks))
    mb = whole.stat().st_size / 1e6
    failed = 0

    def sleepgraph_all():
        nonlocal failed
        for path in paths:
            res = subprocess.run([sys.executable, str(script), "-dmesg", str(path), "-o", str(path.with_suffix(".html"))],
                                 cwd=work, capture_output=True, timeout=600)
            failed += res.returncode != 0 or not path.with_suffix(".html").exists()
    sg = _timed(sleepgraph_all)
    ours = _timed(lambda: subprocess.run([sys.executable, "-m", "harness", "parse", "--json", str(whole)], cwd=ROOT,
                                         stdout=subprocess.DEVNULL, check=True, timeout=600))
    shutil.rmtree(work, ignore_errors=True)
    return {"input_mb": round(mb, 2), "files_of_20_runs": len(paths), "sleepgraph_failed_files": failed,
            "sleepgraph_seconds": round(sg, 2), "sleepgraph_mb_per_s": round(mb / sg, 2),
            "harness_parse_seconds": round(ours, 2), "harness_parse_mb_per_s": round(mb / ours, 2),
            "harness_over_sleepgraph": round(sg / ours, 1)}


def _all_builds_hit(matrix_dir: Path) -> bool:
    """True when every cell of a finished matrix run found its kernel in the cache."""
    docs = [json.loads(p.read_text()) for p in matrix_dir.glob("*/results.json")]
    return all((d.get("build") or {}).get("cache_hit", True) for d in docs)


#: The cells of the default matrix that the scaling figure runs at -j1 and -j2 (``--scaling``
#: picks others): the s2idle and ``pm_test`` cells of the 6.12 rows on virt-mmio, both
#: revisions (4 cells, the two kinds of cell most of the matrix is made of), short enough to run
#: twice; ``--scaling '*-6.12/*'`` runs the 18 cells of the default matrix when issue 16 set the
#: targets (3-4 minutes more).  The whole default matrix runs at the default -j (the warm
#: ``make test-arm64`` figure).
SCALING_CELLS = ("*-6.12/virt-mmio/s2idle-rtc", "*-6.12/virt-mmio/pm-test-platform")


def _matrix_run(jobs: int, cells: tuple[str, ...] = ()) -> dict:
    """The default matrix (only ``cells`` globs, if any) warm at ``-j jobs``, run again if a
    build was not in the cache yet: :func:`_run_sampled`'s figures and ``cells``, the cells
    that ran."""
    target = Path("/tmp") / f"bench-matrix-{os.getpid()}-j{jobs}"
    args = ["matrix", "default", "-j", str(jobs), "--out", str(target)]
    args += [arg for cell in cells for arg in ("--cell", cell)]
    try:
        for _ in range(2):
            shutil.rmtree(target, ignore_errors=True)
            sampled = _run_sampled(args, target)
            if _all_builds_hit(target):
                break
        return {**sampled, "cells": len(list(target.glob("*/results.json")))}
    finally:
        shutil.rmtree(target, ignore_errors=True)


def bench_matrix(cache: Cache, scaling: tuple[str, ...] = SCALING_CELLS) -> dict:
    """The whole default matrix warm at the default ``-j`` (the warm ``make test-arm64``
    figure) with the harness process's peak RSS and CPU over it and the largest QEMU guest's
    peak RSS beside its ``-m``, and the ``scaling`` cells of it at -j1 and -j2: wall seconds
    and the speed-up."""
    from harness.scheduler import default_jobs
    whole = _matrix_run(default_jobs())
    out: dict = {"default_jobs": default_jobs(), "default_wall_seconds": round(whole["wall"], 1),
                 "default_cells": whole["cells"],
                 "harness_peak_rss_mb": round(whole["harness_kb"] / 1024, 1),
                 "harness_cpu_seconds": round(whole["harness_cpu"], 1),
                 "qemu_peak_rss_mb": round(whole["qemu_kb"] / 1024, 1), "guest_memory_mb": whole["guest_memory_mb"],
                 "scaling_cells": " ".join(scaling)}
    for jobs in (2, 1):
        run = _matrix_run(jobs, scaling)
        out[f"scaling_j{jobs}_wall_seconds"], out["scaling_cell_count"] = round(run["wall"], 1), run["cells"]
    out["speedup_j2"] = round(out["scaling_j1_wall_seconds"] / out["scaling_j2_wall_seconds"], 2)
    return out


#: The revision switches ``--switch`` times, (from, to) series (None: the bare tree): the
#: backport to a defect of it, and the baseline to the backport (the default tree, 6.12).
SWITCHES = (("patches/v9-backport-6.12", "patches/defects/stale-vring"), (None, "patches/v9-backport-6.12"))


def _build(series: str | None, cache_env: dict | None = None) -> Path:
    """``harness build`` of ``series`` (None: the bare default tree); return its ``O=`` directory."""
    cmd = [sys.executable, "-m", "harness", "build"] + (["--series", series] if series else [])
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=7200,
                         env={**os.environ, **(cache_env or {})})
    if res.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[2:])} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    line = next(l for l in reversed(res.stdout.splitlines()) if l.startswith("build: "))
    return Path(line[len("build: "):].rsplit(" (", 1)[0])


def bench_switch(cold: dict | None) -> dict:
    """Rebuild seconds after each of :data:`SWITCHES`: the "from" revision is built (a cache hit
    when warm), the "to" revision's ``O=`` directory is moved aside and built again (ccache holds
    both revisions' objects), then put back.  ``wall_seconds`` includes the apply and the
    worktree checkout; ``make_seconds`` is what the build recorded.  Against ``cold`` (the
    ``--cold`` figures, of this run or of the last bench.json) when there are some."""
    out = {}
    cold_seconds = (cold or {}).get("cold_build_seconds", {})
    for src, dst in SWITCHES:
        _build(src)
        target = _build(dst)
        aside = target.with_name(f"{target.name}.bench-{os.getpid()}")
        target.rename(aside)
        try:
            wall = _timed(lambda: _build(dst))
            made = json.loads((target / "harness-build.json").read_text())["seconds"]
        finally:
            shutil.rmtree(target, ignore_errors=True)
            aside.rename(target)
        name = f"{Path(src).name if src else 'baseline-6.12'} -> {Path(dst).name}"
        out[name] = {"wall_seconds": round(wall, 1), "make_seconds": round(made, 1)}
        if cold_seconds.get("debian-6.12"):
            out[name]["share_of_cold_build"] = round(made / cold_seconds["debian-6.12"], 3)
    return out


def bench_cold() -> dict:
    """In an empty cache (a temporary ``HARNESS_CACHE``, removed after): ``harness setup``
    (downloads, tree imports), then the default matrix, whose cells build each kernel cold;
    the cold build seconds per tree, as each build recorded them.  Setup plus matrix is a cold
    ``make test-arm64`` without the host packages (already installed here).  Tens of minutes."""
    import tempfile
    root = Path(tempfile.mkdtemp(prefix="bench-cold-", dir=os.environ.get("TMPDIR", "/tmp")))
    env = {**os.environ, "HARNESS_CACHE": str(root / "cache")}
    try:
        setup = _timed(lambda: subprocess.run([sys.executable, "-m", "harness", "setup"], cwd=ROOT, env=env,
                                              capture_output=True, check=True, timeout=7200))
        matrix = _timed(lambda: subprocess.run([sys.executable, "-m", "harness", "matrix", "default", "--out",
                                                str(root / "matrix")], cwd=ROOT, env=env, capture_output=True,
                                               timeout=7200))
        builds: dict[str, list[float]] = {}
        for record in (root / "cache" / "worktrees").glob("*/build-*/harness-build.json"):
            worktree = json.loads(record.parent.parent.with_suffix(".json").read_text())
            version = ".".join(worktree["describe"].split("/")[-1].split(".")[:2])  # debian/6.12.117-1... -> 6.12
            builds.setdefault(f"debian-{version}", []).append(json.loads(record.read_text())["seconds"])
        return {"setup_seconds": round(setup, 1), "matrix_seconds": round(matrix, 1),
                "test_arm64_seconds": round(setup + matrix, 1),
                "cold_build_seconds": {t: round(max(v), 1) for t, v in builds.items()}}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", action="store_true", help="also time warm harness runs (needs make setup)")
    p.add_argument("--sleepgraph", action="store_true", help="also compare with sleepgraph 5.6 from PyPI")
    p.add_argument("--matrix", action="store_true", help="also time the default matrix at the default -j, 4 of its 6.12 cells at -j1 and -j2 (minutes)")
    p.add_argument("--switch", action="store_true", help="also time the rebuilds after a revision switch")
    p.add_argument("--cold", action="store_true",
                   help="also set up an empty cache and run the default matrix in it: cold builds, cold "
                        "make test-arm64 (tens of minutes)")
    p.add_argument("--scaling", action="append", metavar="GLOB",
                   help=f"with --matrix: the cells to run at -j1 and -j2 (repeatable; default {' '.join(SCALING_CELLS)})")
    p.add_argument("--out", type=Path, default=ROOT / "bench.json")
    args = p.parse_args()
    cache = Cache.from_env()
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    parts = {"parser": bench_parser, "cache": lambda: bench_cache(cache)}
    if args.cold:
        parts["cold"] = bench_cold
    if args.switch:
        parts["switch"] = lambda: bench_switch(figures.get("cold") or previous.get("cold"))
    if args.run:
        parts["run"] = lambda: bench_run(cache)
    if args.sleepgraph:
        parts["sleepgraph"] = lambda: bench_sleepgraph(cache)
    if args.matrix:
        parts["matrix"] = lambda: bench_matrix(cache, tuple(args.scaling or SCALING_CELLS))
    figures: dict = {}
    took = {}
    for name, part in parts.items():
        start = time.perf_counter()
        figures[name] = part()
        took[name] = round(time.perf_counter() - start, 1)
    figures["bench_seconds"] = {**took, "total": round(sum(took.values()), 1)}
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    for section, values in figures.items():
        print(f"[{section}]")
        for key, value in values.items():
            if key == "worktrees":
                for w in value:
                    print(f"  worktree {w['worktree']}: source {w['source'] / 1e9:.2f} GB"
                          f"{'' if w['checked_out'] else ' (released)'}, builds "
                          + ", ".join(f"{b / 1e9:.2f} GB" for b in w["builds"].values()))
            elif isinstance(value, dict):
                print(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in value.items() if k != "timings"))
            elif isinstance(value, int) and value > 1e6:
                print(f"  {key:<28} {value / 1e9:.2f} GB")
            else:
                print(f"  {key:<28} {value}")
    print(f"bench.json: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
