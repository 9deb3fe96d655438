"""The cross toolchain and the kernel ``make`` command line built from it.

One place knows how the harness invokes Kbuild: ``ARCH=arm64
CROSS_COMPILE=aarch64-linux-gnu- O=<dir>`` with ``CC`` wrapped by ccache and
build identity variables fixed, so that rebuilds are reproducible and
ccache hits survive a change of build directory.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from harness import timeouts
from harness.cache import Cache, atomic_write, content_key
from harness.errors import SetupError
from harness.proc import CommandLog, run

#: Host commands the harness needs and the Debian package that provides each.
HOST_TOOLS = {
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "qemu-system-aarch64": "qemu-system-arm",
    "ccache": "ccache",
    "make": "make",
    "bc": "bc",
    "bison": "bison",
    "flex": "flex",
    "git": "git",
    "dpkg-deb": "dpkg",
    "gcc": "gcc",
}


@dataclass(frozen=True)
class Toolchain:
    """How to cross-build for one architecture.

    ``gcc_version`` is the first line of ``$CROSS_COMPILE gcc --version``;
    ``ccache_dir`` holds the compiler cache; ``jobs`` is ``make -j``.
    """

    arch: str
    cross_compile: str
    gcc_version: str
    ccache_dir: Path
    cache_root: Path
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def cc(self) -> str:
        """The ``CC=`` value: the cross gcc behind ccache."""
        return f"ccache {self.cross_compile}gcc"

    def make_argv(self, tree: Path, out_dir: Path, *targets: str, extra: tuple[str, ...] = ()) -> list[str]:
        """Return the ``make`` argv for ``targets`` in ``tree`` with ``O=out_dir``."""
        return ["make", "-C", str(tree), f"O={out_dir}", f"ARCH={self.arch}",
                f"CROSS_COMPILE={self.cross_compile}", f"CC={self.cc}",
                f"-j{self.jobs}", *extra, *targets]

    def make_env(self) -> dict[str, str]:
        """Environment for ``make``: ccache location and fixed build identity."""
        return {
            # Untranslated compiler messages with ASCII quotes (Kbuild unexports LC_ALL).
            "LANG": "C", "LC_CTYPE": "C", "LC_MESSAGES": "C",
            "CCACHE_DIR": str(self.ccache_dir),
            "CCACHE_BASEDIR": str(self.cache_root),
            "CCACHE_NOHASHDIR": "1",
            "KBUILD_BUILD_USER": "harness",
            "KBUILD_BUILD_HOST": "virtio-pm-harness",
            "KBUILD_BUILD_TIMESTAMP": "Thu Jan  1 00:00:00 UTC 2026",
        }


def check_host_tools() -> None:
    """Raise :class:`SetupError` naming every missing host tool and its package."""
    missing = {tool: pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None}
    if missing:
        listed = ", ".join(f"{t} (package {p})" for t, p in missing.items())
        raise SetupError(f"missing host tools: {listed}. Run `make setup`.")


def arm64(cache: Cache, jobs: int | None = None) -> Toolchain:
    """Return the Debian ``aarch64-linux-gnu-`` toolchain; raises :class:`SetupError` if absent."""
    check_host_tools()
    out = run(["aarch64-linux-gnu-gcc", "--version"], CommandLog(), timeout=timeouts.TOOL_VERSION).output
    version = out.splitlines()[0] if out else "unknown"
    return Toolchain("arm64", "aarch64-linux-gnu-", version, cache.root / "ccache", cache.root,
                     jobs or os.cpu_count() or 1)


def qemu_version(binary: str = "qemu-system-aarch64", cache: Cache | None = None) -> str:
    """Return the first line of ``qemu-system-aarch64 --version`` (or ``unknown``).

    ``--version`` costs QEMU about 0.5 s of CPU (it initialises its modules first) and every
    run records it: it runs once per binary file (path, size, mtime) a process sees, and with
    ``cache`` once per binary file at all (the answer kept in ``tools/qemu-version-<key>.txt``)."""
    path = shutil.which(binary)
    if path is None:
        return "unknown"
    st = os.stat(path)
    real = os.path.realpath(path)
    if cache is None:
        return _qemu_version(real, st.st_size, st.st_mtime_ns)
    kept = cache.root / "tools" / f"qemu-version-{content_key(real, str(st.st_size), str(st.st_mtime_ns))}.txt"
    if kept.is_file():
        return kept.read_text().strip() or "unknown"
    version = _qemu_version(real, st.st_size, st.st_mtime_ns)
    if version != "unknown":
        atomic_write(kept, version + "\n")
    return version


@functools.lru_cache(maxsize=8)
def _qemu_version(path: str, _size: int, _mtime_ns: int) -> str:
    try:
        res = run([path, "--version"], CommandLog(), timeout=timeouts.TOOL_VERSION)
    except FileNotFoundError:
        return "unknown"
    return res.output.splitlines()[0] if res.returncode == 0 and res.output else "unknown"
