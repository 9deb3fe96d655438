"""Expectations: which checks a revision or a scenario step is expected to fail
(``patches/*/expect.yaml``, a scenario step's ``expect:``), loaded and validated against
:data:`harness.checks.ALL_CHECKS`.  :func:`harness.checks.apply_expectations` applies them."""

from __future__ import annotations

from pathlib import Path

from harness.checks import ALL_CHECKS
from harness.config import check_keys, load_yaml_mapping
from harness.errors import ConfigError


def parse_expect(where: str, value) -> dict[str, str]:
    """Validate an ``expect`` mapping (check name -> ``pass``/``fail``/``any``; None is empty).

    Raises :class:`ConfigError` naming ``where`` (file and key) and the bad check or value."""
    value = value or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must map check names to pass, fail or any")
    for name, v in value.items():
        if name not in ALL_CHECKS:
            raise ConfigError(f"{where}.{name}: unknown check (known: {', '.join(ALL_CHECKS)})")
        if v not in ("pass", "fail", "any"):
            raise ConfigError(f"{where}.{name}: {v!r} is not pass, fail or any")
    return dict(value)


def load_expectations(path: Path) -> dict[str, str]:
    """Load ``expect.yaml`` (``expect: {check: pass|fail|any}``, ``reason: text``).

    Raises :class:`ConfigError` naming the file and the unknown check or value.
    """
    data = load_yaml_mapping(path)
    check_keys(str(path), data, {"revision", "expect", "reason"}, {"expect"})
    return parse_expect(f"{path}: expect", data["expect"])
