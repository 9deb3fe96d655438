"""The checks of the series' claim on real captures with the guest probe module
(tests/fixtures/probe-*, see the README there): the backport passes them, the
baseline fails 1-4, and where the noirq phases do not run they fail for real.
Positions (``#seq``) were read off the capture files (line number - 1)."""

from __future__ import annotations

import pytest

from conftest import PROBE_BACKPORT, PROBE_BASELINE, load_facts, load_record
from harness import checks, dmesg, expectations, verdict
from conftest import ROOT
from harness.errors import ConfigError

BASELINE_EXPECT = expectations.load_expectations(ROOT / "patches" / "baseline-6.12" / "expect.yaml")


def series_results(capture, stem, expect=None):
    rec = load_record(stem, capture)
    got = checks.check_cycle(rec, load_facts(capture), dmesg.parse(rec.dmesg), expect)
    return {c.name: c for c in got}


def test_backport_s2idle_cycle_passes_all_checks():
    r = series_results(PROBE_BACKPORT, "s2idle-rtc-1")
    assert list(r) == ["state-write", "wake-source", "resume-phases", "no-kernel-warnings", "callbacks-returned-0",
                       "noirq-callback", "noirq-before-normal", "noirq-request", "consumer-ready",
                       "no-second-reinit", "devices-work", "no-sleep-in-noirq", "net-traffic"]
    # this capture predates the noirq function graph trace: that check has nothing to read
    assert r.pop("no-sleep-in-noirq").verdict == "SKIP"
    assert r.pop("net-traffic").verdict == "SKIP"  # and it was recorded without SSH
    assert {c.verdict for c in r.values()} == {"PASS"}


def test_backport_evidence_points_at_the_noirq_callback_and_the_first_normal_callback():
    r = series_results(PROBE_BACKPORT, "s2idle-rtc-1")
    cb = r["noirq-callback"]
    assert cb.evidence[0].startswith("#130 ") and "calling virtio_mmio_restore_noirq" in cb.evidence[0]
    assert cb.evidence[1].startswith("#132 ") and "returned 0" in cb.evidence[1]
    order = r["noirq-before-normal"]
    assert order.summary == "noirq restore done at #132, first resume callback at #146"
    assert order.evidence[2].startswith("#146 ") and "platform psci" in order.evidence[2]
    assert r["noirq-request"].evidence[0].startswith("#131 ") and "request=ok" in r["noirq-request"].evidence[0]
    assert r["consumer-ready"].evidence[0].startswith("#140 ")
    assert "driver_ok_on_entry=1" in r["no-second-reinit"].evidence[0]


def test_backport_hibernation_uses_the_restore_noirq_phase():
    r = series_results(PROBE_BACKPORT, "hibernate-test-resume")
    assert r["noirq-callback"].verdict == "PASS" and "in restore_noirq" in r["noirq-callback"].summary
    assert r["noirq-before-normal"].verdict == "PASS"


def test_baseline_fails_checks_1_to_4_for_the_reason_the_series_exists():
    r = series_results(PROBE_BASELINE, "s2idle-rtc-1")
    assert [r[n].verdict for n in ("noirq-callback", "noirq-before-normal", "noirq-request", "consumer-ready")] \
        == ["FAIL"] * 4
    assert r["noirq-callback"].evidence[0].startswith("resume: ") and "platform_pm_resume" in r["noirq-callback"].evidence[0]
    assert "provider=not-ready" in r["consumer-ready"].evidence[0]
    assert "provider=ready" in r["consumer-ready"].evidence[1]  # ... only in the normal phase
    assert r["no-second-reinit"].verdict == "SKIP"
    assert r["devices-work"].verdict == "PASS"


def test_baseline_expectations_turn_those_failures_into_xfail():
    r = series_results(PROBE_BASELINE, "s2idle-rtc-1", BASELINE_EXPECT)
    assert {n: c.verdict for n, c in r.items() if c.verdict != "PASS"} == {
        "noirq-callback": "XFAIL", "noirq-before-normal": "XFAIL", "noirq-request": "XFAIL",
        "consumer-ready": "XFAIL", "no-second-reinit": "SKIP", "no-sleep-in-noirq": "SKIP",
        "net-traffic": "SKIP"}  # recorded without SSH
    assert verdict.overall([c.verdict for c in r.values()]) == "PASS"


def test_the_backport_judged_as_a_baseline_is_an_unexpected_pass():
    r = series_results(PROBE_BACKPORT, "s2idle-rtc-1", BASELINE_EXPECT)
    assert r["consumer-ready"].verdict == "XPASS"
    assert verdict.overall([c.verdict for c in r.values()]) == "XPASS"


def test_without_noirq_phases_the_noirq_checks_fail_but_the_live_device_works():
    # pm_test=devices: no late/early/noirq phases; the normal restore finds the device live.
    r = series_results(PROBE_BACKPORT, "pm-test-devices")
    assert r["noirq-callback"].verdict == "FAIL" and r["noirq-before-normal"].verdict == "FAIL"
    assert r["consumer-ready"].summary == "no consumer resume_early line"
    assert r["no-second-reinit"].verdict == "PASS"
    assert r["devices-work"].verdict == "PASS"


def test_probe_lines_are_placed_in_the_phase_that_ran_them():
    rec = load_record("s2idle-rtc-1", PROBE_BACKPORT)
    tr = dmesg.parse(rec.dmesg).transitions[-1]
    assert [(e.event, e.phase) for e in tr.probe] == [
        ("freeze", "suspend"), ("freeze_noirq", "suspend_noirq"), ("restore_noirq", "resume_noirq"),
        ("consumer resume_early", "resume_early"), ("restore", "resume"), ("consumer resume", "resume")]
    assert tr.probe[2].get("bytes") == "64" and checks.provider_device(tr) == "a003e00.virtio_mmio"


def test_unknown_check_in_expectations_is_named(tmp_path):
    bad = tmp_path / "expect.yaml"
    bad.write_text("expect:\n  consumer-redy: fail\n")
    with pytest.raises(ConfigError, match=r"expect\.yaml:2: expect: unknown key 'consumer-redy' \(allowed: .*consumer-ready"):
        expectations.load_expectations(bad)


def test_any_expectation_allows_a_failure_without_requiring_it():
    any_ = {"consumer-ready": "any", "noirq-callback": "any"}
    on_baseline = series_results(PROBE_BASELINE, "s2idle-rtc-1", any_)
    on_backport = series_results(PROBE_BACKPORT, "s2idle-rtc-1", any_)
    assert on_baseline["consumer-ready"].verdict == "XFAIL"
    assert on_backport["consumer-ready"].verdict == "PASS"
    assert "(allowed to fail)" in on_baseline["noirq-callback"].summary


DEFECTS = PROBE_BACKPORT.parent


def test_late_provider_passes_the_callback_check_but_fails_the_ordering_by_the_probe_line():
    r = series_results(DEFECTS / "defect-late-provider", "s2idle-rtc-1")
    assert r["noirq-callback"].verdict == "PASS"  # the callback log alone looks right: 3 us, rc 0
    order = r["noirq-before-normal"]
    assert order.verdict == "FAIL"
    assert order.summary == "noirq restore finished at #215, after the first resume callback at #145"
    assert r["consumer-ready"].verdict == "FAIL" and r["consumer-ready"].evidence[0].startswith("#138 ")


def test_stale_vring_is_caught_by_the_ring_indices_at_entry_to_restore_noirq():
    for stem, index in (("s2idle-rtc-1", "1/1"), ("s2idle-rtc-2", "3/3")):
        r = series_results(DEFECTS / "defect-stale-vring", stem)
        assert r["noirq-request"].verdict == "FAIL"
        assert r["noirq-request"].summary.startswith(f"request answered, but on a stale ring: avail/used index {index}")
        assert r["devices-work"].verdict == "PASS"  # which is why this defect needed its own evidence
