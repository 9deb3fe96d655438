"""Per-cycle checks on real captured cycles: each check is shown passing on a
good cycle and failing on a real capture where the kernel really misbehaved
(or on the same capture judged against facts that do not hold)."""

from __future__ import annotations

import dataclasses

from conftest import load_facts, load_record
from harness import checks, dmesg, verdict


def run_checks(stem: str, facts=None) -> dict[str, checks.CheckResult]:
    rec = load_record(stem)
    return {c.name: c for c in checks.check_pm_cycle(rec, facts or load_facts(), dmesg.parse(rec.dmesg))}


def test_good_rtc_cycle_passes_every_check_with_evidence():
    results = run_checks("s2idle-rtc-1")
    assert {n: r.verdict for n, r in results.items()} == {
        "state-write": "PASS", "wake-source": "PASS", "resume-phases": "PASS",
        "no-kernel-warnings": "PASS", "callbacks-returned-0": "PASS"}
    wake = results["wake-source"]
    assert "#112 [    4.582609] PM: Triggering wakeup from IRQ 20" in wake.evidence
    phases = results["resume-phases"].evidence
    assert phases[0].startswith("#118 ") and "noirq resume of devices complete" in phases[0]
    assert results["callbacks-returned-0"].summary == "all 98 callbacks returned 0"


def test_wake_source_fails_when_the_wake_irq_is_not_the_rtc():
    facts = dataclasses.replace(load_facts(), rtc_irq=21)
    assert run_checks("s2idle-rtc-1", facts)["wake-source"].verdict == "FAIL"


def test_wake_source_is_skipped_for_pm_test_and_hibernation():
    assert run_checks("pm-test-platform")["wake-source"].verdict == "SKIP"
    assert run_checks("hibernate-test-resume")["wake-source"].verdict == "SKIP"


def test_hibernation_cycle_checks_the_restore_phases():
    r = run_checks("hibernate-test-resume")["resume-phases"]
    assert r.verdict == "PASS" and r.summary == "restore_noirq -> restore_early -> restore"


def test_refused_pm_test_level_fails_the_write_phase_and_callback_checks():
    results = run_checks("pm-test-processors-refused")
    assert results["state-write"].verdict == "FAIL"
    assert "output: sh: write error: Resource temporarily unavailable" in results["state-write"].evidence
    assert results["resume-phases"].verdict == "FAIL"
    assert results["callbacks-returned-0"].verdict == "FAIL"


def test_pm_test_devices_fails_the_resume_phase_check_for_missing_noirq_phases():
    r = run_checks("pm-test-devices")["resume-phases"]
    assert r.verdict == "FAIL"
    assert r.summary == "resume phases ['resume'], expected ['resume_noirq', 'resume_early', 'resume']"


def test_a_callback_without_its_returned_line_fails():
    rec = load_record("s2idle-rtc-1")
    lines = rec.dmesg.split("\n")
    # Cut the capture just before pci 0000:00:00.0 returns from pci_pm_resume_noirq (seq 117):
    # the state a hung callback leaves in the log.
    cut = dataclasses.replace(rec, dmesg="\n".join(lines[:117]))
    r = {c.name: c for c in checks.check_pm_cycle(cut, load_facts(), dmesg.parse(cut.dmesg))}
    assert r["callbacks-returned-0"].verdict == "FAIL"
    assert r["callbacks-returned-0"].evidence[0].startswith("#114 ")
    assert r["resume-phases"].verdict == "FAIL"


def test_overall_verdict_precedence():
    assert verdict.overall(["PASS", "SKIP", "XFAIL"]) == "PASS"
    assert verdict.overall(["PASS", "FAIL"]) == "FAIL"
    assert verdict.overall(["FAIL", "HANG"]) == "HANG"
    assert verdict.overall(["XPASS", "PASS"]) == "XPASS"


def test_a_kernel_panic_in_the_log_fails_the_warnings_check_with_the_line_as_evidence(capture_dir):
    text = (capture_dir / "console.log").read_bytes().decode()
    r = checks.check_no_warnings(dmesg.parse(text), text.split("\n"))
    assert r.verdict == "FAIL" and r.summary == "1 problem line(s): panic"
    assert "Kernel panic - not syncing: sysrq triggered crash" in r.evidence[0]
