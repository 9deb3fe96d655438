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


def test_entering_a_started_session_starts_no_second_guest(tmp_path):
    s = session(tmp_path)
    s.__enter__()  # as harness.pipeline.boot_with_ssh does before handing the session over
    pid = s._child.pid
    with s:
        assert s._child.pid == pid and s.run("echo $$").output == str(pid)
        with pytest.raises(RuntimeError, match="started already"):
            s.start()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_batch_gives_each_command_its_output_and_status_in_order(tmp_path):
    with session(tmp_path) as s:
        rs = s.run_batch(["echo one", "false", "printf 'two\\nthree'", "(exit 7)", "true"])
    assert [(r.output, r.exit_status) for r in rs] == [("one", 0), ("", 1), ("two\nthree", 0), ("", 7), ("", 0)]
    assert all(r.seconds >= 0 for r in rs)


def test_a_batch_longer_than_a_console_line_is_split_into_lines_that_fit(tmp_path):
    from harness.guest import MAX_LINE, _line, _lines
    commands = [f"echo {i:03d}{'y' * 150}" for i in range(20)]  # ~3,300 characters in all
    lines = _lines(commands)
    assert len(lines) > 3 and [c for line in lines for c in line] == commands
    with session(tmp_path) as s:
        rs = s.run_batch(commands)
    assert [r.output[:3] for r in rs] == [f"{i:03d}" for i in range(20)]
    assert all(len(_line("M" * 12, line)) <= MAX_LINE for line in lines)


def test_a_command_longer_than_the_shell_reads_is_an_error_naming_it_not_a_hang(tmp_path):
    from harness.errors import ScenarioError
    with session(tmp_path) as s:
        with pytest.raises(ScenarioError, match="longer than the guest shell reads in one line.*echo xxx"):
            s.run("echo " + "x" * 1000)
        assert s.run("echo still here").output == "still here"


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

    def run_batch(self, commands, timeout=30.0, variables=None):
        return tuple(self.run(c, timeout) for c in commands)


def test_a_failed_arming_command_ends_the_cycle_at_once_naming_it():
    from harness import scenarios, suspend
    from harness.errors import ScenarioError
    guest = _Scripted({"read __hxwc < /sys/power/wakeup_count && echo 0 > /sys/class/rtc/rtc0/wakealarm":
                       (2, "sh: can't create /sys/class/rtc/rtc0/wakealarm: nonexistent directory")})
    with pytest.raises(ScenarioError) as err:
        suspend.run_cycle(guest, scenarios.find_scenario("s2idle-rtc"), 1)
    assert ("arming the cycle: `echo 0 > /sys/class/rtc/rtc0/wakealarm && echo +1 > /sys/class/rtc/rtc0/wakealarm` "
            "exited 2: sh: can't create /sys/class/rtc/rtc0/wakealarm") in str(err.value)
    # the state write runs in the arming's line, and only if the arming worked: no HANG to wait out
    write = next(c for c in guest.commands if "/sys/power/state" in c)
    assert write.startswith("[ $__hxarmed = 0 ] && ") and "__hxarmed=$?" in guest.commands[guest.commands.index(write) - 1]


class _Sequenced(_Scripted):
    """A scripted guest whose answer to a command prefix changes each time: prefix -> list of
    (exit status, output), the last one repeated."""

    def run(self, command, timeout=30.0):
        from harness.guest import CommandResult
        self.commands.append(command)
        key = next((k for k in self.answers if command.startswith(k)), None)
        if key is None:
            return CommandResult(command, "", 0, 0.01)
        queue = self.answers[key]
        status, output = queue.pop(0) if len(queue) > 1 else queue[0]
        return CommandResult(command, output, status, 0.01)


_HANDSHAKE = "[ $__hxarmed = 0 ] && echo $__hxwc > /sys/power/wakeup_count"
_STATE = "[ $__hxarmed = 0 ] && echo mem > /sys/power/state"
_LEFT = "__hxleft=$(cat /sys/class/rtc/rtc0/wakealarm)"


def test_an_alarm_that_fires_during_the_arming_is_caught_by_the_wakeup_count_and_the_cycle_retried():
    from harness import scenarios, suspend
    guest = _Sequenced({_HANDSHAKE: [(1, "sh: write error: Invalid argument"), (0, "")]})
    rec = suspend.run_cycle(guest, scenarios.find_scenario("s2idle-rtc"), 1)
    assert rec.write_status == 0 and len(rec.early_wakes) == 1
    assert "during the arming (sh: write error: Invalid argument)" in rec.early_wakes[0]
    assert sum(c.startswith(_STATE) for c in guest.commands) == 2  # the same line, twice
    arming = next(c for c in guest.commands if "wakealarm" in c)
    assert arming.startswith("read __hxwc < /sys/power/wakeup_count && echo 0 > /sys/class/rtc/rtc0/wakealarm")


def test_an_alarm_that_aborts_the_suspend_is_retried_but_another_busy_failure_is_the_cycle_s_result():
    from harness import scenarios, suspend
    busy = (1, "sh: write error: Device or resource busy")
    guest = _Sequenced({_STATE: [busy, (0, "")], _LEFT: [(0, "")]})  # the alarm is gone: it woke the guest
    rec = suspend.run_cycle(guest, scenarios.find_scenario("s2idle-rtc"), 1)
    assert rec.write_status == 0 and "fired during the suspend" in rec.early_wakes[0]
    guest = _Sequenced({_STATE: [busy], _LEFT: [(0, "1767225602")]})  # still pending: not ours
    rec = suspend.run_cycle(guest, scenarios.find_scenario("s2idle-rtc"), 1)
    assert rec.write_status == 1 and rec.early_wakes == () and sum(c.startswith(_STATE) for c in guest.commands) == 1
    # the kernel log of a failure that is not an early wake is left for the cycle's checks
    assert any(c == '[ -n "$__hxleft" ] || dmesg -c' for c in guest.commands)


def test_an_alarm_that_always_fires_before_the_suspend_is_an_error_after_the_retries():
    from harness import scenarios, suspend
    from harness.errors import ScenarioError
    guest = _Sequenced({_HANDSHAKE: [(1, "sh: write error: Invalid argument")]})
    with pytest.raises(ScenarioError, match=r"fired before the guest was suspended, 3 times in a row \(its wake_seconds, 1,"):
        suspend.run_cycle(guest, scenarios.find_scenario("s2idle-rtc"), 1)
    assert sum(c.startswith(_STATE) for c in guest.commands) == 1 + suspend.EARLY_WAKE_RETRIES


def test_a_failed_set_up_command_is_an_error_before_any_cycle():
    from harness import suspend
    from harness.errors import ScenarioError
    guest = _Scripted({"echo 1 > /sys/power/pm_print_times": (1, "sh: can't create /sys/power/pm_print_times")})
    with pytest.raises(ScenarioError, match="guest set-up: .*pm_print_times.* exited 1: sh: can't create"):
        suspend.prepare(guest)


# Console lines of a real capture: tests/fixtures/linux-6.12.117/console.log (echo c > sysrq-trigger).
_CAPTURE = os.path.join(os.path.dirname(__file__), "fixtures", "linux-6.12.117", "console.log")


def _captured(word: str) -> str:
    with open(_CAPTURE, errors="replace") as f:
        return next(line.strip() for line in f if word in line)


def test_a_panic_ends_the_command_at_once_with_the_panic_text(tmp_path, monkeypatch):
    from harness import timeouts
    monkeypatch.setattr(timeouts, "PANIC_GRACE", 0.5)
    panic = _captured("Kernel panic - not syncing")
    with pytest.raises(GuestCrash) as err:
        with session(tmp_path) as s:
            s.run(f"echo '{panic}'; sleep 30", timeout=25)
    assert "kernel panic" in str(err.value) and "sysrq triggered crash" in str(err.value)
    assert type(err.value) is GuestCrash and err.value.verdict == "FAIL"


def test_an_oops_then_silence_ends_the_command_after_the_grace(tmp_path, monkeypatch):
    from harness import timeouts
    monkeypatch.setattr(timeouts, "OOPS_GRACE", 0.5)
    oops = "Internal error: Oops: 0000000096000045 [#1] PREEMPT SMP"
    with pytest.raises(GuestCrash, match="kernel Oops while running") as err:
        with session(tmp_path) as s:
            s.run(f"echo '{oops}'; sleep 30", timeout=25)
    assert oops in str(err.value)


def test_oops_text_in_a_command_that_goes_on_and_finishes_is_only_output(tmp_path, monkeypatch):
    from harness import timeouts
    monkeypatch.setattr(timeouts, "OOPS_GRACE", 0.5)
    with session(tmp_path) as s:  # e.g. dmesg printing an earlier Oops, slowly
        r = s.run("echo 'Internal error: Oops: 1'; for i in 1 2 3; do sleep 0.3; echo $i; done", timeout=10)
    assert r.exit_status == 0 and r.output.endswith("1\n2\n3")


def test_qemu_killed_by_a_signal_is_an_error_not_a_finding(tmp_path):
    import signal
    from harness.errors import QemuKilled
    with pytest.raises(QemuKilled, match="killed by signal 9") as err:
        with session(tmp_path) as s:
            s.run(f"kill -9 {'$$'}", timeout=10)
    assert err.value.verdict == "ERROR" and signal.SIGKILL == 9


def _gone(pid: int, within: float) -> bool:
    import time
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("starter", [
    "from harness.proc import run, CommandLog; run(['sh', '-c', CMD], CommandLog())",
    # a grandchild (a sub-make, a compiler) dies too, not only the command
    "from harness.proc import run, CommandLog; run(['sh', '-c', 'sh -c \"$0\" & wait', CMD], CommandLog())",
    "from harness.guest import GuestSession; from harness.proc import CommandLog; import pathlib; "
    "GuestSession(['sh', '-c', CMD], pathlib.Path(OUT) / 'c.log', CommandLog()).start()",
])
def test_children_die_with_a_harness_killed_by_sigkill(tmp_path, starter):
    """kill -9 of the harness leaves no command and no guest behind (setpriv --pdeathsig KILL)."""
    import signal
    import subprocess
    import sys
    import time
    pidfile = tmp_path / "pid"
    cmd = f"echo $$ > {pidfile}; exec sleep 60"
    harness = subprocess.Popen([sys.executable, "-c", f"CMD = {cmd!r}; OUT = {str(tmp_path)!r}; {starter}"],
                               cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        end = time.monotonic() + 10
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < end:
            time.sleep(0.05)
        child = int(pidfile.read_text())
        os.kill(harness.pid, signal.SIGKILL)
        harness.wait(timeout=10)
        assert _gone(child, within=5), f"pid {child} outlived the harness"
    finally:
        harness.kill()


def test_a_command_line_the_shell_refuses_is_an_error_at_once_quoting_the_shell(tmp_path):
    from harness.errors import ScenarioError
    with pytest.raises(ScenarioError, match="the guest shell refused .*[Ss]yntax error") as err:
        with session(tmp_path) as s:
            s.run("(sleep 1; true) &;", timeout=25)
    assert "sleep 1" in str(err.value)


def test_a_syntax_error_printed_by_a_script_that_goes_on_is_only_output(tmp_path):
    with session(tmp_path) as s:
        r = s.run("sh -c 'if then' 2>&1; echo went on", timeout=10)
    assert r.output.endswith("went on") and "yntax error" in r.output


def test_a_batch_run_again_is_one_short_call_of_the_function_its_first_run_defined(tmp_path):
    commands = ["echo \"block $__hxblock\"", "printf '%s' " + "y" * 300, "(exit 3)"]
    with session(tmp_path) as s:
        sent = []
        send = s._child.sendline
        s._child.sendline = lambda line: (sent.append(line), send(line))[1]
        first = s.run_batch(commands, variables={"__hxblock": 7})
        again = s.run_batch(commands, variables={"__hxblock": "8 9"})
        other = s.run_batch(commands[:2])
    assert [(r.output[:9], r.exit_status) for r in first] == [("block 7", 0), ("y" * 9, 0), ("", 3)]
    assert [(r.output[:9], r.exit_status) for r in again] == [("block 8 9", 0), ("y" * 9, 0), ("", 3)]
    assert [r.output[:9] for r in other] == ["block 8 9", "y" * 9]  # a variable stays set in the shell
    name = s._functions[tuple(commands)]
    assert len(sent[0]) > 300 and "y" * 300 in sent[0] and f"{name}()" in sent[0]
    assert len(sent[1]) < 80 and sent[1].endswith(name) and "y" not in sent[1]
    assert "y" * 300 in sent[2] and f"{name}()" not in sent[2]  # other commands: a function of their own


def test_a_shell_that_lost_a_line_s_function_is_an_error_at_once_not_a_hang(tmp_path):
    from harness.errors import ScenarioError
    with session(tmp_path) as s:
        s.run("echo one")
        name = s._functions[("echo one",)]
        s.run(f"unset -f {name}")
        with pytest.raises(ScenarioError, match=f"refused 'echo one'.*{name}: not found"):
            s.run("echo one", timeout=25)
