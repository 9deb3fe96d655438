"""kconfig fragments: parse, merge, apply on top of ``allnoconfig``, verify.

The merged fragment is passed to Kbuild as ``KCONFIG_ALLCONFIG`` for
``make allnoconfig``, which is allnoconfig + merge + olddefconfig in one
step (Documentation/kbuild/kconfig.rst).  Afterwards every requested symbol
is checked in the resulting ``.config``, as kunit_tool does: a symbol whose
dependencies are unmet silently drops out, and the build would test
something other than what was asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.cache import atomic_write
from harness.errors import BuildError, ConfigError, KconfigMismatch
from harness.proc import CommandLog, run, tail
from harness.toolchain import Toolchain

#: Fragments applied by default, in order (later ones override earlier ones).
DEFAULT_FRAGMENTS = ("base-virt-arm64", "pm-debug", "virtio", "rtc-pl031", "modules-kallsyms", "probe")

#: ``CONFIG_FOO=value`` (scripts/kconfig/confdata.c, conf_write_symbol).
_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
#: ``# CONFIG_FOO is not set``.
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Request:
    """One requested symbol: name without ``CONFIG_``, value (``y``/``m``/``n``/string),
    and the fragment file and 1-based line that asked for it."""

    symbol: str
    value: str
    file: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Mismatch:
    """A requested symbol whose value in ``.config`` differs (``actual`` ``n`` = absent)."""

    request: Request
    actual: str


@dataclass(frozen=True)
class KconfigResult:
    """The configured ``.config`` path and the requests it satisfies."""

    config: Path
    requests: tuple[Request, ...]


def fragment_paths(kconfig_dir: Path, names: tuple[str, ...] | list[str]) -> list[Path]:
    """Resolve fragment names (``virtio``) or paths to files; raises :class:`ConfigError`."""
    paths = []
    for name in names:
        p = Path(name)
        if not p.is_file():
            p = kconfig_dir / (name if name.endswith(".config") else f"{name}.config")
        if not p.is_file():
            known = ", ".join(sorted(f.stem for f in kconfig_dir.glob("*.config")))
            raise ConfigError(f"kconfig fragment {name!r} not found in {kconfig_dir} (known: {known})")
        paths.append(p)
    return paths


def parse_fragment(path: Path) -> list[Request]:
    """Parse a fragment into :class:`Request` s.

    Accepts ``CONFIG_X=v``, ``# CONFIG_X is not set``, comments and blank
    lines; raises :class:`ConfigError` naming ``file:line`` for anything else.
    """
    requests = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if m := _SET.match(line):
            requests.append(Request(m[1], m[2], path, n))
        elif m := _UNSET.match(line):
            requests.append(Request(m[1], "n", path, n))
        elif line and not line.startswith("#"):
            raise ConfigError(f"{path}:{n}: not a kconfig line: {raw!r} "
                              "(expected CONFIG_FOO=y or '# CONFIG_FOO is not set')")
    return requests


def merge(fragments: list[Path]) -> list[Request]:
    """Merge fragments in order; a later request for a symbol replaces an earlier one."""
    merged: dict[str, Request] = {}
    for path in fragments:
        for req in parse_fragment(path):
            merged.pop(req.symbol, None)
            merged[req.symbol] = req
    return list(merged.values())


def render(requests: list[Request] | tuple[Request, ...]) -> str:
    """Return the merged fragment text handed to ``KCONFIG_ALLCONFIG``."""
    lines = []
    for r in requests:
        lines.append(f"# CONFIG_{r.symbol} is not set" if r.value == "n" else f"CONFIG_{r.symbol}={r.value}")
    return "\n".join(lines) + "\n"


def parse_config(text: str) -> dict[str, str]:
    """Parse ``.config`` text into ``{symbol: value}``; unset symbols map to ``n``."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if m := _SET.match(line):
            values[m[1]] = m[2]
        elif m := _UNSET.match(line):
            values[m[1]] = "n"
    return values


def verify(requests: list[Request] | tuple[Request, ...], config: dict[str, str]) -> list[Mismatch]:
    """Return the requests whose value did not survive into ``config``."""
    return [Mismatch(r, config.get(r.symbol, "n")) for r in requests if config.get(r.symbol, "n") != r.value]


def configure(tree: Path, out_dir: Path, requests: list[Request], toolchain: Toolchain,
              log: CommandLog) -> KconfigResult:
    """Write ``out_dir/.config`` from ``allnoconfig`` plus ``requests`` and verify it.

    Raises :class:`ConfigError` (exit 2) listing every symbol that did not
    survive, with the fragment and line that requested it, and
    :class:`BuildError` if Kconfig itself fails.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    allconfig = atomic_write(out_dir / "harness-fragment.config", render(requests))
    res = run(toolchain.make_argv(tree, out_dir, "allnoconfig", extra=(f"KCONFIG_ALLCONFIG={allconfig}",)),
              log, env=toolchain.make_env())
    if res.returncode != 0:
        raise BuildError(f"make allnoconfig failed in {out_dir}:\n{tail(res.output)}")
    config = out_dir / ".config"
    mismatches = verify(requests, parse_config(config.read_text()))
    if mismatches:
        lines = "\n".join(f"  CONFIG_{m.request.symbol}: requested {m.request.value}, got {m.actual} "
                          f"({m.request.where})" for m in mismatches)
        from harness.tree import kernel_version  # tree imports nothing of kconfig: no cycle
        raise KconfigMismatch(f"{len(mismatches)} requested kconfig symbol(s) did not survive olddefconfig "
                              f"on Linux {kernel_version(tree)} ({tree}) "
                              f"(missing dependency or unknown symbol):\n{lines}\n"
                              f"Fix the fragment, or add the symbols they depend on. Resulting config: {config}")
    return KconfigResult(config, tuple(requests))
