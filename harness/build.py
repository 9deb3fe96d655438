"""Cross-build the kernel ``Image`` and modules into a keyed ``O=`` directory.

The source is always a worktree in the cache (:func:`harness.tree.apply_series`)
and ``O=`` is ``<worktree>/build-<key>``: an immediate subdirectory, for which
Kbuild sets ``srctree := ..`` (top-level Makefile), so every path the compiler
sees is relative and the same in every worktree, and ccache hits when
switching between revisions.  The key covers the tree commit, the merged
kconfig fragment and the compiler version, so an unchanged input is a cache
hit and is not rebuilt.  A build is complete only when ``harness-build.json`` exists in its
directory (written last, atomically); an interrupted build is resumed by
``make`` on the next run, after the files it wrote are discarded (:func:`discard_unfinished`).
A finished build keeps only what is read again (:func:`trim`): its objects are not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import timeouts
from harness.cache import Cache, atomic_write, content_key, require_space
from harness.errors import BuildError, HarnessError
from harness.kconfig import Request, configure, render
from harness.proc import CommandLog, every, minutes, run
from harness.toolchain import Toolchain
from harness.tree import AppliedTree, ensure_checkout

#: gcc/clang diagnostics: ``path/file.c:12:5: error: message``.
_COMPILER_ERROR = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?:(?P<col>\d+):)? (?:fatal )?error: (?P<msg>.*)$")
#: Linker and Kbuild failures when there is no compiler diagnostic.
_OTHER_ERROR = re.compile(r"(undefined reference to|^ERROR: |\*\*\* \[|No rule to make target)")

#: Kbuild targets for the guest kernel.
TARGETS = ("Image", "modules")

MARKER = "harness-build.json"

#: A Kbuild step in quiet output: ``  CC      kernel/fork.o``, ``  CC [M]  drivers/...``, ``  LD      vmlinux``.
_STEP = re.compile(rb"^  [A-Z][A-Z0-9_]+ ", re.M)

#: The steps each (kernel version, kconfig) last needed: the progress bar's 100 %.
_STEPS_FILE = "build-steps.json"


@dataclass(frozen=True)
class BuildProgress:
    """A running build: ``steps`` Kbuild steps done (``CC``, ``LD``, ...) of ``expected`` (the
    steps the last build of this kernel version and kconfig needed; None when there was none),
    ``elapsed`` seconds."""

    steps: int
    expected: int | None
    elapsed: float

    @property
    def remaining(self) -> float | None:
        """Seconds left at the rate so far, or None without an expected count."""
        if not self.expected or not self.steps or self.steps >= self.expected:
            return None
        return self.elapsed * (self.expected - self.steps) / self.steps

    def line(self, width: int = 20) -> str:
        """``build [#######-------------] 35% 1012/2890 steps, 4m10s elapsed, ~7m45s left``."""
        if not self.expected:
            return f"build: {self.steps} steps, {minutes(self.elapsed)} elapsed (first build of this kconfig)"
        share = min(1.0, self.steps / self.expected)
        bar = "#" * round(share * width) + "-" * (width - round(share * width))
        left = f", ~{minutes(self.remaining)} left" if self.remaining is not None else ""
        return (f"build [{bar}] {share:4.0%} {self.steps}/{self.expected} steps, "
                f"{minutes(self.elapsed)} elapsed{left}")


def count_steps(build_log: Path) -> int:
    """The Kbuild steps in ``build_log`` so far (0 when it does not exist yet)."""
    try:
        return len(_STEP.findall(build_log.read_bytes()))
    except FileNotFoundError:
        return 0


#: Touched when a build starts in an ``O=`` directory, removed when it completes: a build
#: killed half-way (SIGKILL of the harness, an interrupted matrix) leaves it behind.
_STARTED = "harness-build.started"


def discard_unfinished(out_dir: Path, started: Path) -> int:
    """Delete the files of ``out_dir`` that a killed build wrote (modified at or after
    ``started``'s time): a compiler or Kbuild's fixdep killed mid-write leaves a truncated
    object or ``.*.cmd`` file that breaks the next make (measured: ``kernel/irq/.chip.o.cmd:5:
    *** unterminated call to function 'wildcard'``); make rebuilds what is missing, ccache
    makes that cheap.  Returns how many files were deleted."""
    since = started.stat().st_mtime_ns
    removed = 0
    for root, _dirs, files in os.walk(out_dir):
        for name in files:
            path = Path(root) / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if path != started and st.st_mtime_ns >= since:
                path.unlink()
                removed += 1
    return removed


#: What a finished build's ``O=`` directory keeps out of :func:`trim`: the host programs and
#: module build files under ``scripts/``, and the guest modules' own build directory.
_TRIM_KEEP_DIRS = ("scripts", "harness-modules")


def _intermediate(name: str) -> bool:
    """An object, archive, their ``.*.cmd`` dependency files, or an intermediate vmlinux."""
    return (name.endswith((".o", ".a")) or (name.startswith(".") and name.endswith((".o.cmd", ".a.cmd")))
            or name.startswith(".tmp_vmlinux"))


def trim(out_dir: Path) -> int:
    """Delete the intermediates of a finished build in ``out_dir`` (:func:`_intermediate`), which
    no later step reads: a finished build is never made again (its key is a cache hit; another
    revision or kconfig builds in an ``O=`` directory of its own, from ccache), and the guest
    modules' ``make M=`` reads only ``.config``, ``include/``, ``scripts/`` and
    ``Module.symvers``.  ``Image``, ``vmlinux``, ``System.map``, in-tree ``.ko`` files and the
    logs stay.  Measured on a 6.12 guest build: 161 MB -> 27 MB.  Returns the bytes freed."""
    freed = 0
    for root, dirs, files in os.walk(out_dir):
        if root == str(out_dir):
            dirs[:] = [d for d in dirs if d not in _TRIM_KEEP_DIRS]
        for name in files:
            if _intermediate(name):
                path = Path(root) / name
                try:
                    freed += path.lstat().st_size
                    path.unlink()
                except FileNotFoundError:
                    pass
    return freed


@dataclass(frozen=True)
class BuildResult:
    """A finished build.

    ``image`` is ``arch/arm64/boot/Image``; ``seconds`` is the wall time of
    this invocation (0 on a cache hit); ``cache_hit`` says no make ran.
    """

    key: str
    out_dir: Path
    image: Path
    system_map: Path
    config: Path
    log: Path
    seconds: float
    cache_hit: bool
    tree_commit: str
    gcc_version: str


def build_key(tree: AppliedTree, requests: list[Request], toolchain: Toolchain) -> str:
    """Return the build directory key for this tree commit, fragment and compiler."""
    return content_key(tree.commit, render(requests), toolchain.gcc_version, toolchain.arch, *TARGETS)


def first_error(log_text: str) -> str | None:
    """Return the first compiler error as ``file:line: message`` (or another failure line)."""
    other = None
    for line in log_text.splitlines():
        if m := _COMPILER_ERROR.match(line.strip()):
            return f"{m['file']}:{m['line']}: error: {m['msg']}"
        if other is None and _OTHER_ERROR.search(line):
            other = line.strip()
    return other


def build(tree: AppliedTree, requests: list[Request], toolchain: Toolchain, log: CommandLog,
          progress=None) -> BuildResult:
    """Configure and build ``Image`` and ``modules`` for ``tree``, holding the cache's sources
    lock (the worktree and its ``O=`` directory are not released or built by another process
    meanwhile).  ``progress(BuildProgress)`` is called every
    :data:`harness.proc.PROGRESS_INTERVAL` seconds while make runs.

    Raises :class:`~harness.errors.ConfigError` if a requested symbol did not
    survive, :class:`BuildError` (exit 5) with the first compiler error and
    the build log path if make fails.
    """
    with Cache(toolchain.cache_root).sources_lock():
        return _build(tree, requests, toolchain, log, progress)


def _build(tree: AppliedTree, requests: list[Request], toolchain: Toolchain, log: CommandLog,
           progress=None) -> BuildResult:
    key = build_key(tree, requests, toolchain)
    out_dir = tree.path / f"build-{key}"
    marker = out_dir / MARKER
    if marker.is_file():
        marker.touch()  # its mtime is the build's last use (harness gc)
        if (out_dir / "vmlinux.o").exists():  # finished before builds were trimmed: trim it now
            log.write(f"# {out_dir}: trimmed {trim(out_dir) / 2**20:.0f} MB of intermediates\n")
        data = json.loads(marker.read_text())
        data.update(seconds=0.0, cache_hit=True)
        return BuildResult(**{k: Path(v) if k in _PATH_FIELDS else v for k, v in data.items()})
    fresh = not out_dir.exists()
    require_space(tree.path, "build")
    ensure_checkout(tree.path, log)
    started = out_dir / _STARTED
    if started.exists():
        removed = discard_unfinished(out_dir, started)
        log.write(f"# {out_dir}: an earlier build was killed here; removed the {removed} file(s) it wrote\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    started.touch()
    try:
        configure(tree.path, out_dir, requests, toolchain, log)
    except HarnessError:
        if fresh:  # a configuration that cannot be built leaves no cache entry behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    build_log = out_dir / "build.log"
    steps_file = toolchain.cache_root / _STEPS_FILE
    steps_key = f"{tree.version} {content_key(render(requests))}"
    try:  # read once: every build holds the sources lock, so no other writes it meanwhile
        known = json.loads(steps_file.read_text())
    except (FileNotFoundError, ValueError):
        known = {}
    expected = known.get(steps_key)
    start = time.monotonic()
    with every(lambda elapsed: progress and progress(BuildProgress(count_steps(build_log), expected, elapsed))):
        res = run(toolchain.make_argv(tree.path, out_dir, *TARGETS), log, env=toolchain.make_env(),
                  output_file=build_log, timeout=timeouts.build())
    seconds = time.monotonic() - start
    if res.returncode != 0:
        err = first_error(res.output) or "(no compiler error found; see the log)"
        raise BuildError(f"kernel build failed for {tree.describe} ({tree.commit[:12]}):\n  {err}\n"
                         f"Build log: {build_log}")
    result = BuildResult(key, out_dir, out_dir / "arch" / toolchain.arch / "boot" / "Image",
                         out_dir / "System.map", out_dir / ".config", build_log, seconds, False,
                         tree.commit, toolchain.gcc_version)
    atomic_write(marker, json.dumps({k: str(v) if isinstance(v, Path) else v
                                     for k, v in asdict(result).items()}, indent=2))
    started.unlink()
    log.write(f"# {out_dir}: trimmed {trim(out_dir) / 2**20:.0f} MB of intermediates\n")
    if fresh:  # a whole build: the count the next build of this version and kconfig will need
        atomic_write(steps_file, json.dumps({**known, steps_key: count_steps(build_log)}, indent=1))
    return result


_PATH_FIELDS = {"out_dir", "image", "system_map", "config", "log"}
