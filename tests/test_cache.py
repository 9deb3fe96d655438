"""Atomic cache writes: a failed or interrupted write leaves nothing behind."""

from __future__ import annotations

import pytest

from harness.cache import Cache, atomic_dir, atomic_write, content_key


def test_cache_root_honours_harness_cache(tmp_path):
    assert Cache.from_env({"HARNESS_CACHE": str(tmp_path)}).root == tmp_path
    assert Cache.from_env({"HOME": "/h"}).root.name == "virtio-pm-harness"


def test_atomic_dir_failure_leaves_no_entry_and_no_temporary(tmp_path):
    final = tmp_path / "entry"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(final) as tmp:
            (tmp / "half").write_text("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_success_renames_into_place(tmp_path):
    with atomic_dir(tmp_path / "entry") as tmp:
        (tmp / "f").write_text("x")
    assert (tmp_path / "entry" / "f").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_atomic_write_replaces_whole_file(tmp_path):
    p = atomic_write(tmp_path / "a" / "f.json", "1")
    atomic_write(p, b"22")
    assert p.read_text() == "22" and [x.name for x in p.parent.iterdir()] == ["f.json"]


def test_content_key_separates_parts():
    assert content_key("ab", "c") != content_key("a", "bc")
    assert len(content_key("x")) == 16


def test_the_sources_lock_is_reentrant_here_and_excludes_another_process(tmp_path):
    import subprocess
    import sys

    from harness.errors import SetupError
    cache = Cache(tmp_path / "cache")
    with cache.sources_lock(timeout=1), cache.sources_lock(timeout=1):  # nested in one process
        pass
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom harness.cache import Cache\n"
        f"with Cache(__import__('pathlib').Path({str(cache.root)!r})).sources_lock(timeout=5):\n"
        "    print('held', flush=True); time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SetupError, match="another harness process has held .*sources.lock for 1 s"):
            with cache.sources_lock(timeout=1):
                pass
    finally:
        holder.kill()
        holder.wait()
    with cache.sources_lock(timeout=5):  # free again once the other process is gone
        pass


def test_a_killed_builds_files_are_discarded_and_older_ones_kept(tmp_path):
    import os
    from harness.build import discard_unfinished
    out = tmp_path / "build-x"
    (out / "kernel" / "irq").mkdir(parents=True)
    old = out / "kernel" / "irq" / "chip.o"
    old.write_bytes(b"complete object")
    os.utime(old, ns=(1_000_000_000, 1_000_000_000))
    started = out / "harness-build.started"
    started.touch()
    os.utime(started, ns=(2_000_000_000, 2_000_000_000))
    truncated = out / "kernel" / "irq" / ".chip.o.cmd"
    truncated.write_text("savedcmd_kernel/irq/chip.o := $(wildcard")  # as a killed fixdep leaves it
    assert discard_unfinished(out, started) == 1
    assert old.exists() and started.exists() and not truncated.exists()


def test_a_finished_build_keeps_what_a_cache_hit_and_a_module_build_read(tmp_path):
    from harness.build import trim
    out = tmp_path / "build-x"
    files = {  # path -> kept: as a 6.12 guest build's O= directory has them
        "arch/arm64/boot/Image": True, "vmlinux": True, "System.map": True, ".config": True,
        "Module.symvers": True, "include/generated/autoconf.h": True, "include/config/auto.conf": True,
        "include/config/auto.conf.cmd": True, "scripts/module.lds": True, "scripts/mod/modpost": True,
        "scripts/mod/empty.o": True, "scripts/basic/.fixdep.cmd": True, "drivers/virtio/virtio_mmio.ko": True,
        "harness-modules/probe/virtio_pm_probe.o": True, "harness-build.json": True, "build.log": True,
        "kernel/fork.o": False, "kernel/.fork.o.cmd": False, "vmlinux.o": False, "vmlinux.a": False,
        ".tmp_vmlinux1": False, ".tmp_vmlinux2.kallsyms.S": False, "drivers/virtio/built-in.a": False,
        "drivers/virtio/.built-in.a.cmd": False,
    }
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"x" * 10)
    assert trim(out) == 10 * sum(1 for kept in files.values() if not kept)
    assert {name for name in files if (out / name).exists()} == {name for name, kept in files.items() if kept}


def test_build_progress_counts_the_kbuild_steps_of_a_real_build_log(tmp_path):
    from conftest import FIXTURES
    from harness.build import BuildProgress, count_steps
    log = FIXTURES / "build" / "linux-7.2.13-full-build.log"
    assert count_steps(log) == 1551  # 1555 lines, 4 of them make's Entering/Leaving directory
    assert count_steps(tmp_path / "not-yet.log") == 0
    half = BuildProgress(steps=775, expected=1551, elapsed=17.0)
    assert half.line().startswith("build [##########----------]  50% 775/1551 steps, 0m17s elapsed, ~0m17s left")
    assert "first build of this kconfig" in BuildProgress(10, None, 5.0).line()


def test_progress_reports_come_while_the_stage_runs_and_never_after():
    import time
    from harness.proc import every, minutes
    seen = []
    with every(seen.append, interval=0.05):
        time.sleep(0.32)
    n = len(seen)
    time.sleep(0.15)
    assert 4 <= n == len(seen) and seen == sorted(seen) and 0.04 < seen[0] < 0.3
    assert minutes(250.0) == "4m10s" and minutes(59.9) == "0m59s"


def test_a_failing_progress_report_does_not_fail_the_stage():
    import time
    from harness.proc import every
    calls = []

    def broken(elapsed):
        calls.append(elapsed)
        raise OSError("the download directory went away")
    with every(broken, interval=0.02):
        time.sleep(0.15)
    assert len(calls) == 1
