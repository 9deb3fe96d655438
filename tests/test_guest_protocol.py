"""The marker protocol of GuestSession, against a real local shell on a pty.

The QEMU guest is exercised by the e2e tests; here a host ``sh`` stands in
for it so that the protocol (exit status, output framing, timeout -> HANG,
exit -> crash, reaping) is tested in milliseconds.
"""

from __future__ import annotations

import os

import pytest

from harness.errors import BootError, GuestCrash, GuestHang
from harness.dmesg import strip_terminal
from harness.guest import READY_LINE, GuestSession
from harness.proc import CommandLog

SHELL = ["sh", "-c", f"echo '{READY_LINE}'; exec sh -i"]


def session(tmp_path, argv=SHELL, boot_timeout=10.0) -> GuestSession:
    return GuestSession(argv, tmp_path / "console.log", CommandLog(tmp_path / "commands.log"),
                        boot_timeout=boot_timeout)


def test_output_and_exit_status_are_framed_by_markers(tmp_path):
    with session(tmp_path) as s:
        r = s.run("printf 'a\\nb\\n'; false")
        assert (r.output, r.exit_status) == ("a\nb", 1)
        r = s.run("printf 'no newline'")
        assert (r.output, r.exit_status) == ("no newline", 0)
        long = "x" * 300
        assert s.run(f"echo {long}").output == long  # longer than any terminal line
    assert (tmp_path / "console.log").read_text().count("no newline") >= 1


def test_timeout_is_a_hang_and_the_process_is_reaped(tmp_path):
    with pytest.raises(GuestHang) as err:
        with session(tmp_path) as s:
            pid = s._child.pid
            s.run("sleep 30", timeout=0.5)
    assert err.value.exit_code == 7 and err.value.console_log == str(tmp_path / "console.log")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_exit_during_a_command_is_a_crash(tmp_path):
    with pytest.raises(GuestCrash):
        with session(tmp_path) as s:
            s.run("exit 3")


def test_no_ready_line_is_a_boot_error(tmp_path):
    with pytest.raises(BootError, match="no 'harness-init: ready' within 1 s"):
        with session(tmp_path, ["sh", "-c", "echo booting; sleep 30"], boot_timeout=1.0):
            pass


def test_early_exit_is_a_boot_error_with_the_console_tail(tmp_path):
    with pytest.raises(BootError, match="Kernel panic"):
        with session(tmp_path, ["sh", "-c", "echo 'Kernel panic - not syncing: test'"]):
            pass


def test_clean_output_strips_cursor_queries_and_carriage_returns():
    assert strip_terminal("harness# \x1b[6nls\r\r\nfoo\r\n") == "harness# ls\nfoo\n"


class _Scripted:
    """A guest session that answers from a table: command prefix -> (exit status, output)."""

    def __init__(self, answers):
        self.answers, self.commands = answers, []

    def run(self, command, timeout=30.0):
        from harness.guest import CommandResult
        self.commands.append(command)
        status, output = next((v for k, v in self.answers.items() if command.startswith(k)), (0, ""))
        return CommandResult(command, output, status, 0.01)


def test_a_failed_arming_command_ends_the_cycle_at_once_naming_it():
    from harness import scenarios, suspend
    from harness.errors import ScenarioError
    guest = _Scripted({"rtcwake": (1, "rtcwake: /dev/rtc0: unable to find device: No such file or directory")})
    with pytest.raises(ScenarioError) as err:
        suspend.run_cycle(guest, scenarios.find_scenario("s2idle-rtc"), 1)
    assert "arming the cycle: `rtcwake -m no -s 2` exited 1: rtcwake: /dev/rtc0: unable to find device" in str(err.value)
    assert not any("/sys/power/state" in c for c in guest.commands)  # never suspended, so no HANG to wait out


def test_a_failed_set_up_command_is_an_error_before_any_cycle():
    from harness import suspend
    from harness.errors import ScenarioError
    guest = _Scripted({"echo 1 > /sys/power/pm_print_times": (1, "sh: can't create /sys/power/pm_print_times")})
    with pytest.raises(ScenarioError, match="guest set-up: .*pm_print_times.* exited 1: sh: can't create"):
        suspend.prepare(guest)
