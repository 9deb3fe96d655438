"""Downloads kept in the cache: arm64 guest packages and Debian's kernel source.

arm64 packages are fetched with ``apt-get download`` against apt lists kept
in the cache (``APT::Architectures=arm64``), so the host's dpkg
architectures, package lists and installed packages are never changed; they
are unpacked with ``dpkg-deb -x`` into a sysroot directory under the cache.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.cache import Cache, atomic_dir, content_key
from harness.errors import SetupError
from harness.proc import CommandLog, run, tail

#: arm64 packages unpacked into the guest sysroot: busybox for the shell,
#: util-linux for ``rtcwake`` (dynamic), libc6 for its loader and libc.
GUEST_PACKAGES = ("busybox-static", "util-linux", "libc6")

#: Debian package holding the embedded default kernel tree.
LINUX_SOURCE_PACKAGE = "linux-source-6.12"


@dataclass(frozen=True)
class SourceTarball:
    """A kernel source tarball: ``path``, upstream ``version`` (6.12.117), Debian ``deb_version``."""

    path: Path
    version: str
    deb_version: str


def _apt_options(cache: Cache) -> list[str]:
    base = cache.path("apt-arm64", "x").parent
    (base / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (base / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    return [
        "-o", "APT::Architecture=arm64",
        "-o", "APT::Architectures=arm64",
        "-o", f"Dir::State::Lists={base / 'lists'}",
        "-o", f"Dir::Cache={base / 'cache'}",
        "-o", "Debug::NoLocking=1",
    ]


def _download(cache: Cache, log: CommandLog, packages: tuple[str, ...],
              apt_opts: list[str]) -> list[Path]:
    """``apt-get download`` packages into ``debs/`` (atomically); return the .deb paths."""
    debs = cache.path("debs", "x").parent
    with tempfile.TemporaryDirectory(dir=debs, prefix=".download.") as tmp:
        res = run(["apt-get", *apt_opts, "download", *packages], log, cwd=Path(tmp))
        if res.returncode != 0:
            raise SetupError(
                f"apt-get download {' '.join(packages)} failed (rc {res.returncode}):\n"
                f"{tail(res.output)}\nCheck the network to the Debian mirror, then run `make setup` again.")
        got = sorted(Path(tmp).glob("*.deb"))
        out = []
        for deb in got:
            final = debs / deb.name
            deb.replace(final)
            out.append(final)
    return out


def _cached_debs(cache: Cache, packages: tuple[str, ...], arch: str) -> list[Path] | None:
    debs = cache.root / "debs"
    found = []
    for pkg in packages:
        hits = sorted(debs.glob(f"{pkg}_*_{arch}.deb"))
        if not hits:
            return None
        found.append(hits[-1])
    return found


def guest_debs(cache: Cache, log: CommandLog) -> list[Path]:
    """Return the arm64 .deb files of :data:`GUEST_PACKAGES`, downloading them once.

    Raises :class:`SetupError` if apt cannot update its arm64 lists or download.
    """
    cached = _cached_debs(cache, GUEST_PACKAGES, "arm64")
    if cached:
        return cached
    opts = _apt_options(cache)
    res = run(["apt-get", *opts, "update"], log)
    if res.returncode != 0:
        raise SetupError(f"apt-get update for arm64 lists failed:\n{tail(res.output)}")
    _download(cache, log, GUEST_PACKAGES, opts)
    cached = _cached_debs(cache, GUEST_PACKAGES, "arm64")
    if not cached:
        raise SetupError(f"apt-get download did not produce all of {GUEST_PACKAGES}")
    return cached


def guest_sysroot(cache: Cache, log: CommandLog) -> Path:
    """Return a directory with the arm64 guest packages unpacked (``dpkg-deb -x``).

    Keyed by the .deb file names, so a new package version gets a new sysroot.
    """
    debs = guest_debs(cache, log)
    final = cache.path("sysroot", content_key(*(d.name for d in debs)))
    if final.is_dir():
        return final
    with atomic_dir(final) as tmp:
        for deb in debs:
            res = run(["dpkg-deb", "-x", deb, tmp], log)
            if res.returncode != 0:
                raise SetupError(f"dpkg-deb -x {deb} failed:\n{tail(res.output)}\n"
                                 f"Delete {deb} and run `make setup` again.")
    return final


def linux_source(cache: Cache, log: CommandLog) -> SourceTarball:
    """Return Debian's linux-source-6.12 tarball, downloaded once into ``src/``.

    The .deb is downloaded with ``apt-get download`` (nothing is installed),
    its tarball kept as ``src/linux-source-<deb version>.tar.xz`` and the
    .deb deleted.  Raises :class:`SetupError` on a failed download.
    """
    src = cache.path("src", "x").parent
    hits = sorted(src.glob("linux-source-*.tar.xz"))
    if hits:
        return _tarball_info(hits[-1])
    with tempfile.TemporaryDirectory(dir=src, prefix=".download.") as tmp:
        res = run(["apt-get", "download", LINUX_SOURCE_PACKAGE], log, cwd=Path(tmp))
        if res.returncode != 0:
            raise SetupError(f"apt-get download {LINUX_SOURCE_PACKAGE} failed:\n{tail(res.output)}\n"
                             "Run `apt-get update` (as root), then `make setup` again.")
        deb = next(Path(tmp).glob("*.deb"))
        deb_version = run(["dpkg-deb", "-f", deb, "Version"], log).output.strip()
        unpack = Path(tmp) / "x"
        res = run(["dpkg-deb", "-x", deb, unpack], log)
        if res.returncode != 0:
            raise SetupError(f"dpkg-deb -x {deb.name} failed:\n{tail(res.output)}")
        tarball = next((unpack / "usr" / "src").glob("linux-source-*.tar.xz"))
        final = src / f"linux-source-{deb_version.replace('~', '_')}.tar.xz"
        shutil.move(tarball, final.with_suffix(".tmp"))
        final.with_suffix(".tmp").replace(final)
    return _tarball_info(final)


def _tarball_info(path: Path) -> SourceTarball:
    deb_version = path.name[len("linux-source-"):-len(".tar.xz")]
    return SourceTarball(path, deb_version.split("-")[0], deb_version)
