"""The one helper through which the harness runs host commands.

Every command is appended to the run's transcript (``commands.log``) with its working
directory, its duration in seconds and its output, so a failed run can be replayed by hand,
and logged to the ``harness.proc`` logger: the command line at DEBUG (``harness -v``), its
output at :data:`OUTPUT` (``-vv``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from harness import timeouts
from harness.errors import CommandTimeout, Interrupted

_LOG = logging.getLogger("harness.proc")

#: The logging level of a command's output: below DEBUG, shown with ``-vv``.
OUTPUT = 5
logging.addLevelName(OUTPUT, "OUTPUT")


#: setpriv(1) from util-linux sets prctl(2) PR_SET_PDEATHSIG between fork and exec (Python's
#: ``preexec_fn`` is unsafe with threads running): the child gets the signal when the harness
#: thread that started it dies, even by ``kill -9``.
SETPRIV = "setpriv"


#: The group leader of every command :func:`run` starts: a shell that gets SIGTERM when the
#: harness dies and then SIGKILLs its whole process group, so make's sub-makes and compilers
#: die too, not only make (measured: orphaned sub-makes of a killed build went on writing into
#: the O= directory while the next build ran, and it failed).  Otherwise it waits for the
#: command and exits with its status.
GROUP_GUARD = 'trap "kill -KILL 0" TERM; "$@" & wait $!; exit $?'


def _behind_pdeathsig(argv: Sequence[str], signame: str, *wrapper: str) -> list[str]:
    """``argv`` (its program resolved on PATH, so a missing one raises FileNotFoundError here,
    not setpriv's exit 127) behind ``setpriv --pdeathsig SIGNAME`` and ``wrapper``; without
    setpriv on PATH ``argv`` as it is."""
    program = shutil.which(argv[0])
    if program is None:
        raise FileNotFoundError(2, "No such file or directory", argv[0])
    if shutil.which(SETPRIV) is None:
        return list(argv)
    return [SETPRIV, "--pdeathsig", signame, "--", *wrapper, program, *argv[1:]]


def group_dies_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` run by :data:`GROUP_GUARD` behind ``setpriv --pdeathsig TERM``: the command and
    every process of its group die with the harness thread that started it, even on
    ``kill -9`` of the harness.  Raises FileNotFoundError when the program is missing."""
    return _behind_pdeathsig(argv, "TERM", "sh", "-c", GROUP_GUARD, "harness-guard")


def die_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` behind ``setpriv --pdeathsig KILL`` (one process, QEMU: nothing to take down
    with it).  Raises FileNotFoundError when the program is missing."""
    return _behind_pdeathsig(argv, "KILL")


class Children:
    """The process groups this harness process has running (commands and QEMU guests), so an
    interrupt can kill them all from the main thread and refuse new ones.

    Thread-safe.  :func:`run` and :class:`harness.guest.GuestSession` register their children
    here; :meth:`stop` (the matrix runner, on SIGINT/SIGTERM/SIGHUP) SIGKILLs every group and
    makes every later :meth:`add` raise :class:`~harness.errors.Interrupted`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pids: set[int] = set()
        self.stopping = threading.Event()

    def add(self, pid: int) -> None:
        """Register the leader ``pid`` of a new process group; raises Interrupted (after
        killing it) when the harness is stopping."""
        with self._lock:
            if not self.stopping.is_set():
                self._pids.add(pid)
                return
        _killpg(pid)
        raise Interrupted("interrupted: no new command is started")

    def discard(self, pid: int) -> None:
        """Forget ``pid`` (its command ended)."""
        with self._lock:
            self._pids.discard(pid)

    def stop(self) -> int:
        """Refuse new children and SIGKILL the process group of every running one; returns
        how many were killed."""
        with self._lock:
            self.stopping.set()
            pids = list(self._pids)
        for pid in pids:
            _killpg(pid)
        return len(pids)

    def reset(self) -> None:
        """Accept new children again (after an interrupted matrix, in the same process: tests)."""
        self.stopping.clear()


#: This process's children.  One per process by nature, as the process table is.
CHILDREN = Children()


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(frozen=True)
class CommandLog:
    """Where command transcripts go (``None`` path: nowhere)."""

    path: Path | None = None

    def write(self, text: str) -> None:
        """Append ``text`` to the log file, if there is one."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8", errors="replace") as f:
            f.write(text)


@dataclass(frozen=True)
class Completed:
    """Result of :func:`run`: argv, exit status, combined output, seconds."""

    argv: tuple[str, ...]
    returncode: int
    output: str
    seconds: float


def run(
    argv: Sequence[str | os.PathLike],
    log: CommandLog,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = timeouts.COMMAND,
    output_file: Path | None = None,
    stdout_file: Path | None = None,
) -> Completed:
    """Run ``argv``, log it, and return a :class:`Completed` (never raises on rc).

    ``env`` entries are added to the current environment.  With
    ``output_file`` the combined stdout/stderr is streamed there (for long
    build logs) and also returned.  With ``stdout_file`` only stdout goes to that file
    (binary output such as an archive) and ``output`` is stderr.

    The command runs in a process group of its own, registered in :data:`CHILDREN`, and
    dies with the harness, its children too (:func:`group_dies_with_parent`).  ``timeout`` is in seconds
    (:mod:`harness.timeouts`); past it, or on KeyboardInterrupt, the whole group (make's
    compilers, git's helpers) is killed; a timeout raises
    :class:`~harness.errors.CommandTimeout` (exit 8) naming the command.
    Raises FileNotFoundError when the program does not exist, and
    :class:`~harness.errors.Interrupted` when :meth:`Children.stop` killed it or was called
    before it started.
    """
    args = tuple(str(a) for a in argv)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    env_text = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    line = f"{'cd ' + str(cwd) + ' && ' if cwd else ''}{env_text + ' ' if env_text else ''}{shlex.join(args)}"
    start = time.monotonic()
    target = output_file or stdout_file
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(target, "wb")) if target is not None else subprocess.PIPE
        err = subprocess.PIPE if stdout_file is not None else subprocess.STDOUT
        if CHILDREN.stopping.is_set():
            raise Interrupted(f"interrupted before `{shlex.join(args)}`")
        proc = subprocess.Popen(group_dies_with_parent(args), cwd=cwd, env=full_env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            CHILDREN.add(proc.pid)
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            log.write(f"$ {line}\n# killed after {timeout:.0f} s (its limit)\n\n")
            _LOG.debug("$ %s  # killed after %.0f s", line, timeout)
            raise CommandTimeout(f"`{shlex.join(args)}` did not finish within {timeout:.0f} s and was killed "
                                 f"with its children (limits: harness/timeouts.py"
                                 f"{'; $HARNESS_BUILD_TIMEOUT for builds' if args[:1] == ('make',) else ''})") from None
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            CHILDREN.discard(proc.pid)
    if CHILDREN.stopping.is_set() and proc.returncode == -signal.SIGKILL:
        log.write(f"$ {line}\n# killed: the harness was interrupted\n\n")
        raise Interrupted(f"interrupted: `{shlex.join(args)}` was killed")
    if output_file is not None:
        output = output_file.read_text(errors="replace")
    elif stdout_file is not None:
        output = stderr.decode(errors="replace")
    else:
        output = stdout.decode(errors="replace")
    seconds = time.monotonic() - start
    shown = f"(output in {output_file})\n" if output_file else output
    log.write(f"$ {line}\n# rc={proc.returncode} seconds={seconds:.2f}\n{shown}\n")
    _LOG.debug("$ %s  # rc=%d, %.2f s", line, proc.returncode, seconds)
    if shown.strip():
        _LOG.log(OUTPUT, "%s", shown.rstrip())
    return Completed(args, proc.returncode, output, seconds)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the command's process group and reap the command."""
    _killpg(proc.pid)
    proc.wait()


#: Seconds between two progress reports of a long stage (a build, a download, a tree import):
#: plain lines, so CI logs show them too.
PROGRESS_INTERVAL = 30.0


@contextlib.contextmanager
def every(report, interval: float = PROGRESS_INTERVAL):
    """Call ``report(elapsed seconds)`` every ``interval`` seconds on a daemon thread while the
    ``with`` block runs (never after it ends); an exception in ``report`` ends the reports only."""
    stop, start = threading.Event(), time.monotonic()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                report(time.monotonic() - start)
            except Exception:  # a progress line is never worth a failed stage
                _LOG.debug("progress report failed", exc_info=True)
                return

    threading.Thread(target=loop, name="progress", daemon=True).start()
    try:
        yield
    finally:
        stop.set()


def minutes(seconds: float) -> str:
    """``250.0`` -> ``4m10s``."""
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def tail(text: str, lines: int = 20) -> str:
    """Return the last ``lines`` lines of ``text`` (for error messages)."""
    return "\n".join(text.rstrip().splitlines()[-lines:])
