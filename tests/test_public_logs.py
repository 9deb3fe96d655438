"""``harness parse`` on other people's logs of other kernels (tests/fixtures/public/, see
its README): each phase lists the callbacks the log holds, old and new formats alike, and a
transition that never came back says so.  Every number here was counted in the file with
grep (and, for the wrapped mail, a separate line-joining script), not read off the parser."""

from __future__ import annotations

import pytest

from conftest import FIXTURES
from harness import dmesg

PUBLIC = FIXTURES / "public"


def parse(name: str) -> dmesg.PmTimeline:
    return dmesg.parse((PUBLIC / name).read_bytes().decode(errors="replace"))


def counts(tr: dmesg.Transition) -> dict[str, int]:
    return {p.name: len(p.events) for p in tr.phases}


# (file, style, [(kind, label, callbacks per phase, came back?)])
CORPUS = [
    ("linux-4.0-arm-legacy.log", "printk",
     [("suspend", "mem", {"suspend": 3, "suspend_late": 0, "suspend_noirq": 0, "resume_noirq": 0,
                          "resume_early": 0, "resume": 4}, True)]),
    ("linux-5.x-x86-mail-wrapped.log", "printk",
     [("suspend", "deep", {"suspend": 121, "suspend_late": 32, "suspend_noirq": 32, "resume_noirq": 33,
                           "resume_early": 32, "resume": 103}, True)]),
    ("linux-6.1-arm64-vendor-prefix.log", "printk",
     [("suspend", "deep", {"suspend": 234, "suspend_late": 2, "suspend_noirq": 21}, False)]),
    ("linux-6.12-x86-journalctl-ja.log", "journal",
     [("suspend", "deep", {"suspend": 18, "resume": 24}, True)]),
    ("linux-6.12-x86-pstore-panic.log", "printk",
     [("suspend", None, {"resume": 29}, True),
      ("suspend", "s2idle", {"suspend": 107, "suspend_late": 27, "suspend_noirq": 28}, False)]),
    ("linux-6.16-arm64-printk-caller.log", "printk",
     [("suspend", "deep", {"suspend": 58}, False)]),
]


@pytest.mark.parametrize("name, style, transitions", CORPUS, ids=[c[0] for c in CORPUS])
def test_every_phase_lists_the_callbacks_the_log_holds(name, style, transitions):
    text = (PUBLIC / name).read_bytes().decode(errors="replace")
    assert dmesg.LineStream(text).style == style
    timeline = dmesg.parse(text)
    got = [(t.kind, t.label, counts(t), t.end_seq is not None) for t in timeline.transitions]
    assert got == transitions


def test_the_legacy_form_names_the_device_and_no_callback():
    (tr,) = parse("linux-4.0-arm-legacy.log").transitions
    first = tr.phase("suspend").events[0]
    assert (first.driver, first.device, first.callback, first.parent, first.rc, first.usecs) == (
        None, "input2", None, "serio1", 0, 2011)
    # resume: reg-dummy, 10000000.sysreg, syscon.0.auto (its return cut by the poster's "..."),
    # and qksleep, slowed on purpose by the poster: 1950845 usecs
    assert [(e.device, e.usecs) for e in tr.phase("resume").events] == [
        ("reg-dummy", 84), ("10000000.sysreg", 1), ("syscon.0.auto", None), ("qksleep", 1950845)]
    assert tr.end_seq == 37  # "Restarting tasks ... done.", line 38


def test_wrapped_mail_lines_are_joined_and_offsets_dropped():
    (tr,) = parse("linux-5.x-x86-mail-wrapped.log").transitions
    first = tr.phase("suspend").events[0]
    assert (first.driver, first.device, first.callback, first.rc, first.seq, first.end_seq) == (
        "input", "input19", "input_dev_suspend", 0, 8, 10)  # grep -n: lines 9 and 11
    thermal = [e for e in tr.phase("suspend_late").events if e.device == "INT3403:04"]
    assert [(e.driver, e.callback) for e in thermal] == [("int3403 thermal", "acpi_subsys_suspend_late")]
    assert all(e.rc == 0 for p in tr.phases for e in p.events)


def test_the_failing_callback_of_an_aborted_suspend():
    (tr,) = parse("linux-6.16-arm64-printk-caller.log").transitions
    failed = [(e.device, e.callback, e.rc, e.usecs) for e in tr.phase("suspend").events if e.rc not in (0, None)]
    assert failed == [("eeprom@2", "platform_pm_suspend", -16, 655)]


def test_a_log_that_ends_inside_the_noirq_phase_leaves_that_call_open():
    timeline = parse("linux-6.12-x86-pstore-panic.log")
    last = timeline.transitions[-1].phase("suspend_noirq").events
    stuck = [e for e in last if e.end_seq is None]
    assert [(e.device, e.callback) for e in stuck] == [("0000:00:1f.6", "pci_pm_suspend_noirq")]
    assert [w.kind for w in timeline.warnings][-1] == "panic"


def test_a_failed_suspend_is_reported_as_such_with_the_kernel_line():
    (tr,) = parse("linux-6.16-arm64-printk-caller.log").transitions
    # grep -n "failed to suspend": line 179
    assert tr.failed == "lwis-i2c eeprom@2: PM: failed to suspend: error -16"
    assert all(t.failed is None for name in ("linux-4.0-arm-legacy.log", "linux-5.x-x86-mail-wrapped.log")
               for t in parse(name).transitions)
