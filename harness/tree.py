"""Kernel source trees: the embedded ones (Debian's linux-source packages imported
into git repositories in the cache, named ``debian-6.12`` and ``debian-7.2``, see
:data:`harness.fetch.EMBEDDED_TREES`) or a user's git checkout.

The harness never writes to a user's tree: builds go to ``O=`` directories
in the cache.

Each applied revision is a worktree of its own under ``$HARNESS_CACHE/worktrees/``
(:func:`apply_series`).  A kernel checkout is about 1.5 GB in 90,000 files, and writing it
takes git 25-100 s on these disks, so it is written once per repository, into the cache's
pristine checkout (:func:`pristine_checkout`), and every worktree gets its files as hard links
to those (``cp -al``, 2-6 s), then ``git reset --hard`` writes the files where its commit
differs from the pristine one (the kernel developers' hard-linked trees of old).  Nothing
writes into a linked file: git replaces a file it changes by a new one (``entry.c``,
``apply.c``: unlink, then create), and kbuild writes only to ``O=``.  An edit in place would
change every tree that shares the file; :func:`ensure_checkout` finds and undoes one before
a build.  Only the :data:`CHECKOUTS_KEPT` most recently used worktrees keep their files; the
others keep their commits, their record and their ``O=`` build directories (so a build is
still a cache hit) and get their files back when something is built in them again
(:func:`ensure_checkout`); booting a cached build needs no checkout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import timeouts
from harness.cache import Cache, atomic_dir, atomic_write, content_key, disk_usage, free_temp_name, remove_tree
from harness.errors import ApplyError, SetupError, UsageError
from harness.fetch import DEFAULT_TREE, EMBEDDED_TREES, linux_source
from harness.proc import CommandLog, every, minutes, run, tail

#: The start of every git command the harness runs.  A worktree's files are hard links, and git
#: compares a file's ctime with its index by default (git-config(1) ``core.trustctime``): linking
#: another worktree to a file sets its ctime, and git would hash all 90,000 files again to see
#: that nothing changed (30-45 s).  Size, mtime and inode still show a change.
GIT = ("git", "-c", "core.trustctime=false")

#: The cache directory of the pristine checkouts (:func:`pristine_checkout`).
PRISTINE_DIR = "pristine"

_LOG = logging.getLogger("harness.tree")

#: Top-level Makefile lines that give the kernel version.
_MAKEFILE_VERSION = re.compile(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)[ \t]*=[ \t]*(\S*)", re.M)

#: The block Debian appends to linux-source's top-level .gitignore: it ignores
#: every top-level entry but debian/, so a plain ``git add -A`` adds nothing.
_DEBIAN_GITIGNORE_BLOCK = re.compile(
    r"\n#\n# Debian packaging:.*?\n/\*\n!/debian/\n?", re.S)

#: Identity used for the import commit, so that every machine gets the same sha.
_IMPORT_IDENTITY = {
    "GIT_AUTHOR_NAME": "linux-source import", "GIT_AUTHOR_EMAIL": "harness@localhost",
    "GIT_COMMITTER_NAME": "linux-source import", "GIT_COMMITTER_EMAIL": "harness@localhost",
}


@dataclass(frozen=True)
class KernelTree:
    """A kernel git tree: ``path``, HEAD ``commit`` sha, ``version`` (e.g. 6.12.117),
    ``describe`` (tag or short sha; an embedded tree's tag carries its Debian version,
    ``debian/7.2.13-1``), whether it is embedded, and the embedded tree's ``name``."""

    path: Path
    commit: str
    version: str
    describe: str
    embedded: bool
    name: str = ""


def kernel_version(tree: Path) -> str:
    """Return ``VERSION.PATCHLEVEL.SUBLEVEL[EXTRAVERSION]`` from ``tree/Makefile``.

    Raises :class:`UsageError` if there is no kernel Makefile there.
    """
    try:
        text = (tree / "Makefile").read_text(errors="replace")[:4096]
    except OSError as e:
        raise UsageError(f"{tree} is not a kernel tree (no readable Makefile: {e.strerror})") from e
    return _makefile_version(text, f"{tree}/Makefile")


def _makefile_version(text: str, where: str) -> str:
    fields = dict(_MAKEFILE_VERSION.findall(text[:4096]))
    if "VERSION" not in fields or "PATCHLEVEL" not in fields:
        raise UsageError(f"{where} has no VERSION/PATCHLEVEL: not a kernel tree")
    return f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{fields.get('SUBLEVEL', '0')}{fields.get('EXTRAVERSION', '')}"


def _drop_checkout(repo: Path, log: CommandLog) -> None:
    """Make ``repo`` (an embedded tree) bare in all but name: delete its checked-out files and
    set ``core.bare``.  Builds use worktrees of their own, so the checkout was 1.5 GB for
    nothing; its commits, tags and worktree records stay in ``repo/.git``."""
    for entry in repo.iterdir():
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    _git(repo, log, "config", "core.bare", "true")


def show_file(repo: Path, spec: str, dest: Path, log: CommandLog) -> None:
    """Write git's ``spec`` (``REV:PATH``) of ``repo`` to ``dest`` byte for byte, not into the
    logs (a worktree or tree without a checkout still has its files in git).  Raises
    :class:`SetupError` naming ``spec`` when git cannot (``dest`` is then removed)."""
    res = run([*GIT, "-C", repo, "show", spec], log, stdout_file=dest)
    if res.returncode != 0:
        dest.unlink(missing_ok=True)
        raise SetupError(f"git show {spec} in {repo} failed:\n{tail(res.output)}")


def _git(tree: Path, log: CommandLog, *args: str, env: dict | None = None) -> str:
    res = run([*GIT, "-C", tree, *args], log, env=env)
    if res.returncode != 0:
        raise SetupError(f"git {' '.join(args)} in {tree} failed:\n{tail(res.output)}")
    return res.output.strip()


def user_tree(path: Path, log: CommandLog) -> KernelTree:
    """Describe a user's kernel checkout without changing it.

    Raises :class:`UsageError` if ``path`` is not a git work tree with a kernel Makefile.
    """
    path = path.expanduser().resolve()
    version = kernel_version(path)
    res = run([*GIT, "-C", path, "rev-parse", "--verify", "HEAD"], log)
    if res.returncode != 0:
        raise UsageError(f"{path} is not a git checkout with a commit (git rev-parse HEAD failed); "
                         "pass a kernel git tree with --tree")
    commit = res.output.strip()
    describe = run([*GIT, "-C", path, "describe", "--always", "--tags", commit], log).output.strip()
    return KernelTree(path, commit, version, describe or commit[:12], embedded=False)


def embedded_tree(cache: Cache, log: CommandLog, name: str = DEFAULT_TREE, say=lambda message: None) -> KernelTree:
    """Return the embedded tree ``name`` (``debian-6.12``, ``debian-7.2``), importing its Debian
    linux-source on first use.

    The tarball is extracted, Debian's ignore-everything ``.gitignore`` block
    dropped, and the whole tree committed once with a fixed identity and date
    and tagged ``debian/<deb version>``, so every machine gets the same commit for the same
    Debian version; the checkout is then dropped (:func:`_drop_checkout`): builds check out
    worktrees of their own.  Raises :class:`SetupError` on failure, UsageError for an unknown name.
    """
    with cache.sources_lock():
        return _embedded_tree(cache, log, name, say)


def _embedded_tree(cache: Cache, log: CommandLog, name: str, say) -> KernelTree:
    tarball = linux_source(cache, log, name, say)
    final = cache.root / "trees" / f"linux-{tarball.deb_version}"
    tag = f"debian/{tarball.deb_version}"
    if not (final / ".git").is_dir():
        say(f"import {tarball.path.name} into a git tree (once) ...")
        with atomic_dir(final) as tmp:
            with every(lambda elapsed: say(f"import: {disk_usage(tmp)[0] // 2**20} MB of about 1500 MB extracted, "
                                           f"{minutes(elapsed)} elapsed")):
                res = run(["tar", "-xJf", tarball.path, "-C", tmp, "--strip-components=1"], log)
            if res.returncode != 0:
                raise SetupError(f"extracting {tarball.path} failed:\n{tail(res.output)}\n"
                                 f"Delete it and run `make setup` again.")
            gitignore = tmp / ".gitignore"
            gitignore.write_text(_DEBIAN_GITIGNORE_BLOCK.sub("\n", gitignore.read_text()))
            date = f"@{int((tmp / 'Makefile').stat().st_mtime)} +0000"
            env = {**_IMPORT_IDENTITY, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
            _git(tmp, log, "init", "-q", "-b", "master")
            _git(tmp, log, "config", "gc.auto", "0")
            _git(tmp, log, "add", "-A")
            _git(tmp, log, "commit", "-q", "-m",
                 f"Import Debian linux-source {tarball.deb_version}\n\n"
                 f"Imported by virtio-pm-harness from {tarball.path.name}.", env=env)
            _git(tmp, log, "tag", tag)
            _drop_checkout(tmp, log)
    elif (final / "Makefile").exists():  # imported before trees were kept without a checkout
        _drop_checkout(final, log)
    commit = _git(final, log, "rev-parse", "HEAD")
    with tempfile.TemporaryDirectory(dir=final / ".git") as tmp:  # to a file: the logs need not hold the Makefile
        show_file(final, f"{commit}:Makefile", Path(tmp) / "Makefile", log)
        version = _makefile_version((Path(tmp) / "Makefile").read_text(errors="replace")[:4096],
                                    f"{final} {tag}:Makefile")
    return KernelTree(final, commit, version, tag, embedded=True, name=name)


def resolve_tree(path: str | os.PathLike | None, cache: Cache, log: CommandLog, say=lambda message: None
                 ) -> KernelTree:
    """Return the embedded tree named ``path`` (``debian-7.2``), the user's tree at ``path``, or the
    embedded default when ``path`` is None."""
    if path and str(path) in EMBEDDED_TREES:
        return embedded_tree(cache, log, str(path), say)
    if path:
        return user_tree(Path(path), log)
    return embedded_tree(cache, log, DEFAULT_TREE, say)


# --- Worktrees: where revisions are applied and every build happens -------------------

#: ``git am`` messages (builtin/am.c, apply.c) that locate a failure.
_AM_FAILED_AT = re.compile(r"^Patch failed at (?P<num>\d+) (?P<subject>.*)$", re.M)
_AM_HUNK = re.compile(r"^error: patch failed: (?P<file>\S+):(?P<line>\d+)$", re.M)
_AM_FILE = re.compile(r"^error: (?P<file>\S+): (?P<why>patch does not apply|does not exist in index|already exists in index)$", re.M)
_AM_CONFLICT = re.compile(r"^CONFLICT \([^)]*\): Merge conflict in (?P<file>\S+)$", re.M)

#: The line of a linked worktree's ``.git`` file naming git's record of it (builtin/worktree.c).
_GITDIR_LINE = re.compile(r"gitdir: (?P<dir>.+)")

#: Committer used for applied patches: with ``--committer-date-is-author-date`` the
#: commit ids of an applied revision are the same on every machine and every run.
_AM_IDENTITY = {"GIT_COMMITTER_NAME": "virtio-pm-harness", "GIT_COMMITTER_EMAIL": "harness@localhost"}


@dataclass(frozen=True)
class AppliedTree:
    """A git worktree in the cache at ``base`` with the first ``len(patch_commits)``
    patches of a revision applied (none for a plain build).

    ``path``/``commit``/``describe`` mirror :class:`KernelTree` so that the build
    stage takes either; ``patch_commits`` are ``(index, subject, sha)``.
    """

    path: Path
    commit: str
    describe: str
    source: KernelTree
    base: str
    series_version: int | None
    patch_commits: tuple[tuple[int, str, str], ...]

    @property
    def version(self) -> str:
        return self.source.version

    @property
    def embedded(self) -> bool:
        return self.source.embedded


def resolve_base(kt: KernelTree, base_ref: str | None, series_base: str | None,
                 log: CommandLog) -> tuple[str, str | None]:
    """Return ``(base sha, warning or None)``.

    ``base_ref`` wins; else the series' ``base-commit`` if the tree has it; else
    the tree's HEAD, with a warning.  Raises :class:`UsageError` for an unknown ``base_ref``.
    """
    def commit_of(ref: str) -> str | None:
        res = run([*GIT, "-C", kt.path, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], log)
        return res.output.strip() if res.returncode == 0 else None

    if base_ref:
        sha = commit_of(base_ref)
        if sha is None:
            raise UsageError(f"--base {base_ref!r} is not a commit in {kt.path}")
        return sha, None
    if series_base:
        sha = commit_of(series_base)
        if sha:
            return sha, None
        return kt.commit, (f"the series' base-commit {series_base[:12]} is not in {kt.path}; "
                           f"applying on its HEAD {kt.commit[:12]} ({kt.describe}) instead")
    return kt.commit, None


#: How many worktrees keep their source checked out (the most recently used ones).  Two, so
#: that a matrix's current build and the one before it (a bisect's neighbour) stay as they
#: are; every other worktree is released: its files are deleted, its ``build-*`` directories,
#: commits and record stay.
CHECKOUTS_KEPT = 2

#: How many pristine checkouts (:func:`pristine_checkout`, 1.5 GB each) :func:`release_pristines`
#: keeps: the default matrix's two trees.  An older one is made again (25-100 s) when a worktree
#: of its repository is made or gets its files back.
PRISTINES_KEPT = 2


def _worktree_record(path: Path) -> dict | None:
    marker = path.with_suffix(".json")
    return json.loads(marker.read_text()) if marker.is_file() and path.is_dir() else None


def _write_record(path: Path, record: dict) -> None:
    atomic_write(path.with_suffix(".json"), json.dumps(record, indent=2))


def ensure_checkout(path: Path, log: CommandLog) -> None:
    """Make the worktree at ``path`` hold its commit's files for a build: a released one gets
    them back (:func:`_fill`: hard links to its pristine checkout, 2-6 s for a kernel; a full
    ``git reset --hard``, 25-100 s, when the pristine checkout is gone); in a checked-out one,
    files changed in place (which changes them in every tree that links them) are written again
    from git, with a warning naming them.  A no-op for a directory that is not one of ours.
    Raises :class:`SetupError` if git fails."""
    record = _worktree_record(path)
    if record is None:
        return
    if record.get("checked_out", True):
        if record.get("pristine"):
            _undo_edits(path, log)
        return
    _fill(path, _usable_pristine(path, record, log), log)
    _write_record(path, {**record, "checked_out": True})


def _usable_pristine(path: Path, record: dict, log: CommandLog) -> Path | None:
    """The pristine checkout the record of the worktree at ``path`` names, made from the
    worktree's repository if it is not there (a worktree made before they were, or gc removed
    it), the worktree's base commit; None when the record names none."""
    pristine = Path(record["pristine"]) if record.get("pristine") else None
    admin = worktree_admin(path)
    if pristine is None or (pristine / PRISTINE_RECORD).is_file() or admin is None:
        return pristine
    return _make_pristine(pristine, admin, record["base"], str(worktree_repository(admin)), log)


def _undo_edits(path: Path, log: CommandLog) -> None:
    """Write again from git the files of the linked worktree at ``path`` that differ from its
    index (an editor that wrote into a linked file), and warn naming them."""
    res = run([*GIT, "-C", path, "diff", "--name-only", "-z"], log)
    changed = [name for name in res.output.split("\0") if name.strip()] if res.returncode == 0 else []
    if not changed:
        return
    _LOG.warning("worktree %s: %d file(s) were changed in place (%s); their hard links share them with "
                 "the pristine checkout and other worktrees: written again from git. Change a revision "
                 "with a patch, not in the cache.", path, len(changed), ", ".join(changed[:5]))
    res = run([*GIT, "-C", path, "checkout", "--", *changed], log)
    if res.returncode != 0:
        raise SetupError(f"git checkout of the files changed in place in {path} failed:\n{tail(res.output)}")


#: A pristine checkout's record: its repository and commit; its mtime is the last use.
PRISTINE_RECORD = "pristine.json"


def pristine_checkout(kt: KernelTree, cache: Cache, log: CommandLog, say=lambda message: None) -> Path:
    """The pristine checkout of ``kt``'s repository, ``$HARNESS_CACHE/pristine/<key>/``: its
    files in ``tree/``, git's index of them (stat data included) in ``index``, and
    ``pristine.json``.  Made once per repository, of ``kt.commit`` (:func:`_make_pristine`), and
    reused for every base, its record touched.  Nothing builds in it: worktrees link its files
    (:func:`_fill`).  The caller holds the cache's sources lock.  Raises :class:`SetupError`
    if git fails."""
    final = _pristine_path(kt, cache)
    if (final / PRISTINE_RECORD).is_file():
        os.utime(final / PRISTINE_RECORD)
        return final
    say(f"check out {kt.describe} once into the cache (its worktrees hard-link these files) ...")
    return _make_pristine(final, Path(_git(kt.path, log, "rev-parse", "--absolute-git-dir")), kt.commit,
                          str(kt.path), log)


def _make_pristine(final: Path, git_dir: Path, commit: str, repository: str, log: CommandLog) -> Path:
    """Write the pristine checkout ``final`` of ``commit`` from ``git_dir`` (a repository's or a
    worktree's git directory): ``git read-tree -u`` into a temporary directory (the repository
    gets no record of it, and no checkout is touched; as long as a checkout, 25-100 s for a
    kernel), renamed into place when whole.  Raises :class:`SetupError` if git fails."""
    if os.path.lexists(final):  # not one of ours: renamed into place only with its record
        remove_tree(final)
    tmp = free_temp_name(final)
    (tmp / "tree").mkdir(parents=True)
    try:
        res = run([*GIT, "-c", "core.splitIndex=false", "--git-dir", git_dir, "--work-tree", tmp / "tree",
                   "read-tree", "--reset", "-u", commit], log, env={"GIT_INDEX_FILE": str(tmp / "index")})
        if res.returncode != 0:
            raise SetupError(f"git read-tree -u {commit[:12]} of {repository} into {tmp} failed:\n{tail(res.output)}")
        (tmp / PRISTINE_RECORD).write_text(json.dumps({"repository": repository, "commit": commit}, indent=2))
        os.rename(tmp, final)
    except BaseException:
        remove_tree(tmp)
        raise
    return final


def _pristine_path(kt: KernelTree, cache: Cache) -> Path:
    return cache.root / PRISTINE_DIR / content_key(str(kt.path))


def _fill(path: Path, pristine: Path | None, log: CommandLog) -> None:
    """Give the worktree at ``path`` (HEAD set, no source files) the files of its HEAD: hard
    links to the files of ``pristine`` (:func:`pristine_checkout`) and a copy of its index,
    then ``git reset --hard``, which writes only the files where HEAD differs from the pristine
    commit, each as a new file (a linked one is never written into).  Without a pristine
    checkout, or on a file system that refuses hard links, ``git reset --hard`` writes every
    file (25-100 s for a kernel).  Raises :class:`SetupError` if git fails."""
    admin = worktree_admin(path)
    if pristine is not None and admin is not None:
        res = run(["cp", "-al", "--", f"{pristine / 'tree'}/.", path], log)
        if res.returncode == 0:
            shutil.copyfile(pristine / "index", admin / "index")
        else:  # EXDEV, EPERM, EMLINK: what was linked goes, git writes the files
            for entry in path.iterdir():
                if entry.name == ".git" or entry.name.startswith("build-"):
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    remove_tree(entry)
                else:
                    entry.unlink()
    res = run([*GIT, "-C", path, "reset", "--hard", "--quiet", "HEAD"], log)
    if res.returncode != 0:
        raise SetupError(f"git reset --hard in the worktree {path} failed:\n{tail(res.output)}")


def _release(path: Path, record: dict) -> Path:
    """Move the source files of the worktree at ``path`` out of it, keeping ``.git`` and
    ``build-*``, into a temporary directory beside it (``.NAME.<pid>.tmp``: renames, at once);
    return that directory, for :func:`_purge` to delete.  The record says released before any
    file goes, so an interrupted release is restored in full by :func:`ensure_checkout`.  The
    record keeps its mtime: it is the worktree's last use (:func:`release_checkouts`,
    ``harness gc``), and a release is no use."""
    last_used = path.with_suffix(".json").stat()
    _write_record(path, {**record, "checked_out": False})
    os.utime(path.with_suffix(".json"), ns=(last_used.st_atime_ns, last_used.st_mtime_ns))
    trash = free_temp_name(path)
    trash.mkdir()
    for entry in path.iterdir():
        if entry.name != ".git" and not entry.name.startswith("build-"):
            os.rename(entry, trash / entry.name)
    return trash


def _purge(trash: Path, log: CommandLog | None) -> None:
    """Delete ``trash`` (a released checkout, some 80,000 files: 20-30 s on a loaded 2-core
    machine) in a detached ``rm -rf`` that outlives the harness, as ``git gc --auto`` detaches:
    the run that released it does not wait, under the cache's lock or at its exit.  An ``rm``
    that is stopped leaves the temporary name, which ``harness doctor`` reports and ``harness
    gc`` deletes."""
    argv = ["rm", "-rf", "--", str(trash)]
    if log is not None:
        log.write(f"$ {' '.join(argv)} &  # detached\n")
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


def release_checkouts(cache: Cache, keep: Path | None = None, kept: int = CHECKOUTS_KEPT,
                      log: CommandLog | None = None) -> list[Path]:
    """Release the source of every checked-out worktree in the cache but the ``kept`` most
    recently used (``keep`` counts as the most recent); return the released paths.  A
    worktree's last use is its record's mtime, set by :func:`apply_series`.  The released
    files are deleted in the background (:func:`_purge`)."""
    records = sorted(((rec.stat().st_mtime, rec.with_suffix(""))
                      for rec in (cache.root / "worktrees").glob("*.json")), reverse=True)
    order = ([keep] if keep else []) + [path for _, path in records if path != keep]
    released = []
    for path in order[kept:]:
        record = _worktree_record(path)
        if record is not None and record.get("checked_out", True):
            _purge(_release(path, record), log)
            released.append(path)
    return released


def release_pristines(cache: Cache, keep: Path | None = None, kept: int = PRISTINES_KEPT,
                      log: CommandLog | None = None) -> list[Path]:
    """Delete every pristine checkout but the ``kept`` most recently used (``keep`` counts as
    the most recent), and any whose repository is gone (a test's, a deleted clone); return
    their paths.  Worktrees keep the files they link (a file goes with its last link); a
    released worktree whose pristine checkout is gone makes it again (:func:`ensure_checkout`).
    Renamed aside at once, deleted in the background (:func:`_purge`)."""
    found = []
    for path in (cache.root / PRISTINE_DIR).glob("[!.]*"):  # not one being deleted (.KEY.<pid>.tmp)
        with contextlib.suppress(OSError, ValueError):
            record = path / PRISTINE_RECORD
            found.append((record.stat().st_mtime, path, json.loads(record.read_text()).get("repository", "")))
    found.sort(reverse=True)
    order = [f for f in found if f[1] == keep] + [f for f in found if f[1] != keep]
    released = []
    for i, (_, path, repository) in enumerate(order):
        if i >= kept or (path != keep and not Path(repository).exists()):
            trash = free_temp_name(path)
            os.rename(path, trash)
            _purge(trash, log)
            released.append(path)
    return released


def apply_series(kt: KernelTree, base: str, patches: tuple, cache: Cache, log: CommandLog,
                 series_version: int | None = None, series_base: str | None = None,
                 say=lambda message: None) -> AppliedTree:
    """Return a worktree of ``kt`` at ``base`` with ``patches`` applied by ``git am --3way``.

    ``patches`` are :class:`harness.series.Patch` objects (may be empty: a plain
    checkout of ``base``).  Each (tree, base, patches) gets its own worktree
    under ``$HARNESS_CACHE/worktrees/``, created once and reused (the worktrees beyond
    :data:`CHECKOUTS_KEPT` are released; a released one gets its source back from git only
    when something is built in it: a cached build boots without it).  The user's
    checkout, branches, index and stash are not touched (git records the
    worktree under ``.git/worktrees/`` only).  Raises :class:`ApplyError`
    (exit 4) naming the patch, file and hunk that failed; nothing half-applied
    is left behind.  Holds the cache's sources lock meanwhile.
    """
    with cache.sources_lock():
        return _apply_series(kt, base, patches, cache, log, series_version, series_base, say)


def _apply_series(kt: KernelTree, base: str, patches: tuple, cache: Cache, log: CommandLog,
                  series_version: int | None, series_base: str | None, say) -> AppliedTree:
    """The work of :func:`apply_series`, the lock held."""
    key = content_key(str(kt.path), base, *(p.raw for p in patches))
    final = cache.root / "worktrees" / key
    release_checkouts(cache, keep=final, log=log)
    if rec := _worktree_record(final):
        if "pristine" not in rec:  # made before worktrees linked their files: from now on they may
            rec = {**rec, "pristine": str(_pristine_path(kt, cache))}
            _write_record(final, rec)
        os.utime(final.with_suffix(".json"))  # its source comes back when a build needs it (ensure_checkout)
        release_pristines(cache, keep=Path(rec["pristine"]), log=log)
        return AppliedTree(final, rec["commit"], rec["describe"], kt, base, series_version,
                           tuple(tuple(x) for x in rec["patch_commits"]))
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # a worktree without its record: an interrupted earlier attempt
        _remove_worktree(kt, final, log)
    pristine = pristine_checkout(kt, cache, log, say)
    release_pristines(cache, keep=pristine, log=log)
    tmp = final.with_name(f"{key}.tmp-{os.getpid()}")
    res = run([*GIT, "-C", kt.path, "worktree", "add", "--no-checkout", "--detach", tmp, base], log)
    if res.returncode != 0:
        raise SetupError(f"git worktree add {tmp} {base[:12]} failed in {kt.path}:\n{tail(res.output)}")
    try:
        _fill(tmp, pristine, log)
        if patches:
            with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=f".{key}.mails-") as mails:
                files = []
                for p in patches:
                    f = Path(mails) / f"{p.index:04d}.patch"
                    f.write_bytes(p.raw if p.raw.startswith(b"From ")
                                  else b"From harness Mon Sep 17 00:00:00 2001\n" + p.raw)
                    files.append(f)
                res = run([*GIT, "-C", tmp, "am", "--3way", "--committer-date-is-author-date", *files], log,
                          env=_AM_IDENTITY)
            if res.returncode != 0:
                run([*GIT, "-C", tmp, "am", "--abort"], log)
                failed_at = _AM_FAILED_AT.search(res.output)
                raise ApplyError(_apply_failure(res.output, patches, kt, base, series_base),
                                 patches[int(failed_at["num"]) - 1].index
                                 if failed_at and 0 < int(failed_at["num"]) <= len(patches) else None)
        shas = _git(tmp, log, "rev-list", "--reverse", f"{base}..HEAD").split()
        commit = _git(tmp, log, "rev-parse", "HEAD")
        applied = tuple((p.index, p.subject, sha) for p, sha in zip(patches, shas))
        describe = f"{kt.describe}+v{series_version}.{len(patches)}" if patches else kt.describe
        res = run([*GIT, "-C", kt.path, "worktree", "move", tmp, final], log)
        if res.returncode != 0:
            raise SetupError(f"git worktree move {tmp} {final} failed:\n{tail(res.output)}")
    except BaseException:
        _remove_worktree(kt, tmp, log)
        raise
    _write_record(final, {"commit": commit, "describe": describe, "base": base,
                          "patch_commits": applied, "checked_out": True, "pristine": str(pristine)})
    return AppliedTree(final, commit, describe, kt, base, series_version, applied)


def worktree_admin(path: Path) -> Path | None:
    """git's administrative directory of the linked worktree at ``path``
    (``<repository>/.git/worktrees/<name>``, from the ``gitdir:`` line of ``path/.git``), or None
    when ``path`` has no such ``.git`` file (not a worktree, or its ``.git`` is gone)."""
    try:
        text = (path / ".git").read_text(errors="replace")
    except OSError:
        return None
    m = _GITDIR_LINE.match(text)
    return (path / m["dir"].strip()).resolve() if m else None


def worktree_repository(admin: Path) -> Path:
    """The git directory (``<repository>/.git``) that owns the worktree administrative directory
    ``admin`` (its ``commondir`` file, else the directory two levels up)."""
    try:
        common = (admin / "commondir").read_text().strip()
    except OSError:
        common = "../.."
    return (admin / common).resolve()


def unregister_worktree(admin: Path, log: CommandLog) -> str | None:
    """Drop git's record (``admin``, see :func:`worktree_admin`) of a linked worktree whose
    directory was moved away or deleted: ``git worktree remove --force <its old path>`` in the
    repository that owns it, which deletes that one record and nothing else, so a user's
    repository keeps its other worktrees (even stale ones), branches, index and stash.

    Returns None when there is no record left (or no repository to keep one), else why it was
    left (a directory is back at the old path, git failed); raises
    :class:`~harness.errors.CommandTimeout` past :data:`harness.timeouts.COMMAND` seconds."""
    if not admin.is_dir():
        return None
    repository = worktree_repository(admin)
    if not (repository / "worktrees").is_dir():
        return None  # the repository is gone (a test's, a deleted clone), and its records with it
    try:
        old = Path(os.path.normpath(admin / (admin / "gitdir").read_text().strip())).parent  # may be relative
    except OSError as e:
        return f"git's record {admin} has no readable gitdir file ({e.strerror})"
    if old.exists():
        return f"{old} is a directory again; its record {admin} stays"
    res = run([*GIT, "--git-dir", repository, "worktree", "remove", "--force", old], log,
              timeout=timeouts.COMMAND)
    if res.returncode != 0:
        return f"git worktree remove --force {old} in {repository} failed: {tail(res.output, 3)}"
    return None


def _remove_worktree(kt: KernelTree, path: Path, log: CommandLog) -> None:
    run([*GIT, "-C", kt.path, "worktree", "remove", "--force", path], log)
    shutil.rmtree(path, ignore_errors=True)
    run([*GIT, "-C", kt.path, "worktree", "prune"], log)


def _apply_failure(output: str, patches: tuple, kt: KernelTree, base: str, series_base: str | None) -> str:
    """Turn ``git am`` output into a message naming patch, file and hunk."""
    lines = []
    if m := _AM_FAILED_AT.search(output):
        n = int(m["num"])
        p = patches[n - 1] if 0 < n <= len(patches) else None
        lines.append(f"patch {p.index}/{p.total} did not apply: {p.subject!r} ({p.origin})" if p
                     else f"patch {n} did not apply: {m['subject']}")
    else:
        lines.append("git am failed")
    for m in _AM_HUNK.finditer(output):
        lines.append(f"  hunk failed: {m['file']}:{m['line']}")
    for m in _AM_FILE.finditer(output):
        lines.append(f"  {m['file']}: {m['why']}")
    for m in _AM_CONFLICT.finditer(output):
        lines.append(f"  3-way merge conflict in {m['file']}")
    lines.append(f"  applied on {base[:12]} in {kt.path} (HEAD {kt.commit[:12]}, {kt.describe})"
                 + (f"; the series asks for base-commit {series_base}" if series_base else ""))
    lines.append("  Nothing was left applied. Pass --base with the commit the revision was written "
                 "against, or a tree that has it (--tree).")
    return "\n".join(lines)
