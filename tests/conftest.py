"""Shared test helpers: fixture paths and loading of captured cycle records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.model import CycleRecord, GuestFacts, HealthResult, NetTraffic, VirtioDevice

#: The checkout (matrices/, patches/, ... and tests/).
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
#: Captures from the embedded default kernel; see fixtures/README.md.
CAPTURE = FIXTURES / "linux-6.12.117"
#: Captures with the guest probe module, without and with the v9-design backport.
PROBE_BASELINE = FIXTURES / "probe-baseline-6.12"
PROBE_BACKPORT = FIXTURES / "probe-v9-backport-6.12"


def armed(out: Path) -> bool:
    """True once the harness writing ``out`` has armed a cycle's wake alarm (its ``commands.log``
    has the arming command, logged when it returns): the state write follows in the same
    console line (harness.suspend.run_cycle).  The console is no sign: the shell wraps the
    echoed line at 80 columns, anywhere in ``echo mem > /sys/power/state``."""
    log = out / "commands.log"
    return log.exists() and "> /sys/class/rtc/rtc0/wakealarm" in log.read_text(errors="replace")


def load_record(stem: str, capture: Path = CAPTURE) -> CycleRecord:
    """Return the captured :class:`CycleRecord` ``stem`` with its dmesg."""
    meta = json.loads((capture / f"{stem}.record.json").read_text())
    meta["health"] = tuple(HealthResult(**h) for h in meta.get("health", ()))
    meta["virtio"] = tuple(VirtioDevice(**d) for d in meta.get("virtio", ()))
    if meta.get("net_traffic"):
        meta["net_traffic"] = NetTraffic(**meta["net_traffic"])
    trace = capture / f"{stem}.noirq-trace"
    meta["noirq_trace"] = trace.read_text().rstrip("\n") if trace.is_file() else None
    return CycleRecord(dmesg=(capture / f"{stem}.dmesg").read_text().rstrip("\n"), **meta)


def load_facts(capture: Path = CAPTURE) -> GuestFacts:
    """Return the guest facts captured with the records."""
    return GuestFacts(**json.loads((capture / "guest.json").read_text()))


@pytest.fixture
def capture_dir() -> Path:
    return CAPTURE
