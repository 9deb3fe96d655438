"""``harness doctor``: what the harness needs on this host, and the command that fixes each gap.

Each check is a small function returning a :class:`Check`; the deciding functions are pure
(``*_check``: facts in, verdict out) and the probing around them (PATH lookups, ``--version``,
the cache directory, ``statvfs``, one HTTPS request) sits in :func:`run_checks`.  Facts come
from where the harness keeps them: host tools and their Debian packages from
:data:`harness.toolchain.HOST_TOOLS`, the arm64 guest packages from
:data:`harness.fetch.GUEST_PACKAGES`, the embedded trees from :data:`harness.fetch.EMBEDDED_TREES`.

A check that fails is MISSING when the harness cannot work without it (exit 2, as every
missing set-up) and WARN when only some uses need it (lore, the test suite's chromium and
LAVA) or it fixes itself on first use (an embedded tree downloads when a run needs it).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from harness import fetch, timeouts, toolchain
from harness.cache import Cache
from harness.errors import CommandTimeout, HarnessError, SetupError
from harness.proc import CommandLog, run

#: Free space under the cache below which doctor warns: a cold ``make check`` peaked at
#: 12.9 GB in the cache plus 3.4 GB of pytest's temporary directory (about 15 GB), and a
#: margin on top.
DISK_WARN_BYTES = 20 * 10**9
#: What a cold run needs, for the message (the measured peak above, rounded).
DISK_COLD_RUN_BYTES = 15 * 10**9

#: Where ``harness series`` fetches message-ids from (with ``b4 am``).
LORE_URL = "https://lore.kernel.org"

#: Commands only the test suite runs, and their Debian packages: headless chromium takes
#: screenshots of the HTML report, LAVA's dispatcher runs exported jobs (tests/test_e2e_series.py).
TEST_TOOLS = {"chromium": "chromium", "lava-run": "lava-dispatcher"}
#: The Debian package whose Python modules (for :data:`harness.lava.SYSTEM_PYTHON`) validate
#: LAVA jobs (``harness lava export`` and tests/test_lava.py).
LAVA_COMMON_PACKAGE = "lava-common"

#: The cache's one temporary-name convention, ``.NAME.<unique>.tmp``: :func:`harness.cache.atomic_dir`
#: and :func:`~harness.cache.atomic_write` (tempfile's random characters), and the pid-named
#: partial files of :mod:`harness.rootfs` and :mod:`harness.fetch`.
_ATOMIC_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")
#: A download directory of :mod:`harness.fetch` (``tempfile.TemporaryDirectory(prefix=".download.")``
#: in ``debs/`` and ``src/``).
_DOWNLOAD_TMP = re.compile(r"^\.download\.[a-z0-9_]{8}$")
#: Cache directories whose files belong to other programs (ccache, apt) or are locks.
_NOT_HARNESS_FILES = {"ccache", "apt-arm64", "apt-sources", "locks"}
#: How deep under the cache the harness writes atomically (``runs/<matrix>/<cell>/results.json``).
_LEFTOVER_DEPTH = 4


@dataclass(frozen=True)
class Check:
    """One thing the harness needs: ``ok`` or not, what was found (``detail``), the command
    that fixes it (``fix``, None when there is nothing to run), and whether the harness
    cannot work without it (``required``: MISSING) or only some uses need it (WARN)."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True

    @property
    def status(self) -> str:
        """``ok``, ``WARN`` (not required) or ``MISSING`` (required)."""
        return "ok" if self.ok else "MISSING" if self.required else "WARN"

    def to_json(self) -> dict:
        """The check as a JSON object (``status`` included)."""
        return {"name": self.name, "status": self.status, "ok": self.ok, "required": self.required,
                "detail": self.detail, "fix": self.fix}


# --- fixes ---------------------------------------------------------------------------------------

def _sudo() -> str:
    """``sudo `` unless this is root, as in the Makefile's ``host-packages``."""
    return "" if os.geteuid() == 0 else "sudo "


def apt_install(*packages: str) -> str:
    """The command that installs Debian ``packages``."""
    return f"{_sudo()}apt-get install {' '.join(packages)}".rstrip()


def harness_command(*args: str) -> str:
    """How to run ``harness ARGS`` from here: ``harness`` when the script beside this Python is
    the one on PATH, else ``<this python> -m harness``."""
    beside = Path(sys.executable).parent / "harness"
    on_path = shutil.which("harness")
    prog = "harness" if on_path and beside.is_file() and Path(on_path).resolve() == beside.resolve() \
        else f"{shlex.quote(sys.executable)} -m harness"
    return " ".join([prog, *map(shlex.quote, args)])


# --- the checks: pure decisions --------------------------------------------------------------------

def tool_check(tool: str, package: str, path: str | None, version: str | None, error: str | None = None,
               *, required: bool = True, name: str | None = None) -> Check:
    """The check of host command ``tool`` from Debian ``package``: ``path`` where PATH has it
    (None: absent), ``version`` its version line, ``error`` why ``--version`` failed (broken)."""
    name = name or tool
    if path is None:
        return Check(name, False, "not on PATH", apt_install(package), required)
    if error is not None:
        return Check(name, False, f"{path} is broken: {error}", apt_install("--reinstall", package), required)
    return Check(name, True, f"{version} ({path})" if version else path, None, required)


def b4_check(path: str | None, version: str | None) -> Check:
    """The check of b4 (a Python dependency, which fetches lore threads and reads mboxes):
    ``path`` of its command, ``version`` of its installed distribution (None: absent)."""
    pip = f"{shlex.quote(sys.executable)} -m pip install"
    if version is None:
        return Check("b4", False, "b4 is not installed in this Python", f"{pip} b4")
    if path is None:
        return Check("b4", False, f"b4 {version} is installed but its command is not beside {sys.executable} "
                     "nor on PATH", f"{pip} --force-reinstall b4")
    return Check("b4", True, f"b4 {version} ({path})")


def guest_package_check(package: str, deb: Path | None) -> Check:
    """The check of arm64 guest package ``package``: ``deb`` is its newest .deb in the cache."""
    name = f"guest package {package}"
    if deb is None:
        return Check(name, False, "arm64 .deb not in the cache (downloaded with apt-get download, "
                     "nothing installed)", harness_command("setup"))
    return Check(name, True, f"{fetch.deb_version(deb)} ({deb.name})")


def tree_check(name: str, description: str, tarballs: Iterable[str], imported: Iterable[str]) -> Check:
    """The check of embedded tree ``name``: Debian versions of its source ``tarballs`` in the
    cache and of those ``imported`` as git trees.  Never required: a run that needs the tree
    downloads (about 150-170 MB) and imports it."""
    tarballs, imported = list(tarballs), list(imported)
    label = f"tree {name}"
    fix = harness_command("setup", "--tree", name)
    if imported:
        return Check(label, True, f"{description}: linux-source {', '.join(imported)} imported", None, False)
    if tarballs:
        return Check(label, False, f"{description}: linux-source {', '.join(tarballs)} downloaded, not imported "
                     "yet (the first run that uses it imports it)", fix, False)
    return Check(label, False, f"{description}: not in the cache yet (the first run that uses it "
                 "downloads about 170 MB and imports it)", fix, False)


def disk_check(where: Path, stat, warn_below: int = DISK_WARN_BYTES) -> Check:
    """The check of free space at ``where`` (the cache), from a ``statvfs`` result ``stat``
    (``f_bavail`` blocks of ``f_frsize`` bytes available to this user)."""
    free = stat.f_bavail * stat.f_frsize
    detail = (f"{free / 1e9:.1f} GB free at {where}; a cold run needs about {DISK_COLD_RUN_BYTES / 1e9:.0f} GB "
              f"(kernel trees, builds, ccache, plus pytest's temporary files)")
    if free >= warn_below:
        return Check("disk space", True, detail, None, False)
    return Check("disk space", False, f"{detail}: below {warn_below / 1e9:.0f} GB",
                 "free space there, or point HARNESS_CACHE at a larger file system "
                 "(export HARNESS_CACHE=/big/disk/virtio-pm-harness)", False)


def leftovers_check(root: Path, leftovers: list[Path], busy: bool, now: float | None = None) -> Check:
    """The check of temporary entries left in the cache at ``root`` by interrupted atomic writes
    and downloads (``leftovers``); ``busy`` when another harness process holds the cache's
    lock, so they may be its work in progress.  Stale lock files are normal and not listed."""
    name = "cache temporary files"
    if not leftovers:
        return Check(name, True, f"none under {root}", None, False)
    now = time.time() if now is None else now
    shown = []
    for path in leftovers[:5]:
        try:
            age = f", {(now - path.lstat().st_mtime) / 3600:.1f} h old"
        except OSError:
            age = ""
        shown.append(f"{path.relative_to(root)}{age}")
    more = f" and {len(leftovers) - 5} more" if len(leftovers) > 5 else ""
    detail = f"{len(leftovers)} left by interrupted writes or downloads: {'; '.join(shown)}{more}"
    if busy:
        return Check(name, False, f"{detail}; another harness process holds {root / 'locks'}: they may be its "
                     "work in progress", "run `harness doctor` again when the other harness process is done",
                     False)
    return Check(name, False, detail, "rm -rf " + " ".join(shlex.quote(str(p)) for p in leftovers), False)


def lore_check(status: int | None, seconds: float, error: str | None = None) -> Check:
    """The check of lore.kernel.org: the HTTP ``status`` it answered with (any answer counts),
    or the ``error`` that kept it from answering.  Never required: message-ids need lore, the
    test suite and ``patches/`` manifests read local mboxes."""
    if status is not None:
        return Check("lore.kernel.org", True, f"{LORE_URL} answered HTTP {status} in {seconds:.1f} s", None, False)
    return Check("lore.kernel.org", False, f"{LORE_URL} not reachable: {error}; series given as a message-id "
                 "cannot be fetched (mboxes, patch directories and --b4-local-mbox work)",
                 "check the network and the proxy (https_proxy), or pass series as local mboxes", False)


def debian_mirror_check(mirror: str | None, error: str | None = None) -> Check:
    """The check of the Debian archive the downloads come from (``apt-get indextargets`` or
    ``$HARNESS_DEBIAN_MIRROR``).  Not required once everything is in the cache."""
    if mirror is not None:
        return Check("Debian archive", True, mirror, None, False)
    return Check("Debian archive", False, f"none found: {error}",
                 f"{_sudo()}apt-get update, or export HARNESS_DEBIAN_MIRROR=http://deb.debian.org/debian",
                 False)


def apt_get_check(path: str | None, version: str | None) -> Check:
    """The check of ``apt-get``, with which the harness downloads (never installs) arm64
    packages and kernel sources; without it this is not a host the harness supports."""
    if path is None:
        return Check("apt-get", False, "not on PATH", "use a Debian (or Debian-based) host: the guest packages "
                     "and kernel sources come from its archive")
    return Check("apt-get", True, f"{version} ({path})" if version else path)


def exit_status(checks: Iterable[Check]) -> int:
    """0 when nothing required is missing, else 2 (:class:`~harness.errors.SetupError`'s code,
    missing set-up).  Warnings never fail."""
    return SetupError.exit_code if any(not c.ok and c.required for c in checks) else 0


# --- probes: the I/O around the checks ------------------------------------------------------------

def _version_line(output: str) -> str:
    """The line of ``--version`` output that carries the version (a wrapper script may print
    complaints before it), else the first non-empty line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return next((line for line in lines if re.search(r"\d+\.\d+", line)), lines[0] if lines else "")


def probe_tool(tool: str, search_path: str | None = None, version_arg: str | None = "--version"
               ) -> tuple[str | None, str | None, str | None]:
    """``(path, version line, error)`` of ``tool`` on ``search_path`` (default: ``$PATH``)."""
    path = shutil.which(tool, path=search_path)
    if path is None or version_arg is None:
        return path, None, None
    try:
        res = run([path, version_arg], CommandLog(), timeout=timeouts.TOOL_VERSION)
    except (OSError, CommandTimeout) as e:
        return path, None, f"`{tool} {version_arg}` failed: {e}"
    line = _version_line(res.output)
    if res.returncode != 0:
        return path, None, f"`{tool} {version_arg}` exited {res.returncode}: {line or '(no output)'}"
    return path, line or None, None


def host_tool_checks(search_path: str | None = None) -> list[Check]:
    """One check per :data:`harness.toolchain.HOST_TOOLS` command, plus ``apt-get``."""
    checks = [tool_check(tool, package, *probe_tool(tool, search_path))
              for tool, package in toolchain.HOST_TOOLS.items()]
    path, version, _ = probe_tool("apt-get", search_path)
    return checks + [apt_get_check(path, version)]


def probe_b4() -> Check:
    """The b4 check from this Python's installed distributions and the command harness.series runs."""
    # imported here, as lava below: doctor itself needs few of the harness's modules
    from harness import series
    try:
        path = series._b4_command()
    except HarnessError:
        path = None
    try:
        version = importlib.metadata.version("b4")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return b4_check(path, version)


def guest_package_checks(cache: Cache) -> list[Check]:
    """One check per :data:`harness.fetch.GUEST_PACKAGES` package: its newest arm64 .deb in the cache."""
    log = CommandLog()
    return [guest_package_check(pkg, (fetch._cached_debs(cache, (pkg,), "arm64", log) or [None])[0])
            for pkg in fetch.GUEST_PACKAGES]


def tree_checks(cache: Cache) -> list[Check]:
    """One check per embedded tree: its linux-source tarballs under ``src/`` (named as
    :func:`harness.fetch.linux_source` keeps them) and their git trees under ``trees/`` (as
    :func:`harness.tree.embedded_tree` imports them)."""
    out = []
    for name, source in fetch.EMBEDDED_TREES.items():
        prefixes = (f"{source.package}.",) + ((source.fallback,) if source.fallback else ())
        src = cache.root / "src"
        tarballs = sorted(p for p in src.glob("linux-source-*.tar.xz") if p.name.startswith(prefixes)) \
            if src.is_dir() else []
        versions = [fetch._tarball_info(p).deb_version for p in tarballs]
        imported = [v for v in versions if (cache.root / "trees" / f"linux-{v}" / ".git").is_dir()]
        out.append(tree_check(name, source.description, versions, imported))
    return out


def find_leftovers(root: Path, depth: int = _LEFTOVER_DEPTH) -> list[Path]:
    """Temporary entries of interrupted atomic writes and downloads under ``root``, at most
    ``depth`` levels down (where the harness writes); git, ccache and apt directories are not
    entered."""
    found: list[Path] = []

    def walk(directory: Path, level: int) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if _ATOMIC_TMP.match(entry.name) or _DOWNLOAD_TMP.match(entry.name):
                found.append(Path(entry.path))
            elif (level < depth and entry.is_dir(follow_symlinks=False) and entry.name != ".git"
                  and not (level == 1 and entry.name in _NOT_HARNESS_FILES)):
                walk(Path(entry.path), level + 1)

    walk(root, 1)
    return found


def cache_busy(cache: Cache) -> bool:
    """Whether another harness process holds the cache's sources lock right now."""
    try:
        with cache.sources_lock(timeout=0):
            return False
    except SetupError:
        return True


def leftover_check_of(cache: Cache) -> Check:
    """The leftovers check of the cache (nothing to judge when the cache does not exist yet)."""
    if not cache.root.is_dir():
        return leftovers_check(cache.root, [], False)
    leftovers = find_leftovers(cache.root)
    return leftovers_check(cache.root, leftovers, bool(leftovers) and cache_busy(cache))


def disk_check_of(cache: Cache, statvfs: Callable = os.statvfs) -> Check:
    """The disk check of the cache's file system (its nearest existing ancestor's, before the
    cache is created)."""
    where = cache.root
    while not where.exists() and where != where.parent:
        where = where.parent
    return disk_check(cache.root, statvfs(where))


def probe_lore(urlopen: Callable = urllib.request.urlopen, timeout: float = timeouts.NETWORK_PROBE) -> Check:
    """The lore check: one HEAD request to :data:`LORE_URL` (honours ``https_proxy``)."""
    request = urllib.request.Request(LORE_URL, method="HEAD", headers={"User-Agent": "virtio-pm-harness doctor"})
    start = time.monotonic()
    try:
        with urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as e:  # an answer all the same: lore is there
        status = e.code
    except (urllib.error.URLError, OSError, ValueError) as e:
        return lore_check(None, time.monotonic() - start, str(getattr(e, "reason", e)))
    return lore_check(status, time.monotonic() - start)


def probe_debian_mirror() -> Check:
    """The Debian archive check, through :func:`harness.fetch.debian_mirror`."""
    try:
        return debian_mirror_check(fetch.debian_mirror(CommandLog()))
    except (HarnessError, OSError) as e:
        return debian_mirror_check(None, str(e).splitlines()[0])


def tests_only_checks(search_path: str | None = None) -> list[Check]:
    """Warnings for what only the test suite needs: chromium, LAVA's dispatcher and lava-common."""
    # for its SYSTEM_PYTHON; lava's own imports (qemu, suspend) only when asked
    from harness import lava
    checks = []
    for tool, package in TEST_TOOLS.items():
        version_arg = "--version" if tool == "chromium" else None  # lava-run has no --version
        checks.append(tool_check(tool, package, *probe_tool(tool, search_path, version_arg),
                                 required=False, name=f"{tool} (tests)"))
    code = "import importlib.metadata, lava_common; print(importlib.metadata.version('lava-common'))"
    name = f"{LAVA_COMMON_PACKAGE} (tests, lava export)"
    try:
        res = run([lava.SYSTEM_PYTHON, "-c", code], CommandLog(), timeout=timeouts.TOOL_VERSION)
    except (OSError, CommandTimeout) as e:
        res, error = None, str(e)
    if res is not None and res.returncode == 0:
        checks.append(Check(name, True, f"{res.output.strip()} ({lava.SYSTEM_PYTHON})", None, False))
    else:
        error = _version_line(res.output) if res is not None else error
        checks.append(Check(name, False, f"{lava.SYSTEM_PYTHON} cannot import lava_common: {error}",
                            apt_install(LAVA_COMMON_PACKAGE), False))
    return checks


def run_checks(cache: Cache, network: bool = True, search_path: str | None = None) -> list[Check]:
    """Every check, in the order a fresh host needs them fixed: host tools, b4, the cached
    downloads, disk, the cache's state, the network, then what only the tests need."""
    checks = host_tool_checks(search_path)
    checks.append(probe_b4())
    checks += guest_package_checks(cache)
    checks += tree_checks(cache)
    checks.append(disk_check_of(cache))
    checks.append(leftover_check_of(cache))
    checks.append(probe_debian_mirror())
    if network:
        checks.append(probe_lore())
    checks += tests_only_checks(search_path)
    return checks


# --- output -----------------------------------------------------------------------------------------

def combined_apt_fix(checks: Iterable[Check], required: bool = True) -> str | None:
    """One ``apt-get install`` for every failed check (required ones, or the warnings) whose
    fix is a plain install; None when there is none."""
    prefix = apt_install() + " "
    packages = [c.fix[len(prefix):] for c in checks
                if not c.ok and c.required == required and c.fix and c.fix.startswith(prefix)
                and not c.fix[len(prefix):].startswith("-")]
    return apt_install(*dict.fromkeys(packages)) if packages else None


def summary(checks: list[Check]) -> str:
    """The last line: how many are missing and how many warn."""
    missing = sum(c.status == "MISSING" for c in checks)
    warned = sum(c.status == "WARN" for c in checks)
    head = f"{missing} required missing" if missing else "everything required is there"
    return f"{head}, {warned} warning{'s' if warned != 1 else ''} ({len(checks)} checks)"


def render_plain(checks: list[Check], cache: Cache) -> str:
    """The checks as plain lines: status, name, detail, then ``fix:`` on a line of its own."""
    width = max((len(c.name) for c in checks), default=0)
    lines = [f"cache: {cache.root}"]
    for c in checks:
        lines.append(f"{c.status:<8} {c.name:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"{'':<8} {'':<{width}}  fix: {c.fix}")
    lines.append(summary(checks))
    for required, what in ((True, "install what is missing"), (False, "install what the tests use")):
        fix = combined_apt_fix(checks, required)
        if fix:
            lines.append(f"{what}: {fix}")
    return "\n".join(lines) + "\n"


def print_checks(checks: list[Check], cache: Cache, console=None) -> None:
    """Print the checks: a rich table on a terminal, plain lines (:func:`render_plain`) otherwise."""
    if console is None and not sys.stdout.isatty():
        sys.stdout.write(render_plain(checks, cache))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    console = console or Console(highlight=False)
    style = {"ok": "green", "WARN": "yellow", "MISSING": "bold red"}
    table = Table(title=f"harness doctor (cache {escape(str(cache.root))})", title_justify="left")
    for column in ("status", "check", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for c in checks:
        table.add_row(f"[{style[c.status]}]{c.status}[/]", escape(c.name), escape(c.detail),
                      escape(c.fix) if c.fix and not c.ok else "")
    console.print(table)
    console.print(summary(checks))
    for required, what in ((True, "install what is missing"), (False, "install what the tests use")):
        fix = combined_apt_fix(checks, required)
        if fix:
            console.print(f"{what}: {escape(fix)}")


def to_json(checks: list[Check], cache: Cache) -> dict:
    """The checks as a JSON document: ``cache``, ``ok`` (nothing required missing), ``exit_code``,
    ``checks`` (name, status, ok, required, detail, fix)."""
    code = exit_status(checks)
    return {"cache": str(cache.root), "ok": code == 0, "exit_code": code, "checks": [c.to_json() for c in checks]}


def main(cache: Cache, as_json: bool = False, network: bool = True) -> int:
    """Run every check, print them (table or ``--json``) and return the exit status."""
    checks = run_checks(cache, network=network)
    if as_json:
        json.dump(to_json(checks, cache), sys.stdout, indent=2)
        print()
    else:
        print_checks(checks, cache)
    return exit_status(checks)
