"""Downloads kept in the cache: arm64 guest packages and Debian's kernel sources.

arm64 packages are fetched with ``apt-get download`` against apt lists kept
in the cache (``APT::Architectures=arm64``), so the host's dpkg
architectures, package lists and installed packages are never changed; they
are unpacked with ``dpkg-deb -x`` into a sysroot directory under the cache.

Kernel sources of other Debian suites (the 2026 kernels of unstable, testing and
trixie-backports) come the same way: a sources list and lists directory of the
harness's own under the cache, pointing at the Debian archive the host's apt already
uses (read with ``apt-get indextargets``); which version is taken is resolved from
those lists at set-up time, never written down here.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from harness import timeouts
from harness.cache import Cache, atomic_dir, content_key, disk_usage, require_space
from harness.errors import SetupError, UsageError
from harness.proc import CommandLog, every, minutes, run, tail

#: arm64 packages unpacked into the guest sysroot: busybox for the shell,
#: util-linux for ``rtcwake`` (dynamic), libc6 for its loader and libc; dropbear-bin for the
#: guest's sshd with the libraries it needs (``readelf -d``, transitively: libtomcrypt needs
#: libgmp), and openssh-sftp-server for SFTP (dropbear runs it as /usr/lib/sftp-server).
GUEST_PACKAGES = ("busybox-static", "util-linux", "libc6",
                  "dropbear-bin", "libcrypt1", "libtomcrypt1", "libtommath1", "libgmp10", "zlib1g",
                  "openssh-sftp-server")


@dataclass(frozen=True)
class KernelSource:
    """Where an embedded tree comes from: its ``name`` (``debian-7.2``, what ``--tree`` takes),
    the Debian ``package`` wanted, the ``suites`` searched for it (empty: the host's own apt
    lists, as for the LTS tree of the host's release), and a ``fallback`` package-name prefix
    searched in ``fallback_suites`` when no suite has the package any more (versions move)."""

    name: str
    package: str
    suites: tuple[str, ...] = ()
    fallback: str | None = None
    fallback_suites: tuple[str, ...] = ()
    description: str = ""


#: The embedded trees.  debian-6.12 is the LTS row (Debian 12's own linux-source-6.12);
#: debian-7.2 is the series' era (April-May 2026): the newest linux-source-7.2 of unstable or
#: testing, else of trixie-backports, else the newest linux-source-7.* of those, with a warning.
EMBEDDED_TREES = {
    "debian-6.12": KernelSource("debian-6.12", "linux-source-6.12", description="Linux 6.12 LTS (Debian 12)"),
    "debian-7.2": KernelSource("debian-7.2", "linux-source-7.2", ("unstable", "testing"), "linux-source-7.",
                               ("unstable", "testing", "trixie-backports"), "Linux 7.x (the series' era)"),
}
#: The tree used when none is named.
DEFAULT_TREE = "debian-6.12"
#: Debian package holding the embedded default kernel tree.
LINUX_SOURCE_PACKAGE = EMBEDDED_TREES[DEFAULT_TREE].package
#: The Debian archive signing keys (package debian-archive-keyring) that sign every suite's Release.
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
#: Seconds for apt-get update of the kernel-source lists and for one download (a .deb of ~170 MB).
APT_UPDATE_TIMEOUT, APT_DOWNLOAD_TIMEOUT = 300, 1800


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


def deb_version(path: Path) -> str:
    """The Debian version in a ``.deb`` file name (``pkg_1%3a1.35.0-4+b3_arm64.deb`` -> ``1:1.35.0-4+b3``)."""
    return urllib.parse.unquote(path.name.split("_")[1])


def _cached_debs(cache: Cache, packages: tuple[str, ...], arch: str, log: CommandLog) -> list[Path] | None:
    """The newest cached .deb of each package (dpkg's version ordering), or None if one is missing."""
    debs = cache.root / "debs"
    found = []
    for pkg in packages:
        hits = list(debs.glob(f"{pkg}_*_{arch}.deb"))
        if not hits:
            return None
        found.append(max(hits, key=functools.cmp_to_key(
            lambda a, b: _compare_versions(deb_version(a), deb_version(b), log))))
    return found


def guest_debs(cache: Cache, log: CommandLog) -> list[Path]:
    """Return the arm64 .deb files of :data:`GUEST_PACKAGES`, downloading them once.

    Raises :class:`SetupError` if apt cannot update its arm64 lists or download.
    """
    cached = _cached_debs(cache, GUEST_PACKAGES, "arm64", log)
    if cached:
        return cached
    opts = _apt_options(cache)
    require_space(cache.root, "apt")
    res = run(["apt-get", *opts, "update"], log)
    if res.returncode != 0:
        raise SetupError(f"apt-get update for arm64 lists failed:\n{tail(res.output)}")
    _download(cache, log, GUEST_PACKAGES, opts)
    cached = _cached_debs(cache, GUEST_PACKAGES, "arm64", log)
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


def _series_of(package: str) -> str:
    """``linux-source-7.2`` -> ``7.2``."""
    return package[len("linux-source-"):]


def linux_source(cache: Cache, log: CommandLog, name: str = DEFAULT_TREE,
                 say=lambda message: None) -> SourceTarball:
    """Return the kernel source tarball of the embedded tree ``name``, downloaded once into ``src/``.

    The .deb is downloaded with ``apt-get download`` (nothing is installed), its tarball kept
    as ``src/linux-source-<deb version>.tar.xz`` and the .deb deleted.  A tree whose source has
    ``suites`` is resolved in the harness's own apt lists (:func:`resolve_kernel_source`); the
    version found first is kept until the cache entry is removed.  Raises :class:`SetupError`
    on a failed download and :class:`~harness.errors.UsageError` for an unknown name."""
    source = EMBEDDED_TREES.get(name)
    if source is None:
        raise UsageError(f"no embedded tree {name!r} (known: {', '.join(EMBEDDED_TREES)})")
    src = cache.path("src", "x").parent
    prefixes = (f"{source.package}.",) + ((source.fallback,) if source.fallback else ())
    hits = sorted((p for p in src.glob("linux-source-*.tar.xz") if p.name.startswith(prefixes)),
                  key=functools.cmp_to_key(lambda a, b: _compare_versions(
                      _tarball_info(a).deb_version.replace("_", "~"), _tarball_info(b).deb_version.replace("_", "~"),
                      log)))
    if hits:
        return _tarball_info(hits[-1])
    if source.suites:
        package, version, suite = resolve_kernel_source(source, cache, log)
        if package != source.package or suite not in source.suites:
            say(f"warning: {source.package} is not in {' or '.join(source.suites)}; "
                f"took {package} {version} from {suite}")
        argv, wanted = ["apt-get", *_source_apt_options(cache), "download", f"{package}={version}"], package
    else:
        argv, wanted = ["apt-get", "download", source.package], source.package
    require_space(src, "tree")
    with tempfile.TemporaryDirectory(dir=src, prefix=".download.") as tmp:
        say(f"download {wanted} (about 150-170 MB) ...")
        with every(lambda elapsed: say(f"download {wanted}: {disk_usage(Path(tmp))[0] // 2**20} MB of about "
                                       f"150-170 MB, {minutes(elapsed)} elapsed")):
            res = run(argv, log, cwd=Path(tmp), timeout=APT_DOWNLOAD_TIMEOUT)
        if res.returncode != 0:
            raise SetupError(f"apt-get download {wanted} failed:\n{tail(res.output)}\n"
                             "Run `apt-get update` (as root), then `make setup` again.")
        deb = next(Path(tmp).glob("*.deb"))
        deb_version = run(["dpkg-deb", "-f", deb, "Version"], log).output.strip()
        unpack = Path(tmp) / "x"
        res = run(["dpkg-deb", "-x", deb, unpack], log, timeout=APT_DOWNLOAD_TIMEOUT)
        if res.returncode != 0:
            raise SetupError(f"dpkg-deb -x {deb.name} failed:\n{tail(res.output)}")
        tarball = next((unpack / "usr" / "src").glob("linux-source-*.tar.xz"))
        final = src / f"linux-source-{deb_version.replace('~', '_')}.tar.xz"
        partial = final.with_name(f".{final.name}.{os.getpid()}.tmp")  # a name no other process uses
        shutil.move(tarball, partial)
        partial.replace(final)
    return _tarball_info(final)


# --- Kernel sources of other suites ------------------------------------------------------------

#: ``apt-cache madison`` lines: ``linux-source-7.2 |   7.2.13-1 | http://.../debian sid/main amd64 Packages``.
_MADISON = re.compile(r"^\s*(?P<pkg>\S+)\s*\|\s*(?P<version>\S+)\s*\|\s*(?P<uri>\S+)\s+(?P<dist>[^/\s]+)/", re.M)
#: Suite names as Release files spell them (Suite vs Codename): apt lists print the name used in
#: the sources list, which is the one we wrote.
_SUITE_ALIASES = {"sid": "unstable", "forky": "testing"}


def debian_mirror(log: CommandLog) -> str:
    """The Debian archive URI the host's apt uses (``Origin: Debian``, ``Label: Debian``), from
    ``apt-get indextargets``; ``$HARNESS_DEBIAN_MIRROR`` overrides it.  Raises SetupError when
    the host has no Debian archive in its sources (or has never run ``apt-get update``)."""
    if os.environ.get("HARNESS_DEBIAN_MIRROR"):
        return os.environ["HARNESS_DEBIAN_MIRROR"].rstrip("/")
    res = run(["apt-get", "indextargets", "--format", "$(ORIGIN)|$(LABEL)|$(REPO_URI)"], log, timeout=timeouts.APT_QUERY)
    for line in res.output.splitlines():
        origin, _, rest = line.partition("|")
        label, _, uri = rest.partition("|")
        if origin == "Debian" and label == "Debian" and uri.startswith(("http://", "https://", "file:")):
            return uri.rstrip("/")
    raise SetupError("no Debian archive among the host's apt sources (apt-get indextargets): run "
                     "`apt-get update` as root, or set HARNESS_DEBIAN_MIRROR to a Debian mirror URI")


def _source_apt_dir(cache: Cache) -> Path:
    base = cache.path("apt-sources", "x").parent
    (base / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (base / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    return base


def _source_apt_options(cache: Cache) -> list[str]:
    """apt options that read only the harness's sources list and lists under ``apt-sources/``."""
    base = _source_apt_dir(cache)
    return ["-o", f"Dir::Etc::SourceList={base / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={base / 'lists'}", "-o", f"Dir::Cache={base / 'cache'}",
            "-o", "Debug::NoLocking=1"]


def update_source_lists(cache: Cache, log: CommandLog, suites: tuple[str, ...]) -> None:
    """Write ``apt-sources/sources.list`` for ``suites`` of the host's Debian archive (main) and
    run ``apt-get update`` on it.  Raises SetupError naming the suites when apt fails."""
    base = _source_apt_dir(cache)
    mirror = debian_mirror(log)
    signed = f"[signed-by={DEBIAN_KEYRING}] " if DEBIAN_KEYRING.is_file() else ""
    text = "".join(f"deb {signed}{mirror} {suite} main\n" for suite in suites)
    require_space(base, "apt")
    (base / "sources.list").write_text(text)
    res = run(["apt-get", *_source_apt_options(cache), "update"], log, timeout=APT_UPDATE_TIMEOUT)
    if res.returncode != 0 or re.search(r"^(E|Err):", res.output, re.M):
        raise SetupError(f"apt-get update of {', '.join(suites)} from {mirror} failed:\n{tail(res.output)}\n"
                         f"(sources list: {base / 'sources.list'}; the host's apt configuration is not used)")


def _compare_versions(a: str, b: str, log: CommandLog) -> int:
    """dpkg's ordering of two Debian versions (-1, 0, 1): ``7.2.9-1`` < ``7.2.13-1``."""
    if a == b:
        return 0
    res = run(["dpkg", "--compare-versions", a, "lt", b], log, timeout=timeouts.APT_QUERY)
    return -1 if res.returncode == 0 else 1


def madison(output: str) -> list[tuple[str, str, str]]:
    """``(package, version, suite)`` from ``apt-cache madison`` output (suite as in the sources list)."""
    return [(m["pkg"], m["version"], _SUITE_ALIASES.get(m["dist"], m["dist"])) for m in _MADISON.finditer(output)]


def pick_kernel_source(offers: list[tuple[str, str, str]], source: KernelSource,
                       compare) -> tuple[str, str, str]:
    """Choose from ``(package, version, suite)`` offers: the newest ``source.package`` in
    ``source.suites``; else the newest ``source.package`` in ``source.fallback_suites`` (trixie-
    backports builds 7.2 too, and the 7.x port applies to 7.2, not to 7.3); else the newest
    package starting with ``source.fallback`` (by its series, then version) in
    ``source.fallback_suites``.  ``compare(a, b)`` orders Debian versions.
    Raises SetupError listing what was offered."""
    key = functools.cmp_to_key(compare)
    for suites in (source.suites, source.fallback_suites):
        wanted = [o for o in offers if o[0] == source.package and o[2] in suites]
        if wanted:
            return max(wanted, key=lambda o: key(o[1]))
    fallback = [o for o in offers if source.fallback and o[0].startswith(source.fallback)
                and o[2] in source.fallback_suites]
    if fallback:
        return max(fallback, key=lambda o: (tuple(int(x) for x in re.findall(r"\d+", _series_of(o[0]))), key(o[1])))
    seen = ", ".join(f"{p} {v} ({s})" for p, v, s in offers) or "nothing"
    raise SetupError(f"no {source.package} in {', '.join(source.suites)} and no {source.fallback}* in "
                     f"{', '.join(source.fallback_suites)} (offered: {seen})")


def resolve_kernel_source(source: KernelSource, cache: Cache, log: CommandLog) -> tuple[str, str, str]:
    """``(package, version, suite)`` of the kernel source to fetch for ``source``, from fresh lists
    of its suites.  Raises SetupError when apt fails or nothing fits."""
    suites = tuple(dict.fromkeys(source.suites + source.fallback_suites))
    update_source_lists(cache, log, suites)
    opts = _source_apt_options(cache)
    names = [source.package]
    if source.fallback:
        found = run(["apt-cache", *opts, "search", "--names-only", f"^{re.escape(source.fallback)}[0-9.]+$"],
                    log, timeout=timeouts.APT_NETWORK).output
        names += [line.split(" - ")[0].strip() for line in found.splitlines() if line.strip()]
    res = run(["apt-cache", *opts, "madison", *dict.fromkeys(names)], log, timeout=timeouts.APT_NETWORK)
    return pick_kernel_source(madison(res.output), source,
                              lambda a, b: _compare_versions(a, b, log))


def _tarball_info(path: Path) -> SourceTarball:
    deb_version = path.name[len("linux-source-"):-len(".tar.xz")]
    return SourceTarball(path, deb_version.split("-")[0], deb_version)
