"""QEMU profiles (``qemu-profiles/*.yaml``) and their rendering into an argv.

A profile is validated on load against :data:`harness.schemas.QEMU_PROFILE`: an
unknown key, a missing field or a value of the wrong type is a
:class:`~harness.errors.ConfigError` naming the file, line and key.  Its ``args``
are jinja2 templates (``StrictUndefined``, so a misspelt variable is an error too).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from harness import schemas
from harness.config import load_document
from harness.errors import ConfigError
from harness.lazy import lazy_import

jinja2 = lazy_import("jinja2")


@dataclass(frozen=True)
class QemuProfile:
    """One machine set-up.  ``memory_mb`` and ``disk_mb`` are MiB; ``args`` are templates."""

    name: str
    description: str
    binary: str
    machine: str
    cpu: str
    memory_mb: int
    smp: int
    disk_mb: int
    append: str
    args: tuple[str, ...]
    path: Path


def load_profile(path: Path) -> QemuProfile:
    """Load and validate a profile file (:data:`harness.schemas.QEMU_PROFILE`; its ``name`` must be
    the file's stem); raises :class:`ConfigError` naming file, line and key."""
    doc = load_document(path, schemas.QEMU_PROFILE)
    if doc.data["name"] != path.stem:
        raise ConfigError(f"{doc.where('name')}: is {doc.data['name']!r} but the file is {path.name}")
    return QemuProfile(path=path, **{**doc.data, "args": tuple(doc.data["args"])})


def find_profile(profiles_dir: Path, name: str) -> QemuProfile:
    """Load ``profiles_dir/<name>.yaml`` (or a path); raises :class:`ConfigError` if absent."""
    path = Path(name) if name.endswith(".yaml") else profiles_dir / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in profiles_dir.glob("*.yaml")))
        raise ConfigError(f"QEMU profile {name!r} not found in {profiles_dir} (known: {known})")
    return load_profile(path)


def render_argv(profile: QemuProfile, *, kernel: Path, initrd: Path, disk: Path,
                extra_append: str = "", ssh_port: int = 0) -> list[str]:
    """Return the full QEMU argv for ``profile``; raises :class:`ConfigError` on a template error.

    ``extra_append`` is added to the kernel command line; ``ssh_port`` is the loopback port a
    profile forwards to the guest's port 22 (``hostfwd``), 0 for none."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    values = {f.name: getattr(profile, f.name) for f in fields(QemuProfile) if f.name not in ("args", "path")}
    values.update(kernel=str(kernel), initrd=str(initrd), disk=str(disk), extra_append=extra_append,
                  ssh_port=ssh_port)
    argv = [profile.binary]
    for i, template in enumerate(profile.args):
        try:
            argv.append(env.from_string(template).render(values))
        except jinja2.TemplateError as e:
            raise ConfigError(f"{profile.path}: args[{i}] {template!r}: {e}") from e
    return argv


def forwards_ssh(argv: list[str], ssh_port: int) -> bool:
    """Whether ``argv`` (rendered with ``ssh_port``) forwards that loopback port to the guest's sshd."""
    return bool(ssh_port) and any(f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22" in a for a in argv)


#: What QEMU says when the ``hostfwd`` port was taken between allocation and its bind.
HOSTFWD_BUSY = "Could not set up host forwarding rule"


def make_disk(path: Path, size_mb: int) -> Path:
    """Create a sparse raw disk image of ``size_mb`` MiB at ``path`` (zero-filled)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    return path
