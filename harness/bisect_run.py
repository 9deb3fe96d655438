"""Running a bisect: each step is one cell run (``pipeline.run_cell``, the same function behind
``harness run`` and ``harness matrix``), kept in the bisect's directory and in a step cache.

Over the patches of a revision, position ``k`` is the revision's first ``k`` patches
applied with ``git am`` on the base (a worktree of its own in the cache, built with the
same ``O=`` and ccache rules as any revision, so a step that changes only
``drivers/virtio/`` rebuilds in the time of a revision switch).  Over revisions,
position ``i`` is the i-th revision as given.

A step's results are cached under ``$HARNESS_CACHE/bisect-steps/<key>``, the key being
the base commit, the applied patches' mails, the kconfig fragments, the scenario, the QEMU
profile, the expectations and the guest recipe (``guest-rootfs/``): asking for the same
step again reuses its results.json, dmesg and console log instead of booting again.
Errors (hang, boot failure) are never cached: they are retried.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from harness import bisect, matrix, model, pipeline, results, series, tree
from harness.paths import DATA_ROOT
from harness.bisect import Criterion, Judgement, Outcome, Step
from harness.cache import Cache, atomic_dir, content_key
from harness.checks import ALL_CHECKS
from harness.errors import ApplyError, UsageError
from harness.proc import CommandLog

Say = Callable[[str], None]
#: Files a step's results directory keeps in the bisect directory and the step cache
#: (the disk image is QEMU's scratch swap and is left out).
_NOT_KEPT = ("disk.img",)


@dataclass(frozen=True)
class Position:
    """What one position stands for: ``label`` (``patches 1-3``, ``patches/defects/late-provider``),
    the :class:`pipeline.Request` that builds it, the expectations file, the tree ``commit`` when
    known before running, the ``patch`` added at this position (None for the base or a revision),
    why it is known to be a ``skip`` without running it, and (revisions mode) the ``revision``."""

    index: int
    label: str
    request: pipeline.Request
    expect: Path | None
    commit: str | None = None
    patch: series.Patch | None = None
    skip: str | None = None
    revision: series.Series | None = None


@dataclass(frozen=True)
class Plan:
    """The positions of a bisect and the facts around them: ``kind`` (``patches`` or
    ``revisions``), the revision (patches mode), the tree, and the base commit."""

    kind: str
    positions: tuple[Position, ...]
    revision: series.Series | None
    tree: tree.KernelTree
    base: str | None


def _tree_files_key(*roots: Path) -> str:
    """A key over every file's path and content under ``roots`` (the guest recipe)."""
    parts: list[str | bytes] = []
    for root in roots:
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            parts += [f.relative_to(root).as_posix(), f.read_bytes()]
    return content_key(*parts)


def step_key(base: str, patches: tuple[series.Patch, ...], req: pipeline.Request, scenario: model.Scenario,
             expect: Path | None) -> str:
    """The step cache key: base commit, patch mails, kconfig fragments (names and contents), the
    QEMU profile file, the scenario, the expectations file and the guest recipe."""
    frags = req.fragment_files()
    profile = DATA_ROOT / "qemu-profiles" / f"{req.profile}.yaml"
    return content_key(base, *(p.raw for p in patches), *(f.read_bytes() for f in frags),
                       profile.read_bytes() if profile.is_file() else req.profile, repr(scenario),
                       expect.read_bytes() if expect and expect.is_file() else "",
                       _tree_files_key(DATA_ROOT / "guest-rootfs"))


def plan_patches(spec: str, base_req: pipeline.Request, cache: Cache, log: CommandLog, say: Say,
                 good: int | None, bad: int | None) -> Plan:
    """The positions ``good..bad`` (default 0..N) of revision ``spec`` on the tree of ``base_req``.

    The whole revision is applied once, in its own worktree: with fixed identities and dates
    ``git am`` makes the same commit for the first k patches whether or not more follow, so
    every position's commit is known before it is built.  When patch m does not apply, positions
    m..N are skips from the start (like exit 125), with git's reason.  Raises SeriesError (3),
    UsageError (2) for ends outside 0..N."""
    kt = tree.resolve_tree(base_req.tree, cache, log)
    rev, _ = series.load_revision(spec, cache, log, version=base_req.series_version,
                                  local_mbox=base_req.b4_local_mbox, tree=base_req.tree)
    base, warning = tree.resolve_base(kt, base_req.base, rev.base_commit, log)
    if warning:
        say(f"warning: {warning}")
    good = 0 if good is None else good
    bad = rev.total if bad is None else bad
    if not 0 <= good < bad <= rev.total:
        raise UsageError(f"--good {good} --bad {bad}: need 0 <= good < bad <= {rev.total} "
                         f"(the revision has {rev.total} patches)")
    commits = {0: base}
    skip_from, skip_reason = None, None
    try:
        applied = tree.apply_series(kt, base, rev.patches, cache, log, rev.version, rev.base_commit, say)
        commits.update({i: sha for i, _, sha in applied.patch_commits})
    except ApplyError as e:
        if e.patch_index is None:
            raise
        skip_from, skip_reason = e.patch_index, str(e).splitlines()[0]
        if skip_from > 1:
            partial = tree.apply_series(kt, base, rev.patches[:skip_from - 1], cache, log, rev.version,
                                        rev.base_commit, say)
            commits.update({i: sha for i, _, sha in partial.patch_commits})
    expect = matrix.expectations_file(spec)
    positions = []
    for k in range(good, bad + 1):
        req = replace(base_req, series=spec, base=base, upto=k)
        label = f"patches 1-{k}" if k else "base (no patch)"
        skip = skip_reason if skip_from is not None and k >= skip_from else None
        positions.append(Position(k, label, req, expect, commits.get(k), rev.patches[k - 1] if k else None, skip))
    return Plan("patches", tuple(positions), rev, kt, base)


def _is_bare(path: Path) -> bool:
    return path.is_dir() and (path / "expect.yaml").is_file() and not any(
        p.name != "expect.yaml" for p in path.iterdir())


def plan_revisions(specs: list[str], base_req: pipeline.Request, cache: Cache, log: CommandLog, say: Say) -> Plan:
    """One position per revision in the order given; a ``patches/NAME`` directory holding only
    ``expect.yaml`` is the bare tree.  Each revision is loaded now (so a bad one fails before
    anything is built) and applied on its own base (``--base``, else its base-commit, else HEAD).
    Raises UsageError for fewer than two revisions, SeriesError for a bad one."""
    if len(specs) < 2:
        raise UsageError("--revisions needs at least two revisions, in order")
    kt = tree.resolve_tree(base_req.tree, cache, log)
    positions = []
    for i, spec in enumerate(specs):
        bare = _is_bare(Path(spec))
        rev = None if bare else series.load_revision(spec, cache, log, version=base_req.series_version,
                                                     local_mbox=base_req.b4_local_mbox, tree=base_req.tree)[0]
        base, warning = tree.resolve_base(kt, base_req.base, rev.base_commit if rev else None, log)
        if warning:
            say(f"warning: {spec}: {warning}")
        req = replace(base_req, series=None if bare else spec, base=base, upto=None)
        expect = Path(spec) / "expect.yaml" if bare else matrix.expectations_file(spec)
        positions.append(Position(i, spec, req, expect, revision=rev))
    return Plan("revisions", tuple(positions), None, kt, None)


def shared_prefix(reference: Position, found: Position) -> int:
    """How many leading patches of ``found``'s revision are the whole of ``reference``'s, by diff:
    that step of ``found`` is the reference itself (a stacked defect's first patches are the
    revision it goes on), so an inner bisect can start there.  0 when the reference is not a
    prefix (another version of the series, the bare tree)."""
    ref, rev = reference.revision, found.revision
    if ref is None or rev is None or ref.total > rev.total or reference.request.base != found.request.base:
        return 0
    same = all(a.diff == b.diff for a, b in zip(ref.patches, rev.patches))
    return ref.total if same else 0


class StepRunner:
    """Runs the positions of a :class:`Plan` into ``out/steps/<name>`` and the step cache.

    Call it as ``runner(index, attempt) -> Step`` (the :data:`harness.bisect.RunStep` shape).
    ``reuse`` False runs every step again (still storing it)."""

    def __init__(self, plan: Plan, scenario: model.Scenario, criterion: Criterion, out: Path, cache: Cache,
                 say: Say, reuse: bool = True, hooks: pipeline.CellHooks | None = None):
        self.plan, self.scenario, self.criterion = plan, scenario, criterion
        self.out, self.cache, self.say, self.reuse, self.hooks = out, cache, say, reuse, hooks
        self._by_index = {p.index: p for p in plan.positions}

    def position(self, index: int) -> Position:
        return self._by_index[index]

    def expect(self, pos: Position) -> Path | None:
        """The expectations a step runs with: the revision's with ``--verdict``; none with
        ``--check``, where a check's own PASS/FAIL decides and a partial series' XPASS/XFAIL
        against the whole revision's expectations would only confuse the evidence."""
        return None if self.criterion.checks else pos.expect

    def _key(self, pos: Position) -> str:
        if self.plan.kind == "patches":
            return step_key(self.plan.base, tuple(self.plan.revision.patches[:pos.index]), pos.request,
                            self.scenario, self.expect(pos))
        return step_key(pos.request.base, pos.revision.patches if pos.revision else (), pos.request,
                        self.scenario, self.expect(pos))

    def reproducer(self, pos: Position) -> str:
        """``harness run ... --bisect-exit --check NAME``: reruns the step and exits 0/1/125 as it did."""
        expect = self.expect(pos)
        line = pipeline.reproducer(pos.request, [self.scenario], str(expect) if expect else None) + " --bisect-exit"
        line += "".join(f" --check {c}" for c in self.criterion.checks)
        if self.criterion.threshold > 1:
            line += f" --threshold {self.criterion.threshold}"
        return line + (" --first-fixed" if self.criterion.first_fixed else "")

    def known_skip(self, pos: Position) -> Step:
        """The step of a position known to be a skip without running it (its patch did not apply)."""
        return Step(pos.index, pos.label, pos.commit, Outcome.SKIP,
                    Judgement(None, 0, 0, Outcome.SKIP, pos.skip or "skipped"), {}, None, self.reproducer(pos))

    def __call__(self, index: int, attempt: int) -> Step:
        pos = self._by_index[index]
        if pos.skip:
            return self.known_skip(pos)
        name = f"{'k' if self.plan.kind == 'patches' else 'r'}{pos.index}" + ("-retry" if attempt > 1 else "")
        step_dir = self.out / "steps" / name
        cached = self.cache.root / "bisect-steps" / self._key(pos)
        reused = self.reuse and attempt == 1 and (cached / "results.json").is_file()
        start = time.monotonic()
        if reused:
            self.say(f"{pos.label}: reusing the results of an earlier bisect ({cached})")
            shutil.rmtree(step_dir, ignore_errors=True)
            shutil.copytree(cached, step_dir)
        else:
            shutil.rmtree(step_dir, ignore_errors=True)
            self.say(f"{pos.label}: apply, build, boot, {self.scenario.cycles} x {self.scenario.name}")
            run = pipeline.run_cell(pos.request, [self.scenario], step_dir.resolve(), self.cache, self.say,
                                  self.expect(pos), self.reproducer(pos), None,
                                  f"{pos.label}/{pos.request.profile}/{self.scenario.name}", self.hooks)
            if run.error and run.exit_code == 130:
                raise KeyboardInterrupt(run.error)
        doc = results.load_results(step_dir)[0][1]
        judgement = bisect.judge(doc, self.criterion)
        if not reused and judgement.untestable is not Outcome.ERROR:
            self._store(step_dir, cached)
        seconds = {k: float(v) for k, v in (doc.get("timings") or {}).items()}
        seconds["total"] = round(time.monotonic() - start, 3)
        return Step(pos.index, pos.label, doc.get("tree", {}).get("commit") or pos.commit, Outcome.SKIP, judgement,
                    seconds, step_dir, self.reproducer(pos), reused, attempt)

    @staticmethod
    def _store(step_dir: Path, cached: Path) -> None:
        if cached.exists():
            return
        try:
            with atomic_dir(cached) as tmp:
                shutil.copytree(step_dir, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*_NOT_KEPT))
        except FileExistsError:  # another bisect stored the same step meanwhile
            pass


def patch_search(plan: Plan, runner: StepRunner) -> tuple[bisect.Search, list[Step]]:
    """A search over ``plan``'s positions with the positions known to be skips recorded."""
    search = bisect.Search([p.index for p in plan.positions])
    known = []
    for pos in plan.positions:
        if pos.skip:
            search.record(pos.index, Outcome.SKIP)
            known.append(runner.known_skip(pos))
    return search, known


def check_names(criterion: Criterion) -> None:
    """Raise UsageError for a check name no cycle can carry."""
    unknown = [c for c in criterion.checks if c not in ALL_CHECKS]
    if unknown:
        raise UsageError(f"--check {', '.join(unknown)}: unknown check (known: {', '.join(ALL_CHECKS)})")
    if criterion.threshold < 1:
        raise UsageError(f"--threshold {criterion.threshold}: must be at least 1 cycle")



def _retrying(runner: StepRunner, index: int, outcome_for) -> list[Step]:
    """Run ``index`` once, and once more when it errs; the steps with their outcomes."""
    steps = []
    for attempt in (1, 2):
        step = runner(index, attempt)
        step = replace(step, outcome=outcome_for(step.judgement), attempt=attempt)
        steps.append(step)
        if step.outcome is not Outcome.ERROR:
            break
    return steps


def bisect_patches(plan: Plan, runner: StepRunner, criterion: Criterion, said: Callable[[Step], None]):
    """Search ``plan``'s patch positions; return ``(steps, conclusion, error step, worst case)``."""
    search, known = patch_search(plan, runner)
    worst = search.worst_case
    for step in known:
        said(step)
    steps, error = bisect.run_search(search, runner, not criterion.first_fixed, said)
    label = {p.index: (f"patch {p.index}" if p.index else "the base") for p in plan.positions}
    conclusion = (bisect.Conclusion("error", f"{error.label}: {error.judgement.reason}") if error else
                  search.conclusion(label.get, criterion.terms))
    return known + steps, conclusion, error, worst


def bisect_revisions(plan: Plan, runner: StepRunner, said: Callable[[Step], None]):
    """Test the first revision (the reference), then search for the first revision whose outcome
    differs from it; return ``(steps, conclusion, error step, worst case, reference failing)``."""
    ref_steps = _retrying(runner, plan.positions[0].index, lambda j: j.untestable or Outcome.OLD)
    for step in ref_steps:
        said(step)
    ref = ref_steps[-1]
    label = {p.index: p.label for p in plan.positions}
    if ref.outcome is not Outcome.OLD:
        why = "ended in an error twice" if ref.outcome is Outcome.ERROR else "could not be tested"
        return (ref_steps, bisect.Conclusion("error", f"the reference {ref.label} {why}: {ref.judgement.reason}"),
                ref if ref.outcome is Outcome.ERROR else None, 1, None)
    search = bisect.Search([p.index for p in plan.positions])
    search.record(ref.position, Outcome.OLD)
    worst = 1 + search.worst_case
    steps, error = bisect.run_search(search, runner, not ref.judgement.failing, said)
    conclusion = (bisect.Conclusion("error", f"{error.label}: {error.judgement.reason}") if error else
                  search.conclusion(label.get, ("same", "different")))
    return ref_steps + steps, conclusion, error, worst, ref.judgement.failing
