#!/usr/bin/env python3
"""``make bench``: the harness's speed and size figures, printed as a table and written to
``bench.json``.  A script, not a test: these machines are noisy, so each figure is a ratio or
a pair measured in the same run.

Figures (each skipped with a reason when its input is missing):

* parser: MB/s of ``dmesg.parse`` and of ``harness parse --json`` over the real captures of
  ``tests/fixtures`` concatenated to at least 10 MB, the best of three; the worst case of the
  old parser (one phase with 20,000 open calls); peak memory over the text (tracemalloc) per MB
* cache: bytes per embedded tree, per worktree (checked out or released), per ``O=`` build
  directory, ccache, downloads, in ``$HARNESS_CACHE``
* ``--run``: a warm ``harness run`` of the backport (one s2idle cycle): wall seconds against
  the seconds spent in the build, the boot and the cycles it reports (harness overhead)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import dmesg  # noqa: E402
from harness.cache import Cache  # noqa: E402


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
            "open_calls_20000_seconds": round(worst, 3), "peak_mb_over_text_per_mb": round(peak / 1e6 / mb, 2)}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, timeout=600).stdout
    return int(out.split()[0]) if out else 0


def bench_cache(cache: Cache) -> dict:
    root = cache.root
    if not root.is_dir():
        return {"skipped": f"no cache at {root}"}
    out: dict = {"root": str(root), "total": _du(root)}
    for name in ("trees", "src", "ccache", "debs", "sysroot", "rootfs", "runs"):
        if (root / name).is_dir():
            out[name] = _du(root / name)
    worktrees = []
    for rec in sorted((root / "worktrees").glob("*.json")):
        wt = rec.with_suffix("")
        if wt.is_dir():
            builds = {b.name: _du(b) for b in wt.glob("build-*")}
            source = _du(wt) - sum(builds.values())
            worktrees.append({"worktree": wt.name, "checked_out": json.loads(rec.read_text()).get("checked_out", True),
                              "source": source, "builds": builds})
    out["worktrees"] = worktrees
    return out


def bench_run(cache: Cache) -> dict:
    out = Path("/tmp") / f"bench-run-{os.getpid()}"
    cmd = [sys.executable, "-m", "harness", "run", "--series", "patches/v9-backport-6.12", "--scenario", "s2idle-rtc:1",
           "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=3600)  # warm the build first
    wall = _timed(lambda: subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=3600))
    doc = json.loads((out / "results.json").read_text())
    waited = sum(doc["timings"].get(k, 0.0) for k in ("build", "boot", "cycles"))
    return {"wall_seconds": round(wall, 2), "build_boot_cycles_seconds": round(waited, 2),
            "overhead_share": round((wall - waited) / wall, 3), "timings": doc["timings"], "verdict": doc["verdict"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", action="store_true", help="also time a warm harness run (needs make setup)")
    p.add_argument("--out", type=Path, default=ROOT / "bench.json")
    args = p.parse_args()
    cache = Cache.from_env()
    figures = {"parser": bench_parser(), "cache": bench_cache(cache)}
    if args.run:
        figures["run"] = bench_run(cache)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    for section, values in figures.items():
        print(f"[{section}]")
        for key, value in values.items():
            if key == "worktrees":
                for w in value:
                    print(f"  worktree {w['worktree']}: source {w['source'] / 1e9:.2f} GB"
                          f"{'' if w['checked_out'] else ' (released)'}, builds "
                          + ", ".join(f"{b / 1e9:.2f} GB" for b in w["builds"].values()))
            elif isinstance(value, int) and value > 1e6:
                print(f"  {key:<28} {value / 1e9:.2f} GB")
            else:
                print(f"  {key:<28} {value}")
    print(f"bench.json: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
