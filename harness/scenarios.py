"""Scenario files (``scenarios/NAME.yaml``): what the cycles of a cell do.

A scenario has a ``kind`` (:data:`harness.model.SCENARIO_KINDS`) and either
``cycles`` identical cycles or a list of ``steps``, one per cycle; a step (or
the whole scenario) may run guest commands ``before`` its cycle, add scenario
``checks`` (:data:`harness.checks.SCENARIO_CHECKS`) and override expectations
with ``expect``.  Loaded into :class:`harness.model.Scenario` values,
validated on load with errors that name the file and key.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness import checks, expectations, model, timeouts
from harness.paths import DATA_ROOT
from harness.config import check_keys, load_yaml_mapping
from harness.errors import ConfigError

#: Where the shipped scenarios live.
SCENARIOS_DIR = DATA_ROOT / "scenarios"

_SCENARIO_KEYS = {"name", "description", "kind", "cycles", "steps", "wake_seconds", "pm_test_level", "timeout",
                  "before", "expect", "checks"}
_STEP_KEYS = {"label", "before", "expect", "checks"}


def _step(where: str, entry: dict) -> model.Step:
    before = entry.get("before") or []
    if not isinstance(before, list) or not all(isinstance(c, str) and "\n" not in c.strip() for c in before):
        raise ConfigError(f"{where}.before: must be a list of one-line guest shell commands")
    extra = entry.get("checks") or []
    unknown = [c for c in extra if c not in checks.SCENARIO_CHECKS]
    if not isinstance(extra, list) or unknown:
        raise ConfigError(f"{where}.checks: unknown scenario check(s) {unknown} "
                          f"(known: {', '.join(checks.SCENARIO_CHECKS)})")
    return model.Step(tuple(c.strip() for c in before), expectations.parse_expect(f"{where}: expect", entry.get("expect")),
                        tuple(extra), str(entry.get("label") or ""))


def load_scenario(path: Path) -> model.Scenario:
    """Load ``scenarios/NAME.yaml``: either ``cycles`` identical cycles (with optional top-level
    ``before``/``expect``/``checks``) or a list of ``steps``, one per cycle.

    Raises :class:`ConfigError` naming the file and key."""
    data = load_yaml_mapping(path)
    where = str(path)
    check_keys(where, data, _SCENARIO_KEYS, {"name", "kind"})
    if data["kind"] not in model.SCENARIO_KINDS:
        raise ConfigError(f"{where}: kind: {data['kind']!r} is not one of {', '.join(model.SCENARIO_KINDS)}")
    level = data.get("pm_test_level", "platform")
    if level not in model.PM_TEST_LEVELS:
        raise ConfigError(f"{where}: pm_test_level: {level!r} is not one of {', '.join(model.PM_TEST_LEVELS)}")
    if "steps" in data:
        if {"cycles", "before", "expect", "checks"} & set(data):
            raise ConfigError(f"{where}: 'steps' cannot be combined with cycles/before/expect/checks")
        if not isinstance(data["steps"], list) or not data["steps"]:
            raise ConfigError(f"{where}: steps: must be a non-empty list")
        steps = []
        for i, entry in enumerate(data["steps"]):
            check_keys(f"{where}: steps[{i}]", entry, _STEP_KEYS, set())
            steps.append(_step(f"{where}: steps[{i}]", entry))
        steps = tuple(steps)
    else:
        cycles = data.get("cycles", 1)
        if not isinstance(cycles, int) or cycles < 1:
            raise ConfigError(f"{where}: cycles: must be a positive integer, got {cycles!r}")
        steps = (_step(where, data),) * cycles
    for key in ("wake_seconds", "timeout"):
        if key in data and (not isinstance(data[key], (int, float)) or data[key] <= 0):
            raise ConfigError(f"{where}: {key}: must be a positive number of seconds")
    return model.Scenario(str(data["name"]), data["kind"], steps, int(data.get("wake_seconds", 2)), level,
                            float(data.get("timeout", timeouts.CYCLE)), str(data.get("description") or "").strip())


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
