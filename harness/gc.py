"""``harness gc``: remove what the cache holds and has not used for a while, or beyond a size
budget, least recently used first.

Three layers, as elsewhere: :func:`scan` reads the cache into :class:`Entry` values (kind, path,
bytes on disk, last use, whether it is protected and why, what it needs), :func:`plan` decides
(a pure function: entries, now, age, budget in, the entries to delete out, in order) and
:func:`apply` deletes them under the cache's sources lock.

What is collected, and what its last use is.  atime is never read (``noatime`` and
``relatime`` mounts make it unreliable); the marker of each kind is written or touched by the
harness when it uses the entry:

=============  ===========================================  =========================================
kind           path under the cache                         last use
=============  ===========================================  =========================================
worktree       ``worktrees/<key>/`` and ``<key>.json``      the record's mtime: :func:`harness.tree.
                                                            apply_series` touches it on every use
build          ``worktrees/<key>/build-<key>/``              ``harness-build.json``'s mtime (the newest
                                                            file's if unfinished), or its worktree's
                                                            last use when newer (a cache hit touches
                                                            the marker)
pristine       ``pristine/<key>/``: the checkout whose       ``pristine.json``'s mtime, or the last use
               files worktrees hard-link                    of a worktree that links it, if newer
tree           ``trees/<name>/`` (protected without          the mtime of its ``.git`` and
               ``--trees``)                                 ``.git/worktrees`` directories
tarball        ``src/linux-source-*.tar.xz``                its mtime or ctime, whichever is newer: when
                                                            it was made or renamed into the cache
                                                            (dpkg-deb and tar keep the packages' mtimes)
deb            ``debs/*.deb``                               the same
sysroot        ``sysroot/<key>/`` (the newest is kept)      the same
initramfs      ``rootfs/initramfs-<key>.cpio.gz`` + .spec   the same
tool           ``tools/*``                                  the same
run            ``runs/<id>/``                               the newest mtime in it
bisect-step    ``bisect-steps/<key>/``                      the newest mtime in it
series         ``series/<key>/``                            the newest mtime in it
leftover       temporary names of interrupted writes        the newest mtime in it
               (:func:`harness.doctor.find_leftovers`),
               worktree directories without a record
=============  ===========================================  =========================================

Never collected: ``ccache/`` (ccache keeps its own size: ``ccache -M``), the apt lists
(``apt-arm64/``, ``apt-sources/``), ``locks/``, and the logs and state files at the top.

An entry may need others (:attr:`Entry.needs`): a build its worktree (it lives inside it), a
worktree its embedded tree (git's objects) and its pristine checkout (the files it links, and
gets back from it when released: a pristine checkout goes last, when its files are freed), a
tree its tarball and a sysroot its .debs (the
harness finds them by the tarball's and the .debs' names).  An entry goes only with everything
that needs it, those first, and counts as used when any of them was.  Nothing used in the last
:data:`IN_USE_SECONDS` goes: a harness holds the sources lock while it applies and builds, not
while QEMU boots the ``Image`` or a run writes its results.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

from harness import build, doctor, fetch, timeouts, tree
from harness.cache import Cache, content_key, disk_usage, free_temp_name, remove_tree
from harness.errors import HarnessError, SetupError
from harness.proc import CommandLog, run

#: Seconds in a day (``--older-than`` is in days).
DAY = 86400.0
#: ``harness gc`` without ``--older-than`` or ``--max-size`` removes what was not used for this many days.
DEFAULT_MAX_AGE_DAYS = 30.0
#: Entries used in the last hour are never removed (see the module docstring).
IN_USE_SECONDS = 3600.0

#: ``20G``, ``500M``, ``1.5T``, ``800K``, ``4096``, with an optional ``B``/``iB`` (powers of 1024, as ``du -h``).
_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d*)?)\s*(?P<unit>[KMGT]?)(?:i?B)?\s*$", re.I)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

#: Top-level cache entries that are never collected, and why.
_KEPT_TOP = {
    "ccache": ("ccache", "ccache keeps its own size (ccache -M; CCACHE_DIR is this directory)"),
    "apt-arm64": ("apt", "apt lists of the arm64 downloads"),
    "apt-sources": ("apt", "apt lists of the kernel-source downloads"),
    "locks": ("lock", "the lock harness processes take turns on"),
}
#: Top-level directories whose children :func:`scan` classifies.
_CONTAINERS = ("pristine", "worktrees", "trees", "src", "debs", "sysroot", "rootfs", "tools", "runs", "bisect-steps", "series")
#: How often a directory is scanned again when an entry vanished while it was read.
_SCAN_ATTEMPTS = 3
#: The marker of a finished build (:mod:`harness.build`).


@dataclass(frozen=True)
class Entry:
    """One thing in the cache gc may remove: ``kind`` (see the module docstring), ``path``,
    ``size_bytes`` on disk (allocated blocks, as ``du``; a worktree's excludes its ``build-*``
    directories, which are entries of their own), ``last_used`` (seconds since the epoch),
    ``protected`` (never removed) with ``reason`` (why it is kept; in :func:`plan`'s answer,
    why it goes), and ``needs``: the paths of the entries it cannot be used without."""

    kind: str
    path: Path
    size_bytes: int
    last_used: float
    protected: bool = False
    reason: str = ""
    needs: tuple[Path, ...] = ()

    def to_json(self, root: Path, now: float) -> dict:
        """The entry as a JSON object, ``path`` relative to the cache ``root``."""
        return {"kind": self.kind, "path": _relative(self.path, root), "size_bytes": self.size_bytes,
                "last_used": round(self.last_used, 3), "idle_days": round((now - self.last_used) / DAY, 2),
                "protected": self.protected, "reason": self.reason}


# --- sizes -------------------------------------------------------------------------------------

def parse_size(text: str) -> int:
    """Bytes of a size such as ``20G``, ``500M``, ``1.5T``, ``800K`` or ``4096`` (K, M, G, T are
    powers of 1024, as ``du -h`` prints them; a trailing ``B`` or ``iB`` is allowed).
    Raises ValueError for anything else."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (examples: 20G, 500M, 1.5T)")
    return int(float(m["number"]) * _UNITS[m["unit"].upper()])


def format_size(n: int) -> str:
    """``n`` bytes for a person: ``7.4G``, ``302M``, ``60.0K``, ``512B`` (powers of 1024)."""
    for unit in "TGMK":
        if abs(n) >= _UNITS[unit]:
            value = n / _UNITS[unit]
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return f"{n}B"


# --- scan: the cache as entries ------------------------------------------------------------------

def scan(cache: Cache, include_trees: bool = False) -> list[Entry]:
    """Every entry of the cache (protected ones too, so that their sizes add up to the cache's
    size), read from the file system; ``include_trees`` leaves the embedded trees unprotected.
    Reads only (no lock taken): hold the sources lock for a scan that :func:`apply` follows."""
    root = cache.root
    if not root.is_dir():
        return []
    seen: set = set()
    leftovers = set(doctor.find_leftovers(root, depth=2))

    def usage(path: Path, skip: Iterable[Path] = ()) -> tuple[int, float]:
        return disk_usage(path, skip, seen)

    def leftover(path: Path) -> Entry:
        size, newest = usage(path)
        return Entry("leftover", path, size, newest, reason="left by an interrupted write, download or gc")

    entries: list[Entry] = []
    for top in sorted(root.iterdir()):
        if top in leftovers:
            entries.append(leftover(top))
        elif top.name in _KEPT_TOP and top.is_dir():
            kind, why = _KEPT_TOP[top.name]
            entries.append(Entry(kind, top, usage(top)[0], top.stat().st_mtime, True, why))
        elif top.name in _CONTAINERS and top.is_dir() and not top.is_symlink():
            size = top.lstat().st_blocks * 512
            entries.append(Entry("other", top, size, 0.0, True, "the directory itself"))
            scanner = _SCANNERS.get(top.name, _scan_results)
            for attempt in range(_SCAN_ATTEMPTS):  # a harness that does not hold the lock may write here
                try:
                    children = sorted(top.iterdir())
                    found = [leftover(p) for p in children if p in leftovers]
                    rest = [p for p in children if p not in leftovers]
                    entries += found + scanner(top, rest, usage, include_trees)
                    break
                except FileNotFoundError:
                    if attempt == _SCAN_ATTEMPTS - 1:
                        raise
        else:
            size, newest = usage(top)
            entries.append(Entry("other", top, size, newest, True, "not a cache entry (logs, state)"))
    return entries


def _scan_worktrees(top: Path, children: list[Path], usage, include_trees: bool) -> list[Entry]:
    out: list[Entry] = []
    names = {p.name for p in children}
    trees_dir = (top.parent / "trees").resolve()
    for p in children:
        is_dir = p.is_dir() and not p.is_symlink()
        if is_dir and f"{p.name}.json" in names:
            record = top / f"{p.name}.json"
            used = record.stat().st_mtime
            builds = sorted(b for b in p.iterdir() if b.name.startswith("build-") and b.is_dir() and not b.is_symlink())
            admin = tree.worktree_admin(p)
            repository = tree.worktree_repository(admin) if admin else None
            source = repository.parent if repository and repository.name == ".git" else repository
            needs = (source,) if source and source.parent == trees_dir else ()
            pristine = json.loads(record.read_text()).get("pristine")
            needs += (Path(pristine),) if pristine else ()
            if repository is None:
                what = "worktree (not a git worktree any more)"
            elif not repository.is_dir():
                what = f"worktree of {source} (gone)"
            else:
                what = f"worktree of {source}"
            size = usage(p, builds)[0] + usage(record)[0]
            out.append(Entry("worktree", p, size, used, reason=what, needs=needs))
            for b in builds:
                size, newest = usage(b)
                marker = b / build.MARKER
                own = marker.stat().st_mtime if marker.is_file() else newest
                out.append(Entry("build", b, size, max(own, used),
                                 reason="kernel build" if marker.is_file() else "unfinished kernel build",
                                 needs=(p,)))
        elif p.suffix == ".json" and p.with_suffix("").is_dir():
            continue  # the record of the worktree above
        else:  # a worktree without a record (an interrupted apply), a record without one, a temporary
            size, newest = usage(p)
            out.append(Entry("leftover", p, size, newest, reason="not a complete worktree (an interrupted apply)"))
    return out


def _scan_pristine(top: Path, children: list[Path], usage, include_trees: bool) -> list[Entry]:
    """Pristine checkouts (:func:`harness.tree.pristine_checkout`).  They are scanned before the
    worktrees, so the files both hold count here, once (a worktree's size is what it alone
    holds: its directories and the files its commit changed)."""
    out = []
    for p in children:
        record = p / tree.PRISTINE_RECORD
        if p.is_dir() and not p.is_symlink() and record.is_file():
            out.append(Entry("pristine", p, usage(p)[0], record.stat().st_mtime,
                             reason=f"pristine checkout of {json.loads(record.read_text()).get('repository')}"))
        else:
            size, newest = usage(p)
            out.append(Entry("leftover", p, size, newest, reason="not a complete pristine checkout"))
    return out


def _scan_trees(top: Path, children: list[Path], usage, include_trees: bool) -> list[Entry]:
    out = []
    for p in children:
        if not (p / ".git").is_dir():
            size, newest = usage(p)
            out.append(Entry("other", p, size, newest, True, "not an imported tree"))
            continue
        used = max(q.stat().st_mtime for q in (p / ".git", p / ".git" / "worktrees") if q.is_dir())
        tarball = top.parent / "src" / f"linux-source-{p.name.removeprefix('linux-')}.tar.xz"
        out.append(Entry("tree", p, usage(p)[0], used, not include_trees,
                         "embedded kernel tree (--trees to include it)" if not include_trees else "embedded kernel tree",
                         (tarball,) if tarball.is_file() else ()))
    return out


def _arrived(path: Path) -> float:
    """When ``path`` was made or renamed into place: the newer of its mtime and ctime (an
    unpacked package's or tarball's mtime is its author's; a rename sets the ctime)."""
    st = path.stat()
    return max(st.st_mtime, st.st_ctime)


def _scan_files(kind: str, pattern: str) -> Callable:
    """A scanner of a directory of files named ``pattern``, last used when they arrived."""
    def scanner(top: Path, children: list[Path], usage, include_trees: bool) -> list[Entry]:
        out = []
        for p in children:
            if p.match(pattern) and p.is_file():
                out.append(Entry(kind, p, usage(p)[0], _arrived(p)))
            else:
                size, newest = usage(p)
                out.append(Entry("other", p, size, newest, True, f"not a {kind}"))
        return out
    return scanner


def _scan_sysroots(top: Path, children: list[Path], usage, include_trees: bool) -> list[Entry]:
    """Sysroots need the .debs whose names key them (:func:`harness.fetch.guest_sysroot`); the
    newest is the one in use and kept."""
    debs = top.parent / "debs"
    candidates = [sorted(debs.glob(f"{pkg}_*_arm64.deb")) for pkg in fetch.GUEST_PACKAGES]
    made_of = {content_key(*(d.name for d in combo)): combo for combo in itertools.product(*candidates)}
    dirs = [p for p in children if p.is_dir() and not p.is_symlink()]
    newest = max(dirs, key=_arrived, default=None)
    out = []
    for p in children:
        size, _ = usage(p)
        if p not in dirs:
            out.append(Entry("other", p, size, p.lstat().st_mtime, True, "not a sysroot"))
            continue
        out.append(Entry("sysroot", p, size, _arrived(p), p == newest,
                         "the guest sysroot in use (the newest)" if p == newest else "guest sysroot",
                         tuple(made_of.get(p.name, ()))))
    return out


def _scan_initramfs(top: Path, children: list[Path], usage, include_trees: bool) -> list[Entry]:
    """One entry per archive (its ``.spec`` goes with it); a spec without an archive is one too."""
    out = []
    for p in children:
        if p.name.startswith("initramfs-") and p.name.endswith(".cpio.gz") and p.is_file():
            spec = p.with_suffix(".spec")
            out.append(Entry("initramfs", p, usage(p)[0] + usage(spec)[0], _arrived(p)))
        elif p.name.startswith("initramfs-") and p.name.endswith(".cpio.spec") and p.is_file():
            if not p.with_suffix(".gz").exists():
                out.append(Entry("initramfs", p, usage(p)[0], _arrived(p), reason="spec without its archive"))
        else:
            size, newest = usage(p)
            out.append(Entry("other", p, size, newest, True, "not an initramfs"))
    return out


def _scan_results(top: Path, children: list[Path], usage, include_trees: bool) -> list[Entry]:
    kind = {"runs": "run", "bisect-steps": "bisect-step", "series": "series"}[top.name]
    out = []
    for p in children:
        size, newest = usage(p)
        out.append(Entry(kind, p, size, newest))
    return out


_SCANNERS = {"pristine": _scan_pristine, "worktrees": _scan_worktrees, "trees": _scan_trees, "sysroot": _scan_sysroots,
             "rootfs": _scan_initramfs,
             "src": _scan_files("tarball", "linux-source-*.tar.xz"),
             "debs": _scan_files("deb", "*.deb"),
             "tools": _scan_files("tool", "*")}


# --- plan: what goes -----------------------------------------------------------------------------

def plan(entries: list[Entry], now: float, max_age_days: float | None, max_size_bytes: int | None,
         min_idle_seconds: float = IN_USE_SECONDS) -> list[Entry]:
    """The entries to delete, in the order to delete them: least recently used first, each
    preceded by every entry that needs it (a build before its worktree, a worktree before its
    tree), with ``reason`` saying why it goes.

    An entry goes when it has not been used for ``max_age_days`` days, or while the cache (the
    sum of every entry's ``size_bytes``, protected ones included) is larger than
    ``max_size_bytes``; None disables either test.  An entry's use is the newest of its own and
    of the entries that need it.  Never chosen: a protected entry, an entry used in the last
    ``min_idle_seconds``, and an entry that one of those needs.  ``now`` is seconds since the
    epoch.  Leftovers (kind ``leftover``: temporary names of interrupted writes) go whatever the
    age and budget, once ``min_idle_seconds`` old.  Pure: reads nothing but its arguments."""
    by_path = {e.path: e for e in entries}
    needed_by: dict[Path, list[Entry]] = {}
    for e in entries:
        for n in e.needs:
            if n in by_path and n != e.path:
                needed_by.setdefault(n, []).append(e)

    def dependents(e: Entry, trail: frozenset = frozenset()) -> list[Entry]:
        """Everything that needs ``e``, transitively, those that need others first."""
        out: list[Entry] = []
        for d in sorted(needed_by.get(e.path, ()), key=lambda x: str(x.path)):
            if d.path in trail:
                continue
            out += [x for x in dependents(d, trail | {e.path}) if x not in out] + ([d] if d not in out else [])
        return out

    group = {e.path: dependents(e) + [e] for e in entries}
    used = {e.path: max(x.last_used for x in group[e.path]) for e in entries}
    depth = {e.path: len(group[e.path]) for e in entries}
    kept = {e.path for e in entries if any(x.protected or now - x.last_used < min_idle_seconds
                                           for x in group[e.path])}
    total = sum(e.size_bytes for e in entries)
    chosen: list[Entry] = []
    gone: set[Path] = set()
    for e in sorted(entries, key=lambda x: (used[x.path], depth[x.path], str(x.path))):
        if e.path in gone or e.path in kept:
            continue
        idle = now - used[e.path]
        if e.kind == "leftover":
            why = e.reason or "left by an interrupted write"
        elif max_age_days is not None and idle > max_age_days * DAY:
            why = f"unused for more than {max_age_days:g} days"
        elif max_size_bytes is not None and total > max_size_bytes:
            why = f"over the size budget ({format_size(max_size_bytes)})"
        else:
            continue
        for x in group[e.path]:
            if x.path not in gone:
                gone.add(x.path)
                total -= x.size_bytes
                chosen.append(replace(x, reason=why if x is e else f"goes with the {e.kind} {e.path.name}"))
    return chosen


def _idle(seconds: float) -> str:
    """``41 days``, ``5.2 h``."""
    return f"{seconds / DAY:.0f} days" if seconds >= 2 * DAY else f"{max(0.0, seconds) / 3600:.1f} h"


# --- apply: delete -------------------------------------------------------------------------------

@contextlib.contextmanager
def holding_sources_lock(cache: Cache, wait: bool = False, say: Callable[[str], None] = lambda m: None
                         ) -> Iterator[None]:
    """Hold the cache's sources lock for a block.  Without ``wait`` give up after
    :data:`harness.timeouts.GC_LOCK_WAIT` seconds with a :class:`~harness.errors.SetupError` (exit 2) saying another
    harness is running; with ``wait`` wait as long as :meth:`Cache.sources_lock` does."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(cache.sources_lock(timeout=0 if wait else timeouts.GC_LOCK_WAIT))
        except SetupError:
            if not wait:
                raise SetupError(f"another harness process is running on the cache {cache.root} (it holds "
                                 f"{cache.root / 'locks' / 'sources.lock'}): nothing was removed; run gc "
                                 "when it is done, or pass --wait to wait for it") from None
            say("another harness process holds the cache's sources lock: waiting for it ...")
            stack.enter_context(cache.sources_lock())
        yield


def apply(cache: Cache, chosen: list[Entry], log: CommandLog, say: Callable[[str], None] = lambda m: None,
          wait: bool = False) -> int:
    """Delete the entries ``chosen`` (a :func:`plan`, in its order) holding the cache's sources
    lock (see :func:`holding_sources_lock` for ``wait`` and the SetupError), then prune the
    ``git worktree`` records of the embedded trees; returns the bytes freed (the entries'
    ``size_bytes``).

    Each directory is first renamed to ``.NAME.<pid>.tmp`` (a worktree's record deleted and
    git's record of it dropped with :func:`harness.tree.unregister_worktree`), then deleted, so
    an interrupted gc leaves only a temporary name (which doctor reports and the next gc
    removes), never a half-deleted entry that looks valid.  Only paths inside the cache are
    touched: a user's repository loses the record of the removed worktree and nothing else.
    Raises ValueError for a path outside the cache, OSError when a deletion fails."""
    root = cache.root.resolve()
    freed = 0
    with holding_sources_lock(cache, wait, say):
        for e in chosen:
            path = e.path.parent.resolve() / e.path.name  # the entry itself is not followed if a symlink
            if root not in path.parents:
                raise ValueError(f"gc: {e.path} is not inside the cache {root}")
            if not os.path.lexists(path):
                continue
            _delete(e, path, log, say)
            freed += e.size_bytes
        for git_dir in sorted((root / "trees").glob("*/.git")):
            if git_dir.is_dir():
                run(["git", "--git-dir", git_dir, "worktree", "prune"], log, timeout=timeouts.COMMAND)
    return freed


def _delete(e: Entry, path: Path, log: CommandLog, say: Callable[[str], None]) -> None:
    if path.is_dir() and not path.is_symlink():
        admin = tree.worktree_admin(path)
        trash = free_temp_name(path)
        try:
            os.rename(path, trash)
        except FileNotFoundError:  # deleted meanwhile (a leftover that its rm -rf finished)
            return
        if e.kind == "worktree":
            path.with_name(f"{path.name}.json").unlink(missing_ok=True)
        if admin is not None and (note := tree.unregister_worktree(admin, log)):
            say(f"gc: git's record of the worktree {path} stays: {note}")
        remove_tree(trash)
    else:
        path.unlink()
    if e.kind == "initramfs":
        for companion in (path.with_suffix(".spec"), path.with_suffix(".gz")):
            if companion != path and companion.name.startswith("initramfs-"):
                companion.unlink(missing_ok=True)


# --- the command -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What a gc did (or, ``dry_run``, would do): the ``entries`` scanned, the ``chosen`` ones,
    the cache's size ``before`` and ``after`` and the bytes ``freed`` (all in bytes), the
    budget and age asked for, and when (``now``, seconds since the epoch)."""

    root: Path
    dry_run: bool
    entries: tuple[Entry, ...]
    chosen: tuple[Entry, ...]
    before: int
    freed: int
    max_size_bytes: int | None
    max_age_days: float | None
    now: float
    busy: bool = False

    @property
    def after(self) -> int:
        """The cache's size after the gc, in bytes."""
        return self.before - self.freed

    def to_json(self) -> dict:
        """The outcome as a JSON document: sizes in bytes, ``removed`` the entries removed (with
        ``dry_run``: that would be), ``kept_protected`` the entries never removed, and why."""
        protected = [e for e in self.entries if e.protected and e.kind != "other"]
        return {"cache": str(self.root), "dry_run": self.dry_run, "max_size_bytes": self.max_size_bytes,
                "older_than_days": self.max_age_days, "size_before": self.before, "size_after": self.after,
                "freed_bytes": self.freed, "over_budget_bytes": self._over(),
                "removed": [e.to_json(self.root, self.now) for e in self.chosen],
                "kept_protected": [e.to_json(self.root, self.now) for e in protected]}

    def _over(self) -> int:
        return max(0, self.after - self.max_size_bytes) if self.max_size_bytes is not None else 0


def collect(cache: Cache, dry_run: bool = False, max_size_bytes: int | None = None,
            max_age_days: float | None = None, include_trees: bool = False, wait: bool = False,
            log: CommandLog | None = None, say: Callable[[str], None] = lambda m: None,
            now: float | None = None) -> Outcome:
    """Scan, plan and (unless ``dry_run``) apply: the whole gc.  Without a budget or an age,
    :data:`DEFAULT_MAX_AGE_DAYS`.  A dry run takes no lock (it notes when another harness holds
    it); a real one holds the sources lock from scan to the end, raising SetupError as
    :func:`holding_sources_lock` does."""
    if max_size_bytes is None and max_age_days is None:
        max_age_days = DEFAULT_MAX_AGE_DAYS
    log = log or CommandLog(cache.root / "gc.log")
    with contextlib.ExitStack() as stack:
        busy = False
        if not dry_run:
            stack.enter_context(holding_sources_lock(cache, wait, say))
        elif cache.root.is_dir():
            busy = doctor.cache_busy(cache)
        now = time.time() if now is None else now
        entries = scan(cache, include_trees)
        chosen = plan(entries, now, max_age_days, max_size_bytes)
        before = sum(e.size_bytes for e in entries)
        freed = sum(e.size_bytes for e in chosen) if dry_run else apply(cache, chosen, log, say, wait)
    return Outcome(cache.root, dry_run, tuple(entries), tuple(chosen), before, freed, max_size_bytes,
                   max_age_days, now, busy)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def summary_lines(out: Outcome) -> list[str]:
    """The lines under the table: sizes before and after, what was kept and why, a missed budget."""
    verb = "would free" if out.dry_run else "freed"
    lines = [f"cache {out.root}: {format_size(out.before)}; {verb} {format_size(out.freed)} in "
             f"{len(out.chosen)} entr{'y' if len(out.chosen) == 1 else 'ies'}; "
             f"{'would be' if out.dry_run else 'now'} {format_size(out.after)}"]
    kept: dict[str, int] = {}
    for e in out.entries:
        if e.protected and e.kind != "other":
            kept[e.kind] = kept.get(e.kind, 0) + e.size_bytes
    names = {"ccache": "ccache (its own limit: ccache -M)", "tree": "embedded trees (--trees to include)",
             "apt": "apt lists", "sysroot": "the guest sysroot in use", "lock": "locks"}
    if kept:
        lines.append("kept: " + ", ".join(f"{names.get(k, k)} {format_size(v)}" for k, v in sorted(kept.items())))
    recent = [e for e in out.entries if not e.protected and out.now - e.last_used < IN_USE_SECONDS]
    if recent:
        lines.append(f"kept: {len(recent)} entr{'y' if len(recent) == 1 else 'ies'} used in the last hour "
                     f"({format_size(sum(e.size_bytes for e in recent))}), and what they need")
    if out._over():
        lines.append(f"still {format_size(out._over())} over the {format_size(out.max_size_bytes)} budget: "
                     "the rest is kept (above) or needed by what is kept")
    if out.busy:
        lines.append("another harness process holds the cache's sources lock: what it uses may change")
    return lines


def print_outcome(out: Outcome, console=None) -> None:
    """Print what goes (or would go): a rich table on a terminal, plain lines otherwise, then
    :func:`summary_lines`."""
    rows = [(e.kind, _relative(e.path, out.root), format_size(e.size_bytes), _idle(out.now - e.last_used),
             e.reason) for e in out.chosen]
    header = ("kind", "path", "size", "unused for", "why")
    if console is None and not sys.stdout.isatty():
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header[:-1])]
        for r in [header, *rows] if rows else []:
            print("  ".join(f"{c:<{w}}" for c, w in zip(r, widths)) + "  " + r[-1])
        for line in summary_lines(out):
            print(line)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    console = console or Console(highlight=False)
    if rows:
        table = Table(title=f"harness gc{' --dry-run: would remove' if out.dry_run else ': removed'}",
                      title_justify="left")
        for column in header:
            table.add_column(column, overflow="fold", justify="right" if column == "size" else "left")
        for r in rows:
            table.add_row(*(escape(c) for c in r))
        console.print(table)
    for line in summary_lines(out):
        console.print(escape(line))


def main(cache: Cache, dry_run: bool = False, max_size_bytes: int | None = None, max_age_days: float | None = None,
         include_trees: bool = False, as_json: bool = False, wait: bool = False,
         say: Callable[[str], None] = lambda m: None) -> int:
    """``harness gc``: collect, print (table or ``--json``) and return 0.  Raises SetupError
    (exit 2) when another harness holds the cache without ``wait``."""
    if cache.root.is_dir():
        out = collect(cache, dry_run, max_size_bytes, max_age_days, include_trees, wait, say=say)
    else:  # nothing to collect, and nothing (not even the lock file) is created
        out = Outcome(cache.root, dry_run, (), (), 0, 0, max_size_bytes, max_age_days, time.time())
    if as_json:
        json.dump(out.to_json(), sys.stdout, indent=2)
        print()
    else:
        print_outcome(out)
    return 0


def after_run(cache: Cache, max_size_bytes: int, say: Callable[[str], None]) -> None:
    """``harness matrix --gc SIZE``: collect down to ``max_size_bytes`` after a run and say one
    line; a gc that cannot run (another harness holds the cache) is said, never raised, so the
    run's exit status stays the run's."""
    try:
        out = collect(cache, max_size_bytes=max_size_bytes, say=say)
    except (HarnessError, OSError) as e:
        say(f"gc skipped: {e}")
        return
    say(f"gc: removed {len(out.chosen)} entr{'y' if len(out.chosen) == 1 else 'ies'} ({format_size(out.freed)}); "
        f"the cache is {format_size(out.after)} (budget {format_size(max_size_bytes)})"
        + (f", {format_size(out._over())} over: the rest is protected or in use" if out._over() else ""))
