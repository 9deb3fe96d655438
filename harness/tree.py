"""Kernel source trees: the embedded default (Debian's linux-source-6.12
imported into a git repository in the cache) or a user's git checkout.

The harness never writes to a user's tree: builds go to ``O=`` directories
in the cache.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness.cache import Cache, atomic_dir
from harness.errors import SetupError, UsageError
from harness.fetch import linux_source
from harness.proc import CommandLog, run, tail

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
    ``describe`` (tag or short sha) and whether it is the embedded default."""

    path: Path
    commit: str
    version: str
    describe: str
    embedded: bool


def kernel_version(tree: Path) -> str:
    """Return ``VERSION.PATCHLEVEL.SUBLEVEL[EXTRAVERSION]`` from ``tree/Makefile``.

    Raises :class:`UsageError` if there is no kernel Makefile there.
    """
    try:
        text = (tree / "Makefile").read_text(errors="replace")[:4096]
    except OSError as e:
        raise UsageError(f"{tree} is not a kernel tree (no readable Makefile: {e.strerror})") from e
    fields = dict(_MAKEFILE_VERSION.findall(text))
    if "VERSION" not in fields or "PATCHLEVEL" not in fields:
        raise UsageError(f"{tree}/Makefile has no VERSION/PATCHLEVEL: not a kernel tree")
    return f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{fields.get('SUBLEVEL', '0')}{fields.get('EXTRAVERSION', '')}"


def _git(tree: Path, log: CommandLog, *args: str, env: dict | None = None) -> str:
    res = run(["git", "-C", tree, *args], log, env=env)
    if res.returncode != 0:
        raise SetupError(f"git {' '.join(args)} in {tree} failed:\n{tail(res.output)}")
    return res.output.strip()


def user_tree(path: Path, log: CommandLog) -> KernelTree:
    """Describe a user's kernel checkout without changing it.

    Raises :class:`UsageError` if ``path`` is not a git work tree with a kernel Makefile.
    """
    path = path.expanduser().resolve()
    version = kernel_version(path)
    res = run(["git", "-C", path, "rev-parse", "--verify", "HEAD"], log)
    if res.returncode != 0:
        raise UsageError(f"{path} is not a git checkout with a commit (git rev-parse HEAD failed); "
                         "pass a kernel git tree with --tree")
    commit = res.output.strip()
    describe = run(["git", "-C", path, "describe", "--always", "--tags", commit], log).output.strip()
    return KernelTree(path, commit, version, describe or commit[:12], embedded=False)


def embedded_tree(cache: Cache, log: CommandLog) -> KernelTree:
    """Return the embedded default tree, importing linux-source-6.12 on first use.

    The tarball is extracted, Debian's ignore-everything ``.gitignore`` block
    dropped, and the whole tree committed once with a fixed identity and date
    and tagged ``debian/<deb version>``.  Raises :class:`SetupError` on failure.
    """
    tarball = linux_source(cache, log)
    final = cache.root / "trees" / f"linux-{tarball.deb_version}"
    tag = f"debian/{tarball.deb_version}"
    if not (final / ".git").is_dir():
        with atomic_dir(final) as tmp:
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
    commit = _git(final, log, "rev-parse", "HEAD")
    return KernelTree(final, commit, kernel_version(final), tag, embedded=True)


def resolve_tree(path: str | os.PathLike | None, cache: Cache, log: CommandLog) -> KernelTree:
    """Return the user's tree at ``path``, or the embedded default when ``path`` is None."""
    if path:
        return user_tree(Path(path), log)
    return embedded_tree(cache, log)
