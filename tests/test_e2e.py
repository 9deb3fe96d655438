"""End-to-end: build, boot and suspend real kernels in QEMU (needs `make setup`).

These use the harness cache ($HARNESS_CACHE), so the kernel is built once and
reused by every test; a cold first build takes about 6 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import time
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import rootfs, suspend
from harness.cache import Cache, file_sha256
from conftest import ROOT, armed
from harness.pipeline import Request, guest_argv, prepare_guest
from harness.errors import GuestHang
from harness.fetch import guest_sysroot
from harness.guest import GuestSession
from harness.proc import CommandLog
from harness.tree import embedded_tree

pytestmark = pytest.mark.e2e

MMIO_BOUND = {"a003a00.virtio_mmio", "a003c00.virtio_mmio", "a003e00.virtio_mmio"}


def harness(*args: str, timeout: float = 3000) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    """One real run: 2 RTC-woken s2idle cycles and 1 pm_test=platform cycle."""
    out = tmp_path_factory.mktemp("run")
    proc = harness("run", "--out", str(out), "--rtc-cycles", "2", "--pm-test-cycles", "1")
    return proc, out, json.loads((out / "results.json").read_text())


def test_run_passes_and_reports_real_cycles(main_run):
    proc, out, results = main_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results["verdict"] == "PASS"
    assert [(c["scenario"], c["index"], c["verdict"]) for c in results["cycles"]] == [
        ("s2idle-rtc", 1, "PASS"), ("s2idle-rtc", 2, "PASS"), ("pm-test-platform", 1, "PASS")]
    assert results["guest"]["mem_sleep"] == "[s2idle]"
    # the guest runs the embedded tree's kernel: Debian's linux-source-6.12 at whatever point
    # release the suite serves now (6.12.117, then 6.12.118: never a hard-coded one)
    assert results["tree"]["version"].startswith("6.12.")
    assert results["versions"]["kernel"].startswith(results["tree"]["version"])
    assert results["timings"]["boot"] > 0 and "build" in results["timings"]
    assert results["command"].startswith("harness run --profile virt-mmio")
    assert "verdict: PASS" in proc.stdout and "resume_noirq" in proc.stdout


def test_rtc_cycles_are_woken_by_the_pl031(main_run):
    _, _, results = main_run
    rtc_irq = results["guest"]["rtc_irq"]
    assert rtc_irq is not None
    for c in results["cycles"][:2]:
        assert c["write_status"] == 0 and c["wakeup_irq"] == rtc_irq
        assert 1.0 < c["seconds"] < 30.0
        assert int(c["suspend_stats"]["success"]) == c["index"]


def test_baseline_resume_puts_virtio_mmio_devices_in_the_normal_phase_only(main_run):
    _, _, results = main_run
    for c in results["cycles"]:
        phases = c["resume_devices"]
        assert list(phases) == ["resume_noirq", "resume_early", "resume"]
        noirq = {(e["driver"], e["device"]) for e in phases["resume_noirq"]}
        assert noirq == {("pci", "0000:00:00.0"), ("virtio-pci", "0000:00:01.0")}
        mmio = {e["device"]: e["callback"] for e in phases["resume"] if e["driver"] == "virtio-mmio"}
        assert mmio == {d: "platform_pm_resume" for d in MMIO_BOUND}
        assert all(e["rc"] == 0 for p in phases.values() for e in p)


def test_parse_of_the_saved_console_log_matches_the_live_run(main_run):
    _, out, results = main_run
    proc = harness("parse", "--json", str(out / "console.log"))
    assert proc.returncode == 0, proc.stderr
    parsed = json.loads(proc.stdout)["transitions"]
    assert len(parsed) == len(results["cycles"])
    for tr, cycle in zip(parsed, results["cycles"]):
        from_console = {p["name"]: [(e["driver"], e["device"], e["callback"], e["rc"]) for e in p["events"]]
                        for p in tr["phases"] if p["name"] in cycle["resume_devices"]}
        live = {name: [(e["driver"], e["device"], e["callback"], e["rc"]) for e in events]
                for name, events in cycle["resume_devices"].items()}
        assert from_console == live


def test_suspend_without_a_wake_source_is_a_hang_and_qemu_is_reaped(tmp_path):
    cache = Cache.from_env()
    log = CommandLog(tmp_path / "commands.log")
    art = prepare_guest(Request(), cache, log, print)
    with pytest.raises(GuestHang) as err:
        with GuestSession(guest_argv(art, tmp_path), tmp_path / "console.log", log) as session:
            pid = session._child.pid
            suspend.prepare(session)
            session.run("echo mem > /sys/power/state", timeout=10)  # no alarm armed: s2idle forever
    assert err.value.exit_code == 7
    assert "echo mem > /sys/power/state" in (tmp_path / "console.log").read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_cli_hang_exits_7_and_keeps_console_and_results(tmp_path):
    proc = harness("run", "--out", str(tmp_path), "--rtc-cycles", "1", "--pm-test-cycles", "0",
                   "--wake-seconds", "20", "--cycle-timeout", "3")
    assert proc.returncode == 7, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] == "HANG" and "GuestHang" in results["error"]
    assert (tmp_path / "console.log").stat().st_size > 0


def test_initramfs_is_byte_for_byte_reproducible(tmp_path):
    main = Cache.from_env()
    log = CommandLog(tmp_path / "log")
    sysroot, tree = guest_sysroot(main, log), embedded_tree(main, log)
    # the embedded tree has no checkout, as a released worktree: gen_init_cpio.c comes from git
    a = rootfs.build_initramfs(ROOT / "guest-rootfs", sysroot, tree.path, Cache(tmp_path / "a"), log)
    b = rootfs.build_initramfs(ROOT / "guest-rootfs", sysroot, tree.path, Cache(tmp_path / "b"), log)
    assert a.sha256 == b.sha256 == file_sha256(b.path)
    assert "nod /dev/console 0600 0 0 c 5 1" in a.spec and "/usr/sbin/rtcwake" in a.spec


def test_requested_symbol_with_unmet_dependency_exits_2_naming_it(tmp_path):
    frag = tmp_path / "broken.config"
    frag.write_text("# needs BLK_DEV, which is switched off\n# CONFIG_BLK_DEV is not set\nCONFIG_VIRTIO_BLK=y\n")
    proc = harness("build", *[a for f in ("base-virt-arm64", "virtio") for a in ("--kconfig", f)],
                   "--kconfig", str(frag))
    assert proc.returncode == 2, proc.stderr
    assert f"CONFIG_VIRTIO_BLK: requested y, got n ({frag}:3)" in proc.stderr


def _tree_state(tree: Path) -> str:
    git = ["git", "-C", str(tree)]
    return "".join(subprocess.run(git + args, capture_output=True, text=True).stdout
                   for args in (["rev-parse", "HEAD"], ["for-each-ref"], ["status", "--porcelain"],
                                ["stash", "list"]))


def test_compiler_error_exits_5_with_file_and_line_and_user_tree_untouched(tmp_path):
    cache = Cache.from_env()
    origin = embedded_tree(cache, CommandLog(None)).path
    user = tmp_path / "linux"
    subprocess.run(["git", "clone", "-q", "--shared", str(origin), str(user)], check=True)
    bounds = user / "kernel" / "bounds.c"  # compiled in Kbuild's prepare stage, so it fails early
    bounds.write_text(bounds.read_text() + "int harness_broken = ;\n")
    line = bounds.read_text().count("\n")
    subprocess.run(["git", "-C", str(user), "commit", "-qam", "break kernel/bounds.c",
                    "--author", "t <t@t>"], check=True, env={**os.environ, "GIT_COMMITTER_NAME": "t",
                                                             "GIT_COMMITTER_EMAIL": "t@t"})
    before = _tree_state(user)
    proc = harness("build", "--tree", str(user))
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert f"kernel/bounds.c:{line}: error: expected expression before ';' token" in proc.stderr
    assert _tree_state(user) == before
    assert not (user / ".config").exists() and not (user / "include" / "config").exists()
    build_log = Path(proc.stderr.split("Build log: ")[1].strip())
    assert "kernel/bounds.c" in build_log.read_text()
    shutil.rmtree(build_log.parent)  # the key is new on every run (new commit): don't accumulate


def test_ctrl_c_during_a_cycle_reaps_qemu_and_exits_130(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--out", str(tmp_path), "--rtc-cycles", "3",
                             "--wake-seconds", "30"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 600
    while not armed(tmp_path):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    qemu = [p for p in _children(proc.pid) if "qemu-system" in _cmdline(p)]
    assert len(qemu) == 1
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    with pytest.raises(ProcessLookupError):
        os.kill(qemu[0], 0)


def _children(pid: int) -> list[int]:
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(k) for k in kids] + [g for k in kids for g in _children(int(k))]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""
