"""Expectations: which checks a revision or a scenario step is expected to fail
(``patches/*/expect.yaml``, a scenario step's ``expect:``), validated on load against
:data:`harness.schemas.EXPECT` (check names from :data:`harness.checks.ALL_CHECKS`).
:func:`harness.checks.apply_expectations` applies them."""

from __future__ import annotations

from pathlib import Path

from harness import schemas
from harness.config import load_validated


def load_expectations(path: Path) -> dict[str, str]:
    """Load ``expect.yaml`` (``expect: {check: pass|fail|any}``, ``revision`` and ``reason`` text)
    and return its ``expect`` mapping.

    Raises :class:`~harness.errors.ConfigError` naming the file, line and the unknown key or bad value.
    """
    return dict(load_validated(path, schemas.EXPECT_FILE)["expect"])
