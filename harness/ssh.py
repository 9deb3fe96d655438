"""SSH to the guest (paramiko): the per-run key, the forwarded port, connect with bounded
retries, commands, SFTP, and the ``net-traffic`` payload round trip after a resume.

The guest runs Debian's dropbear from the initramfs (guest-rootfs/init): host keys made at
the first connection (``dropbear -R``), password logins off (``-s``), root's
``authorized_keys`` written from the kernel command line (:func:`cmdline_entry`).  QEMU's
user network forwards ``127.0.0.1:PORT`` on the host to the guest's port 22 (the
profile's ``hostfwd``, rendered with ``ssh_port``); nothing listens on another address.
The guest's host key is not checked: it is made anew at every boot, and the connection never
leaves the loopback.

Every wait is bounded (``SSH_*`` in :mod:`harness.timeouts`); every failure is an
:class:`~harness.errors.SshError`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness import timeouts
from harness.errors import SshError
from harness.lazy import lazy_import
from harness.model import NetTraffic

# paramiko's transport thread logs every refused attempt with a traceback at ERROR; connect()
# retries those and reports the last one itself.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

paramiko = lazy_import("paramiko")
serialization = lazy_import("cryptography.hazmat.primitives.serialization")
ed25519 = lazy_import("cryptography.hazmat.primitives.asymmetric.ed25519")

#: Size of the ``net-traffic`` payload in bytes, each way: the one place it is set.  256 KiB
#: (some 180 full-size frames each way, many times the receive ring's refill batch): 1 MiB cost
#: 0.7-1.6 s a cycle under TCG, and every s2idle cycle of the test suite pays it.
PAYLOAD_BYTES = 256 << 10

#: The kernel command-line parameter that carries the public key to /init
#: (``harness.ssh_key=<type>:<base64>``; the kernel leaves a dotted unknown parameter in
#: /proc/cmdline and does not hand it to init).
CMDLINE_KEY = "harness.ssh_key"

#: Where the payload goes in the guest (a tmpfs).
_GUEST_PAYLOAD = "/tmp/net-traffic.bin"


def payload(size: int = PAYLOAD_BYTES) -> bytes:
    """The ``net-traffic`` payload: ``size`` bytes of a known, non-repeating content (the
    sha256 chain of the counter), so a dropped or reordered block changes the digest."""
    out, block = bytearray(), b"virtio-net payload"
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


@dataclass(frozen=True)
class SshKey:
    """The run's key pair: ``path`` of the private key (OpenSSH format, mode 0600) and the
    ``public`` line (``ssh-ed25519 AAAA...``)."""

    path: Path
    public: str

    def pkey(self) -> paramiko.PKey:
        """The private key as paramiko reads it."""
        return paramiko.Ed25519Key.from_private_key_file(str(self.path))


def new_key(path: Path) -> SshKey:
    """Make an ed25519 key pair (dropbear 2022.83 of Debian 12 accepts ``ssh-ed25519``) and
    write the private key to ``path`` with mode 0600 (created with that mode, never wider; an
    existing file is replaced).  ``path.with_suffix('.pub')`` gets the public line."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    path.with_suffix(".pub").write_text(public + " harness-run\n")
    return SshKey(path, public)


def cmdline_entry(key: SshKey) -> str:
    """The kernel command-line word that hands ``key``'s public half to /init:
    ``harness.ssh_key=ssh-ed25519:AAAA...`` (no space: the command line splits on spaces)."""
    kind, b64 = key.public.split()[:2]
    return f"{CMDLINE_KEY}={kind}:{b64}"


@dataclass(frozen=True)
class SshTarget:
    """Where a guest's sshd answers: the loopback ``port`` and the run's ``key``."""

    port: int
    key: SshKey

    def command(self) -> str:
        """The ``ssh`` command line a user types to log in to the guest."""
        return (f"ssh -p {self.port} -i {self.key.path} -o StrictHostKeyChecking=no "
                f"-o UserKnownHostsFile=/dev/null root@127.0.0.1")


class PortPool:
    """Free loopback TCP ports for QEMU's ``hostfwd``, none handed out twice while in use.

    A port is found by binding ``127.0.0.1:0`` and closing the socket, so another process
    may take it before QEMU does: the caller retries the boot with a new port
    (:func:`harness.pipeline.run_cell`).  Thread-safe (matrix cells run on threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._taken: set[int] = set()

    def allocate(self) -> int:
        """A port number on 127.0.0.1 that was free a moment ago and is not held by this pool."""
        with self._lock:
            for _ in range(100):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                if port not in self._taken:
                    self._taken.add(port)
                    return port
        raise SshError("no free TCP port on 127.0.0.1 after 100 tries")

    def release(self, port: int) -> None:
        """Give ``port`` back (its guest has stopped)."""
        with self._lock:
            self._taken.discard(port)


#: The ports of this process's guests (like :data:`harness.proc.CHILDREN`, one per process).
PORTS = PortPool()


class SshSession:
    """A connected SSH client; use :func:`connect`.  A context manager that closes it."""

    def __init__(self, client: paramiko.SSHClient, port: int):
        self.client = client
        self.port = port
        self._sftp_client: paramiko.SFTPClient | None = None

    def __enter__(self) -> "SshSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, command: str, timeout: float = timeouts.SSH_COMMAND) -> tuple[str, int]:
        """Run ``command`` in the guest; return (stdout and stderr together, exit status).

        ``timeout`` bounds the whole command in seconds.  Raises :class:`SshError` when the
        channel cannot open, breaks off or the command does not finish in time."""
        deadline = time.monotonic() + timeout
        try:
            chan = self._open_session(deadline)
            chan.set_combine_stderr(True)
            chan.settimeout(max(0.1, timeout))
            chan.exec_command(command)
            out = bytearray()
            while True:
                if chan.recv_ready() or not chan.exit_status_ready():
                    chan.settimeout(max(0.1, deadline - time.monotonic()))
                    data = chan.recv(65536)
                    if not data:
                        break
                    out += data
                else:
                    break
                if time.monotonic() > deadline:
                    raise socket.timeout()
            if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise socket.timeout()
            status = chan.recv_exit_status()
            chan.close()
        except socket.timeout:
            raise SshError(f"`{command}` over SSH did not finish within {timeout:.0f} s") from None
        except (paramiko.SSHException, OSError, EOFError, AttributeError) as e:
            raise SshError(f"`{command}` over SSH failed: {type(e).__name__}: {e}") from e
        return out.decode(errors="replace"), status

    def _open_session(self, deadline: float) -> paramiko.Channel:
        """A new session channel.  dropbear now and then refuses one opened right after another
        channel closed ("Unable to open channel", seen once in 4 cycles): tried again after a
        pause, until ``deadline``."""
        while True:
            try:
                return self.client.get_transport().open_session(timeout=max(0.1, deadline - time.monotonic()))
            except paramiko.ChannelException:
                if time.monotonic() + timeouts.SSH_RETRY_INTERVAL >= deadline:
                    raise
                time.sleep(timeouts.SSH_RETRY_INTERVAL)

    def _sftp(self, timeout: float) -> paramiko.SFTPClient:
        """The session's one SFTP channel, opened on first use and kept until :meth:`close`
        (fewer channel opens and closes: see :meth:`_open_session`)."""
        if self._sftp_client is None:
            chan = self._open_session(time.monotonic() + timeout)
            chan.invoke_subsystem("sftp")
            self._sftp_client = paramiko.SFTPClient(chan)
        self._sftp_client.get_channel().settimeout(timeout)
        return self._sftp_client

    def put_bytes(self, data: bytes, remote: str, timeout: float = timeouts.SSH_TRANSFER) -> None:
        """Write ``data`` to the guest file ``remote`` over SFTP; raises :class:`SshError`."""
        self._transfer(lambda sftp: sftp.putfo(io.BytesIO(data), remote, file_size=len(data)),
                       f"SFTP put of {len(data)} bytes to {remote}", timeout)

    def get_bytes(self, remote: str, timeout: float = timeouts.SSH_TRANSFER) -> bytes:
        """The guest file ``remote``'s bytes over SFTP; raises :class:`SshError`."""
        buf = io.BytesIO()
        self._transfer(lambda sftp: sftp.getfo(remote, buf), f"SFTP get of {remote}", timeout)
        return buf.getvalue()

    def put(self, local: Path, remote: str, timeout: float = timeouts.SSH_TRANSFER) -> None:
        """Copy the host file ``local`` to the guest path ``remote`` over SFTP."""
        self.put_bytes(Path(local).read_bytes(), remote, timeout)

    def get(self, remote: str, local: Path, timeout: float = timeouts.SSH_TRANSFER) -> Path:
        """Copy the guest file ``remote`` to the host path ``local`` over SFTP; return ``local``."""
        data = self.get_bytes(remote, timeout)
        Path(local).write_bytes(data)
        return Path(local)

    def remove(self, remote: str, timeout: float = timeouts.SSH_COMMAND) -> None:
        """Delete the guest file ``remote`` over SFTP; raises :class:`SshError`."""
        self._transfer(lambda sftp: sftp.remove(remote), f"SFTP remove of {remote}", timeout)

    def _transfer(self, action, what: str, timeout: float) -> None:
        start = time.monotonic()
        try:
            action(self._sftp(timeout))
        except socket.timeout:
            raise SshError(f"{what} did not finish within {timeout:.0f} s") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise SshError(f"{what} failed after {time.monotonic() - start:.1f} s: {type(e).__name__}: {e}") from e

    def alive(self) -> bool:
        """True while the connection's transport runs (paramiko has seen no error or close on it)."""
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        """Close the SFTP channel and the connection (idempotent)."""
        if self._sftp_client is not None:
            self._sftp_client.close()
            self._sftp_client = None
        self.client.close()


def connect(port: int, key: SshKey, timeout: float = timeouts.SSH_CONNECT,
            attempt: float = timeouts.SSH_ATTEMPT) -> SshSession:
    """Log in as root at ``127.0.0.1:port`` with ``key``, retrying until ``timeout`` seconds
    have passed (dropbear starts after the shell; after a resume the link may take a moment).

    Each attempt is bounded by ``attempt`` seconds (TCP, banner, key exchange, auth); between
    attempts :data:`~harness.timeouts.SSH_RETRY_INTERVAL`.  Raises :class:`SshError` with the
    last attempt's error when no attempt succeeded in time."""
    deadline = time.monotonic() + timeout
    pkey, tries, last = key.pkey(), 0, "no attempt"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        tries += 1
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a new host key every boot
        per = min(attempt, left)
        try:
            client.connect("127.0.0.1", port=port, username="root", pkey=pkey, timeout=per, banner_timeout=per,
                           auth_timeout=per, channel_timeout=per, look_for_keys=False, allow_agent=False)
            return SshSession(client, port)
        except paramiko.AuthenticationException as e:
            client.close()
            raise SshError(f"the guest's sshd at 127.0.0.1:{port} refused the key {key.path}: {e}") from e
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            last = f"{type(e).__name__}: {e}"
        time.sleep(max(0.0, min(timeouts.SSH_RETRY_INTERVAL, deadline - time.monotonic())))
    raise SshError(f"no SSH to 127.0.0.1:{port} within {timeout:.0f} s ({tries} attempts; last: {last})")


class SshLink:
    """A guest's SSH connection, kept across its cycles: :meth:`session` opens it on first
    use and again after :meth:`drop` or a break; a context manager that closes it.

    One connection for a run, where each cycle's payload round trip once made its own: a
    connect costs a key exchange in the guest's dropbear (0.13-0.17 s a cycle under TCG), and
    a connection kept from before a suspend shows that a TCP connection lives through it.
    Not thread-safe: one per guest, used by the thread that runs its cycles."""

    def __init__(self, target: SshTarget):
        self.target = target
        self._session: SshSession | None = None

    def __enter__(self) -> "SshLink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def session(self, timeout: float = timeouts.SSH_CONNECT) -> tuple[SshSession, bool]:
        """(the connection, True when it was opened by this call).  Connecting is bounded by
        ``timeout`` seconds; raises :class:`SshError` as :func:`connect`."""
        if self._session is not None and self._session.alive():
            return self._session, False
        self.drop()
        self._session = connect(self.target.port, self.target.key, timeout)
        return self._session, True

    def drop(self) -> None:
        """Close the connection (after an error on it): the next :meth:`session` opens a new one."""
        if self._session is not None:
            try:
                self._session.close()
            finally:
                self._session = None

    close = drop


def net_traffic(link: SshLink, timeout: float = timeouts.SSH_RECONNECT,
                size: int = PAYLOAD_BYTES) -> NetTraffic:
    """Move ``size`` bytes host -> guest -> host through virtio-net over ``link``'s connection
    (opened when there is none, within ``timeout`` seconds): SFTP put, SFTP get, compare; each
    step too is bounded by ``timeout`` (the payload takes well under a second).  The guest's
    copy is checked (``sha256sum``) only when what came back differs, to say which way broke:
    an exec channel and a process cost 0.06-0.12 s a cycle under TCG.  The guest's copy stays
    (the next cycle's put replaces it: an SFTP remove is one more round trip).  Never raises for
    the guest's failure: the result says what broke (``ok`` False) for the ``net-traffic``
    check, and the connection is dropped."""
    data = payload(size)
    digest = hashlib.sha256(data).hexdigest()
    start, steps = time.monotonic(), []

    def mark(step: str, since: float) -> float:
        now = time.monotonic()
        steps.append(f"{step} {now - since:.2f} s")
        return now

    moved = 0
    try:
        s, new = link.session(timeout)
        t = mark("connect", start) if new else start
        if not new:
            steps.append("over the connection kept from before the suspend")
        s.put_bytes(data, _GUEST_PAYLOAD, timeout)
        moved += size
        t = mark("put", t)
        back = s.get_bytes(_GUEST_PAYLOAD, timeout)
        moved += len(back)
        mark("get", t)
        seconds = time.monotonic() - start
        got = hashlib.sha256(back).hexdigest()
        if got != digest:
            out, rc = s.run(f"sha256sum {_GUEST_PAYLOAD}", timeout)
            guest = out.split()[0] if rc == 0 and out.split() else None
            where = (f"the guest's copy was not checked: sha256sum exited {rc}: {out.strip()[:100]}" if guest is None
                     else "the guest's copy is right: the way back broke" if guest == digest
                     else f"the guest's copy was wrong already (sha256 {guest}): the way in broke")
            return NetTraffic(False, moved, seconds, digest,
                              f"{len(back)} bytes came back with sha256 {got}, not {digest}; {where}; "
                              + ", ".join(steps))
    except SshError as e:
        link.drop()
        return NetTraffic(False, moved, time.monotonic() - start, digest, f"{e}; " + ", ".join(steps))
    return NetTraffic(True, moved, seconds, digest, ", ".join(steps))
