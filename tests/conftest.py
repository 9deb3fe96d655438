"""Shared test helpers: fixture paths and loading of captured cycle records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.suspend import CycleRecord, GuestFacts

FIXTURES = Path(__file__).parent / "fixtures"
#: Captures from the embedded default kernel; see fixtures/README.md.
CAPTURE = FIXTURES / "linux-6.12.117"


def load_record(stem: str) -> CycleRecord:
    """Return the captured :class:`CycleRecord` ``stem`` with its dmesg."""
    meta = json.loads((CAPTURE / f"{stem}.record.json").read_text())
    return CycleRecord(dmesg=(CAPTURE / f"{stem}.dmesg").read_text().rstrip("\n"), **meta)


def load_facts() -> GuestFacts:
    """Return the guest facts captured with the records."""
    return GuestFacts(**json.loads((CAPTURE / "guest.json").read_text()))


@pytest.fixture
def capture_dir() -> Path:
    return CAPTURE
