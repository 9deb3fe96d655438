"""Suspend/resume cycles over a guest session.

Three scenario kinds:

* ``rtc``: arm the PL031 wake alarm N seconds ahead (:data:`WAKE_ALARM`) and
  write ``mem`` to ``/sys/power/state`` (s2idle on QEMU virt: ``mem_sleep`` offers
  only ``s2idle`` without PSCI SYSTEM_SUSPEND);
* ``pm_test``: write a level to ``/sys/power/pm_test`` (``platform`` runs the
  noirq phases) with ``pm_test_delay`` 0, then ``mem``; no wake source needed;
* ``hibernate``: ``test_resume`` hibernation to swap on the virtio-blk disk
  (freeze, write the image, restore from it), which runs the freeze/thaw/
  restore callbacks.

A scenario is a sequence of steps, one per cycle; a step may run guest
commands before its cycle (set a probe module parameter, bind a device) and
carries the expectations and extra checks of that cycle (see
``scenarios/*.yaml`` and :mod:`harness.scenarios`).

Before the first cycle the console loglevel is lowered (``dmesg -n 1``) so
kernel messages do not interleave with command output,
``pm_print_times``/``pm_debug_messages`` are enabled, and, when the kernel
has the function graph tracer and virtio-mmio noirq callbacks, the tracer is
limited to those callbacks (:data:`harness.model.NOIRQ_TRACE_ROOTS`) so that a sleeping
call inside them shows (the kernel does not report one: noirq callbacks run
preemptible with CPU interrupts on).  The kernel log is read with ``dmesg``
and cleared before each cycle.

A console line costs a round trip (about 0.04 s under TCG) and a guest process
about 20 ms, so a cycle is two console lines (:meth:`GuestSession.run_batch`):
one clears the log, reads the counters, arms the wake source and writes the
state; the other does every read after resume (with SSH, the payload round
trip goes between the two).  Both are the same from cycle to cycle (what changes
is in shell variables), so from the second cycle on each is a short call of the
shell function the first one defined.  The reads use shell builtins, or one
process each, where they can.
"""

from __future__ import annotations

import re
import zlib
from harness import ssh, timeouts
from harness.errors import ScenarioError
from harness.guest import CommandResult, GuestSession
from harness.model import (NOIRQ_TRACE_ROOTS, CycleRecord, GuestFacts, HealthResult, NetTraffic, Scenario,
                           VirtioDevice)

#: A /proc/interrupts row of the PL031 RTC (drivers/rtc/rtc-pl031.c requests "rtc-pl031").
_RTC_IRQ = re.compile(r"^\s*(\d+):.*\brtc-pl031\b", re.M)

#: The functions the tracer records under :data:`~harness.model.NOIRQ_TRACE_ROOTS`: the virtio
#: core, the transport, and ``__might_sleep`` (kernel/sched/core.c; might_sleep() calls it with
#: DEBUG_ATOMIC_SLEEP).
NOIRQ_TRACE_FILTER = ("virtio_*", "vm_*", "__might_sleep")
_TRACEFS = "/sys/kernel/tracing"


#: The guest shell variable that holds the disk block a cycle's ``blk-read`` probe reads (one no
#: earlier cycle read, so the read reaches the device): a variable, so that the after-resume
#: line is the same from cycle to cycle (:meth:`GuestSession.run_batch` runs it as a function).
_BLOCK = "__hxblock"

#: After-resume health probes: (name, guest command, test on (exit status, output)).
#: The link probe polls ``operstate`` for up to a second (a link set up just now needs a moment).
HEALTH_PROBES = (
    ("probe-request", "cat /sys/bus/virtio/drivers/virtio_pm_probe/*/request",
     lambda rc, out: rc == 0 and out.startswith("ok ")),
    ("blk-read", f"dd if=/dev/vda of=/dev/null bs=4096 count=1 skip=${_BLOCK} 2>&1",
     lambda rc, out: rc == 0 and "1+0 records in" in out),
    ("net-link", "ip link set eth0 up && for i in 1 2 3 4 5 6 7 8 9 10; do "
                 "read s < /sys/class/net/eth0/operstate; [ \"$s\" = up ] && break; sleep 0.1; done; echo $s",
     lambda rc, out: rc == 0 and out.strip().endswith("up")),
)

#: The ``suspend_stats`` counters (kernel/power/main.c), one ``/sys/power/suspend_stats/NAME:VALUE``
#: line each, in shell builtins (a process costs about 20 ms under TCG, and this runs twice a
#: cycle); an empty file gives no line (:func:`parse_stats`).  One command (a group: a
#: redirection after it takes the whole output), exit status 1 when the kernel has no counters.
SUSPEND_STATS = ("{ for __hxs in /sys/power/suspend_stats/*; do read -r __hxv < $__hxs && [ -n \"$__hxv\" ] && echo \"$__hxs:$__hxv\"; "
                 "done; [ -d /sys/power/suspend_stats ]; } 2>/dev/null")

#: The IRQ that woke the last suspend (kernel/power/main.c pm_wakeup_irq_show(), the IRQ that
#: drivers/base/power/wakeup.c recorded; reading it fails with ENODATA when no IRQ did: no
#: output, exit status 1), in builtins.
WAKEUP_IRQ = "{ read -r __hxirq < /sys/power/pm_wakeup_irq && echo $__hxirq; } 2>/dev/null"

#: The RTC's wake alarm (drivers/rtc/sysfs.c: ``+N`` is N seconds after the RTC's current second;
#: an armed alarm must be cleared first).  QEMU's PL031 runs its match timer (match - count)
#: whole seconds from the write, so the wake comes N s after arming: measured 1.0 s for +1,
#: where ``rtcwake -s 1`` (util-linux) sets one second more and woke after 2.02 s.
_WAKEALARM = "/sys/class/rtc/rtc0/wakealarm"
WAKE_ALARM = f"echo 0 > {_WAKEALARM} && echo +{{seconds}} > {_WAKEALARM}"


#: The guest commands before the first cycle: console loglevel 1 (the console carries only the
#: shell; dmesg is read whole after each cycle), and the PM debug output the parser reads
#: (kernel/power/main.c: pm_print_times, pm_debug_messages).  The LAVA export runs the same.
SETUP_COMMANDS = ("dmesg -n 1", "echo 1 > /sys/power/pm_print_times && echo 1 > /sys/power/pm_debug_messages")


def _must(session: GuestSession, command: str, what: str, timeout: float = timeouts.GUEST_COMMAND):
    """Run a guest command that has to work; raises ScenarioError (verdict ERROR) naming it, its
    exit status and output at once (a failed arming must not wait out the cycle as a HANG)."""
    return _must_have_worked(session.run(command, timeout=timeout), what)


def _must_have_worked(r: CommandResult, what: str, command: str | None = None) -> CommandResult:
    """``r``, or ScenarioError naming its command (or ``command``, what it wraps), exit status
    and output if it failed."""
    if r.exit_status != 0:
        raise ScenarioError(f"{what}: `{command or r.command}` exited {r.exit_status}: "
                            f"{r.output.strip()[-300:] or '(no output)'}")
    return r


def prepare(session: GuestSession) -> GuestFacts:
    """Run :data:`SETUP_COMMANDS` (ScenarioError if one fails), read the guest's facts."""
    *setup, mem_sleep, interrupts, release = session.run_batch(
        (*SETUP_COMMANDS, "cat /sys/power/mem_sleep", "cat /proc/interrupts", "uname -r"))
    for r in setup:
        _must_have_worked(r, "guest set-up")
    m = _RTC_IRQ.search(interrupts.output)
    return GuestFacts(mem_sleep.output.strip(), int(m[1]) if m else None, release.output.strip(),
                      _setup_noirq_trace(session))


def _setup_noirq_trace(session: GuestSession) -> bool:
    """Limit the function graph tracer to :data:`NOIRQ_TRACE_ROOTS`; False when the kernel lacks
    the tracer or the callbacks (a tree without the series)."""
    cmd = (f"{{ [ -e {_TRACEFS}/trace ] || mount -t tracefs nodev {_TRACEFS}; }} 2>/dev/null && "
           f"grep -qw function_graph {_TRACEFS}/available_tracers && "
           f"echo '{' '.join(NOIRQ_TRACE_FILTER)}' > {_TRACEFS}/set_ftrace_filter && "
           f"echo '{' '.join(NOIRQ_TRACE_ROOTS)}' > {_TRACEFS}/set_graph_function && "
           f"echo function_graph > {_TRACEFS}/current_tracer && echo 1 > {_TRACEFS}/tracing_on")
    return session.run(cmd + " 2>/dev/null").exit_status == 0


#: The virtio bus's devices, one ``NAME STATUS TRANSPORT [DRIVER]`` line each, in shell builtins
#: only (``cd -P`` resolves the sysfs links in place of a readlink process per link).
VIRTIO_DEVICES = ("for d in /sys/bus/virtio/devices/*; do cd -P $d; read s < status; t=${PWD%/*}; drv=; "
                  "cd -P driver 2>/dev/null && drv=${PWD##*/}; echo \"${d##*/} $s ${t##*/} $drv\"; done; cd /")


def parse_virtio_devices(out: str) -> tuple[VirtioDevice, ...]:
    """The devices in the output of :data:`VIRTIO_DEVICES` (lines that do not parse are skipped)."""
    devices = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1].startswith("0x"):
            devices.append(VirtioDevice(parts[0], int(parts[1], 16), parts[2], parts[3] if len(parts) > 3 else None))
    return tuple(devices)


def parse_stats(out: str) -> dict[str, str]:
    """``{counter: value}`` from the output of :data:`SUSPEND_STATS` (``.../NAME:VALUE`` lines)."""
    stats = {}
    for line in out.splitlines():
        path, sep, value = line.partition(":")
        if sep and path.startswith("/sys/power/suspend_stats/"):
            stats[path.rsplit("/", 1)[1]] = value.strip()
    return stats


#: The guest shell variable that holds the arming command's exit status for the state write after it.
_ARMED = "__hxarmed"

#: The guest shell variable that holds ``/sys/power/wakeup_count`` as read before the arming.
_COUNT = "__hxwc"

#: The guest shell variable that holds the wake alarm still pending after a suspend aborted with -EBUSY.
_ALARM_LEFT = "__hxleft"

#: The wakeup-count handshake (Documentation/ABI/testing/sysfs-power, kernel/power/main.c
#: wakeup_count_store): the count read before the alarm is armed is written back just before
#: the state write.  Without it a wake alarm that fires before the guest is suspended is lost
#: and the guest sleeps with no wake source (a HANG): QEMU's PL031 raises its IRQ at once when
#: the match register is already due (hw/rtc/pl031.c pl031_set_alarm, ``ticks == 0``), the RTC
#: core runs an alarm it finds past at once (drivers/rtc/interface.c rtc_timer_enqueue,
#: ``-ETIME``), and a wake IRQ before the noirq phase wakes nothing.  With the handshake the
#: kernel refuses the count write (the alarm came during the arming) or aborts the suspend
#: with ``-EBUSY`` (during the suspend), and the cycle is tried again.
WAKEUP_COUNT = "/sys/power/wakeup_count"

#: How many times a cycle whose wake alarm fired before the suspend is tried again.
EARLY_WAKE_RETRIES = 2

#: The guest command that ends a ``pm_test`` cycle's test mode.
PM_TEST_OFF = "echo none > /sys/power/pm_test"


def arm_command(scenario: Scenario) -> tuple[str, str]:
    """The guest command that sets up the wake source or test mode of a cycle, and the
    ``/sys/power/state`` word to write after it.  Raises ValueError for an unknown kind."""
    if scenario.kind == "rtc":
        return WAKE_ALARM.format(seconds=scenario.wake_seconds), "mem"
    if scenario.kind == "pm_test":
        return (f"echo {scenario.pm_test_level} > /sys/power/pm_test && "
                "echo 0 > /sys/module/suspend/parameters/pm_test_delay"), "mem"
    if scenario.kind == "hibernate":
        return ("grep -q '^/dev/vda ' /proc/swaps || { mkswap /dev/vda >/dev/null && swapon /dev/vda; }; "
                "echo test_resume > /sys/power/disk"), "disk"
    raise ValueError(f"unknown scenario kind {scenario.kind!r}")


#: Why a cycle that is not s2idle moves no bytes over SSH: the payload both ways costs 0.2-0.35 s under TCG
#: over the kept connection (0.6-0.7 s with a new one), a third of a ``pm_test`` cycle.
NET_TRAFFIC_RTC_ONLY = "net-traffic runs after s2idle (rtc) cycles only, to keep its cost (0.2-0.35 s a cycle under TCG) down"


def net_traffic(scenario: Scenario, link: ssh.SshLink | None) -> NetTraffic | None:
    """The ``net-traffic`` record of a cycle: None without SSH, a skip for a cycle that is not
    s2idle (:data:`NET_TRAFFIC_RTC_ONLY`), else the payload round trip (:func:`harness.ssh.net_traffic`)."""
    if link is None:
        return None
    if scenario.kind != "rtc":
        return NetTraffic(False, skipped=f"{scenario.kind} cycle: {NET_TRAFFIC_RTC_ONLY}")
    return ssh.net_traffic(link)


def run_cycle(session: GuestSession, scenario: Scenario, index: int, facts: GuestFacts | None = None,
              link: ssh.SshLink | None = None) -> CycleRecord:
    """Run cycle ``index`` (1-based) of ``scenario`` and return its record; with ``link`` (the
    connection to the guest's sshd) the record has the SSH payload round trip after resume
    (:func:`net_traffic`).

    Raises :class:`~harness.errors.GuestHang` if the guest does not come back
    within ``scenario.timeout`` seconds, and :class:`~harness.errors.ScenarioError`
    when one of the step's ``before`` commands, the log clearing, the arming command or the
    pm_test reset fails.
    """
    step = scenario.steps[index - 1]
    where = f"scenario {scenario.name}, cycle {index}"
    for command in step.before:
        _must(session, command, f"{where}: before-command", timeouts.STEP_COMMAND)
    traced = bool(facts and facts.noirq_trace)
    early_wakes: list[str] = []
    while True:
        stats_before, write, early = _suspend(session, scenario, where, traced)
        if early is None:
            break
        early_wakes.append(early)
        if len(early_wakes) > EARLY_WAKE_RETRIES:
            raise ScenarioError(f"{where}: the wake alarm fired before the guest was suspended, "
                                f"{len(early_wakes)} times in a row (its wake_seconds, "
                                f"{scenario.wake_seconds}, is shorter than getting into suspend takes "
                                f"here); last: {early_wakes[-1]}")
    seconds = write.seconds
    traffic = net_traffic(scenario, link)  # before the log is read: it shows what the traffic caused
    block = (zlib.crc32(scenario.name.encode()) % 997) * 8 + index
    after = ((PM_TEST_OFF,) if scenario.kind == "pm_test" else ()) + (
        WAKEUP_IRQ, SUSPEND_STATS,
        *(command for _, command, _ in HEALTH_PROBES), VIRTIO_DEVICES,
        *((f"grep -v '^#' {_TRACEFS}/trace",) if traced else ()), "dmesg")
    variables = {_BLOCK: block}
    results = list(session.run_batch(after, timeout=timeouts.GUEST_DUMP, variables=variables))
    if scenario.kind == "pm_test":
        _must_have_worked(results.pop(0), f"{where}: leaving pm_test")
    irq, stats = results[0], results[1]
    health = health_results(results[2:2 + len(HEALTH_PROBES)], variables)
    virtio = parse_virtio_devices(results[2 + len(HEALTH_PROBES)].output)
    trace = results[3 + len(HEALTH_PROBES)].output if traced else None
    dmesg = results[-1].output
    wakeup_irq = int(irq.output) if irq.exit_status == 0 and irq.output.strip().isdigit() else None
    return CycleRecord(scenario.name, scenario.kind, index, write.exit_status, write.output,
                       seconds, wakeup_irq, parse_stats(stats.output), dmesg, health,
                       parse_stats(stats_before.output), virtio, trace, step.label,
                       scenario.pm_test_level if scenario.kind == "pm_test" else None, traffic,
                       tuple(early_wakes))


def _suspend(session: GuestSession, scenario: Scenario, where: str,
             traced: bool) -> tuple[CommandResult, CommandResult, str | None]:
    """One console line: clear the log, read the counters, arm the wake source, and write the
    state only if the arming worked (else the guest would sleep with no wake source until the
    cycle times out).  An s2idle cycle does the :data:`WAKEUP_COUNT` handshake around the
    arming.  Return (the counters' read, the state write, why the wake alarm fired before the
    suspend or None when it did not).  Raises ScenarioError when the log clearing or the
    arming fails, GuestHang past ``scenario.timeout``."""
    arm, state = arm_command(scenario)
    handshake = scenario.kind == "rtc"
    arming = (f"read {_COUNT} < {WAKEUP_COUNT} && {arm}" if handshake else arm) + f"; {_ARMED}=$?; [ ${_ARMED} = 0 ]"
    count = (f"[ ${_ARMED} = 0 ] && echo ${_COUNT} > {WAKEUP_COUNT}; {_ARMED}=$?; [ ${_ARMED} = 0 ]",) if handshake else ()
    clear = ((f"echo > {_TRACEFS}/trace",) if traced else ()) + ("dmesg -c > /dev/null",)
    results = session.run_batch((*clear, SUSPEND_STATS, arming, *count,
                                 f"[ ${_ARMED} = 0 ] && echo {state} > /sys/power/state"), timeout=scenario.timeout)
    stats_before, armed, *saved, write = results[len(clear):]
    for r in results[:len(clear)]:
        _must_have_worked(r, f"{where}: clearing the kernel log")
    _must_have_worked(armed, f"{where}: arming the cycle", arm)
    if saved and saved[0].exit_status != 0:
        return stats_before, write, (f"a wakeup event between reading and writing {WAKEUP_COUNT}, during the "
                                     f"arming ({saved[0].output.strip() or 'no message'})")
    if handshake and write.exit_status != 0 and "busy" in write.output.lower():
        # -EBUSY: a wakeup event aborted the suspend.  Ours if the alarm is no longer pending;
        # then the aborted attempt's kernel log goes to the transcript (commands.log), and
        # otherwise it stays for the cycle's checks.
        pending, _ = session.run_batch((f"{_ALARM_LEFT}=$(cat {_WAKEALARM}); echo \"${_ALARM_LEFT}\"",
                                        f"[ -n \"${_ALARM_LEFT}\" ] || dmesg -c"), timeout=timeouts.GUEST_DUMP)
        if pending.exit_status == 0 and not pending.output.strip():
            return stats_before, write, f"the wake alarm fired during the suspend, which the kernel aborted " \
                                        f"({write.output.strip()})"
    return stats_before, write, None


def health_results(results, variables: dict[str, int] | None = None) -> tuple[HealthResult, ...]:
    """The :data:`HEALTH_PROBES` verdicts on their commands' ``results``, in the same order; each
    detail quotes the command with the shell ``variables`` it ran with put in."""
    def shown(command: str) -> str:
        for name, value in (variables or {}).items():
            command = command.replace(f"${name}", str(value))
        return command
    return tuple(HealthResult(name, ok(r.exit_status, r.output), f"$ {shown(r.command)} -> {r.exit_status}: "
                              + " | ".join(r.output.splitlines()[-3:]))
                 for (name, _, ok), r in zip(HEALTH_PROBES, results, strict=True))
