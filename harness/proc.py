"""The one helper through which the harness runs host commands.

Every command is appended to the run's transcript (``commands.log``) with its working
directory, its duration in seconds and its output, so a failed run can be replayed by hand,
and logged to the ``harness.proc`` logger: the command line at DEBUG (``harness -v``), its
output at :data:`OUTPUT` (``-vv``).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

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
    timeout: float | None = None,
    output_file: Path | None = None,
    stdout_file: Path | None = None,
) -> Completed:
    """Run ``argv``, log it, and return a :class:`Completed` (never raises on rc).

    ``env`` entries are added to the current environment.  With
    ``output_file`` the combined stdout/stderr is streamed there (for long
    build logs) and also returned.  ``timeout`` is in seconds; on expiry the
    command is killed and ``subprocess.TimeoutExpired`` propagates.  With
    ``stdout_file`` only stdout goes to that file (binary output such as an
    archive) and ``output`` is stderr.
    """
    args = tuple(str(a) for a in argv)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    start = time.monotonic()
    if output_file is not None or stdout_file is not None:
        target = output_file or stdout_file
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            proc = subprocess.run(args, cwd=cwd, env=full_env, stdout=out,
                                  stderr=subprocess.STDOUT if output_file else subprocess.PIPE,
                                  timeout=timeout, check=False)
        output = output_file.read_text(errors="replace") if output_file else proc.stderr.decode(errors="replace")
    else:
        proc = subprocess.run(args, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)
        output = proc.stdout.decode(errors="replace")
    seconds = time.monotonic() - start
    env_text = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    shown = f"(output in {output_file})\n" if output_file else output
    line = f"{'cd ' + str(cwd) + ' && ' if cwd else ''}{env_text + ' ' if env_text else ''}{shlex.join(args)}"
    log.write(f"$ {line}\n# rc={proc.returncode} seconds={seconds:.2f}\n{shown}\n")
    _LOG.debug("$ %s  # rc=%d, %.2f s", line, proc.returncode, seconds)
    if shown.strip():
        _LOG.log(OUTPUT, "%s", shown.rstrip())
    return Completed(args, proc.returncode, output, seconds)


def tail(text: str, lines: int = 20) -> str:
    """Return the last ``lines`` lines of ``text`` (for error messages)."""
    return "\n".join(text.rstrip().splitlines()[-lines:])
