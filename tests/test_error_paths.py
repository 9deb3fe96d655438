"""The checks that only the new captures can exercise (tests/fixtures/backport-traced,
defect-sleep-in-noirq, errpath-*; see the README there): the function graph trace of the
noirq callbacks, and the series' error paths.  Each check is shown passing on the capture
made for it and failing on one where its condition does not hold."""

from __future__ import annotations

import pytest

from conftest import FIXTURES, load_facts, load_record
from harness import checks, dmesg, ftrace, scenarios, verdict

TRACED = FIXTURES / "backport-traced"
SLEEPY = FIXTURES / "defect-sleep-in-noirq"
FAILS = FIXTURES / "errpath-restore-noirq-fails"
PCI = FIXTURES / "errpath-non-noirq-safe-transport"


def judged(capture, stem, scenario=None, index=1):
    """Checks of a captured cycle, with the scenario step's expectations and extra checks."""
    rec = load_record(stem, capture)
    step = scenarios.find_scenario(scenario).steps[index - 1] if scenario else None
    got = checks.check_cycle(rec, load_facts(capture), dmesg.parse(rec.dmesg),
                             step.expect if step else {}, step.checks if step else ())
    return {c.name: c for c in got}


# --- the noirq function graph trace ---------------------------------------------------------------

def test_graph_parser_follows_nesting_across_leaf_and_nested_calls():
    calls = ftrace.parse_graph((SLEEPY / "s2idle-rtc-1.noirq-trace").read_text())
    sleeps = [c for c in calls if c.name == "__might_sleep"]
    # read off the file: lines 21 and 24, leaf calls inside virtio_device_restore_noirq()
    assert [c.line + 1 for c in sleeps] == [21, 24]
    assert {c.chain for c in sleeps} == {"virtio_mmio_restore_noirq > virtio_device_restore_noirq > __might_sleep"}
    assert all(c.usecs is not None and c.usecs > 0 for c in sleeps)
    roots = [c for c in calls if not c.path]
    assert [c.name for c in roots] == ["virtio_mmio_freeze_noirq"] * 3 + ["virtio_mmio_restore_noirq"] * 3
    reset = next(c for c in calls if c.name == "vm_reset")
    assert reset.path == ("virtio_mmio_restore_noirq", "virtio_device_restore_noirq", "virtio_reset_device_noirq")


def test_sleeping_helper_in_the_noirq_path_fails_only_no_sleep_in_noirq():
    r = judged(SLEEPY, "s2idle-rtc-1")
    # net-traffic: the fixture was recorded without SSH, so it is SKIP (never a silent PASS)
    assert {n: c.verdict for n, c in r.items() if c.verdict != "PASS"} == {"no-sleep-in-noirq": "FAIL",
                                                                            "net-traffic": "SKIP"}
    ev = r["no-sleep-in-noirq"].evidence
    assert ev[0] == ("noirq trace line 21: cpu 0: "
                     "virtio_mmio_restore_noirq > virtio_device_restore_noirq > __might_sleep")
    # the kernel itself said nothing: the context is valid for it
    assert r["no-kernel-warnings"].verdict == "PASS"


def test_clean_backport_trace_passes_and_untraceable_cycles_skip():
    r = judged(TRACED, "s2idle-rtc-1")
    assert r["no-sleep-in-noirq"].verdict == "PASS"
    assert r["no-sleep-in-noirq"].summary.startswith("6 noirq callback(s) traced")
    assert judged(TRACED, "hibernate-test-resume")["no-sleep-in-noirq"].verdict == "SKIP"
    assert "fgraph.c" in judged(TRACED, "hibernate-test-resume")["no-sleep-in-noirq"].summary
    assert judged(TRACED, "pm-test-devices")["no-sleep-in-noirq"].summary == \
        "no virtio-mmio noirq callback ran in this cycle"


# --- pm_test=devices: restore on a live device -----------------------------------------------------

def test_pm_test_devices_runs_only_the_normal_phase_and_the_device_still_works():
    r = judged(TRACED, "pm-test-devices")
    assert r["resume-phases"].verdict == "PASS" and r["resume-phases"].summary == "resume"
    assert [r[n].verdict for n in ("noirq-callback", "noirq-before-normal", "noirq-request", "consumer-ready")] \
        == ["SKIP"] * 4
    assert r["no-second-reinit"].verdict == "PASS" and "driver_ok_on_entry=1" in r["no-second-reinit"].evidence[0]
    assert r["devices-work"].verdict == "PASS"


def test_without_its_level_the_same_log_fails_the_phase_check():
    rec = load_record("pm-test-devices", TRACED)
    tr = dmesg.parse(rec.dmesg).transitions[-1]
    assert checks.check_resume_phases(tr, rec.dmesg.split("\n")).verdict == "FAIL"


# --- restore_noirq fails ---------------------------------------------------------------------------

def test_failing_restore_noirq_leaves_the_device_failed_with_no_fallback():
    r = judged(FAILS, "restore-noirq-fails-1", "restore-noirq-fails")
    h = r["noirq-failure-handled"]
    assert h.verdict == "PASS"
    assert h.evidence[0].startswith("#133 ") and "virtio_mmio_restore_noirq returned -5" in h.evidence[0]
    assert h.evidence[1].startswith("#219 ") and "platform_pm_resume returned -5" in h.evidence[1]
    assert h.evidence[2] == "/sys/bus/virtio/devices/virtio2/status = 0x83 (ACKNOWLEDGE|DRIVER|FAILED)"
    assert verdict.overall([c.verdict for c in r.values()]) == "PASS"
    assert r["devices-work"].verdict == "XFAIL" and r["consumer-ready"].verdict == "XFAIL"


def test_failure_check_fails_on_a_cycle_where_restore_noirq_succeeded():
    rec = load_record("s2idle-rtc-1", TRACED)
    got = checks.check_noirq_failure_handled(rec, dmesg.parse(rec.dmesg).transitions[-1], rec.dmesg.split("\n"))
    assert got.verdict == "FAIL"
    assert "restore_noirq did not fail" in got.summary and "expected FAILED without DRIVER_OK" in got.summary


# --- a transport that is not noirq-safe -----------------------------------------------------------

def test_binding_to_virtio_pci_aborts_the_suspend_and_the_guest_keeps_working():
    r = judged(PCI, "non-noirq-safe-transport-1", "non-noirq-safe-transport", 1)
    f = r["freeze-refused"]
    assert f.verdict == "PASS"
    assert f.evidence[0] == "echo > /sys/power/state: exit status 1: sh: write error: Operation not supported"
    assert f.evidence[1].startswith("#24 ") and "0000:00:01.0: PM: pci_pm_suspend returned -95" in f.evidence[1]
    assert "fail 0 -> 1" in f.evidence[2] and "last_failed_errno -95" in f.evidence[2]
    assert r["devices-work"].verdict == "PASS"
    assert r["no-second-reinit"].verdict == "SKIP"  # the mmio provider was never frozen
    assert verdict.overall([c.verdict for c in r.values()]) == "PASS"


def test_after_unbinding_the_next_cycle_passes_everything_and_freeze_refused_would_fail():
    r = judged(PCI, "non-noirq-safe-transport-2", "non-noirq-safe-transport", 2)
    assert {c.verdict for n, c in r.items() if n not in ("no-sleep-in-noirq", "net-traffic")} == {"PASS"}
    rec = load_record("non-noirq-safe-transport-2", PCI)
    got = checks.check_freeze_refused(rec, dmesg.parse(rec.dmesg).transitions[-1], rec.dmesg.split("\n"))
    assert got.verdict == "FAIL" and "the state write succeeded" in got.summary


@pytest.mark.parametrize("stem", ["s2idle-rtc-1", "pm-test-platform"])
def test_virtio_status_is_recorded_per_device_after_each_cycle(stem):
    devices = {d.name: d for d in load_record(stem, TRACED).virtio}
    assert devices["virtio2"].transport == "a003e00.virtio_mmio" and devices["virtio2"].driver == "virtio_pm_probe"
    assert devices["virtio2"].status == 0x07  # ACKNOWLEDGE|DRIVER|DRIVER_OK (legacy: no FEATURES_OK)
    assert devices["virtio3"].transport == "0000:00:01.0" and devices["virtio3"].driver is None


def test_a_host_command_past_its_limit_is_killed_with_its_children_and_named(tmp_path):
    import os
    import time as _time

    from harness.errors import CommandTimeout
    from harness.proc import CommandLog, run
    pidfile = tmp_path / "child.pid"
    start = _time.monotonic()
    with pytest.raises(CommandTimeout) as err:
        run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], CommandLog(tmp_path / "commands.log"), timeout=1)
    assert _time.monotonic() - start < 10 and err.value.exit_code == 8
    assert "sleep 60" in str(err.value) and "within 1 s" in str(err.value)
    child = int(pidfile.read_text())
    for _ in range(50):  # the grandchild (make's compilers, say) went with its group
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        _time.sleep(0.1)
    else:
        raise AssertionError(f"pid {child} outlived the timeout")
    assert "killed after 1 s" in (tmp_path / "commands.log").read_text()


@pytest.mark.parametrize("argv", [["report", "x"], ["parse", "x.log"]])
def test_an_unexpected_exception_exits_10_with_one_line_and_the_traceback_in_a_file(argv, tmp_path, monkeypatch,
                                                                                     capsys):
    """Also `harness parse`, which main() runs from its own module (harness/parse_log.py)."""
    from harness import cli, commands, parse_log
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))

    def broken(args, cache):
        raise KeyError("boom")
    monkeypatch.setitem(commands.COMMANDS, "report", broken)
    monkeypatch.setattr(parse_log, "cmd_parse", broken)
    assert cli.main(argv) == 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: KeyError: 'boom'" in err[0]
    assert "Traceback" in (tmp_path / "cache" / "internal-errors.log").read_text()
