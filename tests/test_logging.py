"""The harness logs through the stdlib: progress at INFO, commands at DEBUG (-v), their
output below DEBUG (-vv), and a run's harness.log gets everything."""

from __future__ import annotations

import logging

import pytest

from harness import cli_args, logs
from harness.proc import CommandLog, run


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    logs.configure(0)


@pytest.mark.parametrize("verbosity, shown", [
    (-1, set()), (0, {"progress"}), (1, {"progress", "command"}), (2, {"progress", "command", "output"})])
def test_verbosity_chooses_what_reaches_stderr(verbosity, shown, capsys, tmp_path):
    logs.configure(verbosity)
    logs.say("building")
    run(["echo", "hello-from-echo"], CommandLog(tmp_path / "commands.log"))
    err = capsys.readouterr().err
    seen = {name for name, text in (("progress", "harness: building\n"), ("command", "harness: $ echo hello-from-echo"),
                                    ("output", "harness: hello-from-echo\n")) if text in err}
    assert seen == shown
    # the transcript always has the command and its output
    assert "$ echo hello-from-echo\n# rc=0" in (tmp_path / "commands.log").read_text()


def test_a_run_log_gets_every_level_while_stderr_stays_quiet(capsys, tmp_path):
    logs.configure(-1)
    with logs.run_log(tmp_path / "run" / "harness.log") as path:
        logs.say("apply v9 patches 1-5")
        run(["true"], CommandLog())
        logging.getLogger("harness.matrix").warning("a warning")
    logs.say("after the run")
    text = path.read_text()
    assert "INFO MainThread apply v9 patches 1-5" in text and "DEBUG MainThread $ true  # rc=0" in text
    assert "after the run" not in text
    assert capsys.readouterr().err == "harness: a warning\n"


def test_verbose_and_quiet_are_options_of_each_command():
    args = cli_args.build_parser().parse_args(["matrix", "default", "--list", "-vv"])
    assert (args.verbose, args.quiet) == (2, 0)
    args = cli_args.build_parser().parse_args(["series", "show", "patches/v9-backport-6.12", "-q"])
    assert (args.verbose, args.quiet) == (0, 1)
