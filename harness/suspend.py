"""Suspend/resume cycles over a guest session.

Three scenario kinds:

* ``rtc``: arm the PL031 wake alarm (``rtcwake -m no -s N``) and write
  ``mem`` to ``/sys/power/state`` (s2idle on QEMU virt: ``mem_sleep`` offers
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
"""

from __future__ import annotations

import re
import time
import zlib
from harness import ssh, timeouts
from harness.errors import ScenarioError
from harness.guest import GuestSession
from harness.model import (NOIRQ_TRACE_ROOTS, CycleRecord, GuestFacts, HealthResult, NetTraffic, Scenario,
                           VirtioDevice)

#: A /proc/interrupts row of the PL031 RTC (drivers/rtc/rtc-pl031.c requests "rtc-pl031").
_RTC_IRQ = re.compile(r"^\s*(\d+):.*\brtc-pl031\b", re.M)

#: The functions the tracer records under :data:`~harness.model.NOIRQ_TRACE_ROOTS`: the virtio
#: core, the transport, and ``__might_sleep`` (kernel/sched/core.c; might_sleep() calls it with
#: DEBUG_ATOMIC_SLEEP).
NOIRQ_TRACE_FILTER = ("virtio_*", "vm_*", "__might_sleep")
_TRACEFS = "/sys/kernel/tracing"


#: After-resume health probes: (name, guest command, test on (exit status, output)).
#: ``{block}`` is a disk block that no earlier cycle read, so the read reaches the device.
HEALTH_PROBES = (
    ("probe-request", "cat /sys/bus/virtio/drivers/virtio_pm_probe/*/request",
     lambda rc, out: rc == 0 and out.startswith("ok ")),
    ("blk-read", "dd if=/dev/vda of=/dev/null bs=4096 count=1 skip={block} 2>&1",
     lambda rc, out: rc == 0 and "1+0 records in" in out),
    ("net-link", "ip link set eth0 up && sleep 0.2 && cat /sys/class/net/eth0/operstate",
     lambda rc, out: rc == 0 and out.strip().endswith("up")),
)


#: The guest commands before the first cycle: console loglevel 1 (the console carries only the
#: shell; dmesg is read whole after each cycle), and the PM debug output the parser reads
#: (kernel/power/main.c: pm_print_times, pm_debug_messages).  The LAVA export runs the same.
SETUP_COMMANDS = ("dmesg -n 1", "echo 1 > /sys/power/pm_print_times && echo 1 > /sys/power/pm_debug_messages")


def _must(session: GuestSession, command: str, what: str, timeout: float = timeouts.GUEST_COMMAND):
    """Run a guest command that has to work; raises ScenarioError (verdict ERROR) naming it, its
    exit status and output at once (a failed ``rtcwake`` must not wait out the cycle as a HANG)."""
    r = session.run(command, timeout=timeout)
    if r.exit_status != 0:
        raise ScenarioError(f"{what}: `{command}` exited {r.exit_status}: {r.output.strip()[-300:] or '(no output)'}")
    return r


def prepare(session: GuestSession) -> GuestFacts:
    """Run :data:`SETUP_COMMANDS` (ScenarioError if one fails), read the guest's facts."""
    for command in SETUP_COMMANDS:
        _must(session, command, "guest set-up")
    mem_sleep = session.run("cat /sys/power/mem_sleep").output.strip()
    m = _RTC_IRQ.search(session.run("cat /proc/interrupts").output)
    release = session.run("uname -r").output.strip()
    return GuestFacts(mem_sleep, int(m[1]) if m else None, release, _setup_noirq_trace(session))


def _setup_noirq_trace(session: GuestSession) -> bool:
    """Limit the function graph tracer to :data:`NOIRQ_TRACE_ROOTS`; False when the kernel lacks
    the tracer or the callbacks (a tree without the series)."""
    cmd = (f"{{ [ -e {_TRACEFS}/trace ] || mount -t tracefs nodev {_TRACEFS}; }} 2>/dev/null && "
           f"grep -qw function_graph {_TRACEFS}/available_tracers && "
           f"echo '{' '.join(NOIRQ_TRACE_FILTER)}' > {_TRACEFS}/set_ftrace_filter && "
           f"echo '{' '.join(NOIRQ_TRACE_ROOTS)}' > {_TRACEFS}/set_graph_function && "
           f"echo function_graph > {_TRACEFS}/current_tracer && echo 1 > {_TRACEFS}/tracing_on")
    return session.run(cmd + " 2>/dev/null").exit_status == 0


_VIRTIO_DEVICES = ("for d in /sys/bus/virtio/devices/*; do p=$(readlink -f $d); drv=$(readlink $d/driver); "
                   "echo \"${d##*/} $(cat $d/status) $(basename ${p%/*}) ${drv##*/}\"; done")


def read_virtio_devices(session: GuestSession) -> tuple[VirtioDevice, ...]:
    """The virtio bus's devices with status, transport and driver (``/sys/bus/virtio/devices``)."""
    devices = []
    for line in session.run(_VIRTIO_DEVICES).output.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1].startswith("0x"):
            devices.append(VirtioDevice(parts[0], int(parts[1], 16), parts[2], parts[3] if len(parts) > 3 else None))
    return tuple(devices)


def _read_stats(session: GuestSession) -> dict[str, str]:
    out = session.run("for f in /sys/power/suspend_stats/*; do echo \"${f##*/} $(cat $f)\"; done").output
    stats = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        stats[key] = value.strip()
    return stats


#: The guest command that ends a ``pm_test`` cycle's test mode.
PM_TEST_OFF = "echo none > /sys/power/pm_test"


def arm_command(scenario: Scenario) -> tuple[str, str]:
    """The guest command that sets up the wake source or test mode of a cycle, and the
    ``/sys/power/state`` word to write after it.  Raises ValueError for an unknown kind."""
    if scenario.kind == "rtc":
        return f"rtcwake -m no -s {scenario.wake_seconds}", "mem"
    if scenario.kind == "pm_test":
        return (f"echo {scenario.pm_test_level} > /sys/power/pm_test && "
                "echo 0 > /sys/module/suspend/parameters/pm_test_delay"), "mem"
    if scenario.kind == "hibernate":
        return ("grep -q '^/dev/vda ' /proc/swaps || { mkswap /dev/vda >/dev/null && swapon /dev/vda; }; "
                "echo test_resume > /sys/power/disk"), "disk"
    raise ValueError(f"unknown scenario kind {scenario.kind!r}")


#: Why a cycle that is not s2idle moves no bytes over SSH: the payload both ways costs about a second under TCG.
NET_TRAFFIC_RTC_ONLY = "net-traffic runs after s2idle (rtc) cycles only, to keep its cost (seconds under TCG) down"


def net_traffic(scenario: Scenario, target: ssh.SshTarget | None) -> NetTraffic | None:
    """The ``net-traffic`` record of a cycle: None without SSH, a skip for a cycle that is not
    s2idle (:data:`NET_TRAFFIC_RTC_ONLY`), else the payload round trip (:func:`harness.ssh.net_traffic`)."""
    if target is None:
        return None
    if scenario.kind != "rtc":
        return NetTraffic(False, skipped=f"{scenario.kind} cycle: {NET_TRAFFIC_RTC_ONLY}")
    return ssh.net_traffic(target.port, target.key)


def run_cycle(session: GuestSession, scenario: Scenario, index: int, facts: GuestFacts | None = None,
              target: ssh.SshTarget | None = None) -> CycleRecord:
    """Run cycle ``index`` (1-based) of ``scenario`` and return its record; with ``target``
    (the guest's sshd) the record has the SSH payload round trip after resume (:func:`net_traffic`).

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
    if traced:
        session.run(f"echo > {_TRACEFS}/trace")
    stats_before = _read_stats(session)
    _must(session, "dmesg -c > /dev/null", f"{where}: clearing the kernel log")
    arm, state = arm_command(scenario)
    _must(session, arm, f"{where}: arming the cycle")
    start = time.monotonic()
    write = session.run(f"echo {state} > /sys/power/state", timeout=scenario.timeout)
    seconds = time.monotonic() - start
    if scenario.kind == "pm_test":
        _must(session, PM_TEST_OFF, f"{where}: leaving pm_test")
    irq = session.run("cat /sys/power/pm_wakeup_irq 2>/dev/null")
    wakeup_irq = int(irq.output) if irq.exit_status == 0 and irq.output.strip().isdigit() else None
    stats = _read_stats(session)
    trace = session.run(f"grep -v '^#' {_TRACEFS}/trace", timeout=timeouts.GUEST_DUMP).output if traced else None
    health = check_health(session, block=(zlib.crc32(scenario.name.encode()) % 997) * 8 + index)
    traffic = net_traffic(scenario, target)
    virtio = read_virtio_devices(session)
    dmesg = session.run("dmesg", timeout=timeouts.GUEST_DUMP).output
    return CycleRecord(scenario.name, scenario.kind, index, write.exit_status, write.output,
                       seconds, wakeup_irq, stats, dmesg, health, stats_before, virtio, trace, step.label,
                       scenario.pm_test_level if scenario.kind == "pm_test" else None, traffic)


def check_health(session: GuestSession, block: int) -> tuple[HealthResult, ...]:
    """Run :data:`HEALTH_PROBES` in the guest; ``block`` is the 4 KiB disk block to read."""
    results = []
    for name, command, ok in HEALTH_PROBES:
        r = session.run(command.format(block=block), timeout=timeouts.GUEST_COMMAND)
        results.append(HealthResult(name, ok(r.exit_status, r.output), f"$ {r.command} -> {r.exit_status}: "
                                    + " | ".join(r.output.splitlines()[-3:])))
    return tuple(results)

