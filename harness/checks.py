"""Per-cycle checks over a parsed timeline and the cycle's record.

Each check returns a :class:`CheckResult` whose evidence is the log lines
(with their ``seq`` position) or guest values that decided the verdict, so a
reviewer can verify it without rerunning anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.dmesg import RESUME_PHASES, PmTimeline, ProbeEvent, Transition
from harness.config import check_keys, load_yaml_mapping
from harness.errors import ConfigError
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


def check_pm_cycle(rec: CycleRecord, facts: GuestFacts, timeline: PmTimeline) -> list[CheckResult]:
    """The PM-core checks of one cycle (any kernel, no probe module needed), in a fixed order."""
    lines = rec.dmesg.split("\n")
    tr = cycle_transition(timeline)
    return [
        check_state_write(rec),
        check_wake_source(rec, facts, tr, lines),
        check_resume_phases(tr, lines),
        check_no_warnings(timeline, lines),
        check_callbacks_ok(tr, lines),
    ]


def check_cycle(rec: CycleRecord, facts: GuestFacts, timeline: PmTimeline,
                expect: dict[str, str] | None = None) -> list[CheckResult]:
    """All checks of one cycle: the PM-core checks (which include ``no-kernel-warnings``, the
    seventh check of the series' claim), then :data:`SERIES_CHECKS`, with ``expect`` applied
    (see :func:`apply_expectations`)."""
    results = check_pm_cycle(rec, facts, timeline) + check_series(rec, timeline)
    return apply_expectations(results, expect or {})


def overall(verdicts: list[str]) -> str:
    """Combine verdicts: HANG > ERROR > FAIL > XPASS > PASS (SKIP and XFAIL count as PASS)."""
    for v in (HANG, ERROR, FAIL, XPASS):
        if v in verdicts:
            return v
    return PASS


# --- The series' claim (needs the guest probe module) ------------------------------------

#: The checks of the series' claim, in report order; the seventh, ``no-kernel-warnings``,
#: is one of the PM-core checks and runs there.
SERIES_CHECKS = ("noirq-callback", "noirq-before-normal", "noirq-request", "consumer-ready",
                 "no-second-reinit", "devices-work")


def _probe(tr: Transition, event: str) -> ProbeEvent | None:
    return next((e for e in tr.probe if e.event == event), None)


def provider_device(tr: Transition) -> str | None:
    """The virtio-mmio platform device the probe is bound to, from its lines in this transition."""
    return next((e.get("transport") for e in tr.probe if e.get("transport")), None)


def _noirq_callback(tr: Transition, provider: str):
    phase = tr.phase(RESUME_PHASES[tr.kind][0])
    return next((e for e in (phase.events if phase else ()) if e.device == provider
                 and e.callback.endswith("restore_noirq")), None)


def _where(tr: Transition, provider: str, lines: list[str]) -> tuple[str, ...]:
    """Evidence: every resume-phase callback of the provider, with its phase."""
    return tuple(f"{p.name}: {_line(lines, e.seq)}" for p in tr.resume_phases for e in p.events
                 if e.device == provider)


def check_noirq_callback(tr: Transition, lines: list[str]) -> CheckResult:
    """1. The provider's virtio-mmio device has its restore_noirq callback in the noirq resume phase, returning 0."""
    name, noirq = "noirq-callback", RESUME_PHASES[tr.kind][0]
    provider = provider_device(tr)
    if provider is None:
        return CheckResult(name, FAIL, "no virtio_pm_probe lines in this transition (module not loaded?)")
    cb = _noirq_callback(tr, provider)
    if cb is None:
        return CheckResult(name, FAIL, f"{provider} has no restore_noirq callback in {noirq}",
                           _where(tr, provider, lines) or ("(no callback of the device at all)",))
    ev = (_line(lines, cb.seq), _line(lines, cb.end_seq))
    if cb.rc != 0:
        return CheckResult(name, FAIL, f"{cb.callback} returned {cb.rc}", ev)
    return CheckResult(name, PASS, f"{provider} {cb.callback} in {noirq}, returned 0 after {cb.usecs} us", ev)


def check_noirq_before_normal(tr: Transition, lines: list[str]) -> CheckResult:
    """2. That callback and the probe's restore_noirq line come before the first normal-phase callback."""
    name, normal_name = "noirq-before-normal", RESUME_PHASES[tr.kind][2]
    provider = provider_device(tr)
    normal = tr.phase(normal_name)
    cb = _noirq_callback(tr, provider) if provider else None
    line = _probe(tr, "restore_noirq")
    if normal is None:
        return CheckResult(name, FAIL, f"no {normal_name} phase in the log")
    first = normal.events[0].seq if normal.events else normal.end_seq
    first_ev = _line(lines, first) + f"  (first {normal_name} callback)"
    if cb is None or cb.end_seq is None or line is None:
        what = "restore_noirq callback" if cb is None or cb.end_seq is None else "probe restore_noirq line"
        ev = _where(tr, provider, lines) if provider else ()
        return CheckResult(name, FAIL, f"no {what} of the provider before {normal_name}", ev + (first_ev,))
    ev = (_line(lines, cb.end_seq), _line(lines, line.seq), first_ev)
    if max(cb.end_seq, line.seq) < first:
        return CheckResult(name, PASS, f"noirq restore done at #{max(cb.end_seq, line.seq)}, "
                                       f"first {normal_name} callback at #{first}", ev)
    return CheckResult(name, FAIL, f"noirq restore finished at #{max(cb.end_seq, line.seq)}, after the first "
                                   f"{normal_name} callback at #{first}", ev)


def check_noirq_request(tr: Transition, lines: list[str]) -> CheckResult:
    """3. The probe's polled request inside restore_noirq succeeded, on a ring that reset_vqs
    reinitialised (avail and used index 0 on entry)."""
    line = _probe(tr, "restore_noirq")
    if line is None:
        later = _probe(tr, "restore")
        return CheckResult("noirq-request", FAIL, "the probe made no request in restore_noirq",
                           (_line(lines, later.seq),) if later else ())
    ring = (line.get("ring_avail_at_entry"), line.get("ring_used_at_entry"))
    if line.get("request") == "ok" and ring != ("0", "0"):
        return CheckResult("noirq-request", FAIL, f"request answered, but on a stale ring: avail/used index "
                                                  f"{ring[0]}/{ring[1]} at entry, not 0/0 after reset_vqs",
                           (_line(lines, line.seq),))
    if line.get("request") == "ok":
        return CheckResult("noirq-request", PASS, f"{line.get('bytes')} bytes in {line.get('usecs')} us on a "
                                                  f"reinitialised ring (phase {line.phase})", (_line(lines, line.seq),))
    return CheckResult("noirq-request", FAIL, f"request {line.get('request')} rc={line.get('rc')}",
                       (_line(lines, line.seq),))


def check_consumer_ready(tr: Transition, lines: list[str]) -> CheckResult:
    """4. The consumer's early resume found the provider ready."""
    early = _probe(tr, "consumer resume_early")
    late = _probe(tr, "consumer resume")
    ev = tuple(_line(lines, e.seq) for e in (early, late) if e)
    if early is None:
        return CheckResult("consumer-ready", FAIL, "no consumer resume_early line", ev)
    if early.get("provider") == "ready":
        return CheckResult("consumer-ready", PASS, "provider ready at the consumer's resume_early", ev)
    return CheckResult("consumer-ready", FAIL, f"provider {early.get('provider')} at the consumer's resume_early", ev)


def check_no_second_reinit(tr: Transition, lines: list[str]) -> CheckResult:
    """5. The normal restore did not re-initialise the device (DRIVER_OK still set on entry)."""
    line = _probe(tr, "restore")
    if line is None:
        return CheckResult("no-second-reinit", FAIL, "no probe restore line")
    ev = (_line(lines, line.seq),)
    if line.get("noirq") == "0":
        return CheckResult("no-second-reinit", SKIP, "the tree has no noirq virtio PM API", ev)
    if line.get("driver_ok_on_entry") == "1":
        return CheckResult("no-second-reinit", PASS, f"DRIVER_OK set on entry (status {line.get('status')})", ev)
    return CheckResult("no-second-reinit", FAIL, f"DRIVER_OK lost before the normal restore "
                                                 f"(status {line.get('status')})", ev)


def check_devices_work(rec: CycleRecord) -> CheckResult:
    """6. After resume the probe answers a request, the disk reads, and the network link is up."""
    if not rec.health:
        return CheckResult("devices-work", FAIL, "no health results recorded")
    bad = [h for h in rec.health if not h.ok]
    ev = tuple(f"{h.name}: {'ok' if h.ok else 'FAILED'}: {h.detail}" for h in rec.health)
    if bad:
        return CheckResult("devices-work", FAIL, f"not working: {', '.join(h.name for h in bad)}", ev)
    return CheckResult("devices-work", PASS, ", ".join(h.name for h in rec.health), ev)


def check_series(rec: CycleRecord, timeline: PmTimeline) -> list[CheckResult]:
    """The checks of the series' claim for one cycle, in :data:`SERIES_CHECKS` order."""
    lines = rec.dmesg.split("\n")
    tr = cycle_transition(timeline)
    if tr is None:
        missing = [CheckResult(n, FAIL, "no suspend/hibernation transition in the cycle's log")
                   for n in SERIES_CHECKS[:5]]
        return missing + [check_devices_work(rec)]
    return [check_noirq_callback(tr, lines), check_noirq_before_normal(tr, lines), check_noirq_request(tr, lines),
            check_consumer_ready(tr, lines), check_no_second_reinit(tr, lines), check_devices_work(rec)]


def apply_expectations(results: list[CheckResult], expect: dict[str, str]) -> list[CheckResult]:
    """Turn raw verdicts into expected ones: ``expect`` maps check name to ``pass``, ``fail`` or ``any``.

    Expected ``fail`` and FAIL -> XFAIL; expected ``fail`` and PASS -> XPASS;
    ``any`` (a consequence that may or may not show, e.g. a defect's damage
    in later cycles) and FAIL -> XFAIL, PASS stays PASS; checks not named are
    expected to pass.  SKIP stays SKIP.
    """
    out = []
    for r in results:
        wanted = expect.get(r.name, "pass")
        if wanted == "any" and r.verdict == FAIL:
            out.append(CheckResult(r.name, XFAIL, r.summary + " (allowed to fail)", r.evidence))
        elif wanted == "fail":
            verdict = {FAIL: XFAIL, PASS: XPASS}.get(r.verdict, r.verdict)
            out.append(CheckResult(r.name, verdict, r.summary + (" (expected to fail)" if verdict == XFAIL else
                                                                 " (expected to FAIL, but passed)"), r.evidence))
        else:
            out.append(r)
    return out


#: Every check name a per-cycle result can carry.
ALL_CHECKS = ("state-write", "wake-source", "resume-phases", "no-kernel-warnings", "callbacks-returned-0",
              *SERIES_CHECKS)


def load_expectations(path: Path) -> dict[str, str]:
    """Load ``expect.yaml`` (``expect: {check: pass|fail}``, ``reason: text``).

    Raises :class:`ConfigError` naming the file and the unknown check or value.
    """
    data = load_yaml_mapping(path)
    check_keys(str(path), data, {"revision", "expect", "reason"}, {"expect"})
    expect = data["expect"] or {}
    if not isinstance(expect, dict):
        raise ConfigError(f"{path}: key 'expect' must map check names to pass or fail")
    for name, value in expect.items():
        if name not in ALL_CHECKS:
            raise ConfigError(f"{path}: expect.{name}: unknown check (known: {', '.join(ALL_CHECKS)})")
        if value not in ("pass", "fail", "any"):
            raise ConfigError(f"{path}: expect.{name}: {value!r} is not pass, fail or any")
    return dict(expect)
