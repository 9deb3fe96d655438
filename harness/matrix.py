"""Matrix files: which cells to run.

A *cell* is one (revision x QEMU profile x scenario); it boots its own guest.  A *matrix*
(``matrices/NAME.yaml``) declares rows of revisions (directories under ``patches/``) and
the scenarios (``scenarios/NAME.yaml``, :mod:`harness.scenarios`) to run on them;
:func:`load_matrix` expands it into :class:`Cell` values, which :mod:`harness.scheduler`
runs.
"""

from __future__ import annotations

import fnmatch
import glob
from dataclasses import dataclass, replace
from pathlib import Path

from harness import model, qemu, schemas, series, timeouts, tree
from harness.cache import Cache
from harness.config import load_document
from harness.errors import ConfigError, FetchError
from harness.paths import DATA_ROOT
from harness.pipeline import Request
from harness.proc import CommandLog
from harness.scenarios import find_scenario, with_cycles

#: The expectations of the embedded tree without any series.
BASELINE_EXPECT = DATA_ROOT / "patches" / "baseline-6.12" / "expect.yaml"


def defect_name(rev_dir: Path) -> str | None:
    """The injected defect's name when ``rev_dir`` is a defect revision (``defect.yaml``), else None."""
    return rev_dir.name if (rev_dir / "defect.yaml").is_file() else None


def expectations_file(series_spec: str | None, explicit: str | None = None) -> Path | None:
    """``explicit``, else ``expect.yaml`` beside the series (patches/NAME), else the baseline's
    when no series is applied; None when the series has none (everything expected to pass)."""
    if explicit:
        return Path(explicit)
    if series_spec:
        beside = Path(series_spec) / "expect.yaml"
        return beside if beside.is_file() else None
    return BASELINE_EXPECT


# --- Cells ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One (revision x profile x scenario): ``revision`` is its name under patches/
    (``baseline-6.12`` is the bare tree), ``request`` what to build and boot, ``expect``
    the revision's expectations file, ``defect`` the injected defect's name if any, and
    ``skip`` the reason it cannot run here (reported as SKIP, never left out)."""

    revision: str
    request: Request
    scenario: model.Scenario
    expect: Path | None
    defect: str | None = None
    skip: str | None = None

    @property
    def tree(self) -> str:
        """The tree's name: an embedded tree's (``debian-7.2``), or a checkout's directory name."""
        t = self.request.tree or tree.DEFAULT_TREE
        return t if t in tree.EMBEDDED_TREES else Path(t).name

    @property
    def id(self) -> str:
        """``revision/profile/scenario``, unique within a matrix; a revision on another tree than the
        default carries it (``defects/late-provider@debian-7.2/virt-mmio/s2idle-rtc``)."""
        on = "" if self.tree == tree.DEFAULT_TREE else f"@{self.tree}"
        return f"{self.revision}{on}/{self.request.profile}/{self.scenario.name}"

    @property
    def dirname(self) -> str:
        return self.id.replace("/", "__")


# --- Matrix files ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Matrix:
    """A loaded matrix file: its ``name``, ``path``, ``description`` and expanded ``cells``."""

    name: str
    path: Path
    description: str
    cells: tuple[Cell, ...]


def _revision_dirs(where: str, pattern: str) -> list[Path]:
    if any(ch in pattern for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(str(DATA_ROOT / "patches" / pattern)) if Path(p).is_dir())
        if not found:
            raise ConfigError(f"{where}: revision pattern {pattern!r} matches nothing under patches/")
        return found
    path = DATA_ROOT / "patches" / pattern
    if not path.is_dir():
        known = sorted(p.name for p in (DATA_ROOT / "patches").iterdir() if p.is_dir())
        raise ConfigError(f"{where}: no revision {pattern!r} under patches/ (known: {', '.join(known)})")
    return [path]


def _is_bare(rev_dir: Path) -> bool:
    """A revision directory with only an expect.yaml: the tree itself, no series."""
    return not any(p.name != "expect.yaml" for p in rev_dir.iterdir())


def _skip_reason(rev_dir: Path) -> str | None:
    """Why a manifest revision (``series.yaml``) cannot run, known without the network: its
    ``mbox:`` names a file that is not there.  Whether lore can be reached is found out when
    the cell runs (:func:`unfetchable`)."""
    if not (rev_dir / "series.yaml").is_file():
        return None
    manifest = series.load_manifest(rev_dir / "series.yaml")
    if manifest.mbox is not None and not manifest.mbox.is_file():
        return f"mbox {manifest.mbox} (named in {manifest.path}) does not exist"
    return None


def unfetchable(cell: "Cell", cache: Cache, log: CommandLog) -> str | None:
    """For a manifest cell (v6, v9): None when its series can be had (a local ``mbox:``, b4's cache,
    or lore now), else why not and the command that gets it where lore is reachable."""
    rev_dir = DATA_ROOT / "patches" / cell.revision
    if not (rev_dir / "series.yaml").is_file():
        return None
    try:
        series.load_revision(str(rev_dir), cache, log)
    except FetchError:
        manifest = series.load_manifest(rev_dir / "series.yaml")
        return (f"lore unreachable and no local mbox: `b4 am -o patches/{cell.revision} {manifest.message_id}` "
                f"where lore is reachable, then set mbox: in {manifest.path.relative_to(DATA_ROOT)} "
                f"(or run `harness run --series patches/{cell.revision}` there)")
    return None


def load_matrix(path: Path, kconfig_override: tuple[str, ...] | None = None, jobs: int | None = None,
                boot_timeout: float = timeouts.BOOT) -> Matrix:
    """Load a matrix file (``matrices/NAME.yaml``) and expand its rows into cells.

    Each row names a ``revision`` (a directory under patches/, glob allowed:
    ``defects/*``), its ``scenarios`` (names in scenarios/), optionally
    ``cycles`` (overrides every uniform scenario's count), ``profiles``,
    ``expect`` (a file relative to the repository) and ``tree`` (a kernel git
    tree or an embedded tree's name; default the default tree).  A manifest revision whose
    mbox cannot be had (no local ``mbox:``, lore unreachable) becomes a SKIP cell with the
    reason when it runs (:func:`unfetchable`).  Validated against :data:`harness.schemas.MATRIX`;
    raises ConfigError naming file, line and row."""
    doc = load_document(path, schemas.MATRIX)
    data = doc.data
    profiles = data.get("profiles", ["virt-mmio"])
    frags = kconfig_override or (tuple(data["kconfig"]) if "kconfig" in data else None)
    cells: list[Cell] = []
    for n, row in enumerate(data["rows"]):
        rw = doc.where("rows", n)
        scenarios = []
        for i, name in enumerate(row["scenarios"]):
            try:
                scenarios.append(find_scenario(name))
            except ConfigError as e:
                raise ConfigError(f"{doc.where('rows', n, 'scenarios', i)}: {e}") from None
        if "cycles" in row:
            scenarios = [with_cycles(s, row["cycles"], f"{doc.where('rows', n, 'cycles')}: ") for s in scenarios]
        for profile in row.get("profiles", profiles):
            try:
                qemu.find_profile(DATA_ROOT / "qemu-profiles", profile)  # ConfigError now, not mid-run
            except ConfigError as e:
                raise ConfigError(f"{rw}: {e}") from None
            for rev_dir in _revision_dirs(rw, row["revision"]):
                name = rev_dir.relative_to(DATA_ROOT / "patches").as_posix()
                spec = None if _is_bare(rev_dir) else str(rev_dir)
                expect = (DATA_ROOT / row["expect"] if "expect" in row else
                          rev_dir / "expect.yaml" if spec is None else expectations_file(spec))
                defect = defect_name(rev_dir)
                req = Request(series=spec, tree=row.get("tree"), kconfig=frags, jobs=jobs, profile=profile,
                              boot_timeout=boot_timeout)
                skip = _skip_reason(rev_dir)
                for s in scenarios:
                    cells.append(Cell(name, req, s, expect, defect, skip))
    ids = [c.id for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"{path}: cells declared twice: {', '.join(dupes)}")
    return Matrix(data["name"], path, data.get("description", "").strip(), tuple(cells))


def trees_used(mx: Matrix) -> list[str]:
    """The embedded trees (names) the cells of ``mx`` build on, the default tree first."""
    names = [c.request.tree or tree.DEFAULT_TREE for c in mx.cells if not c.skip]
    return [n for n in dict.fromkeys([tree.DEFAULT_TREE] + names) if n in tree.EMBEDDED_TREES]


def find_matrix(name: str, **kw) -> Matrix:
    """Load ``matrices/<name>.yaml`` (or a path to a matrix file)."""
    path = Path(name) if name.endswith(".yaml") else DATA_ROOT / "matrices" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (DATA_ROOT / "matrices").glob("*.yaml"))
        raise ConfigError(f"no matrix {name!r} (matrices/: {', '.join(known)})")
    return load_matrix(path, **kw)


def select_cells(mx: Matrix, patterns: list[str]) -> Matrix:
    """``mx`` with only the cells whose id matches one of the glob ``patterns``.

    Raises ConfigError naming a pattern that matches no cell."""
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(c.id, pat) for c in mx.cells):
            raise ConfigError(f"{mx.path}: --cell {pat!r} matches no cell (see harness matrix {mx.path.stem} --list)")
    return replace(mx, cells=tuple(c for c in mx.cells if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)))
