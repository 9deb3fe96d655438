"""A guest session: QEMU on a pty, driven over its serial console with pexpect.

Commands are wrapped in markers, as labgrid's ShellDriver does: the shell
prints a start marker, the command's output, and an end marker followed by
the exit status.  Each marker is written split in two quoted halves in the
command line, so the echoed command (which busybox ash also wraps at about
80 columns) never matches.  Line ends from QEMU's stdio are ``\\r\\r\\n`` and
ash sends ``ESC[6n`` after each prompt; both are removed from output.

Every wait has a timeout: a guest that stops answering raises
:class:`~harness.errors.GuestHang`; a kernel panic, or an Oops after which the
command does not finish within :data:`harness.timeouts.OOPS_GRACE`, raises
:class:`~harness.errors.GuestCrash` at once with the kernel's text; QEMU killed
by a signal raises :class:`~harness.errors.QemuKilled`, QEMU exiting during
boot :class:`~harness.errors.BootError`.  The full console log is kept at
``console_log`` in every case, and QEMU is always reaped (also on
KeyboardInterrupt, by :data:`harness.proc.CHILDREN` when a matrix is
interrupted, and by ``setpriv --pdeathsig`` if the harness itself is killed).
"""

from __future__ import annotations

import logging
import re
import secrets
import shlex
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pexpect

from harness import timeouts
from harness.dmesg import PROBLEMS, strip_terminal
from harness.errors import BootError, GuestCrash, GuestHang, QemuKilled, ScenarioError
from harness.proc import CHILDREN, OUTPUT, CommandLog, die_with_parent

_LOG = logging.getLogger("harness.guest")

#: Printed by guest-rootfs/init just before it starts the console shell.
READY_LINE = "harness-init: ready"

#: The console lines that end a command early: a panic, an Oops (:data:`harness.dmesg.PROBLEMS`).
#: The console shows them although its loglevel is 1: panic() prints at KERN_EMERG and die()
#: raises the console loglevel (console_verbose()).
_PANIC = next(rx for kind, rx in PROBLEMS if kind == "panic")
_OOPS = next(rx for kind, rx in PROBLEMS if kind == "oops")
_LINE_END = re.compile(r"\n")
#: The shell refusing the command line (busybox ash: ``sh: syntax error: unexpected ";"``; dash,
#: in the protocol tests: ``# sh: 1: Syntax error: ...`` after its prompt): the whole line, end marker included,
#: never runs.  It starts with a literal (``sh: ``) so that ``re`` finds it with a fast scan:
#: pexpect searches the whole output of a command again at each read, and a pattern that
#: must be tried at each position (``(?:^|[#$] )[\w/.-]*sh: ...``) cost 1.1 ms per 23 KB
#: of ``dmesg``, where this one costs 26 microseconds.  A shell that lacks the function of a
#: line it ran before (``sh: __hxf1: not found``: a shell that init respawned) is refused so too.
_SYNTAX = re.compile(r"sh: (?:\d+: )?(?:[Ss]yntax error|__hxf\d+: not found)[^\r\n]*")


@dataclass(frozen=True)
class CommandResult:
    """Output (cleaned, without the trailing newline), exit status and wall seconds of one command."""

    command: str
    output: str
    exit_status: int
    seconds: float


#: The longest line the guest shell reads: busybox ash's line editor stops taking input beyond
#: about 1020 characters (CONFIG_FEATURE_EDITING_MAX_LEN is 1024 in Debian's busybox-static;
#: measured: a line of 1012 characters runs, one of 1022 never ends), so longer lines are refused.
MAX_LINE = 1000
#: The shell variable that holds a line's marker (a name no guest command of ours uses).
_MARK = "__hxm"
#: The prefix of the shell functions a session defines for the lines it runs again (``__hxf1``...).
_FUNC = "__hxf"


def _steps(commands: Sequence[str]) -> str:
    """``commands``, each followed by ``echo M:<exit status>`` (``M`` read from :data:`_MARK`)."""
    return "".join(f"{command}; echo ${_MARK}:$?; " for command in commands).rstrip("; ")


def _line(marker: str, commands: Sequence[str], variables: str = "", function: str | None = None,
          define: bool = True) -> str:
    """The console line that runs ``commands``: the marker, kept in :data:`_MARK` and written
    split in two quoted halves so the echoed line never contains it, ``variables``
    (``NAME=value; `` assignments), a start marker ``M:``, and after each command
    ``M:<exit status>``.  With ``function``, the commands are the body of a shell function of
    that name, defined in this line when ``define`` (else defined by an earlier line), and the
    line calls it: a line the guest has seen before costs its short call only."""
    start = f"{_MARK}='{marker[:5]}''{marker[5:]}'; {variables}echo ${_MARK}:; "
    if function is None:
        return start + _steps(commands)
    return (f"{function}(){{ {_steps(commands)}; }}; " if define else "") + start + function


def _lines(commands: Sequence[str], variables: str = "") -> list[list[str]]:
    """Split ``commands`` into runs whose :func:`_line` (with ``variables``, as a function
    defined in the line: the longest form) fits :data:`MAX_LINE`, in order.  Raises
    :class:`ScenarioError` naming a command that does not fit a line of its own."""
    def length(run: list[str]) -> int:
        return len(_line("M" * 12, run, variables, function=f"{_FUNC}9999"))
    lines: list[list[str]] = []
    for command in commands:
        if length([command]) > MAX_LINE:
            raise ScenarioError(f"guest command of {len(command)} characters is longer than the guest shell "
                                f"reads in one line (about {MAX_LINE - 60}); put it in a script in "
                                f"guest-rootfs/ or split it: {command[:120]}...")
        if lines and length([*lines[-1], command]) <= MAX_LINE:
            lines[-1].append(command)
        else:
            lines.append([command])
    return lines


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
        #: The shell functions this session's shell has: a line's commands -> the function's name.
        self._functions: dict[tuple[str, ...], str] = {}

    def __enter__(self) -> "GuestSession":
        if self._child is not None:  # started already (harness.pipeline.boot_with_ssh): not a second QEMU
            return self
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

        Raises :class:`BootError` if QEMU exits or no shell answers within ``boot_timeout``,
        RuntimeError if the session is started already.
        """
        if self._child is not None:
            raise RuntimeError(f"guest session is started already (QEMU pid {self._child.pid})")
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        self._logfile = open(self.console_log, "w", encoding="utf-8", errors="replace")
        self.log.write(f"$ {shlex.join(self.argv)}\n# console: {self.console_log}\n")
        _LOG.debug("$ %s  # console: %s", shlex.join(self.argv), self.console_log)
        start = time.monotonic()
        argv = die_with_parent(self.argv)
        self._child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", codec_errors="replace",
                                    timeout=self.boot_timeout, maxread=65536, echo=False)
        # pexpect sleeps 50 ms before every send by default (so that a password is not typed
        # before its prompt turns echo off); our lines expect their echo, and the markers are
        # split so that it never matches.  Measured: a `true` line 0.097 -> 0.040 s, `dmesg`
        # 0.254 -> 0.173 s.  (delayafterread, its 0.1 ms after each read, stays: without it
        # the reads come in smaller pieces and took half as much CPU again for no faster line.)
        self._child.delaybeforesend = None
        self._child.logfile_read = self._logfile
        CHILDREN.add(self._child.pid)  # pexpect's child leads a session (and group) of its own
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

    def _kernel_report(self, first: re.Pattern, lines: int = 40) -> str:
        """The console from the last line matching ``first`` (a panic, an Oops) on, at most ``lines``."""
        text = [line for line in self._tail(400).splitlines() if line.strip()]
        start = max((i for i, line in enumerate(text) if first.search(line)), default=max(0, len(text) - lines))
        return "\n".join(text[start:start + lines])

    def _exited(self, command: str) -> GuestCrash:
        """The error for QEMU's exit during ``command``: killed by a signal, or the guest's crash."""
        self._child.isalive()  # reaps it: sets signalstatus/exitstatus
        where = f"console log kept at {self.console_log}"
        if self._child.signalstatus is not None:
            return QemuKilled(f"QEMU was killed by signal {self._child.signalstatus} while the guest ran "
                              f"{command!r}; {where}:\n{self._tail()}", str(self.console_log))
        tail = self._tail(400)
        if _PANIC.search(tail):
            return GuestCrash(f"kernel panic while running {command!r} (QEMU exited "
                              f"{self._child.exitstatus}); {where}:\n{self._kernel_report(_PANIC)}",
                              str(self.console_log))
        return GuestCrash(f"QEMU exited (status {self._child.exitstatus}) while running {command!r}; "
                          f"{where}:\n{self._tail()}", str(self.console_log))

    def run(self, command: str, timeout: float = timeouts.GUEST_COMMAND) -> CommandResult:
        """Run ``command`` in the guest shell; return its output and exit status.

        ``timeout`` is in seconds.  Raises :class:`GuestHang` (exit 7) when the end marker
        does not come in time; :class:`GuestCrash` (FAIL) when the kernel panics, or Oopses
        and then says nothing for :data:`harness.timeouts.OOPS_GRACE` seconds, without
        waiting out ``timeout``; :class:`QemuKilled` (ERROR) when QEMU dies by a signal;
        :class:`ScenarioError` when the command is longer than :data:`MAX_LINE`.
        """
        return self.run_batch((command,), timeout)[0]

    def run_batch(self, commands: Sequence[str], timeout: float = timeouts.GUEST_COMMAND,
                  variables: Mapping[str, str | int] | None = None) -> tuple[CommandResult, ...]:
        """Run ``commands`` one after the other, each whatever the others' exit status, in as
        few console lines as :data:`MAX_LINE` allows; return one result per command.

        A console line costs a round trip (about 0.04 s under TCG) and its typing 0.2-0.5 ms
        a character (the guest shell's line editor echoes each one), so a cycle's commands go
        in one line, and a line the session ran before is a shell function the first run
        defined: its call is some 60 characters where the commands may be 900 (measured: a
        900-character line of nine ``echo``s 0.49-0.59 s, its call 0.09 s, a ``true`` 0.04 s).
        ``variables`` (name -> value, quoted for the shell) are set before the commands, outside
        the function, so that the commands can stay the same from cycle to cycle when a value
        changes.  The commands run in the
        shell itself, not a subshell (variables and ``cd`` stay), but inside a function: ``$1``
        and ``$@`` are the function's (none), and ``return`` ends the line.  ``timeout``
        (seconds) is per line; each result's ``seconds`` runs from the end of the command
        before it.  Raises as :meth:`run`.
        """
        if self._child is None:
            raise RuntimeError("guest session is not started")
        assign = "".join(f"{name}={shlex.quote(str(value))}; " for name, value in (variables or {}).items())
        results: list[CommandResult] = []
        for line_commands in _lines(commands, assign):
            results.extend(self._run_line(line_commands, timeout, assign))
        return tuple(results)

    def _run_line(self, commands: Sequence[str], timeout: float, variables: str = "") -> list[CommandResult]:
        marker = "".join(secrets.choice(string.ascii_uppercase) for _ in range(12))
        key = tuple(commands)
        known = key in self._functions
        function = self._functions.get(key, f"{_FUNC}{len(self._functions) + 1}")
        line = _line(marker, commands, variables, function, define=not known)
        if variables:
            self.log.write(f"# guest variables: {variables.rstrip('; ')}\n")
        start = last = time.monotonic()
        self._child.sendline(line)
        results = []
        for i, command in enumerate(commands):
            before = self._wait_marker(re.compile(rf"{marker}:(\d+)\r*\n"), command, start + timeout, timeout)
            now = time.monotonic()
            if i == 0:  # the echoed line, then the start marker, then the first command's output
                idx = before.rfind(marker + ":")
                before = before[idx + len(marker) + 1:] if idx >= 0 else before
            output = strip_terminal(before).strip("\n")
            status = int(self._child.match.group(1))
            self.log.write(f"# guest$ {command}\n# status={status} seconds={now - last:.2f}\n{output}\n")
            _LOG.debug("guest$ %s  # status=%s, %.2f s", command, status, now - last)
            if output.strip():
                _LOG.log(OUTPUT, "%s", output.rstrip())
            results.append(CommandResult(command, output, status, now - last))
            last = now
        self._functions[key] = function  # defined: the whole line ran
        return results

    def _wait_marker(self, end: re.Pattern, command: str, deadline: float, timeout: float) -> str:
        """Expect ``end`` until ``deadline`` (monotonic seconds), watching for a panic or Oops;
        return the console text before ``end``.

        After a panic QEMU has :data:`~harness.timeouts.PANIC_GRACE` seconds to exit; after an
        Oops the console may fall silent for at most :data:`~harness.timeouts.OOPS_GRACE`
        seconds (the Oops text can be the command's own output, e.g. ``dmesg``, which goes on
        printing; an Oops in the shell's context kills the shell, which then says nothing)."""
        patterns, crash, seen, syntax = [end, _PANIC, _OOPS, _SYNTAX], None, [], ""
        while True:
            wait = deadline - time.monotonic()
            if crash is _SYNTAX:
                wait = min(wait, timeouts.GUEST_SYNTAX_GRACE)
            elif crash is not None:
                wait = min(wait, timeouts.PANIC_GRACE if crash is _PANIC else timeouts.OOPS_GRACE)
            try:
                which = self._child.expect(patterns, timeout=max(0.0, wait))
            except pexpect.EOF:
                raise self._exited(command) from None
            except pexpect.TIMEOUT:
                if crash is _SYNTAX and time.monotonic() < deadline:
                    raise ScenarioError(f"the guest shell refused {command!r}: {syntax}") from None
                if crash is not None and time.monotonic() < deadline:
                    what = "kernel panic" if crash is _PANIC else "kernel Oops"
                    raise GuestCrash(f"{what} while running {command!r}; the guest said nothing for "
                                     f"{wait:.0f} s after it; console log kept at {self.console_log}:\n"
                                     f"{self._kernel_report(crash)}", str(self.console_log)) from None
                self.log.write(f"# guest: {command!r} timed out after {timeout:.0f} s\n")
                _LOG.debug("guest$ %s  # timed out after %.0f s", command, timeout)
                raise GuestHang(f"guest did not finish {command!r} within {timeout:.0f} s; "
                                f"console log kept at {self.console_log}:\n{self._tail()}",
                                str(self.console_log)) from None
            seen.append(self._child.before)
            if which == 0:
                return "".join(seen)
            seen.append(self._child.after)
            if patterns[which] is _SYNTAX:
                if crash is None:
                    crash, syntax = _SYNTAX, self._child.after.strip()
                continue
            if crash in (None, _SYNTAX) or patterns[which] is _PANIC:
                crash = patterns[which]
                self.log.write(f"# guest: {'panic' if crash is _PANIC else 'Oops'} on the console "
                               f"during {command!r}\n")
                patterns = [end, _PANIC, _OOPS, _LINE_END]

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
                CHILDREN.discard(self._child.pid)
                self._child = None
        if self._logfile is not None:
            self._logfile.close()
            self._logfile = None
