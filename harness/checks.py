"""Per-cycle checks over a parsed timeline and the cycle's record.

Each check returns a :class:`CheckResult` whose evidence is the log lines
(with their ``seq`` position) or guest values that decided the verdict, so a
reviewer can verify it without rerunning anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.dmesg import RESUME_PHASES, PmTimeline, Transition
from harness.suspend import CycleRecord, GuestFacts

PASS, FAIL, SKIP, ERROR, HANG, XFAIL, XPASS = "PASS", "FAIL", "SKIP", "ERROR", "HANG", "XFAIL", "XPASS"
#: Verdicts that make a run fail (exit 1, or 7 for HANG).
BAD_VERDICTS = (FAIL, XPASS, ERROR, HANG)


@dataclass(frozen=True)
class CheckResult:
    """``name`` of the check, ``verdict`` (PASS/FAIL/SKIP/...), one-line ``summary``,
    and ``evidence``: lines such as ``#412 [4.5463] PM: noirq resume ...``."""

    name: str
    verdict: str
    summary: str
    evidence: tuple[str, ...] = ()


def _line(lines: list[str], seq: int | None) -> str:
    if seq is None or seq >= len(lines):
        return "(no line)"
    return f"#{seq} {lines[seq].strip()}"


def check_state_write(rec: CycleRecord) -> CheckResult:
    """The write to /sys/power/state returned 0."""
    ev = (f"echo > /sys/power/state: exit status {rec.write_status}",) + \
        ((f"output: {rec.write_output}",) if rec.write_output else ())
    if rec.write_status == 0:
        return CheckResult("state-write", PASS, f"state write returned 0 after {rec.seconds:.2f} s", ev)
    return CheckResult("state-write", FAIL, f"state write failed (exit status {rec.write_status})", ev)


def check_wake_source(rec: CycleRecord, facts: GuestFacts, tr: Transition | None, lines: list[str]) -> CheckResult:
    """An RTC cycle was woken by the PL031 IRQ (``pm_wakeup_irq`` and the kernel's wakeup line)."""
    if rec.kind != "rtc":
        return CheckResult("wake-source", SKIP, f"{rec.kind} cycle needs no wake source")
    ev = [f"/sys/power/pm_wakeup_irq = {rec.wakeup_irq}", f"PL031 IRQ in /proc/interrupts = {facts.rtc_irq}"]
    if tr is not None and tr.wakeup_irq is not None:
        seq = next((i for i in range(tr.start_seq, tr.end_seq or len(lines))
                    if "Triggering wakeup from IRQ" in lines[i]), None)
        ev.append(_line(lines, seq))
    if facts.rtc_irq is not None and rec.wakeup_irq == facts.rtc_irq:
        return CheckResult("wake-source", PASS, f"woken by the RTC (IRQ {rec.wakeup_irq})", tuple(ev))
    return CheckResult("wake-source", FAIL, f"wake IRQ {rec.wakeup_irq} is not the RTC's ({facts.rtc_irq})", tuple(ev))


def check_resume_phases(tr: Transition | None, lines: list[str]) -> CheckResult:
    """Every resume phase of the transition's kind is present, in kernel order, none aborted."""
    if tr is None:
        return CheckResult("resume-phases", FAIL, "no suspend/hibernation transition in the cycle's log")
    expected = RESUME_PHASES[tr.kind]
    present = [p for p in tr.phases if p.name in expected]
    names = [p.name for p in present]
    ev = tuple(_line(lines, p.end_seq) for p in present)
    if names != list(expected):
        return CheckResult("resume-phases", FAIL, f"resume phases {names}, expected {list(expected)}", ev)
    aborted = [p.name for p in present if p.aborted]
    if aborted:
        return CheckResult("resume-phases", FAIL, f"aborted: {', '.join(aborted)}", ev)
    return CheckResult("resume-phases", PASS, " -> ".join(names), ev)


def check_no_warnings(timeline: PmTimeline, lines: list[str]) -> CheckResult:
    """No WARN, BUG, Oops, sleeping-in-atomic, lockdep, hung-task or RCU-stall line in the cycle."""
    if not timeline.warnings:
        return CheckResult("no-kernel-warnings", PASS, f"no warnings in {timeline.lines} lines")
    kinds = sorted({w.kind for w in timeline.warnings})
    return CheckResult("no-kernel-warnings", FAIL, f"{len(timeline.warnings)} problem line(s): {', '.join(kinds)}",
                       tuple(_line(lines, w.seq) for w in timeline.warnings[:20]))


def check_callbacks_ok(tr: Transition | None, lines: list[str]) -> CheckResult:
    """Every device callback returned, and returned 0."""
    if tr is None:
        return CheckResult("callbacks-returned-0", FAIL, "no transition in the cycle's log")
    events = [e for p in tr.phases for e in p.events]
    bad = [e for e in events if e.rc != 0]
    if not events:
        return CheckResult("callbacks-returned-0", FAIL, "no device callback lines (pm_print_times off?)")
    if bad:
        return CheckResult("callbacks-returned-0", FAIL,
                           f"{len(bad)} of {len(events)} callbacks failed or never returned",
                           tuple(_line(lines, e.end_seq if e.end_seq is not None else e.seq) for e in bad[:20]))
    return CheckResult("callbacks-returned-0", PASS, f"all {len(events)} callbacks returned 0")


def cycle_transition(timeline: PmTimeline) -> Transition | None:
    """The transition a cycle is about: the last one in its log (a cycle's log is cleared before it)."""
    return timeline.transitions[-1] if timeline.transitions else None


def check_cycle(rec: CycleRecord, facts: GuestFacts, timeline: PmTimeline) -> list[CheckResult]:
    """Run every per-cycle check on one cycle; returns them in a fixed order."""
    lines = rec.dmesg.split("\n")
    tr = cycle_transition(timeline)
    return [
        check_state_write(rec),
        check_wake_source(rec, facts, tr, lines),
        check_resume_phases(tr, lines),
        check_no_warnings(timeline, lines),
        check_callbacks_ok(tr, lines),
    ]


def overall(verdicts: list[str]) -> str:
    """Combine verdicts: HANG > ERROR > FAIL > XPASS > PASS (SKIP and XFAIL count as PASS)."""
    for v in (HANG, ERROR, FAIL, XPASS):
        if v in verdicts:
            return v
    return PASS
