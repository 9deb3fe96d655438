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

Before the first cycle the console loglevel is lowered (``dmesg -n 1``) so
kernel messages do not interleave with command output, and
``pm_print_times``/``pm_debug_messages`` are enabled; the kernel log is read
with ``dmesg`` and cleared before each cycle.
"""

from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass, field

from harness.guest import GuestSession

#: A /proc/interrupts row of the PL031 RTC (drivers/rtc/rtc-pl031.c requests "rtc-pl031").
_RTC_IRQ = re.compile(r"^\s*(\d+):.*\brtc-pl031\b", re.M)

SCENARIO_KINDS = ("rtc", "pm_test", "hibernate")


@dataclass(frozen=True)
class Scenario:
    """What one cycle does.

    ``kind`` is one of :data:`SCENARIO_KINDS`; ``wake_seconds`` is the RTC
    alarm delay (the PL031 counts whole seconds); ``pm_test_level`` is
    written to ``/sys/power/pm_test``; ``timeout`` bounds the state write in
    seconds.
    """

    name: str
    kind: str
    cycles: int
    wake_seconds: int = 2
    pm_test_level: str = "platform"
    timeout: float = 90.0


@dataclass(frozen=True)
class GuestFacts:
    """Read once per boot: ``mem_sleep`` choices, PL031 IRQ number, kernel release."""

    mem_sleep: str
    rtc_irq: int | None
    kernel_release: str


@dataclass(frozen=True)
class HealthResult:
    """Whether one device still works after resume: ``name``, ``ok``, and the guest's ``detail``."""

    name: str
    ok: bool
    detail: str


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


@dataclass(frozen=True)
class CycleRecord:
    """One cycle: which scenario, the state write's exit status and message,
    its wall time in seconds, ``/sys/power/pm_wakeup_irq`` (None if empty),
    ``suspend_stats`` counters, and the kernel log of the cycle."""

    scenario: str
    kind: str
    index: int
    write_status: int
    write_output: str
    seconds: float
    wakeup_irq: int | None
    suspend_stats: dict[str, str] = field(default_factory=dict)
    dmesg: str = ""
    health: tuple[HealthResult, ...] = ()


def prepare(session: GuestSession) -> GuestFacts:
    """Lower the console loglevel, enable PM debug output, read the guest's facts."""
    session.run("dmesg -n 1")
    session.run("echo 1 > /sys/power/pm_print_times && echo 1 > /sys/power/pm_debug_messages")
    mem_sleep = session.run("cat /sys/power/mem_sleep").output.strip()
    m = _RTC_IRQ.search(session.run("cat /proc/interrupts").output)
    release = session.run("uname -r").output.strip()
    return GuestFacts(mem_sleep, int(m[1]) if m else None, release)


def _read_stats(session: GuestSession) -> dict[str, str]:
    out = session.run("for f in /sys/power/suspend_stats/*; do echo \"${f##*/} $(cat $f)\"; done").output
    stats = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        stats[key] = value.strip()
    return stats


def _arm(session: GuestSession, scenario: Scenario) -> str:
    """Set up the wake source or test mode; return the ``/sys/power/state`` word."""
    if scenario.kind == "rtc":
        session.run(f"rtcwake -m no -s {scenario.wake_seconds}")
        return "mem"
    if scenario.kind == "pm_test":
        session.run(f"echo {scenario.pm_test_level} > /sys/power/pm_test && "
                    "echo 0 > /sys/module/suspend/parameters/pm_test_delay")
        return "mem"
    if scenario.kind == "hibernate":
        if session.run("grep -q '^/dev/vda ' /proc/swaps").exit_status != 0:
            session.run("mkswap /dev/vda >/dev/null && swapon /dev/vda")
        session.run("echo test_resume > /sys/power/disk")
        return "disk"
    raise ValueError(f"unknown scenario kind {scenario.kind!r}")


def run_cycle(session: GuestSession, scenario: Scenario, index: int) -> CycleRecord:
    """Run one cycle and return its record.

    Raises :class:`~harness.errors.GuestHang` if the guest does not come back
    within ``scenario.timeout`` seconds.
    """
    session.run("dmesg -c > /dev/null")
    state = _arm(session, scenario)
    start = time.monotonic()
    write = session.run(f"echo {state} > /sys/power/state", timeout=scenario.timeout)
    seconds = time.monotonic() - start
    if scenario.kind == "pm_test":
        session.run("echo none > /sys/power/pm_test")
    irq = session.run("cat /sys/power/pm_wakeup_irq 2>/dev/null")
    wakeup_irq = int(irq.output) if irq.exit_status == 0 and irq.output.strip().isdigit() else None
    stats = _read_stats(session)
    health = check_health(session, block=(zlib.crc32(scenario.name.encode()) % 997) * 8 + index)
    dmesg = session.run("dmesg", timeout=60).output
    return CycleRecord(scenario.name, scenario.kind, index, write.exit_status, write.output,
                       seconds, wakeup_irq, stats, dmesg, health)


def check_health(session: GuestSession, block: int) -> tuple[HealthResult, ...]:
    """Run :data:`HEALTH_PROBES` in the guest; ``block`` is the 4 KiB disk block to read."""
    results = []
    for name, command, ok in HEALTH_PROBES:
        r = session.run(command.format(block=block), timeout=30)
        results.append(HealthResult(name, ok(r.exit_status, r.output), f"$ {r.command} -> {r.exit_status}: "
                                    + " | ".join(r.output.splitlines()[-3:])))
    return tuple(results)

