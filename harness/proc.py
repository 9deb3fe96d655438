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
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from harness import timeouts
from harness.errors import CommandTimeout

_LOG = logging.getLogger("harness.proc")

#: The logging level of a command's output: below DEBUG, shown with ``-vv``.
OUTPUT = 5
logging.addLevelName(OUTPUT, "OUTPUT")


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

    The command runs in a process group of its own.  ``timeout`` is in seconds
    (:mod:`harness.timeouts`); past it, or on KeyboardInterrupt, the whole group (make's
    compilers, git's helpers) is killed; a timeout raises
    :class:`~harness.errors.CommandTimeout` (exit 8) naming the command.
    Raises FileNotFoundError when the program does not exist.
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
        proc = subprocess.Popen(args, cwd=cwd, env=full_env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
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
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def tail(text: str, lines: int = 20) -> str:
    """Return the last ``lines`` lines of ``text`` (for error messages)."""
    return "\n".join(text.rstrip().splitlines()[-lines:])
