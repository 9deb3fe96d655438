"""Command line: ``harness setup|series|apply|build|boot|run|matrix|bisect|report|parse``.

The grammar is :mod:`harness.cli_args`, each subcommand a function of
:mod:`harness.commands`; with :mod:`harness.pipeline` they are the only code that
knows the whole pipeline; every stage below is usable alone, as in kunit_tool.
``harness parse`` is :mod:`harness.parse_log`, run without importing the pipeline.
Typed errors from the stages are caught here and turned into exit codes:
0 pass, 1 a check failed, 2 usage/configuration, 3 series, 4 apply,
5 build, 6 boot (or QEMU killed), 7 guest hang, 8 a host command past its time limit,
9 disk full, 10 an internal error of the harness (traceback in the cache's
internal-errors.log), 11 SSH to the guest failed outside a check, 130 interrupted.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

from harness import logs
from harness.cache import Cache
from harness.errors import HarnessError, InternalError, disk_full


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _command(argv: list[str]):
    """``(args, the subcommand's function)`` for ``argv``; argparse's SystemExit on a usage
    error.  ``harness parse``, a log filter that needs none of the pipeline, is read with its
    own grammar (:mod:`harness.parse_log`) and the rest of the harness is not imported (on an
    empty log 0.15-0.18 s and 21 MB, where ``harness --version`` takes 0.6-0.74 s and 33 MB)."""
    if argv[:1] == ["parse"]:
        from harness import parse_log
        args = parse_log.build_parser().parse_args(argv[1:])
        args.command = "parse"
        return args, parse_log.cmd_parse
    from harness.cli_args import build_parser
    from harness.commands import COMMANDS
    args = build_parser().parse_args(argv)
    return args, COMMANDS[args.command]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``harness`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    bisect_exit = "--bisect-exit" in argv
    try:
        args, command = _command(argv)
    except SystemExit as e:
        if bisect_exit and e.code not in (0, None):  # a usage error must not read as "bad" to git bisect
            from harness import bisect
            return bisect.GIT_BISECT_ERROR
        raise
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    logs.configure(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))
    cache = Cache.from_env()
    try:
        return command(args, cache)
    except HarnessError as e:
        print(f"harness {args.command}: error: {e}", file=sys.stderr)
        if bisect_exit:
            from harness import bisect
            return bisect.git_bisect_exit_for_error(type(e).__name__, e.exit_code)
        return e.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (harness parse ... | head): stop as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 128 + signal.SIGPIPE
    except OSError as e:
        if (full := disk_full(e, str(cache.root))) is None:
            return _internal_error(e, args, argv, cache, bisect_exit)
        print(f"harness {args.command}: error: {full}", file=sys.stderr)
        return full.exit_code
    except Exception as e:  # a fault of the harness itself: one line here, the traceback in a file
        return _internal_error(e, args, argv, cache, bisect_exit)


def _internal_error(e: Exception, args, argv: list[str], cache: Cache, bisect_exit: bool) -> int:
    """Print one line for an unexpected exception, append its traceback to the cache's
    internal-errors.log, and return exit 10 (or git bisect's error status)."""
    crash = cache.root / "internal-errors.log"
    crash.parent.mkdir(parents=True, exist_ok=True)
    with open(crash, "a", encoding="utf-8") as f:
        f.write(f"--- harness {' '.join(argv)}\n{traceback.format_exc()}\n")
    print(f"harness {args.command}: internal error: {type(e).__name__}: {e} "
          f"(traceback in {crash}; please report it)", file=sys.stderr)
    if bisect_exit:
        from harness import bisect
        return bisect.git_bisect_exit_for_error(InternalError.__name__, InternalError.exit_code)
    return InternalError.exit_code
