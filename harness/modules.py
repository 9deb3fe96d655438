"""Out-of-tree guest modules (``guest-rootfs/modules/<name>/``), built against a kernel build.

Each module directory is copied into the build's ``O=`` directory
(``harness-modules/<name>``, file times kept so ``make`` stays incremental)
and built with ``make -C <tree> O=<build> M=<copy> modules`` and the same
toolchain as the kernel, so the repository is never written to.  A module whose
source and kernel build are those of its last build (:data:`_STAMP`) is not made
again, so a released worktree (:func:`harness.tree.ensure_checkout`) needs no
checkout to boot its cached build.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import timeouts
from harness.build import BuildResult, first_error
from harness.cache import atomic_write, content_key
from harness.errors import BuildError
from harness.proc import CommandLog, run
from harness.toolchain import Toolchain
from harness.tree import ensure_checkout


#: In a module's build directory: the key (kernel build key, module source) of its last build.
_STAMP = ".harness-module-key"


@dataclass(frozen=True)
class GuestModule:
    """A built module: its ``name``, the ``ko`` file and where it goes in the guest."""

    name: str
    ko: Path

    @property
    def guest_path(self) -> str:
        return f"/lib/modules/{self.ko.name}"


def build_modules(modules_dir: Path, tree: Path, built: BuildResult, toolchain: Toolchain,
                  log: CommandLog) -> list[GuestModule]:
    """Build every module directory under ``modules_dir``; return them sorted by name.

    Raises :class:`BuildError` (exit 5) with the first compiler error.
    """
    result = []
    for src in sorted(p for p in modules_dir.iterdir() if (p / "Kbuild").is_file()):
        work = built.out_dir / "harness-modules" / src.name
        key = content_key(built.key, *(f.name.encode() + f.read_bytes() for f in sorted(src.iterdir()) if f.is_file()))
        stamp = work / _STAMP
        if stamp.is_file() and stamp.read_text() == key and any(work.glob("*.ko")):
            result += [GuestModule(src.name, ko) for ko in sorted(work.glob("*.ko"))]
            continue
        ensure_checkout(tree, log)
        stamp.unlink(missing_ok=True)
        shutil.copytree(src, work, dirs_exist_ok=True)
        res = run(toolchain.make_argv(tree, built.out_dir, "modules", extra=(f"M={work}",)), log,
                  env=toolchain.make_env(), output_file=work / "build.log", timeout=timeouts.build())
        if res.returncode != 0:
            raise BuildError(f"guest module {src.name} failed to build against {built.out_dir}:\n"
                             f"  {first_error(res.output) or '(see the log)'}\nBuild log: {work / 'build.log'}")
        kos = sorted(work.glob("*.ko"))
        if not kos:
            raise BuildError(f"guest module {src.name}: make succeeded but produced no .ko in {work}")
        atomic_write(stamp, key)
        result += [GuestModule(src.name, ko) for ko in kos]
    return result
