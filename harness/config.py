"""Loading of the harness's YAML files with errors that name file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """Load ``path`` as a YAML mapping; raises :class:`ConfigError` naming the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def check_keys(where: str, entry: Any, allowed: set[str], required: set[str]) -> None:
    """Raise :class:`ConfigError` if ``entry`` is not a mapping with exactly the allowed keys.

    ``where`` names the file and position (``rootfs.yaml: nodes[2]``).
    """
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping, got {entry!r}")
    unknown = sorted(str(k) for k in set(entry) - allowed)  # YAML 1.1 reads on/off/yes keys as booleans
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(entry))
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
