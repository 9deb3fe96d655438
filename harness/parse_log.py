"""``harness parse``: a saved kernel log (``dmesg``, a serial console capture, a journal) to its
PM timeline on stdout, as text or as the stable JSON of :meth:`harness.dmesg.PmTimeline.to_json`.

A log filter, and a stage usable alone as kunit_tool's ``kunit.py parse`` is: it needs none of
the pipeline, so :func:`harness.cli.main` runs it from this module's grammar without importing
the rest of the harness (on an empty log 0.15-0.18 s and 21 MB, where the whole CLI's
``harness --version`` takes 0.6-0.74 s and 33 MB).
It reads the file a piece at a time (:class:`LogPieces`) and writes each transition as the
parser ends it (:class:`harness.dmesg.TimelineReader`): its memory does not grow with the log.
"""

from __future__ import annotations

import argparse
import codecs
import sys
from pathlib import Path

from harness import dmesg, logs
from harness.errors import UsageError

HELP = "parse a saved dmesg or console log into PM phases"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``harness parse`` (the full grammar, :mod:`harness.cli_args`, uses them too)."""
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print the stable JSON form")


class LogPieces:
    """The text of the log file ``path`` in pieces of whole lines, about ``size`` bytes each
    (256 KiB: ``harness parse`` of an 11 MB log peaked at 24 MB RSS, at 31 MB with 1 MiB pieces),
    read again at each iteration: :func:`harness.dmesg.parse` reads it twice (the style, then the
    lines) and never holds it whole.  Bytes decoded as UTF-8 with bad bytes
    replaced (not text mode: universal newlines would split ``\\r\\r\\n`` into two lines).
    Iterating raises UsageError (exit 2) naming the file when it cannot be opened or read."""

    def __init__(self, path: Path, size: int = 1 << 18):
        self.path, self.size = path, size

    def __iter__(self):
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        rest = ""
        for block in self._blocks():
            text = rest + decode(block)
            cut = text.rfind("\n") + 1
            if cut:
                yield text[:cut]
            rest = text[cut:]
        if rest := rest + decode(b"", final=True):
            yield rest

    def _blocks(self):
        try:
            with open(self.path, "rb") as f:
                while block := f.read(self.size):
                    yield block
        except OSError as e:
            raise UsageError(f"cannot read {self.path}: {e.strerror}") from e


def cmd_parse(args, cache=None) -> int:
    """Print the PM timeline of ``args.file`` (text, or JSON with ``args.json``); return 0.
    Raises UsageError (exit 2) naming the file when it cannot be read."""
    reader = dmesg.TimelineReader(LogPieces(args.file))
    if args.json:
        # One line, written a transition at a time: json's C encoder serves only unindented
        # output (indent=2 took 2.7 s for an 11 MB log, five times the parse); `| jq .` indents it.
        sys.stdout.writelines(dmesg.json_chunks(reader, lambda: reader.warnings))
        sys.stdout.write("\n")
    else:
        _print_text(reader, args.file)
    return 0


def _print_text(reader: dmesg.TimelineReader, path: Path) -> None:
    n = 0
    for n, tr in enumerate(reader, 1):
        ended = tr.end_seq if tr.end_seq is not None else "(no exit line: the log ends, or the next transition " \
                                                             "starts, before this one came back)"
        print(f"transition {n}: {tr.kind}{' (' + tr.label + ')' if tr.label else ''}"
              f"{' pm_test' if tr.pm_test else ''} lines {tr.start_seq}-{ended}"
              f"{f' wake IRQ {tr.wakeup_irq}' if tr.wakeup_irq is not None else ''}"
              f"{f'  FAILED: {tr.failed}' if tr.failed else ''}")
        for p in tr.phases:
            print(f"  {p.name:<14} {len(p.events):3d} callbacks"
                  f"{f'  {p.msecs:.3f} ms' if p.msecs is not None else ''}{'  ABORTED' if p.aborted else ''}")
            for e in p.events:
                print(f"      #{e.seq:<6} {e.driver or '-'} {e.device} {e.callback or '(callback not printed)'}"
                      f"{' [' + e.module + ']' if e.module else ''} rc={e.rc} {e.usecs}us")
    if not n:
        print(f"{path}: no suspend or hibernation transitions found")
    for w in reader.warnings:
        print(f"problem #{w.seq} {w.kind}: {w.text}")


def build_parser() -> argparse.ArgumentParser:
    """The grammar of ``harness parse`` alone (``prog`` ``harness parse``), for
    :func:`harness.cli.main`'s path that imports none of the pipeline."""
    p = argparse.ArgumentParser(prog="harness parse", description=HELP)
    logs.add_verbosity_options(p)
    add_arguments(p)
    return p
