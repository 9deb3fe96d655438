"""The fault suite: the faults a lab sees, each caused for real on the default kernel (the build
tests/test_e2e.py makes, a cache hit here), and what the harness does about it.

Every row asserts the exit status, a message naming the cause, that no QEMU or make of the run
is left (``/proc``), and that results.json / matrix.json are valid JSON holding what finished.
The README's fault table lists these rows; the input faults that need no guest (corrupt mbox,
missing patch, conflict: tests/test_series.py; bad config files: tests/test_schemas.py) are
there too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, armed
from harness.guest import READY_LINE

pytestmark = pytest.mark.e2e

#: A cycle that returns by itself: pm_test=platform, the quickest real cycle.
QUICK = "pm-test-platform:1"


def harness(*args: str, timeout: float = 1800, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def processes(*needles: str) -> dict[int, str]:
    """Running processes whose command line contains every one of ``needles``."""
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{d}/stat") as f:
                if f.read().rsplit(") ", 1)[1].startswith("Z"):
                    continue
        except OSError:
            continue
        if all(n in cmd for n in needles):
            found[int(d)] = cmd
    return found


def working_in(directory: Path) -> list[int]:
    """Processes whose working directory is ``directory`` or below (make's sub-makes, compilers)."""
    found = []
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and Path(os.readlink(f"/proc/{d}/cwd")).is_relative_to(directory):
                found.append(int(d))
        except OSError:
            pass
    return found


def wait_for(predicate, within: float, what: str):
    end = time.monotonic() + within
    while time.monotonic() < end:
        if value := predicate():
            return value
        time.sleep(0.2)
    pytest.fail(f"no {what} within {within:.0f} s")


def scenario(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ndescription: fault suite\n{text}")
    return str(path)


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def no_guest_left(out: Path) -> None:
    assert processes("qemu-system", str(out)) == {}


def run_fault(tmp_path: Path, name: str, text: str, exit_status: int, verdict: str, error_type: str):
    """``harness run`` of scenario ``text`` that must end with ``exit_status``, ``verdict`` and
    ``error_type``, leaving no guest; returns (output, results.json, seconds after the boot)."""
    out = tmp_path / "out"
    start = time.monotonic()
    proc = harness("run", "--out", str(out), "--scenario", scenario(tmp_path, name, text))
    seconds = time.monotonic() - start
    assert proc.returncode == exit_status, proc.stdout + proc.stderr
    doc = results(out)
    assert (doc["verdict"], doc["error_type"]) == (verdict, error_type)
    no_guest_left(out)
    return proc.stdout + proc.stderr, doc, seconds - doc["timings"]["boot"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A clean run first: the default build is in the cache."""
    out = tmp_path_factory.mktemp("base")
    proc = harness("run", "--out", str(out), "--scenario", QUICK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return results(out)


def test_a_guest_panic_ends_the_cycle_at_once_with_the_panic_as_evidence(base_run, tmp_path):
    output, doc, _ = run_fault(tmp_path, "panic", "kind: pm_test\npm_test_level: platform\ncycles: 1\n"
                               "before: ['echo c > /proc/sysrq-trigger']\n", 1, "FAIL", "GuestCrash")
    assert "kernel panic" in doc["error"] and "Kernel panic - not syncing: sysrq triggered crash" in doc["error"]
    assert "kernel panic" in output
    assert "sysrq triggered crash" in (tmp_path / "out" / "console.log").read_text()


def test_a_suspend_with_no_wake_source_in_time_is_a_hang_at_the_cycle_timeout(base_run, tmp_path):
    _, doc, seconds = run_fault(tmp_path, "no-wake", "kind: rtc\nwake_seconds: 600\ncycles: 1\ntimeout: 15\n",
                                7, "HANG", "GuestHang")
    assert "echo mem > /sys/power/state" in doc["error"] and "within 15 s" in doc["error"]
    assert "harness-init: ready" in (tmp_path / "out" / "console.log").read_text()  # the console is kept
    assert seconds < 15 + 30  # the scenario's timeout, not the default 90 s


def test_qemu_killed_mid_cycle_is_an_error_within_seconds_naming_qemus_end(base_run, tmp_path):
    path = scenario(tmp_path, "long-wake", "kind: rtc\nwake_seconds: 60\ncycles: 1\ntimeout: 120\n")
    out = tmp_path / "out"
    run = spawn("run", "--out", str(out), "--scenario", path)
    try:
        wait_for(lambda: armed(out), 300, "the cycle's wake alarm armed")
        time.sleep(1)
        (pid,) = processes("qemu-system", str(out))
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        stdout, stderr = run.communicate(timeout=30)
        assert time.monotonic() - killed < 10
    finally:
        run.kill()
    assert run.returncode == 6, stdout + stderr
    assert "QEMU was killed by signal 9" in stdout + stderr
    doc = results(out)
    assert doc["verdict"] == "ERROR" and doc["error_type"] == "QemuKilled"
    no_guest_left(out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_matrix_within_5_s_and_keeps_a_partial_matrix_json(base_run, tmp_path, sig):
    long = scenario(tmp_path, "many-cycles", "kind: rtc\nwake_seconds: 2\ncycles: 40\n")
    mx = tmp_path / "faults.yaml"
    mx.write_text("name: faults\ndescription: two long cells\nprofiles: [virt-mmio, virt-smp1]\n"
                  f"rows:\n  - revision: baseline-6.12\n    scenarios: [{long}]\n")
    out = tmp_path / "out"
    run = spawn("matrix", str(mx), "--out", str(out), "--jobs", "2")
    try:
        def booted():
            logs = list(out.glob("*/console.log"))
            return logs if any(READY_LINE in p.read_text(errors="replace") for p in logs) else None
        wait_for(booted, 300, "booted cell")
        time.sleep(3)  # into the first cycles
        run.send_signal(sig)
        signalled = time.monotonic()
        _, stderr = run.communicate(timeout=60)
        stopped = time.monotonic() - signalled
    finally:
        run.kill()
    assert run.returncode == 130, stderr
    assert stopped < 5.0, f"stopped after {stopped:.1f} s"
    assert processes("qemu-system", str(out)) == {}
    doc = json.loads((out / "matrix.json").read_text())
    assert doc["cells_declared"] == 2 and doc["verdict"] == "ERROR"
    assert all("interrupted" in (c["error"] or "") for c in doc["cells"]), doc["cells"]
    for cell in out.glob("*/results.json"):
        json.loads(cell.read_text())  # every file written is whole


def unfinish_build(base_run) -> Path:
    """Give make real work in the default build: its marker gone (an unfinished build, as after
    a kill; a finished build kept no objects, harness.build.trim, so make compiles them all
    again, from ccache); returns the ``O=`` directory."""
    o_dir = Path(base_run["build"]["out_dir"])
    (o_dir / "harness-build.json").unlink(missing_ok=True)
    assert not (o_dir / "vmlinux.o").exists()
    return o_dir


def test_a_signal_during_a_matrix_build_kills_make_and_exits_within_5_s(base_run, tmp_path):
    o_dir = unfinish_build(base_run)
    mx = tmp_path / "one.yaml"
    mx.write_text("name: one\ndescription: one cell\nprofiles: [virt-mmio]\n"
                  "rows:\n  - revision: baseline-6.12\n    scenarios: [pm-test-platform]\n")
    out = tmp_path / "out"
    run = spawn("matrix", str(mx), "--out", str(out))
    try:
        wait_for(lambda: processes("make", f"O={o_dir}", " Image"), 300, "make Image")
        time.sleep(2)
        run.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        stdout, stderr = run.communicate(timeout=120)
        stopped = time.monotonic() - signalled
    finally:
        run.kill()
    assert run.returncode == 130, stdout + stderr
    assert stopped < 5.0, f"stopped after {stopped:.1f} s"
    assert processes("make", f"O={o_dir}") == {}
    assert not (o_dir / "harness-build.json").exists()
    (cell,) = json.loads((out / "matrix.json").read_text())["cells"]
    assert "interrupted" in cell["error"]


def test_kill_9_during_a_build_leaves_no_make_and_the_rerun_builds_and_passes(base_run, tmp_path):
    o_dir = unfinish_build(base_run)
    run = spawn("build")
    try:
        wait_for(lambda: processes("make", f"O={o_dir}", " Image"), 300, "make Image")  # not the config step
        time.sleep(1)
        run.kill()  # SIGKILL: no handler of the harness runs
        run.communicate(timeout=30)
        # make gets SIGKILL with its parent (a make left alone would run on for a minute)
        wait_for(lambda: not processes("make", f"O={o_dir}"), 3, "end of make after the harness died")
        # and its sub-makes and compilers: orphans of them went on writing into O= during the rerun
        wait_for(lambda: not working_in(o_dir.parent), 3, "end of every process of the build")
    finally:
        run.kill()
    assert not (o_dir / "harness-build.json").exists()  # the half build is not taken as done
    out = tmp_path / "out"
    proc = harness("run", "--out", str(out), "--scenario", QUICK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = results(out)
    assert doc["verdict"] == "PASS" and doc["build"]["cache_hit"] is False
    assert doc["build"]["out_dir"] == str(o_dir) and (o_dir / "harness-build.json").is_file()
    # what the killed make wrote was discarded first (a truncated .cmd file breaks make)
    assert "an earlier build was killed here; removed the" in (out / "commands.log").read_text()


def test_two_runs_on_one_cache_at_once_both_pass(base_run, tmp_path):
    runs = [(tmp_path / f"out{i}", spawn("run", "--out", str(tmp_path / f"out{i}"), "--scenario", QUICK))
            for i in (1, 2)]
    for out, run in runs:
        stdout, stderr = run.communicate(timeout=1800)
        assert run.returncode == 0, stdout + stderr
        assert results(out)["verdict"] == "PASS"
        no_guest_left(out)


def test_a_failed_arming_command_is_an_error_at_once_with_its_output(base_run, tmp_path):
    unbind = "echo 9010000.pl031 > /sys/bus/amba/drivers/rtc-pl031/unbind"  # the virt board's PL031
    _, doc, seconds = run_fault(tmp_path, "no-rtc", f"kind: rtc\ncycles: 1\nbefore: ['{unbind}']\n",
                                1, "ERROR", "ScenarioError")
    assert "arming the cycle: `echo 0 > /sys/class/rtc/rtc0/wakealarm && echo +1 > " in doc["error"]
    assert "can't create /sys/class/rtc/rtc0/wakealarm" in doc["error"]  # the shell's own message
    assert seconds < 30  # not the 90 s cycle timeout


def test_a_wake_alarm_that_fires_before_the_suspend_is_caught_and_retried_not_a_hang(base_run, tmp_path):
    """The race a 1 s alarm loses now and then under load, forced: the arming command sleeps
    past the alarm, which fires before the state write.  Without the wakeup_count handshake
    the guest suspends with no wake source left (a HANG when the cycle times out, 30 s here);
    with it the kernel refuses the count, and the cycle is tried again, then given up."""
    out = tmp_path / "out"
    inject = ("import sys; from harness import suspend; suspend.WAKE_ALARM += ' && sleep 1.5'; "
              "from harness.cli import main; sys.exit(main(sys.argv[1:]))")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", inject, "run", "--out", str(out), "--scenario",
                           scenario(tmp_path, "early", "kind: rtc\ncycles: 1\nwake_seconds: 1\ntimeout: 30\n")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    doc = results(out)
    assert (doc["verdict"], doc["error_type"]) == ("ERROR", "ScenarioError"), proc.stdout + proc.stderr
    assert "the wake alarm fired before the guest was suspended, 3 times in a row" in doc["error"]
    assert "during the arming (sh: write error: Invalid argument)" in doc["error"]  # the kernel's refusal
    assert time.monotonic() - start - doc["timings"]["boot"] < 30  # three 1.5 s armings, no timeout
    log = (out / "commands.log").read_text()
    assert log.count("echo $__hxwc > /sys/power/wakeup_count") == 3 and log.count("echo mem > /sys/power/state") == 3
    no_guest_left(out)


def test_a_bad_config_file_exits_2_naming_file_line_and_key(tmp_path):
    bad = scenario(tmp_path, "bad", "kind: rtc\ncycles: true\n")
    proc = harness("run", "--out", str(tmp_path / "out"), "--scenario", bad, timeout=60)
    assert proc.returncode == 2
    assert f"{bad}:4: cycles: expected an integer >= 1, got true" in proc.stderr


def test_a_missing_cross_compiler_exits_2_naming_the_package(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "make", "setpriv", "qemu-system-aarch64", "ccache", "bc", "bison", "flex", "dpkg-deb",
                 "gcc"):
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    proc = harness("build", env={"PATH": str(bin_dir)}, timeout=60)
    assert proc.returncode == 2
    assert "aarch64-linux-gnu-gcc (package gcc-aarch64-linux-gnu)" in proc.stderr


def test_a_cache_on_a_full_filesystem_is_a_clear_error_and_nothing_is_half_written(tmp_path):
    cache = tmp_path / "full"
    cache.mkdir()
    # a 2 MB tmpfs as the cache, in a mount namespace of its own (gone with the command)
    script = (f"mount -t tmpfs -o size=2m tmpfs {cache} && "
              f"HARNESS_CACHE={cache}/c {sys.executable} -m harness setup; rc=$?; "
              f"find {cache} -type f; exit $rc")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert "free on the filesystem of" in proc.stderr and "set HARNESS_CACHE" in proc.stderr
    assert proc.stdout.strip() == ""  # no file at all in the cache: nothing half-written


def test_a_command_line_the_guest_shell_refuses_is_an_error_at_once_quoting_the_shell(base_run, tmp_path):
    _, doc, seconds = run_fault(tmp_path, "bad-shell", "kind: pm_test\npm_test_level: platform\ncycles: 1\n"
                                "before: ['(sleep 1; true) &;']\n", 1, "ERROR", "ScenarioError")
    assert "the guest shell refused '(sleep 1; true) &;': sh: syntax error" in doc["error"]
    assert seconds < 30  # not the 60 s step limit
