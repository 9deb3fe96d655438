"""The records that flow between the pipeline's stages: what a scenario asks for, what the
guest said (:class:`GuestFacts`, one :class:`CycleRecord` per suspend/resume cycle).

Values only, with no behaviour that touches a guest, a process or a file, so that the
analysis modules (:mod:`harness.dmesg`, :mod:`harness.ftrace`, :mod:`harness.checks`) import
nothing that spawns one.  :mod:`harness.suspend` fills them in over a guest session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness import timeouts

#: What a scenario does: an RTC-woken s2idle, a pm_test level, a test_resume hibernation.
SCENARIO_KINDS = ("rtc", "pm_test", "hibernate")
#: /sys/power/pm_test levels (kernel/power/main.c pm_tests[]); ``core`` and
#: ``processors`` are refused for s2idle.
PM_TEST_LEVELS = ("devices", "platform", "processors", "core")

#: The callbacks the function graph tracer records from in the guest (drivers/virtio/virtio_mmio.c
#: with the series; :func:`harness.suspend.prepare` sets it up, :mod:`harness.checks` reads it).
NOIRQ_TRACE_ROOTS = ("virtio_mmio_freeze_noirq", "virtio_mmio_restore_noirq")


@dataclass(frozen=True)
class Step:
    """One cycle of a scenario beyond the state write itself.

    ``before``: guest shell commands run before the cycle, each of which must
    exit 0; ``expect``: check name -> ``pass``/``fail``/``any`` for this
    cycle, over the revision's own expectations; ``checks``: names of extra
    scenario checks (:data:`harness.checks.SCENARIO_CHECKS`); ``label``: a
    word for the report (``bound-to-pci``).
    """

    before: tuple[str, ...] = ()
    expect: dict[str, str] = field(default_factory=dict)
    checks: tuple[str, ...] = ()
    label: str = ""


#: The RTC wake alarm's delay in seconds when a scenario does not give one
#: (:data:`harness.suspend.WAKE_ALARM`).  The PL031 counts whole seconds; QEMU's fires N s after
#: the arming.  1 s: 800 s2idle cycles out of 800 woke by the alarm (6.12 and 7.2 guests, virt-mmio,
#: virt-gicv3 and virt-smp1, three guests at once on 2 cores, QEMU 7.2 TCG; state writes
#: 0.96-1.42 s).  The one way it failed before, an alarm that fires before the guest is
#: suspended (a single vCPU under load, once in a default matrix: HANG), is caught by the
#: wakeup_count handshake and the cycle tried again (:data:`harness.suspend.WAKEUP_COUNT`).
DEFAULT_WAKE_SECONDS = 1


@dataclass(frozen=True)
class Scenario:
    """What a sequence of cycles does.

    ``kind`` is one of :data:`SCENARIO_KINDS`; ``steps`` one :class:`Step`
    per cycle; ``wake_seconds`` is the RTC alarm delay (the PL031 counts
    whole seconds); ``pm_test_level`` is written to ``/sys/power/pm_test``;
    ``timeout`` bounds the state write in seconds; ``description`` says
    what it shows.
    """

    name: str
    kind: str
    steps: tuple[Step, ...] = (Step(),)
    wake_seconds: int = DEFAULT_WAKE_SECONDS
    pm_test_level: str = "platform"
    timeout: float = timeouts.CYCLE
    description: str = ""

    @property
    def cycles(self) -> int:
        """Number of cycles (one per step)."""
        return len(self.steps)


@dataclass(frozen=True)
class GuestFacts:
    """Read once per boot: ``mem_sleep`` choices, PL031 IRQ number, kernel release, and whether
    the function graph tracer records the virtio-mmio noirq callbacks (``noirq_trace``)."""

    mem_sleep: str
    rtc_irq: int | None
    kernel_release: str
    noirq_trace: bool = False


@dataclass(frozen=True)
class HealthResult:
    """Whether one device still works after resume: ``name``, ``ok``, and the guest's ``detail``."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class VirtioDevice:
    """A device on the virtio bus after a cycle: ``status`` register (VIRTIO_CONFIG_S_* bits,
    include/uapi/linux/virtio_config.h), its ``transport`` (parent device) and bound ``driver``."""

    name: str
    status: int
    transport: str
    driver: str | None


@dataclass(frozen=True)
class NetTraffic:
    """Bytes moved through virtio-net over SSH after a resume (:func:`harness.ssh.net_traffic`).

    ``ok``: the payload went host -> guest (SFTP put) and back (SFTP get) with its sha256 the
    same on the host and after the way back (when it is not, ``detail`` says whether the guest's
    copy, ``sha256sum``, was already wrong); ``bytes``: bytes
    moved, both ways together; ``seconds``: wall time of connect + both transfers;
    ``sha256``: the payload's digest; ``detail``: what failed, or the steps' times;
    ``skipped``: why the cycle moved no bytes on purpose (not an s2idle cycle), else empty.
    """

    ok: bool
    bytes: int = 0
    seconds: float = 0.0
    sha256: str = ""
    detail: str = ""
    skipped: str = ""


@dataclass(frozen=True)
class CycleRecord:
    """One cycle: which scenario, the state write's exit status and message,
    its wall time in seconds, ``/sys/power/pm_wakeup_irq`` (None if empty),
    ``suspend_stats`` counters before and after, the kernel log of the cycle,
    the health probes, the virtio devices' status after the cycle, the
    function graph trace of the noirq callbacks (None when not traced), and
    the step's label and ``pm_test`` level (None unless a pm_test cycle), the SSH traffic
    after resume (None when the guest had no SSH: a profile without ``hostfwd``), and why
    each earlier attempt of the cycle was retried (``early_wakes``: the wake alarm fired
    before the guest was suspended, :func:`harness.suspend.run_cycle`)."""

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
    stats_before: dict[str, str] = field(default_factory=dict)
    virtio: tuple[VirtioDevice, ...] = ()
    noirq_trace: str | None = None
    step: str = ""
    pm_test_level: str | None = None
    net_traffic: NetTraffic | None = None
    early_wakes: tuple[str, ...] = ()
