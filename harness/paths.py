"""Where the harness's data directories are.

In a checkout they are beside the package (``kconfigs/``, ``qemu-profiles/``, ...); a
non-editable install ships the same files inside the package as ``harness/data/``
(pyproject.toml, ``[tool.setuptools.package-data]``).  :data:`DATA_ROOT` is whichever holds
all of :data:`DATA_DIRS`, the checkout first.
"""

from __future__ import annotations

from pathlib import Path

#: The data directories, each read by one stage: kconfig fragments (kconfig), QEMU profiles
#: (qemu), scenarios (scenarios), matrices and patches (matrix, series), the guest's init and
#: probe module (rootfs, modules).
DATA_DIRS = ("kconfigs", "qemu-profiles", "scenarios", "matrices", "patches", "guest-rootfs")


def find_data_root(package_dir: Path) -> Path:
    """The checkout (``package_dir``'s parent) if it holds every data directory, else the
    installed copy (``package_dir/data``) if that does, else the checkout path, so that the
    first missing file is named in the error of the stage that reads it."""
    checkout, installed = package_dir.parent, package_dir / "data"
    for root in (checkout, installed):
        if all((root / d).is_dir() for d in DATA_DIRS):
            return root
    return checkout


#: The directory that holds :data:`DATA_DIRS`.
DATA_ROOT = find_data_root(Path(__file__).resolve().parent)
