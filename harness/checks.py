"""Per-cycle checks over a parsed timeline and the cycle's record.

Each check returns a :class:`CheckResult` whose evidence is the log lines
(with their ``seq`` position) or guest values that decided the verdict, so a
reviewer can verify it without rerunning anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.dmesg import RESUME_PHASES, PmTimeline, ProbeEvent, Transition
from harness.ftrace import parse_graph
from harness.model import NOIRQ_TRACE_ROOTS, CycleRecord, GuestFacts
from harness.verdict import Verdict


@dataclass(frozen=True)
class CheckResult:
    """``name`` of the check, ``verdict`` (PASS/FAIL/SKIP/...), one-line ``summary``,
    and ``evidence``: lines such as ``#412 [4.5463] PM: noirq resume ...``."""

    name: str
    verdict: Verdict
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
        return CheckResult("state-write", Verdict.PASS, f"state write returned 0 after {rec.seconds:.2f} s", ev)
    return CheckResult("state-write", Verdict.FAIL, f"state write failed (exit status {rec.write_status})", ev)


def check_wake_source(rec: CycleRecord, facts: GuestFacts, tr: Transition | None, lines: list[str]) -> CheckResult:
    """An RTC cycle was woken by the PL031 IRQ (``pm_wakeup_irq`` and the kernel's wakeup line)."""
    if rec.kind != "rtc":
        return CheckResult("wake-source", Verdict.SKIP, f"{rec.kind} cycle needs no wake source")
    ev = [f"/sys/power/pm_wakeup_irq = {rec.wakeup_irq}", f"PL031 IRQ in /proc/interrupts = {facts.rtc_irq}"]
    if tr is not None and tr.wakeup_irq is not None:
        seq = next((i for i in range(tr.start_seq, tr.end_seq or len(lines))
                    if "Triggering wakeup from IRQ" in lines[i]), None)
        ev.append(_line(lines, seq))
    if facts.rtc_irq is not None and rec.wakeup_irq == facts.rtc_irq:
        return CheckResult("wake-source", Verdict.PASS, f"woken by the RTC (IRQ {rec.wakeup_irq})", tuple(ev))
    return CheckResult("wake-source", Verdict.FAIL, f"wake IRQ {rec.wakeup_irq} is not the RTC's ({facts.rtc_irq})", tuple(ev))


#: With ``pm_test=devices`` the suspend stops after the normal phase (kernel/power/suspend.c
#: suspend_devices_and_enter(): suspend_test(TEST_DEVICES)), so only ``resume`` runs.
_DEVICES_ONLY = ("resume",)


def check_resume_phases(tr: Transition | None, lines: list[str], pm_test_level: str | None = None) -> CheckResult:
    """Every resume phase of the transition's kind is present, in kernel order, none aborted
    (only the normal phase under ``pm_test=devices``)."""
    if tr is None:
        return CheckResult("resume-phases", Verdict.FAIL, "no suspend/hibernation transition in the cycle's log")
    expected = _DEVICES_ONLY if pm_test_level == "devices" else RESUME_PHASES[tr.kind]
    present = [p for p in tr.phases if p.name in expected]
    names = [p.name for p in present]
    ev = tuple(_line(lines, p.end_seq) for p in present)
    if names != list(expected):
        return CheckResult("resume-phases", Verdict.FAIL, f"resume phases {names}, expected {list(expected)}", ev)
    aborted = [p.name for p in present if p.aborted]
    if aborted:
        return CheckResult("resume-phases", Verdict.FAIL, f"aborted: {', '.join(aborted)}", ev)
    return CheckResult("resume-phases", Verdict.PASS, " -> ".join(names), ev)


def check_no_warnings(timeline: PmTimeline, lines: list[str]) -> CheckResult:
    """No WARN, BUG, Oops, sleeping-in-atomic, lockdep, hung-task or RCU-stall line in the cycle."""
    if not timeline.warnings:
        return CheckResult("no-kernel-warnings", Verdict.PASS, f"no warnings in {timeline.lines} lines")
    kinds = sorted({w.kind for w in timeline.warnings})
    return CheckResult("no-kernel-warnings", Verdict.FAIL, f"{len(timeline.warnings)} problem line(s): {', '.join(kinds)}",
                       tuple(_line(lines, w.seq) for w in timeline.warnings[:20]))


def check_callbacks_ok(tr: Transition | None, lines: list[str]) -> CheckResult:
    """Every device callback returned, and returned 0."""
    if tr is None:
        return CheckResult("callbacks-returned-0", Verdict.FAIL, "no transition in the cycle's log")
    events = [e for p in tr.phases for e in p.events]
    bad = [e for e in events if e.rc != 0]
    if not events:
        return CheckResult("callbacks-returned-0", Verdict.FAIL, "no device callback lines (pm_print_times off?)")
    if bad:
        return CheckResult("callbacks-returned-0", Verdict.FAIL,
                           f"{len(bad)} of {len(events)} callbacks failed or never returned",
                           tuple(_line(lines, e.end_seq if e.end_seq is not None else e.seq) for e in bad[:20]))
    return CheckResult("callbacks-returned-0", Verdict.PASS, f"all {len(events)} callbacks returned 0")


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
        check_resume_phases(tr, lines, rec.pm_test_level),
        check_no_warnings(timeline, lines),
        check_callbacks_ok(tr, lines),
    ]


def check_cycle(rec: CycleRecord, facts: GuestFacts, timeline: PmTimeline,
                expect: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> list[CheckResult]:
    """All checks of one cycle: the PM-core checks (which include ``no-kernel-warnings``, the
    seventh check of the series' claim), then :data:`SERIES_CHECKS`, then the scenario checks
    named in ``extra`` (keys of :data:`SCENARIO_CHECKS`), with ``expect`` applied
    (see :func:`apply_expectations`)."""
    results = check_pm_cycle(rec, facts, timeline) + check_series(rec, timeline)
    lines = rec.dmesg.split("\n")
    results += [check_net_traffic(rec)]
    results += [SCENARIO_CHECKS[name](rec, cycle_transition(timeline), lines) for name in extra]
    return apply_expectations(results, expect or {})




# --- The series' claim (needs the guest probe module) ------------------------------------

#: The checks of the series' claim, in report order; the seventh, ``no-kernel-warnings``,
#: is one of the PM-core checks and runs there.
SERIES_CHECKS = ("noirq-callback", "noirq-before-normal", "noirq-request", "consumer-ready",
                 "no-second-reinit", "devices-work", "no-sleep-in-noirq")


def _probe(tr: Transition, event: str) -> ProbeEvent | None:
    return next((e for e in tr.probe if e.event == event), None)


def provider_device(tr: Transition) -> str | None:
    """The virtio-mmio platform device the probe is bound to, from its lines in this transition."""
    return next((e.get("transport") for e in tr.probe if e.get("transport")), None)


def _noirq_callback(tr: Transition, provider: str):
    phase = tr.phase(RESUME_PHASES[tr.kind].noirq)
    return next((e for e in (phase.events if phase else ()) if e.device == provider
                 and e.callback.endswith("restore_noirq")), None)


def _where(tr: Transition, provider: str, lines: list[str]) -> tuple[str, ...]:
    """Evidence: every resume-phase callback of the provider, with its phase."""
    return tuple(f"{p.name}: {_line(lines, e.seq)}" for p in tr.resume_phases for e in p.events
                 if e.device == provider)


def check_noirq_callback(tr: Transition, lines: list[str]) -> CheckResult:
    """1. The provider's virtio-mmio device has its restore_noirq callback in the noirq resume phase, returning 0."""
    name, noirq = "noirq-callback", RESUME_PHASES[tr.kind].noirq
    provider = provider_device(tr)
    if provider is None:
        return CheckResult(name, Verdict.FAIL, "no virtio_pm_probe lines in this transition (module not loaded?)")
    cb = _noirq_callback(tr, provider)
    if cb is None:
        return CheckResult(name, Verdict.FAIL, f"{provider} has no restore_noirq callback in {noirq}",
                           _where(tr, provider, lines) or ("(no callback of the device at all)",))
    ev = (_line(lines, cb.seq), _line(lines, cb.end_seq))
    if cb.rc != 0:
        return CheckResult(name, Verdict.FAIL, f"{cb.callback} returned {cb.rc}", ev)
    return CheckResult(name, Verdict.PASS, f"{provider} {cb.callback} in {noirq}, returned 0 after {cb.usecs} us", ev)


def check_noirq_before_normal(tr: Transition, lines: list[str]) -> CheckResult:
    """2. That callback and the probe's restore_noirq line come before the first normal-phase callback."""
    name, normal_name = "noirq-before-normal", RESUME_PHASES[tr.kind].normal
    provider = provider_device(tr)
    normal = tr.phase(normal_name)
    cb = _noirq_callback(tr, provider) if provider else None
    line = _probe(tr, "restore_noirq")
    if normal is None:
        return CheckResult(name, Verdict.FAIL, f"no {normal_name} phase in the log")
    first = normal.events[0].seq if normal.events else normal.end_seq
    first_ev = _line(lines, first) + f"  (first {normal_name} callback)"
    if cb is None or cb.end_seq is None or line is None:
        what = "restore_noirq callback" if cb is None or cb.end_seq is None else "probe restore_noirq line"
        ev = _where(tr, provider, lines) if provider else ()
        return CheckResult(name, Verdict.FAIL, f"no {what} of the provider before {normal_name}", ev + (first_ev,))
    ev = (_line(lines, cb.end_seq), _line(lines, line.seq), first_ev)
    if max(cb.end_seq, line.seq) < first:
        return CheckResult(name, Verdict.PASS, f"noirq restore done at #{max(cb.end_seq, line.seq)}, "
                                       f"first {normal_name} callback at #{first}", ev)
    return CheckResult(name, Verdict.FAIL, f"noirq restore finished at #{max(cb.end_seq, line.seq)}, after the first "
                                   f"{normal_name} callback at #{first}", ev)


def check_noirq_request(tr: Transition, lines: list[str]) -> CheckResult:
    """3. The probe's polled request inside restore_noirq succeeded, on a ring that reset_vqs
    reinitialised (avail and used index 0 on entry)."""
    line = _probe(tr, "restore_noirq")
    if line is None:
        later = _probe(tr, "restore")
        return CheckResult("noirq-request", Verdict.FAIL, "the probe made no request in restore_noirq",
                           (_line(lines, later.seq),) if later else ())
    ring = (line.get("ring_avail_at_entry"), line.get("ring_used_at_entry"))
    if line.get("request") == "ok" and ring != ("0", "0"):
        return CheckResult("noirq-request", Verdict.FAIL, f"request answered, but on a stale ring: avail/used index "
                                                  f"{ring[0]}/{ring[1]} at entry, not 0/0 after reset_vqs",
                           (_line(lines, line.seq),))
    if line.get("request") == "ok":
        return CheckResult("noirq-request", Verdict.PASS, f"{line.get('bytes')} bytes in {line.get('usecs')} us on a "
                                                  f"reinitialised ring (phase {line.phase})", (_line(lines, line.seq),))
    return CheckResult("noirq-request", Verdict.FAIL, f"request {line.get('request')} rc={line.get('rc')}",
                       (_line(lines, line.seq),))


#: The probe's event at the consumer's resume_early, and the whole line when the provider was
#: ready (guest-rootfs/modules/virtio_pm_probe/virtio_pm_probe.c): :func:`check_consumer_ready`
#: reads it parsed, the LAVA export's shell test greps for the line.
CONSUMER_EARLY = "consumer resume_early"
CONSUMER_READY_LINE = f"virtio_pm_probe: {CONSUMER_EARLY} provider=ready"


def check_consumer_ready(tr: Transition, lines: list[str]) -> CheckResult:
    """4. The consumer's early resume found the provider ready."""
    early = _probe(tr, CONSUMER_EARLY)
    late = _probe(tr, "consumer resume")
    ev = tuple(_line(lines, e.seq) for e in (early, late) if e)
    if early is None:
        return CheckResult("consumer-ready", Verdict.FAIL, "no consumer resume_early line", ev)
    if early.get("provider") == "ready":
        return CheckResult("consumer-ready", Verdict.PASS, "provider ready at the consumer's resume_early", ev)
    return CheckResult("consumer-ready", Verdict.FAIL, f"provider {early.get('provider')} at the consumer's resume_early", ev)


def check_no_second_reinit(tr: Transition, lines: list[str]) -> CheckResult:
    """5. The normal restore did not re-initialise the device (DRIVER_OK still set on entry)."""
    line = _probe(tr, "restore")
    if line is None and _probe(tr, "freeze") is None:
        return CheckResult("no-second-reinit", Verdict.SKIP, "the probe's device was not frozen in this transition "
                                                     "(the suspend aborted before it)")
    if line is None:
        return CheckResult("no-second-reinit", Verdict.FAIL, "no probe restore line after its freeze")
    ev = (_line(lines, line.seq),)
    if line.get("noirq") == "0":
        return CheckResult("no-second-reinit", Verdict.SKIP, "the tree has no noirq virtio PM API", ev)
    if line.get("driver_ok_on_entry") == "1":
        return CheckResult("no-second-reinit", Verdict.PASS, f"DRIVER_OK set on entry (status {line.get('status')})", ev)
    return CheckResult("no-second-reinit", Verdict.FAIL, f"DRIVER_OK lost before the normal restore "
                                                 f"(status {line.get('status')})", ev)


def check_devices_work(rec: CycleRecord) -> CheckResult:
    """6. After resume the probe answers a request, the disk reads, and the network link is up."""
    if not rec.health:
        return CheckResult("devices-work", Verdict.FAIL, "no health results recorded")
    bad = [h for h in rec.health if not h.ok]
    ev = tuple(f"{h.name}: {'ok' if h.ok else 'FAILED'}: {h.detail}" for h in rec.health)
    if bad:
        return CheckResult("devices-work", Verdict.FAIL, f"not working: {', '.join(h.name for h in bad)}", ev)
    return CheckResult("devices-work", Verdict.PASS, ", ".join(h.name for h in rec.health), ev)


def check_net_traffic(rec: CycleRecord) -> CheckResult:
    """Real bytes went through virtio-net after resume: a payload of known size and content
    (:data:`harness.ssh.PAYLOAD_BYTES`) over SSH/SFTP from the host into the guest and back,
    its sha256 the same all the way.  A link that says ``up`` with rings that did not come
    back fails here.  SKIP, never PASS, when the cycle had no SSH (a profile without
    ``hostfwd``) or moved no bytes on purpose (not an s2idle cycle)."""
    name, t = "net-traffic", rec.net_traffic
    if t is None:
        return CheckResult(name, Verdict.SKIP, "no SSH to the guest in this cycle (the QEMU profile has "
                                               "no hostfwd to the guest's port 22)")
    if t.skipped:
        return CheckResult(name, Verdict.SKIP, t.skipped)
    ev = (f"bytes: {t.bytes} (both ways)", f"seconds: {t.seconds:.2f}", f"sha256: {t.sha256 or '(none)'}",
          f"detail: {t.detail}")
    if t.ok:
        rate = t.bytes / t.seconds / 1024 if t.seconds > 0 else 0.0
        return CheckResult(name, Verdict.PASS, f"{t.bytes} bytes through virtio-net over SSH in {t.seconds:.2f} s "
                                               f"({rate:.0f} KiB/s), checksums equal", ev)
    return CheckResult(name, Verdict.FAIL, f"no traffic through virtio-net after resume: {t.detail}", ev)


#: What might_sleep() calls with DEBUG_ATOMIC_SLEEP (kernel/sched/core.c).
_SLEEP = "__might_sleep"


def check_no_sleep_in_noirq(rec: CycleRecord) -> CheckResult:
    """7b. No might_sleep() was reached from a virtio-mmio noirq callback, in the function graph
    trace of :data:`~harness.model.NOIRQ_TRACE_ROOTS`.

    The kernel itself stays silent here: noirq callbacks run preemptible with CPU
    interrupts on (kernel/power/suspend.c calls dpm_resume_noirq() after
    arch_suspend_enable_irqs()), so DEBUG_ATOMIC_SLEEP never prints "sleeping
    function called from invalid context" for them, yet the series' noirq path
    promises no sleeping helper (virtio_add_status_noirq() and friends).
    """
    name = "no-sleep-in-noirq"
    if rec.noirq_trace is None:
        return CheckResult(name, Verdict.SKIP, "not traced: the kernel has no function graph tracer or no "
                                       "virtio-mmio noirq callbacks")
    if rec.kind == "hibernate":
        return CheckResult(name, Verdict.SKIP, "the function graph tracer pauses itself for hibernation "
                                       "(kernel/trace/fgraph.c ftrace_suspend_notifier_call)")
    calls = parse_graph(rec.noirq_trace)
    roots = [c for c in calls if c.name in NOIRQ_TRACE_ROOTS and not c.path]
    sleeps = [c for c in calls if c.name == _SLEEP]
    if sleeps:
        chains = sorted({c.chain for c in sleeps})
        return CheckResult(name, Verdict.FAIL, f"might_sleep() reached {len(sleeps)} time(s) from a noirq callback",
                           tuple(f"noirq trace line {c.line + 1}: cpu {c.cpu}: {c.chain}" for c in sleeps[:10])
                           + tuple(f"path: {ch}" for ch in chains[:5]))
    if not roots:
        return CheckResult(name, Verdict.SKIP, "no virtio-mmio noirq callback ran in this cycle")
    return CheckResult(name, Verdict.PASS, f"{len(roots)} noirq callback(s) traced, {len(calls) - len(roots)} calls "
                                   f"under them, none to {_SLEEP}",
                       tuple(f"noirq trace line {c.line + 1}: {c.name}()" for c in roots[:4]))


#: Series checks that look at the noirq phases, which pm_test=devices never reaches.
_NOIRQ_ONLY = ("noirq-callback", "noirq-before-normal", "noirq-request", "consumer-ready")


def check_series(rec: CycleRecord, timeline: PmTimeline) -> list[CheckResult]:
    """The checks of the series' claim for one cycle, in :data:`SERIES_CHECKS` order.

    Under ``pm_test=devices`` the noirq and early phases do not run, so the
    checks about them are SKIP; the others still judge the cycle.
    """
    lines = rec.dmesg.split("\n")
    tr = cycle_transition(timeline)
    if tr is None:
        missing = [CheckResult(n, Verdict.FAIL, "no suspend/hibernation transition in the cycle's log")
                   for n in SERIES_CHECKS[:5]]
        return missing + [check_devices_work(rec), check_no_sleep_in_noirq(rec)]
    if rec.pm_test_level == "devices":
        first = [CheckResult(n, Verdict.SKIP, "pm_test=devices: the noirq and early phases do not run")
                 for n in _NOIRQ_ONLY]
    else:
        first = [check_noirq_callback(tr, lines), check_noirq_before_normal(tr, lines),
                 check_noirq_request(tr, lines), check_consumer_ready(tr, lines)]
    return first + [check_no_second_reinit(tr, lines), check_devices_work(rec), check_no_sleep_in_noirq(rec)]


# --- Checks of the series' error paths, named by scenarios (scenarios/*.yaml) ------------

#: VIRTIO_CONFIG_S_* status bits (include/uapi/linux/virtio_config.h).
S_DRIVER_OK, S_FAILED = 0x04, 0x80
#: errno values the series returns (include/uapi/asm-generic/errno-base.h, errno.h).
EIO, EOPNOTSUPP = 5, 95


def _status(value: int) -> str:
    bits = [n for n, b in (("ACKNOWLEDGE", 1), ("DRIVER", 2), ("DRIVER_OK", 4), ("FEATURES_OK", 8),
                           ("NEEDS_RESET", 0x40), ("FAILED", 0x80)) if value & b]
    return f"0x{value:02x} ({'|'.join(bits) or 'reset'})"


def check_noirq_failure_handled(rec: CycleRecord, tr: Transition | None, lines: list[str]) -> CheckResult:
    """restore_noirq failed (injected): the provider's noirq callback returned an error, the device
    ends FAILED without DRIVER_OK, and its normal restore returned -EIO without calling the
    driver's restore (no same-device fallback; drivers/virtio/virtio.c virtio_device_restore()
    with the series, v6 and later)."""
    name = "noirq-failure-handled"
    if tr is None:
        return CheckResult(name, Verdict.FAIL, "no transition in the cycle's log")
    provider = provider_device(tr)
    if provider is None:
        return CheckResult(name, Verdict.FAIL, "no virtio_pm_probe lines in this transition")
    problems, ev = [], []
    cb = _noirq_callback(tr, provider)
    if cb is None or cb.rc in (None, 0):
        problems.append("restore_noirq did not fail" if cb else "no restore_noirq callback")
    if cb is not None:
        ev.append(_line(lines, cb.end_seq if cb.end_seq is not None else cb.seq))
    normal = tr.phase(RESUME_PHASES[tr.kind].normal)
    restore = next((e for e in (normal.events if normal else ()) if e.device == provider), None)
    if restore is None or restore.rc != -EIO:
        problems.append(f"normal restore returned {restore.rc if restore else 'nothing'}, not -EIO")
    if restore is not None:
        ev.append(_line(lines, restore.end_seq if restore.end_seq is not None else restore.seq))
    fallback = _probe(tr, "restore")
    if fallback is not None:
        problems.append("the driver's restore ran after restore_noirq failed (a same-device fallback)")
        ev.append(_line(lines, fallback.seq))
    dev = next((d for d in rec.virtio if d.transport == provider), None)
    if dev is None:
        problems.append(f"no virtio device on {provider} after the cycle")
    else:
        ev.append(f"/sys/bus/virtio/devices/{dev.name}/status = {_status(dev.status)}")
        if not dev.status & S_FAILED or dev.status & S_DRIVER_OK:
            problems.append(f"status {_status(dev.status)}: expected FAILED without DRIVER_OK")
    if problems:
        return CheckResult(name, Verdict.FAIL, "; ".join(problems), tuple(ev))
    return CheckResult(name, Verdict.PASS, f"{provider}: restore_noirq returned {cb.rc}, device FAILED, "
                                   f"normal restore returned -EIO, no fallback", tuple(ev))


def check_freeze_refused(rec: CycleRecord, tr: Transition | None, lines: list[str]) -> CheckResult:
    """A driver with restore_noirq bound over a transport without ``noirq_safe`` (virtio-pci): its
    freeze returned -EOPNOTSUPP, the state write failed and ``suspend_stats`` counted the failure
    (drivers/virtio/virtio.c virtio_device_freeze() with the series)."""
    name = "freeze-refused"
    problems, ev = [], [f"echo > /sys/power/state: exit status {rec.write_status}: {rec.write_output}"]
    if rec.write_status == 0:
        problems.append("the state write succeeded")
    off_mmio = [d for d in rec.virtio if d.driver == "virtio_pm_probe" and not d.transport.endswith(".virtio_mmio")]
    if not off_mmio:
        problems.append("no virtio_pm_probe device on a non-mmio transport")
    refused = [e for p in (tr.phases if tr else ()) for e in p.events
               if e.rc == -EOPNOTSUPP and any(e.device == d.transport for d in off_mmio)]
    ev += [_line(lines, e.end_seq) for e in refused]
    if not refused:
        problems.append(f"no callback of {', '.join(d.transport for d in off_mmio) or 'it'} returned -EOPNOTSUPP")
    before, after = rec.stats_before.get("fail"), rec.suspend_stats.get("fail")
    ev.append(f"suspend_stats/fail {before} -> {after}, last_failed_dev {rec.suspend_stats.get('last_failed_dev')!r}, "
              f"last_failed_errno {rec.suspend_stats.get('last_failed_errno')}")
    if not (before and after and before.isdigit() and after.isdigit() and int(after) > int(before)):
        problems.append("suspend_stats did not count a failure")
    if problems:
        return CheckResult(name, Verdict.FAIL, "; ".join(problems), tuple(ev))
    return CheckResult(name, Verdict.PASS, f"{refused[0].device} {refused[0].callback} returned -EOPNOTSUPP, "
                                   f"the suspend was aborted and counted", tuple(ev))


#: Scenario checks by name: (record, transition, log lines) -> CheckResult.
SCENARIO_CHECKS = {
    "noirq-failure-handled": check_noirq_failure_handled,
    "freeze-refused": check_freeze_refused,
}


#: What an expectation (``expect.yaml``, a scenario's ``expect``) may say of a check.
EXPECTED_OUTCOMES = ("pass", "fail", "any")


def apply_expectations(results: list[CheckResult], expect: dict[str, str]) -> list[CheckResult]:
    """Turn raw verdicts into expected ones: ``expect`` maps check name to one of :data:`EXPECTED_OUTCOMES`.

    Expected ``fail`` and FAIL -> XFAIL; expected ``fail`` and PASS -> XPASS;
    ``any`` (a consequence that may or may not show, e.g. a defect's damage
    in later cycles) and FAIL -> XFAIL, PASS stays PASS; checks not named are
    expected to pass.  SKIP stays SKIP.
    """
    out = []
    for r in results:
        wanted = expect.get(r.name, "pass")
        if wanted == "any" and r.verdict == Verdict.FAIL:
            out.append(CheckResult(r.name, Verdict.XFAIL, r.summary + " (allowed to fail)", r.evidence))
        elif wanted == "fail":
            verdict = {Verdict.FAIL: Verdict.XFAIL, Verdict.PASS: Verdict.XPASS}.get(r.verdict, r.verdict)
            out.append(CheckResult(r.name, verdict, r.summary + (" (expected to fail)" if verdict == Verdict.XFAIL else
                                                                 " (expected to FAIL, but passed)"), r.evidence))
        else:
            out.append(r)
    return out


#: Every check name a per-cycle result can carry.
ALL_CHECKS = ("state-write", "wake-source", "resume-phases", "no-kernel-warnings", "callbacks-returned-0",
              *SERIES_CHECKS, "net-traffic", *SCENARIO_CHECKS)
