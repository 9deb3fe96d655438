"""Build once, boot many: guest artifacts exported by one job and booted by others.

``harness prebuild MATRIX [--cell PATTERN | --build ID] --out DIR`` builds the guest artifacts
of each distinct build of the selected cells and writes them to ``DIR/<build id>/``:
``Image``, ``System.map``, ``.config``, ``build.log``, the guest modules under ``modules/``,
``initramfs.cpio.gz`` with its gen_init_cpio spec, and ``artifacts.json`` (written last, the
directory is renamed into place: :func:`harness.cache.atomic_dir`).

``harness matrix MATRIX --cell ID --prebuilt DIR`` then boots from those files through
:class:`PrebuiltArtifacts` (a :attr:`harness.pipeline.CellHooks.artifacts` callable): no tree
checkout, no compiler, no make.  It refuses a directory whose recorded :func:`request_key`
is not the cell's, or whose initramfs does not have its recorded sha256.

A *build* is a distinct (tree, revision, kconfig, ...) request: the :class:`Request` without
the fields that only concern the boot (profile, boot timeout) or the host (``make -j``).
Its :func:`build_id` is readable and stable across machines (CI job names);
its :func:`request_key` also covers the content of what is built from the repository (the
revision's files, the kconfig fragments, guest-rootfs/), so artifacts of another checkout
are refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from harness import errors, modules, qemu, rootfs, tree
from harness.build import BuildResult
from harness.cache import atomic_dir, atomic_write, content_key, file_sha256, pid_temp_name
from harness.errors import HarnessError, UsageError
from harness.paths import DATA_ROOT
from harness.pipeline import GuestArtifacts, Request, Say, series_record
from harness.proc import CommandLog

#: The version of ``artifacts.json``'s shape.
SCHEMA = 1
RECORD = "artifacts.json"


def build_request(req: Request) -> Request:
    """``req`` without what does not change the build: profile, boot timeout, ``make -j``."""
    return replace(req, profile="", boot_timeout=0.0, jobs=None)


def _repo_relative(spec: str | None) -> str | None:
    """A path under the repository as a repository-relative POSIX path (the same on every
    machine), anything else unchanged."""
    if spec is None:
        return None
    p = Path(spec)
    if p.is_absolute() and p.resolve().is_relative_to(DATA_ROOT):
        return p.resolve().relative_to(DATA_ROOT).as_posix()
    return spec


def _fields(req: Request) -> dict:
    b = build_request(req)
    return {"series": _repo_relative(b.series), "tree": b.tree, "base": b.base, "upto": b.upto,
            "series_version": b.series_version,
            "b4_local_mbox": str(b.b4_local_mbox) if b.b4_local_mbox else None, "kconfig": list(b.fragments)}


def build_id(req: Request) -> str:
    """A readable name of ``req``'s build, stable across machines, usable as a directory and CI
    job name (``[a-z0-9.-]``): the revision and ``-on-TREE`` for an explicit tree
    (``bare-TREE`` without a series), ``-k-FRAGMENTS`` for non-default kconfig, and a short key of the other
    fields when any is set (``base``, ``upto``, ...).  E.g. ``v9-backport-7.2-on-debian-7.2``."""
    f = _fields(req)
    if f["series"]:
        name = Path(f["series"]).as_posix().removeprefix("patches/")
        if f["tree"]:
            name += f"-on-{Path(f['tree']).name}"
    else:
        name = f"bare-{Path(f['tree'] or tree.DEFAULT_TREE).name}"
    if req.kconfig:
        name += "-k-" + "-".join(req.kconfig)
    if any(f[k] is not None for k in ("base", "upto", "series_version", "b4_local_mbox")):
        name += "-" + content_key(json.dumps(f, sort_keys=True), length=8)
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def _content(path: Path) -> list[str]:
    """``relative path sha256`` of every file under ``path`` (or of ``path`` itself), sorted."""
    if path.is_file():
        return [f"{path.name} {file_sha256(path)}"]
    if not path.is_dir():
        return []
    return sorted(f"{p.relative_to(path).as_posix()} {file_sha256(p)}" for p in path.rglob("*") if p.is_file())


def request_key(req: Request) -> str:
    """The key of ``req``'s build (16 hex digits): :func:`harness.cache.content_key` over the
    build's request fields (series relative to the repository, tree, base, upto, kconfig
    fragment names, ...) and the content of the files of the repository it is built from (the
    revision directory, the fragments, guest-rootfs/).  The same on every checkout of the same
    commit; independent of the QEMU profile and boot timeout.  Raises ConfigError for an
    unknown kconfig fragment."""
    parts = [json.dumps(_fields(req), sort_keys=True)]
    if req.series and Path(req.series).exists():
        parts += _content(Path(req.series))
    for frag in req.fragment_files():
        parts += _content(frag)
    parts += _content(DATA_ROOT / "guest-rootfs")
    return content_key(*parts)


def _error_record(e: HarnessError) -> dict:
    return {"type": type(e).__name__, "message": str(e), "exit_code": e.exit_code}


def export(req: Request, art: GuestArtifacts | HarnessError | str, out: Path) -> Path:
    """Write ``out/<build id>/`` for ``req`` from ``art``: the artifacts, or the error its build
    ended with (recorded, so every cell booting from it fails the same way), or a skip reason
    (str).  Replaces an earlier directory of the same id; atomic (a reader sees the old one or
    the whole new one, never a half).  Returns the directory."""
    final = out / build_id(req)
    record: dict = {"schema": SCHEMA, "build_id": final.name, "key": request_key(req), "request": _fields(req)}
    old = None
    if final.exists():
        old = pid_temp_name(final)
        os.rename(final, old)
    try:
        with atomic_dir(final) as tmp:
            tmp.chmod(0o755)  # mkdtemp's 0700 would keep other users (a lab's runner) out
            if isinstance(art, str):
                record["skipped"] = art
            elif isinstance(art, HarnessError):
                record["error"] = _error_record(art)
            else:
                b = art.build
                for src, name in ((b.image, "Image"), (b.system_map, "System.map"), (b.config, ".config"),
                                  (b.log, "build.log"), (art.initramfs.path, "initramfs.cpio.gz")):
                    if Path(src).is_file():
                        shutil.copy2(src, tmp / name)
                (tmp / "initramfs.spec").write_text(art.initramfs.spec)
                (tmp / "modules").mkdir()
                for m in art.modules:
                    shutil.copy2(m.ko, tmp / "modules" / m.ko.name)
                t = art.tree
                record.update(
                    build={"key": b.key, "tree_commit": b.tree_commit, "gcc_version": b.gcc_version,
                           "seconds": round(b.seconds, 3), "cache_hit": b.cache_hit,
                           "config": list(req.fragments)},
                    initramfs={"sha256": art.initramfs.sha256},
                    modules=[{"name": m.name, "file": m.ko.name} for m in art.modules],
                    tree={"path": str(t.source.path), "worktree": str(t.path), "commit": t.commit,
                          "base": t.base, "describe": t.describe, "version": t.version, "embedded": t.embedded,
                          "name": t.source.name, "series_version": t.series_version,
                          "patches": [list(p) for p in t.patch_commits]},
                    series=series_record(art.series, len(t.patch_commits)),
                    timings={"apply": round(art.apply_seconds, 3), "build": round(art.build_seconds, 3)})
            atomic_write(tmp / RECORD, json.dumps(record, indent=2) + "\n")
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _reraise(rec: dict, where: Path) -> None:
    cls = getattr(errors, rec.get("type", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, HarnessError)):
        cls = errors.BuildError
    raise cls(f"{rec.get('message', '')} (recorded by the prebuild in {where})")


@dataclass
class PrebuiltArtifacts:
    """A :attr:`harness.pipeline.CellHooks.artifacts` callable that boots from ``root``
    (a ``harness prebuild --out`` directory) instead of building: ``(req, log, say) ->``
    :class:`GuestArtifacts` whose files are those of ``root/<build id>/``.

    Raises UsageError (exit 2) when there is no such directory, when its recorded key is not
    ``req``'s (naming both), or when the initramfs does not have its recorded sha256; the
    recorded error of a build that failed (BuildError, ...); UsageError for a skipped build."""

    root: Path

    def __call__(self, req: Request, log: CommandLog | None = None, say: Say = lambda m: None) -> GuestArtifacts:
        bid, key = build_id(req), request_key(req)
        where = self.root / bid
        path = where / RECORD
        if not path.is_file():
            have = sorted(p.name for p in self.root.iterdir() if (p / RECORD).is_file()) if self.root.is_dir() else []
            raise UsageError(f"--prebuilt {self.root}: no {bid}/{RECORD} for this cell's build "
                             f"(have: {', '.join(have) or 'nothing'}); run `harness prebuild` for it")
        try:
            rec = json.loads(path.read_text())
        except ValueError as e:
            raise UsageError(f"{path}: unreadable ({e}); run `harness prebuild` again") from None
        if rec.get("key") != key:
            raise UsageError(f"{path}: recorded key {rec.get('key')} is not this cell's build key {key} "
                             f"({bid}): built from another checkout, revision or kconfig; run `harness prebuild` "
                             "again from this checkout")
        if "skipped" in rec:
            raise UsageError(f"{path}: the prebuild skipped this build: {rec['skipped']}")
        if "error" in rec:
            _reraise(rec["error"], where)
        initrd = where / "initramfs.cpio.gz"
        got = file_sha256(initrd) if initrd.is_file() else "(missing)"
        if got != rec["initramfs"]["sha256"]:
            raise UsageError(f"{initrd}: sha256 {got} is not the recorded {rec['initramfs']['sha256']}: "
                             "a damaged or partial download; fetch the build's artifacts again")
        if not (where / "Image").is_file():
            raise UsageError(f"{where}: no Image; fetch the build's artifacts again")
        say(f"build: prebuilt {bid} ({rec['build']['key']}) from {where}")
        t = rec["tree"]
        source = tree.KernelTree(Path(t["path"]), t["commit"], t["version"], t["describe"], t["embedded"],
                                 t.get("name") or "")
        applied = tree.AppliedTree(Path(t["worktree"]), t["commit"], t["describe"], source, t["base"],
                                   t["series_version"], tuple(tuple(p) for p in t["patches"]))
        b = rec["build"]
        built = _build_result(where, b)
        mods = tuple(modules.GuestModule(m["name"], where / "modules" / m["file"]) for m in rec["modules"])
        spec = (where / "initramfs.spec").read_text() if (where / "initramfs.spec").is_file() else ""
        initramfs = rootfs.Initramfs(initrd, rec["initramfs"]["sha256"], spec)
        profile = qemu.find_profile(DATA_ROOT / "qemu-profiles", req.profile)
        return GuestArtifacts(applied, None, built, mods, initramfs, profile, 0.0, 0.0,
                              prebuilt=where, series_doc=rec["series"])


def _build_result(where: Path, b: dict) -> BuildResult:
    return BuildResult(b["key"], where, where / "Image", where / "System.map", where / ".config",
                       where / "build.log", 0.0, True, b["tree_commit"], b["gcc_version"])


def distinct_builds(cells) -> dict[str, list]:
    """Build id -> the cells (of a matrix, in order) that boot that build."""
    out: dict[str, list] = {}
    for cell in cells:
        out.setdefault(build_id(cell.request), []).append(cell)
    return out

