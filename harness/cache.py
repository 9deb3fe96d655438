"""The harness cache directory: location, content keys and atomic writes.

Layout under the root (``$HARNESS_CACHE``, default
``~/.cache/virtio-pm-harness``)::

    apt-arm64/       apt lists for arm64 downloads (never the system's)
    debs/            downloaded .deb files
    sysroot/<key>/   arm64 packages unpacked (busybox, rtcwake, libc)
    src/             linux-source tarballs
    trees/<name>/    git repositories imported from tarballs
    worktrees/<key>/ applied revisions (git worktrees) with their record ``<key>.json`` and
                     their kernel ``O=`` build directories ``build-<key>/``
    ccache/          ccache store
    tools/           host tools built from a kernel tree (gen_init_cpio)
    rootfs/          initramfs archives, named by content hash
    series/<key>/    series fetched with b4
    runs/<id>/       results of runs (console logs, results.json)
    bisect-steps/    results of bisect steps, reused by later bisects
    locks/           the lock two harness processes on one cache take turns on

Every entry is either complete or absent: files are written to a temporary
name and renamed, directories are filled under a temporary name and renamed.
``harness gc`` (:mod:`harness.gc`) removes the entries not used for a while.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from harness import timeouts
from harness.errors import DiskFull, SetupError
from harness.lazy import lazy_import

#: filelock imports asyncio (8 MB, 0.1 s): loaded at the first lock, not by every harness process.
filelock = lazy_import("filelock")

PROJECT = "virtio-pm-harness"


#: Free bytes (under the cache) that a step needs before it starts: apt's arm64 lists and the
#: guest .debs (~30 MB), a kernel source download and its import into git (~1.7 GB measured),
#: a kernel build's O= directory (170-215 MB measured) with its worktree checkout (1.5 GB).
SPACE_NEEDED = {"apt": 64 << 20, "tree": 2 << 30, "build": 2 << 30}


def require_space(path: Path, step: str) -> None:
    """Raise :class:`~harness.errors.DiskFull` (exit 9) unless the filesystem of ``path`` (or
    its nearest existing parent) has :data:`SPACE_NEEDED` ``[step]`` bytes free: a step on a
    full disk fails at once, naming the space, instead of half-way (apt even waits for ever)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    free, need = st.f_bavail * st.f_frsize, SPACE_NEEDED[step]
    if free < need:
        raise DiskFull(f"{free / 2**20:.0f} MB free on the filesystem of {path}; the {step} step needs "
                       f"{need / 2**20:.0f} MB: free some space, or set HARNESS_CACHE to a larger filesystem")


@dataclass(frozen=True)
class Cache:
    """The cache root.  Use :meth:`from_env` to honour ``$HARNESS_CACHE``."""

    root: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Cache":
        """Return the cache at ``$HARNESS_CACHE`` or ``~/.cache/virtio-pm-harness``."""
        env = os.environ if env is None else env
        root = env.get("HARNESS_CACHE") or str(Path.home() / ".cache" / PROJECT)
        return cls(Path(root).expanduser().resolve())

    @contextlib.contextmanager
    def sources_lock(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the cache's lock on its sources (embedded trees, worktrees, their ``O=`` builds,
        downloads, initramfs archives) for a block: two harness processes on one cache take
        turns applying and building, and neither releases a worktree the other builds in.
        Reentrant in a process.  Waits at most ``timeout`` seconds (default: two build limits,
        :func:`harness.timeouts.build`), then raises SetupError."""
        timeout = 2 * timeouts.build() if timeout is None else timeout
        lock = filelock.FileLock(self.path("locks", "sources.lock"), is_singleton=True)
        try:
            lock.acquire(timeout=timeout)
        except filelock.Timeout:
            raise SetupError(f"another harness process has held {lock.lock_file} for {timeout:.0f} s "
                             "(a build of its own); try again when it is done") from None
        try:
            yield
        finally:
            lock.release()

    def path(self, *parts: str) -> Path:
        """Return ``root/parts...`` with its parent directory created."""
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


def content_key(*parts: str | bytes, length: int = 16) -> str:
    """Return a hex sha256 (first ``length`` digits) over ``parts``.

    Parts are length-prefixed so ``("ab", "c")`` and ``("a", "bc")`` differ.
    """
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:length]


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pid_temp_name(path: Path) -> Path:
    """``path``'s temporary name of this process, ``.NAME.<pid>.tmp`` beside it: for a partial
    file being written, or an entry being deleted (renamed first, so it stops being an entry at
    once).  :mod:`harness.doctor` reports such names left behind."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def free_temp_name(path: Path) -> Path:
    """:func:`pid_temp_name` of ``path``, with whatever an earlier use of that name by this
    process left there removed first (:func:`remove_tree`), so that a rename or a mkdir to it
    works."""
    temp = pid_temp_name(path)
    if os.path.lexists(temp):
        remove_tree(temp)
    return temp


def remove_tree(path: Path) -> None:
    """``shutil.rmtree`` that takes a file already gone as deleted: a released checkout's
    detached ``rm -rf`` (:func:`harness.tree.release_checkouts`) may still be deleting the same
    temporary directory (gc sees it as a leftover; a second release in one process meets its
    own first).  Other errors raise."""
    def gone_ok(_func, _path, exc_info):
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]
    shutil.rmtree(path, onerror=gone_ok)


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A reader sees the old file or the whole new one, never a partial write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; rename it into place on success.

    On any exception (including KeyboardInterrupt) the temporary directory is
    removed and ``final`` is left as it was.  Raises ``FileExistsError`` if
    ``final`` appears meanwhile (another process won the race).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def disk_usage(path: Path, skip: Iterable[Path] = (), seen: set | None = None) -> tuple[int, float]:
    """``(bytes, newest mtime)`` of ``path`` and everything under it: allocated blocks as ``du``
    counts them, a file with several hard links once per ``seen`` set, directories in ``skip``
    not entered, symlinks not followed.  ``(0, 0.0)`` when ``path`` does not exist."""
    skipped = {str(p) for p in skip}
    seen = set() if seen is None else seen
    try:
        st = path.lstat()
    except OSError:
        return 0, 0.0
    total, newest = st.st_blocks * 512, st.st_mtime
    if not path.is_dir() or path.is_symlink():
        return total, newest
    stack = [str(path)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for entry in it:
                if entry.path in skipped:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                newest = max(newest, st.st_mtime)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total, newest
