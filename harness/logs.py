"""Logging: the ``harness`` logger's handlers, set up once by the CLI.

Progress lines go to the ``harness`` logger at INFO (:func:`say`), every host and guest
command at DEBUG (:mod:`harness.proc`, :mod:`harness.guest`) and their output at
:data:`harness.proc.OUTPUT`.  :func:`configure` sends them to stderr as ``harness: <message>``
by verbosity; :func:`run_log` writes all of them to a run's ``harness.log``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from harness import proc

_LOG = logging.getLogger("harness")


def say(message: str) -> None:
    """A progress line: logged at INFO to the ``harness`` logger, which prints it on stderr
    (stdout carries the report) and into the run's ``harness.log``."""
    _LOG.info(message)


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is at the time, so that a live progress
    table (rich, which redirects stderr while it draws) prints the lines above itself."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def add_verbosity_options(p) -> None:
    """Add ``-v``/``--verbose`` and ``-q``/``--quiet`` (counts; :func:`configure` takes
    ``verbose - quiet``) to the argparse parser ``p``."""
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="also show every host command and guest command (-vv: their output too)")
    p.add_argument("-q", "--quiet", action="count", default=0, help="show only warnings and errors")


def configure(verbosity: int) -> None:
    """Send the ``harness`` logger to stderr as ``harness: <message>``: progress (INFO) by
    default, host and guest commands (DEBUG) from ``verbosity`` 1, their output
    (:data:`harness.proc.OUTPUT`) from 2, only warnings below 0."""
    for handler in list(_LOG.handlers):
        if isinstance(handler, _StderrHandler):
            _LOG.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("harness: %(message)s"))
    handler.setLevel(proc.OUTPUT if verbosity > 1 else logging.DEBUG if verbosity == 1 else
                     logging.INFO if verbosity == 0 else logging.WARNING)
    _LOG.addHandler(handler)
    _LOG.setLevel(proc.OUTPUT)
    _LOG.propagate = False


@contextlib.contextmanager
def run_log(path: Path):
    """While in the block, everything logged (DEBUG and up) is also written to ``path``
    (a run's or a matrix's ``harness.log``), with the time of each line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    _LOG.addHandler(handler)
    try:
        yield path
    finally:
        _LOG.removeHandler(handler)
        handler.close()
