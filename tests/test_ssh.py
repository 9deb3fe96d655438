"""SSH to the guest without a guest: the run's key and how it reaches /init, the loopback
ports, bounded connects, a local paramiko server for run(), and the net-traffic check."""

from __future__ import annotations

import hashlib
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest

from conftest import ROOT
from harness import checks, qemu, rootfs, ssh, suspend
from harness.errors import SshError
from harness.model import CycleRecord, NetTraffic
from harness.verdict import Verdict


def test_key_is_ed25519_private_file_0600_and_loads_in_paramiko(tmp_path):
    key = ssh.new_key(tmp_path / "run" / "ssh" / "id_ed25519")
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert key.public.startswith("ssh-ed25519 AAAA")
    assert key.pkey().get_base64() == key.public.split()[1]
    other = ssh.new_key(tmp_path / "other")
    assert other.public != key.public  # a new pair per run, never a fixed one


def test_cmdline_entry_is_one_word_that_init_turns_back_into_the_public_key(tmp_path):
    key = ssh.new_key(tmp_path / "k")
    word = ssh.cmdline_entry(key)
    assert " " not in word and word.startswith("harness.ssh_key=ssh-ed25519:")
    # the same expansions as guest-rootfs/init, run by a POSIX shell
    init = (ROOT / "guest-rootfs" / "init").read_text()
    assert 'key=${word#harness.ssh_key=}' in init and 'echo "${key%%:*} ${key#*:} harness"' in init
    out = subprocess.run(["sh", "-c", 'word="$1"; key=${word#harness.ssh_key=}; echo "${key%%:*} ${key#*:} harness"',
                          "sh", word], capture_output=True, text=True, check=True).stdout
    assert out.split()[:2] == key.public.split()[:2]
    assert "dropbear -R -s" in init and "chmod 0600 /root/.ssh/authorized_keys" in init


def test_initramfs_recipe_has_dropbear_sftp_server_and_root_home():
    recipe = rootfs.load_recipe(ROOT / "guest-rootfs")
    dests = {f["dest"]: f for f in recipe["sysroot"]}
    assert dests["/usr/sbin/dropbear"]["libs"] and dests["/usr/lib/sftp-server"]["libs"]
    assert "/root" in recipe["dirs"] and "/etc/dropbear" in recipe["dirs"]
    passwd = (ROOT / "guest-rootfs" / "passwd").read_text()
    assert passwd.startswith("root:x:0:0:root:/root:/bin/sh")


@pytest.mark.parametrize("path", sorted((ROOT / "qemu-profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_profile_forwards_the_ssh_port_on_loopback_only(path):
    profile = qemu.load_profile(path)
    argv = qemu.render_argv(profile, kernel=Path("k"), initrd=Path("i"), disk=Path("d"), ssh_port=40022)
    assert qemu.forwards_ssh(argv, 40022)
    fwd = [a for a in argv if "hostfwd" in a]
    assert fwd == ["user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22"]
    argv = qemu.render_argv(profile, kernel=Path("k"), initrd=Path("i"), disk=Path("d"))
    assert not any("hostfwd" in a for a in argv) and not qemu.forwards_ssh(argv, 0)


def test_port_pool_gives_n_cells_distinct_free_loopback_ports():
    pool = ssh.PortPool()
    ports = [pool.allocate() for _ in range(32)]
    assert len(set(ports)) == 32
    for port in ports:  # each is free to bind on 127.0.0.1
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    pool.release(ports[0])
    assert ports[0] not in pool._taken


def test_port_pool_is_safe_across_threads():
    pool, got = ssh.PortPool(), []
    threads = [threading.Thread(target=lambda: got.extend(pool.allocate() for _ in range(8))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 32 and len(set(got)) == 32


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connect_to_a_closed_port_fails_typed_within_its_limit(tmp_path):
    key = ssh.new_key(tmp_path / "k")
    start = time.monotonic()
    with pytest.raises(SshError, match=r"no SSH to 127\.0\.0\.1:\d+ within 2 s \(\d+ attempts; last: "):
        ssh.connect(_closed_port(), key, timeout=2)
    assert time.monotonic() - start < 4
    assert issubclass(SshError, Exception) and SshError.exit_code == 11


def test_connect_to_a_silent_server_is_bounded_by_each_attempt(tmp_path):
    """slirp accepts a TCP connection before the guest answers: the banner wait is bounded too."""
    key = ssh.new_key(tmp_path / "k")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        start = time.monotonic()
        with pytest.raises(SshError):
            ssh.connect(srv.getsockname()[1], key, timeout=3, attempt=1)
        assert time.monotonic() - start < 6


def test_net_traffic_never_raises_for_an_unreachable_guest(tmp_path):
    got = ssh.net_traffic(ssh.SshLink(ssh.SshTarget(_closed_port(), ssh.new_key(tmp_path / "k"))), timeout=1,
                          size=4096)
    assert not got.ok and got.bytes == 0 and "no SSH" in got.detail and len(got.sha256) == 64


class _FakeGuest:
    """An SSH session over which the payload comes back as ``back(data)``; the guest's copy is
    ``stored(data)``; records the commands it runs."""

    def __init__(self, back=lambda d: d, stored=lambda d: d):
        self.back, self.stored, self.files, self.commands = back, stored, {}, []

    def session(self, timeout):
        return self, False

    def drop(self):
        pass

    def put_bytes(self, data, remote, timeout):
        self.files[remote] = self.stored(data)

    def get_bytes(self, remote, timeout):
        return self.back(self.files[remote])

    def run(self, command, timeout):
        self.commands.append(command)
        path = command.split()[-1]
        return f"{hashlib.sha256(self.files[path]).hexdigest()}  {path}\n", 0


def test_net_traffic_checks_the_guests_copy_only_when_the_payload_came_back_wrong():
    """An exec channel and a sha256sum cost 0.09-0.12 s a cycle under TCG: a payload that comes
    back whole needs neither; one that does not is checked in the guest to say which way broke."""
    fine = _FakeGuest()
    got = ssh.net_traffic(fine, size=4096)
    assert got.ok and got.bytes == 8192 and fine.commands == []
    back_broke = _FakeGuest(back=lambda d: d[:-1] + b"x")
    got = ssh.net_traffic(back_broke, size=4096)
    assert not got.ok and "the way back broke" in got.detail and back_broke.commands == [f"sha256sum {ssh._GUEST_PAYLOAD}"]
    in_broke = _FakeGuest(stored=lambda d: d[:100])
    got = ssh.net_traffic(in_broke, size=4096)
    assert not got.ok and "the way in broke" in got.detail and got.bytes == 4096 + 100


def test_payload_has_the_one_size_and_a_known_content():
    data = ssh.payload()
    assert len(data) == ssh.PAYLOAD_BYTES and data == ssh.payload()
    assert data[:32] != data[32:64]  # no short period: a lost block changes the digest


# --- a local paramiko server: exec with the run's key ---------------------------------------

class _Server(paramiko.ServerInterface):
    def __init__(self, allowed: paramiko.PKey):
        self.allowed, self.command = allowed, threading.Event()

    def check_auth_publickey(self, username, key):
        ok = username == "root" and key.get_base64() == self.allowed.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def get_allowed_auths(self, username):
        return "publickey"

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        def answer():
            time.sleep(0.2)  # after paramiko has answered the exec request
            if command == b"uname -r":
                channel.sendall(b"6.12.117+\n")
                channel.send_exit_status(0)
            elif command == b"sleep":
                time.sleep(3)
                channel.send_exit_status(0)
            else:
                channel.sendall_stderr(b"sh: not found\n")
                channel.send_exit_status(127)
            channel.close()
        threading.Thread(target=answer, daemon=True).start()
        return True


@pytest.fixture
def local_sshd(tmp_path):
    """A paramiko server on 127.0.0.1 that accepts the fixture's key: (port, key)."""
    key = ssh.new_key(tmp_path / "id")
    host = paramiko.RSAKey.generate(2048)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    transports = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(host)
            t.start_server(server=_Server(key.pkey()))
            transports.append(t)

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1], key, tmp_path
    srv.close()
    for t in transports:
        t.close()


def test_run_returns_output_and_exit_status(local_sshd):
    port, key, _ = local_sshd
    with ssh.connect(port, key, timeout=10) as s:
        assert s.run("uname -r") == ("6.12.117+\n", 0)
        out, rc = s.run("nonesuch")
        assert rc == 127 and "not found" in out  # stderr comes with stdout


def test_a_link_keeps_one_connection_for_the_cycles_and_opens_a_new_one_after_a_break(local_sshd):
    port, key, _ = local_sshd
    with ssh.SshLink(ssh.SshTarget(port, key)) as link:
        first, opened = link.session(10)
        again, opened_again = link.session(10)
        assert (opened, opened_again) == (True, False) and again is first
        assert first.run("uname -r") == ("6.12.117+\n", 0)
        first.client.get_transport().close()  # the connection breaks
        after, reopened = link.session(10)
        assert reopened and after is not first and after.run("uname -r") == ("6.12.117+\n", 0)
    assert not after.alive()  # closed with the link


def test_run_past_its_limit_is_a_typed_error(local_sshd):
    port, key, _ = local_sshd
    with ssh.connect(port, key, timeout=10) as s:
        start = time.monotonic()
        with pytest.raises(SshError, match="did not finish within 1 s"):
            s.run("sleep", timeout=1)
        assert time.monotonic() - start < 2.5


def test_a_refused_key_fails_at_once_without_retrying(local_sshd):
    port, _, tmp = local_sshd
    start = time.monotonic()
    with pytest.raises(SshError, match="refused the key"):
        ssh.connect(port, ssh.new_key(tmp / "stranger"), timeout=20)
    assert time.monotonic() - start < 10


# --- the check ---------------------------------------------------------------------------

def _rec(traffic: NetTraffic | None, kind: str = "rtc") -> CycleRecord:
    return CycleRecord("s2idle-rtc", kind, 1, 0, "", 3.0, None, net_traffic=traffic)


def test_net_traffic_check_skips_without_ssh_never_passes():
    got = checks.check_net_traffic(_rec(None))
    assert got.verdict == Verdict.SKIP and "hostfwd" in got.summary


def test_net_traffic_check_skips_a_cycle_that_moved_nothing_on_purpose():
    got = checks.check_net_traffic(_rec(NetTraffic(False, skipped="pm_test cycle: rtc only"), "pm_test"))
    assert got.verdict == Verdict.SKIP and got.summary == "pm_test cycle: rtc only"


def test_net_traffic_check_passes_with_bytes_seconds_and_checksum_as_evidence():
    got = checks.check_net_traffic(_rec(NetTraffic(True, 2 << 20, 1.1, "ab" * 32, "connect 0.15 s")))
    assert got.verdict == Verdict.PASS and "2097152 bytes" in got.summary
    assert got.evidence[:3] == ("bytes: 2097152 (both ways)", "seconds: 1.10", f"sha256: {'ab' * 32}")


def test_net_traffic_check_fails_when_the_bytes_did_not_move():
    got = checks.check_net_traffic(_rec(NetTraffic(False, 0, 20.0, "ab" * 32, "no SSH to 127.0.0.1:1 within 20 s")))
    assert got.verdict == Verdict.FAIL and "no SSH" in got.summary
    assert "net-traffic" in checks.ALL_CHECKS


def test_dmesg_mismatch_is_a_note_only_when_console_lines_are_missing():
    from harness.pipeline import dmesg_mismatch
    console = "[  5.1] PM: suspend entry (s2idle)\n[  7.2] PM: suspend exit"
    assert dmesg_mismatch(console + "\n[  8.0] later line", console) is None
    note = dmesg_mismatch("[  5.1] PM: suspend entry (s2idle)", console)
    assert note.startswith("dmesg over SFTP lacks 1 of") and "suspend exit" in note


def test_pull_runs_one_command_line_and_names_the_pull_that_failed(tmp_path, monkeypatch):
    """pull_guest_state's three commands go over one exec channel; each one's exit status comes
    back on a line of its own, so a failed one is named and the others are still fetched.  The
    script runs in the host's sh with a `dmesg` that fails, and the counters are read (with
    shell builtins) from a directory of two files, one of them empty (no line)."""
    from harness import pipeline
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dmesg").write_text("#!/bin/sh\necho 'dmesg: read kernel buffer failed: Operation not permitted' >&2\n"
                                   "exit 1\n")
    (bin_dir / "cat").write_text("#!/bin/sh\necho '  CPU0'\necho 'cat: a warning of its own' >&2\n")  # not dmesg's
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    stats = tmp_path / "suspend_stats"
    stats.mkdir()
    (stats / "success").write_text("3\n")
    (stats / "last_failed_dev").write_text("\n")
    monkeypatch.setattr(suspend, "SUSPEND_STATS", suspend.SUSPEND_STATS.replace("/sys/power/suspend_stats", str(stats)))
    runs = []

    class Fake:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def run(self, command):
            runs.append(command)
            res = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30,
                                 env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
            return res.stdout + res.stderr, res.returncode

        def get(self, remote, local):
            local.write_bytes(Path(remote).read_bytes())
            return local

    monkeypatch.setattr(ssh, "connect", lambda *a, **k: Fake())
    target = ssh.SshTarget(2222, ssh.new_key(tmp_path / "id"))
    files, notes = pipeline.pull_guest_state(ssh.SshLink(target), tmp_path / "out", None)
    assert len(runs) == 1
    assert sorted(files) == ["interrupts.txt", "suspend_stats.txt"]
    assert (tmp_path / "out" / "suspend_stats.txt").read_text() == f"{stats}/success:3\n"
    assert notes == ["ssh pull: `dmesg > /tmp/harness-dmesg.txt` exited 1: "
                     "dmesg: read kernel buffer failed: Operation not permitted"]
