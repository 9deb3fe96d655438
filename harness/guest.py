"""A guest session: QEMU on a pty, driven over its serial console with pexpect.

Commands are wrapped in markers, as labgrid's ShellDriver does: the shell
prints a start marker, the command's output, and an end marker followed by
the exit status.  Each marker is written split in two quoted halves in the
command line, so the echoed command (which busybox ash also wraps at about
80 columns) never matches.  Line ends from QEMU's stdio are ``\\r\\r\\n`` and
ash sends ``ESC[6n`` after each prompt; both are removed from output.

Every wait has a timeout: a guest that stops answering raises
:class:`~harness.errors.GuestHang`, one whose QEMU exits raises
:class:`~harness.errors.GuestCrash` or :class:`~harness.errors.BootError`;
the full console log is kept at ``console_log`` in every case, and QEMU is
always reaped (also on KeyboardInterrupt, and by ``PR_SET_PDEATHSIG`` if the
harness itself is killed).
"""

from __future__ import annotations

import ctypes
import logging
import re
import secrets
import shlex
import signal
import string
import time
from dataclasses import dataclass
from pathlib import Path

import pexpect

from harness import timeouts
from harness.dmesg import strip_terminal
from harness.errors import BootError, GuestCrash, GuestHang
from harness.proc import OUTPUT, CommandLog

_LOG = logging.getLogger("harness.guest")

#: Printed by guest-rootfs/init just before it starts the console shell.
READY_LINE = "harness-init: ready"

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the QEMU child: get SIGKILL when the harness process dies (prctl(2))."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class CommandResult:
    """Output (cleaned, without the trailing newline), exit status and wall seconds of one command."""

    command: str
    output: str
    exit_status: int
    seconds: float


class GuestSession:
    """QEMU running ``argv`` with its serial console on a pty.

    Use as a context manager; ``boot_seconds`` is set once the shell answers.
    ``boot_timeout`` is in seconds.
    """

    def __init__(self, argv: list[str], console_log: Path, log: CommandLog, *, boot_timeout: float = timeouts.BOOT):
        self.argv = argv
        self.console_log = console_log
        self.log = log
        self.boot_timeout = boot_timeout
        self.boot_seconds: float | None = None
        self._child: pexpect.spawn | None = None
        self._logfile = None

    def __enter__(self) -> "GuestSession":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> float:
        """Start QEMU and wait for the guest shell; return boot seconds.

        Raises :class:`BootError` if QEMU exits or no shell answers within ``boot_timeout``.
        """
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        self._logfile = open(self.console_log, "w", encoding="utf-8", errors="replace")
        self.log.write(f"$ {shlex.join(self.argv)}\n# console: {self.console_log}\n")
        _LOG.debug("$ %s  # console: %s", shlex.join(self.argv), self.console_log)
        start = time.monotonic()
        self._child = pexpect.spawn(self.argv[0], self.argv[1:], encoding="utf-8", codec_errors="replace",
                                    timeout=self.boot_timeout, maxread=65536, echo=False,
                                    preexec_fn=_die_with_parent)
        self._child.logfile_read = self._logfile
        try:
            self._child.expect_exact(READY_LINE, timeout=self.boot_timeout)
        except pexpect.EOF:
            raise BootError(f"QEMU exited before the guest shell started (see {self.console_log}):\n"
                            f"{self._tail()}") from None
        except pexpect.TIMEOUT:
            raise BootError(f"no '{READY_LINE}' within {self.boot_timeout:.0f} s "
                            f"(see {self.console_log}):\n{self._tail()}") from None
        self.run("true", timeout=self.boot_timeout)
        self.boot_seconds = time.monotonic() - start
        return self.boot_seconds

    def _tail(self, lines: int = 15) -> str:
        if self._logfile:
            self._logfile.flush()
        text = strip_terminal(self.console_log.read_text(errors="replace"))
        return "\n".join(text.splitlines()[-lines:])

    def run(self, command: str, timeout: float = timeouts.GUEST_COMMAND) -> CommandResult:
        """Run ``command`` in the guest shell; return its output and exit status.

        ``timeout`` is in seconds.  Raises :class:`GuestHang` (exit 7) when the
        end marker does not come in time, :class:`GuestCrash` when QEMU exits.
        """
        if self._child is None:
            raise RuntimeError("guest session is not started")
        marker = "".join(secrets.choice(string.ascii_uppercase) for _ in range(12))
        head, rest = marker[:5], marker[5:]
        line = f"echo '{head}''{rest}'; {command}; echo \"{head}\"\"{rest}-$?\""
        start = time.monotonic()
        self._child.sendline(line)
        try:
            self._child.expect(re.compile(rf"{marker}-(\d+)\r*\n"), timeout=timeout)
        except pexpect.TIMEOUT:
            self.log.write(f"# guest: {command!r} timed out after {timeout:.0f} s\n")
            _LOG.debug("guest$ %s  # timed out after %.0f s", command, timeout)
            raise GuestHang(f"guest did not finish {command!r} within {timeout:.0f} s; "
                            f"console log kept at {self.console_log}:\n{self._tail()}",
                            str(self.console_log)) from None
        except pexpect.EOF:
            raise GuestCrash(f"QEMU exited while running {command!r}; console log kept at "
                             f"{self.console_log}:\n{self._tail()}", str(self.console_log)) from None
        seconds = time.monotonic() - start
        before = self._child.before
        idx = before.rfind(marker)
        body = before[idx + len(marker):] if idx >= 0 else before
        output = strip_terminal(body).strip("\n")
        status = int(self._child.match.group(1))
        self.log.write(f"# guest$ {command}\n# status={status} seconds={seconds:.2f}\n{output}\n")
        _LOG.debug("guest$ %s  # status=%s, %.2f s", command, status, seconds)
        if output.strip():
            _LOG.log(OUTPUT, "%s", output.rstrip())
        return CommandResult(command, output, status, seconds)

    def interact(self) -> None:
        """Hand the console to the user (Ctrl-] leaves); for ``harness boot``."""
        if self._child is None:
            raise RuntimeError("guest session is not started")
        self._child.logfile_read = None
        self._child.interact()

    def close(self) -> None:
        """Terminate QEMU (SIGHUP, SIGINT, then SIGKILL) and close the console log."""
        if self._child is not None:
            try:
                if self._child.isalive():
                    self._child.terminate(force=True)
            finally:
                self._child.close(force=True)
                self._child = None
        if self._logfile is not None:
            self._logfile.close()
            self._logfile = None
