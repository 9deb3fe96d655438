"""Build the guest initramfs from ``guest-rootfs/`` with the kernel's ``gen_init_cpio``.

The archive is described by ``guest-rootfs/rootfs.yaml`` (directories,
device nodes, files from the recipe directory, binaries from the arm64
sysroot plus the shared libraries they need).  The kernel's own
``usr/gen_init_cpio`` (built on the host from the tree) writes it with every
mtime fixed and owner 0, and it is gzipped without a name or timestamp, so
the same inputs always give the same bytes.  Archives are stored in the
cache under their content hash.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness import schemas
from harness.cache import Cache, atomic_write, content_key, file_sha256
from harness.config import load_document
from harness.errors import ConfigError, SetupError
from harness.proc import CommandLog, run, tail
from harness.tree import show_file

#: ``readelf -d`` line naming a needed library.
_NEEDED = re.compile(r"\(NEEDED\)\s+Shared library: \[(?P<lib>[^\]]+)\]")
#: ``readelf -l`` line naming the program interpreter.
_INTERP = re.compile(r"Requesting program interpreter: (?P<path>\S+)\]")

#: Where Debian's arm64 ld.so looks for libraries.
_LIB_DIRS = ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib", "usr/lib")

#: Fixed mtime (seconds since the epoch) for every archive member.
ARCHIVE_MTIME = 0


@dataclass(frozen=True)
class Initramfs:
    """A built initramfs: ``path`` of the cpio.gz, its ``sha256``, and the gen_init_cpio ``spec``."""

    path: Path
    sha256: str
    spec: str


def load_recipe(recipe_dir: Path) -> dict:
    """Load ``recipe_dir/rootfs.yaml``, validated against :data:`harness.schemas.ROOTFS_RECIPE`,
    whose ``files`` must exist in ``recipe_dir``; raises :class:`ConfigError` naming file, line and key."""
    doc = load_document(recipe_dir / "rootfs.yaml", schemas.ROOTFS_RECIPE)
    for i, entry in enumerate(doc.data["files"]):
        if not (recipe_dir / entry["src"]).is_file():
            raise ConfigError(f"{doc.where('files', i, 'src')}: {recipe_dir / entry['src']} does not exist")
    return doc.data


def gen_init_cpio(tree: Path, cache: Cache, log: CommandLog) -> Path:
    """Return the host ``gen_init_cpio`` built from ``tree/usr/gen_init_cpio.c`` (cached by source
    hash), read from git's ``HEAD`` when ``tree`` is a worktree whose checkout was released.
    Raises :class:`SetupError` when neither has it or the host gcc fails."""
    source = tree / "usr" / "gen_init_cpio.c"
    from_git = not source.is_file()
    if from_git:
        source = cache.path("tools", f".gen_init_cpio.{os.getpid()}.c")
        show_file(tree, "HEAD:usr/gen_init_cpio.c", source, log)
    try:
        tool = cache.path("tools", f"gen_init_cpio-{file_sha256(source)[:16]}")
        if tool.is_file():
            return tool
        tmp = tool.with_name(f".{tool.name}.{os.getpid()}.tmp")  # unique: another harness may build it too
        res = run(["gcc", "-O2", "-o", tmp, source], log)
        if res.returncode != 0:
            raise SetupError(f"building {source} with the host gcc failed:\n{tail(res.output)}")
        tmp.replace(tool)
        return tool
    finally:
        if from_git:
            source.unlink(missing_ok=True)


def _elf_deps(binary: Path, sysroot: Path, log: CommandLog) -> dict[str, Path]:
    """Return ``{guest path: host file}`` for the interpreter and the NEEDED libraries of
    ``binary``, and theirs in turn (dropbear needs libtomcrypt, which needs libgmp).

    Raises :class:`SetupError` when a library is not in the sysroot.
    """
    deps: dict[str, Path] = {}
    todo, seen = [binary], set()
    while todo:
        elf = todo.pop()
        out = run(["aarch64-linux-gnu-readelf", "-d", "-l", "-W", elf], log).output
        if m := _INTERP.search(out):
            deps[m["path"]] = (sysroot / m["path"].lstrip("/")).resolve()
        for lib in _NEEDED.findall(out):
            if lib in seen:
                continue
            seen.add(lib)
            found = next((sysroot / d / lib for d in _LIB_DIRS if (sysroot / d / lib).exists()), None)
            if found is None:
                raise SetupError(f"{elf.name} needs {lib}, which is not in the sysroot {sysroot}")
            deps.setdefault(f"/lib/aarch64-linux-gnu/{lib}", found.resolve())
            todo.append(found.resolve())
    return deps


def spec_lines(recipe: dict, recipe_dir: Path, sysroot: Path, log: CommandLog,
               extra_files: tuple[tuple[Path, str], ...] = ()) -> list[str]:
    """Return the sorted gen_init_cpio spec (usr/gen_init_cpio.c documents the format).

    ``extra_files`` are ``(host path, guest path)`` pairs added with mode 0644
    (kernel modules, later).
    """
    lines = [f"dir {d} 0755 0 0" for d in recipe["dirs"]]
    for n in recipe.get("nodes") or []:
        lines.append(f"nod {n['path']} {n['mode']} 0 0 {n['type']} {n['major']} {n['minor']}")
    for f in recipe["files"]:
        lines.append(f"file {f['dest']} {(recipe_dir / f['src']).resolve()} {f['mode']} 0 0")
    for f in recipe.get("sysroot") or []:
        src = sysroot / f["src"]
        if not src.is_file():
            raise SetupError(f"{src} missing from the arm64 sysroot; run `make setup`")
        lines.append(f"file {f['dest']} {src.resolve()} {f['mode']} 0 0")
        if f.get("libs"):
            lines += [f"file {g} {h} 0755 0 0" for g, h in _elf_deps(src, sysroot, log).items()]
    lines += [f"file {guest} {host.resolve()} 0644 0 0" for host, guest in extra_files]
    return sorted(set(lines), key=lambda line: line.split()[1])


def build_initramfs(recipe_dir: Path, sysroot: Path, tree: Path, cache: Cache, log: CommandLog,
                    extra_files: tuple[tuple[Path, str], ...] = ()) -> Initramfs:
    """Build (or reuse) the initramfs for the recipe in ``recipe_dir``.

    Raises :class:`ConfigError` for a bad recipe and :class:`SetupError` when
    an input is missing or gen_init_cpio fails.
    """
    recipe = load_recipe(recipe_dir)
    spec = "\n".join(spec_lines(recipe, recipe_dir, sysroot, log, extra_files)) + "\n"
    # Key over each entry with its file's content in place of the host path, so the
    # key is the same on every machine and a changed /init gives a new archive.
    entries = []
    for line in spec.splitlines():
        fields = line.split()
        if fields[0] == "file":
            fields[2] = file_sha256(Path(fields[2]))
        entries.append(" ".join(fields))
    out = cache.root / "rootfs" / f"initramfs-{content_key(*entries)}.cpio.gz"
    if out.is_file():
        return Initramfs(out, file_sha256(out), spec)
    spec_file = atomic_write(out.with_suffix(".spec"), spec)
    tool = gen_init_cpio(tree, cache, log)
    cpio = out.with_name(f".{out.name}.{os.getpid()}.cpio.tmp")
    try:
        res = run([tool, "-t", str(ARCHIVE_MTIME), spec_file], log, stdout_file=cpio)
        if res.returncode != 0:
            raise SetupError(f"gen_init_cpio failed on {spec_file}:\n{tail(res.output)}")
        data = gzip.compress(cpio.read_bytes(), compresslevel=9, mtime=0)
    finally:
        cpio.unlink(missing_ok=True)
    atomic_write(out, data)
    return Initramfs(out, hashlib.sha256(data).hexdigest(), spec)
