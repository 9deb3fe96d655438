"""End-to-end SSH: real guests on the default tree (a cache hit after `make setup`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from conftest import ROOT
from harness import ssh

pytestmark = pytest.mark.e2e


def harness(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _check(cycle: dict, name: str) -> dict:
    return next(c for c in cycle["checks"] if c["name"] == name)


@pytest.fixture(scope="module")
def ssh_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ssh-run")
    proc = harness("run", "--out", str(out), "--scenario", "s2idle-rtc:1")
    return proc, out, json.loads((out / "results.json").read_text())


def test_net_traffic_passes_with_bytes_seconds_and_checksum(ssh_run):
    proc, out, results = ssh_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (cycle,) = results["cycles"]
    check = _check(cycle, "net-traffic")
    assert check["verdict"] == "PASS", check
    assert cycle["net_traffic"]["ok"] and cycle["net_traffic"]["bytes"] == 2 * ssh.PAYLOAD_BYTES
    assert check["evidence"][0] == f"bytes: {2 * ssh.PAYLOAD_BYTES} (both ways)"
    assert re.fullmatch(r"sha256: [0-9a-f]{64}", check["evidence"][2])
    print(f"net-traffic: {cycle['net_traffic']['seconds']:.2f} s ({cycle['net_traffic']['detail']})")


def test_ssh_uname_is_the_kernel_the_console_saw_and_the_key_is_private(ssh_run):
    _, out, results = ssh_run
    assert results["ssh"]["uname_r"] == results["versions"]["kernel"]
    key = Path(results["ssh"]["key"])
    assert key.parent == out / "ssh" and (key.stat().st_mode & 0o777) == 0o600
    assert "hostfwd=tcp:127.0.0.1:" in " ".join(results["qemu_argv"])


def test_sftp_dmesg_has_the_cycles_resume_lines(ssh_run):
    _, out, results = ssh_run
    pulled = (out / "ssh" / "dmesg.txt").read_text()
    console = (out / results["cycles"][0]["dmesg_file"]).read_text()
    resume = [line for line in console.splitlines() if "PM: resume of devices complete" in line
              or "PM: suspend exit" in line]
    assert resume and all(line in pulled for line in resume)
    assert (out / "ssh" / "interrupts.txt").read_text().lstrip().startswith("CPU0")
    assert "success" in (out / "ssh" / "suspend_stats.txt").read_text()
    assert results["notes"] == []


def test_net_traffic_fails_when_virtio_net_is_unbound(tmp_path):
    proc = harness("run", "--out", str(tmp_path), "--scenario", "net-unbound")
    results = json.loads((tmp_path / "results.json").read_text())
    (cycle,) = results["cycles"]
    check = _check(cycle, "net-traffic")
    assert check["verdict"] == "XFAIL" and "no traffic through virtio-net" in check["summary"], check
    assert not cycle["net_traffic"]["ok"] and cycle["net_traffic"]["bytes"] == 0
    assert _check(cycle, "state-write")["verdict"] == "PASS"
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the failure was expected by the scenario


def test_net_traffic_catches_dead_rx_rings_that_the_link_flag_calls_up(tmp_path):
    """patches/net-defects/dead-rx-rings: virtio-net resumes with its carrier on, operstate
    "up", and its receive NAPI disabled: devices-work (operstate) passes, net-traffic fails."""
    proc = harness("run", "--out", str(tmp_path), "--series", "patches/net-defects/dead-rx-rings",
                   "--scenario", "s2idle-rtc:1")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["defect"] == "dead-rx-rings"
    (cycle,) = results["cycles"]
    assert _check(cycle, "net-traffic")["verdict"] == "XFAIL", _check(cycle, "net-traffic")
    assert not cycle["net_traffic"]["ok"] and cycle["net_traffic"]["bytes"] == 0
    devices = _check(cycle, "devices-work")
    assert devices["verdict"] == "PASS", devices  # the link flag says up
    assert any("operstate" in e and e.rstrip().endswith("up") for e in devices["evidence"]), devices
    assert proc.returncode == 0 and results["verdict"] == "PASS", proc.stdout + proc.stderr


def test_boot_ssh_prints_a_working_ssh_line():
    child = pexpect.spawn(sys.executable, ["-m", "harness", "boot", "--ssh"], cwd=str(ROOT), encoding="utf-8",
                          timeout=300)
    try:
        child.expect(r"ssh -p (\d+) -i (\S+) -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                     r"root@127\.0\.0\.1")
        port, key = int(child.match.group(1)), Path(child.match.group(2))
        with ssh.connect(port, ssh.SshKey(key, key.with_suffix(".pub").read_text().strip())) as s:
            out, rc = s.run("echo over-ssh; cat /proc/sys/kernel/osrelease")
        assert rc == 0 and out.startswith("over-ssh\n")
        child.sendline("uname -r")
        child.expect(out.split()[1])  # the console is still the terminal's
    finally:
        child.sendcontrol("]")
        child.expect(pexpect.EOF, timeout=30)
        child.close(force=True)


def test_a_taken_port_makes_the_boot_retry_with_a_new_one(tmp_path, monkeypatch):
    """QEMU cannot bind a hostfwd port another process took: the boot is tried again."""
    import socket

    from harness.cache import Cache
    from harness.pipeline import Request, boot_with_ssh, prepare_guest
    from harness.proc import CommandLog

    log = CommandLog(tmp_path / "commands.log")
    art = prepare_guest(Request(), Cache.from_env(), log, lambda text: None)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    real = ssh.PORTS.allocate
    ports = iter([taken.getsockname()[1]])
    monkeypatch.setattr(ssh.PORTS, "allocate", lambda: next(ports, None) or real())
    said = []
    session, target = boot_with_ssh(art, tmp_path, log, 120, said.append)
    try:
        with session:
            assert target.port != taken.getsockname()[1]
            assert any("booting again with a new port" in s for s in said), said
            with ssh.connect(target.port, target.key) as s:
                assert s.run("echo ok") == ("ok\n", 0)
    finally:
        ssh.PORTS.release(target.port)
        taken.close()


def test_keep_alive_leaves_a_cell_guest_running_for_ssh_and_ctrl_c_ends_it(tmp_path):
    cell = "baseline-6.12/virt-mmio/pm-test-platform"
    child = pexpect.spawn(sys.executable, ["-m", "harness", "matrix", "default", "--cell", cell, "--keep-alive", cell,
                                           "--keep-alive-seconds", "300", "--out", str(tmp_path)],
                          cwd=str(ROOT), encoding="utf-8", timeout=300, dimensions=(50, 400))
    try:
        # the line as harness.log has it: on the terminal rich colours the numbers and paths
        log, deadline, kept = tmp_path / "harness.log", time.monotonic() + 300, None
        while kept is None and time.monotonic() < deadline and child.isalive():
            text = log.read_text(errors="replace") if log.exists() else ""
            kept = re.search(r"guest kept running for 300 s .*?: ssh -p (\d+) -i (\S+) ", text)
            time.sleep(0.5)
        assert kept, "no keep-alive line in harness.log"
        port, key = int(kept.group(1)), Path(kept.group(2))
        with ssh.connect(port, ssh.SshKey(key, key.with_suffix(".pub").read_text().strip())) as s:
            out, rc = s.run("cat /sys/power/suspend_stats/success")
        assert rc == 0 and int(out) >= 1  # the cell's cycle ran in this guest
        child.sendintr()
        child.expect(pexpect.EOF, timeout=30)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0  # Ctrl-C ended the kept guest, not the run: its verdict stands
    doc = json.loads((tmp_path / "matrix.json").read_text())
    assert [c["verdict"] for c in doc["cells"]] == ["PASS"]
    assert (tmp_path / "junit.xml").is_file()
