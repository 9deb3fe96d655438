"""Scenario files (``scenarios/NAME.yaml``): what the cycles of a cell do.

A scenario has a ``kind`` (:data:`harness.model.SCENARIO_KINDS`) and either
``cycles`` identical cycles or a list of ``steps``, one per cycle; a step (or
the whole scenario) may run guest commands ``before`` its cycle, add scenario
``checks`` (:data:`harness.checks.SCENARIO_CHECKS`) and override expectations
with ``expect``.  Loaded into :class:`harness.model.Scenario` values,
validated on load against :data:`harness.schemas.SCENARIO` with errors that
name the file, line and key.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness import model, schemas, timeouts
from harness.config import load_document
from harness.errors import ConfigError
from harness.paths import DATA_ROOT

#: Where the shipped scenarios live.
SCENARIOS_DIR = DATA_ROOT / "scenarios"


def _step(entry: dict) -> model.Step:
    """A validated scenario (uniform cycles) or step mapping as a :class:`model.Step`."""
    return model.Step(tuple(c.strip() for c in entry.get("before", ())), dict(entry.get("expect", {})),
                      tuple(entry.get("checks", ())), entry.get("label", ""))


def load_scenario(path: Path) -> model.Scenario:
    """Load ``scenarios/NAME.yaml``: either ``cycles`` identical cycles (with optional top-level
    ``before``/``expect``/``checks``) or a list of ``steps``, one per cycle.

    Validated against :data:`harness.schemas.SCENARIO`; raises :class:`ConfigError` naming
    the file, line and key."""
    doc = load_document(path, schemas.SCENARIO)
    data = doc.data
    if "steps" in data:
        clash = [k for k in data if k in ("cycles", "before", "expect", "checks")]
        if clash:
            raise ConfigError(f"{doc.where(clash[0])}: not allowed with 'steps' (each step is one cycle; "
                              f"give a step its own before/expect/checks)")
        steps = tuple(_step(entry) for entry in data["steps"])
    else:
        steps = (_step(data),) * data.get("cycles", 1)
    return model.Scenario(data["name"], data["kind"], steps, data.get("wake_seconds", model.DEFAULT_WAKE_SECONDS),
                          data.get("pm_test_level", "platform"), float(data.get("timeout", timeouts.CYCLE)),
                          data.get("description", "").strip())


def find_scenario(name: str) -> model.Scenario:
    """Load ``scenarios/<name>.yaml`` (or a path); ConfigError naming the known ones otherwise."""
    path = Path(name) if name.endswith(".yaml") else SCENARIOS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))
        raise ConfigError(f"no scenario {name!r} (scenarios/: {', '.join(known)})")
    return load_scenario(path)


def uniform(scenario: model.Scenario) -> bool:
    """True when every cycle of ``scenario`` is the same step (so its count can change)."""
    return all(s == scenario.steps[0] for s in scenario.steps)


def with_cycles(scenario: model.Scenario, cycles: int, where: str = "") -> model.Scenario:
    """``scenario`` with ``cycles`` repetitions of its (single kind of) step.

    Raises ConfigError for a scenario of distinct steps, whose length is fixed."""
    if not uniform(scenario):
        raise ConfigError(f"{where}scenario {scenario.name} has distinct steps; its cycle count is fixed")
    if cycles < 1:
        raise ConfigError(f"{where}cycles must be >= 1, got {cycles}")
    return replace(scenario, steps=(scenario.steps[0],) * cycles)
