"""Bisection: which patch of a revision, or which revision, changes a check's outcome.

A *position* is one thing to test: ``k`` (the first k patches of a revision applied,
0 = the base) or the index of a revision in a list.  This module holds the parts
that do no I/O, so they are unit-tested on saved results and fake steps:

- :func:`judge` reads one step's ``results.json`` document and says whether the
  criterion (a check failed in at least ``threshold`` cycles, or the run's verdict
  against the revision's expectations) holds, or why the step cannot tell (skip:
  the patch did not apply, the tree did not build, a kconfig symbol did not
  survive; error: hang, boot failure, harness failure);
- :class:`Search` chooses the next position to test and draws the conclusion;
- :func:`run_search` drives a search with a step-running callback, retrying an
  error once and stopping on a second one.

The terms follow ``git bisect``: positions are *old* before the change and *new*
from it on.  By default new means "the check fails" (terms good/bad); with
``first_fixed`` new means "the check passes" (terms broken/fixed, as
``git bisect start --term-old broken --term-new fixed``).  Like ``git bisect``,
the two ends are taken on trust while the search narrows; unlike it, the search
then tests the ends it has not tested when they border the answer, so the first
new and the last old position both come with evidence, and an end that is not what
it was said to be is reported instead of blamed.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from harness.verdict import Verdict


class Outcome(enum.Enum):
    """What a tested position showed: before the change (OLD), from it on (NEW), nothing
    (SKIP: it could not be built or applied, like ``git bisect skip`` / exit 125), or an
    ERROR whose answer is unknown (hang, boot failure, harness failure)."""

    OLD = "old"
    NEW = "new"
    SKIP = "skip"
    ERROR = "error"


#: Errors (``results.json`` ``error_type``) that make a position untestable: ``git bisect``'s
#: skip.  kconfig.KconfigMismatch is a requested symbol that did not survive olddefconfig.
SKIP_ERRORS = ("ApplyError", "BuildError", "KconfigMismatch")
#: Check verdicts that mean "the check failed" whatever the expectations said.
_FAILED = (Verdict.FAIL, Verdict.XFAIL)
_PASSED = (Verdict.PASS, Verdict.XPASS)
#: Run verdicts that mean "not as expected" (``--verdict``).
_BAD_RUN = (Verdict.FAIL, Verdict.XPASS)
#: Evidence lines kept per step.
_EVIDENCE_LINES = 8


@dataclass(frozen=True)
class Criterion:
    """What makes a position new.

    ``checks``: check names; a cycle failed when any of them is FAIL or XFAIL in it.
    Empty: the run's verdict against the revision's expectations decides (FAIL or
    XPASS is failing).  ``threshold``: failing needs at least this many failed cycles
    (for checks that fail intermittently).  ``first_fixed``: new is passing, not failing."""

    checks: tuple[str, ...] = ()
    threshold: int = 1
    first_fixed: bool = False

    @property
    def terms(self) -> tuple[str, str]:
        """``(old term, new term)`` as ``git bisect`` names them."""
        return ("broken", "fixed") if self.first_fixed else ("good", "bad")

    def term(self, outcome: Outcome) -> str:
        """The word for ``outcome`` in this bisect's terms (``good``, ``fixed``, ``skip``)."""
        if outcome is Outcome.OLD:
            return self.terms[0]
        if outcome is Outcome.NEW:
            return self.terms[1]
        return outcome.value

    def describe(self) -> str:
        what = " or ".join(self.checks) if self.checks else "the run's verdict"
        return (f"{what} {'passes' if self.first_fixed else 'fails'}"
                + (f" (in at least {self.threshold} cycles)" if self.checks and self.threshold > 1 else ""))


@dataclass(frozen=True)
class Judgement:
    """One step's reading of its results: ``failing`` (None when the step could not tell),
    ``failed_cycles`` out of ``cycles`` (cycles in which a named check ran; all cycles in
    verdict mode), ``untestable`` SKIP or ERROR (None when it could tell), ``reason`` in one
    line, and ``evidence`` lines from the cycle that decided it."""

    failing: bool | None
    failed_cycles: int
    cycles: int
    untestable: Outcome | None
    reason: str
    evidence: tuple[str, ...] = ()


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def judge(doc: dict, criterion: Criterion) -> Judgement:
    """Read a step's ``results.json`` document (shape of :func:`harness.results.to_json`).

    An error of a kind in :data:`SKIP_ERRORS` makes the step SKIP; any other error
    (hang, boot failure, crash, harness failure, interrupt) makes it ERROR: the answer is
    unknown, whatever earlier cycles showed.  With check names, a step where the checks
    were SKIP in every cycle is SKIP too (it cannot say anything about them)."""
    if doc.get("error"):
        kind = doc.get("error_type") or doc["error"].split(":", 1)[0]
        untestable = Outcome.SKIP if kind in SKIP_ERRORS else Outcome.ERROR
        return Judgement(None, 0, 0, untestable, _first_line(doc["error"]),
                         tuple(doc["error"].strip().splitlines()[1:_EVIDENCE_LINES + 1]))
    cycles = doc.get("cycles") or []
    if not cycles:
        return Judgement(None, 0, 0, Outcome.ERROR, "no cycle ran")
    if not criterion.checks:
        failing = doc.get("verdict") in _BAD_RUN
        failed = [c for c in cycles if c.get("verdict") in _BAD_RUN]
        shown = failed[0] if failed else cycles[-1]
        evidence = tuple(f"{shown['scenario']} #{shown['index']} {ch['name']}: {ch['verdict']} {ch['summary']}"
                         for ch in shown["checks"] if ch["verdict"] not in (Verdict.PASS, Verdict.SKIP))
        return Judgement(failing, len(failed), len(cycles), None,
                         f"verdict {doc.get('verdict')}, {len(failed)}/{len(cycles)} cycles not as expected",
                         evidence[:_EVIDENCE_LINES])
    ran, failed = [], []
    for c in cycles:
        named = [ch for ch in c["checks"] if ch["name"] in criterion.checks]
        if not any(ch["verdict"] in _FAILED + _PASSED for ch in named):
            continue
        ran.append((c, named))
        if any(ch["verdict"] in _FAILED for ch in named):
            failed.append((c, named))
    names = "/".join(criterion.checks)
    if not ran:
        return Judgement(None, 0, 0, Outcome.SKIP, f"{names} was SKIP or absent in every cycle")
    failing = len(failed) >= criterion.threshold
    cycle, named = failed[0] if failed else ran[-1]
    evidence = []
    for ch in named:
        evidence.append(f"{cycle['scenario']} #{cycle['index']} {ch['name']}: {ch['verdict']} {ch['summary']}")
        evidence.extend(f"  {line}" for line in ch.get("evidence", ())[:_EVIDENCE_LINES - 1])
    return Judgement(failing, len(failed), len(ran), None,
                     f"{names} failed in {len(failed)}/{len(ran)} cycles", tuple(evidence[:_EVIDENCE_LINES * 2]))


# --- The search ------------------------------------------------------------------------------

def _worst_case(m: int, lo_tested: bool, hi_tested: bool, table: dict) -> tuple[int, int]:
    """``(steps, j)``: the fewest steps that settle ``m`` untested candidates between two ends in
    the worst case, with both ends of the answer tested, and the 1-based candidate ``j`` to
    test first for that.  An untested end costs one step when it borders the answer."""
    key = (m, lo_tested, hi_tested)
    if key in table:
        return table[key]
    if m == 0:
        table[key] = ((not lo_tested) + (not hi_tested), 0)
        return table[key]
    best = None
    for j in range(1, m + 1):
        # j old: the candidates above it remain, with a tested low end; j new: those below it
        cost = 1 + max(_worst_case(m - j, True, hi_tested, table)[0], _worst_case(j - 1, lo_tested, True, table)[0])
        rank = (cost, abs(2 * j - (m + 1)))  # ties: the middle, as git bisect halves
        if best is None or rank < best[0]:
            best = (rank, j)
    table[key] = (best[0][0], best[1])
    return table[key]


@dataclass(frozen=True)
class Conclusion:
    """How a search ended.

    ``status``: ``found`` (``first_new`` is new, ``last_old`` just before it is old, both
    tested), ``ambiguous`` (the change is in ``candidates`` but skipped positions hide where),
    ``inconsistent`` (an end is not what it was said to be: ``message`` says which), or
    ``error`` (a step failed twice).  ``message`` is one sentence for a person."""

    status: str
    message: str
    first_new: int | None = None
    last_old: int | None = None
    candidates: tuple[int, ...] = ()


class Search:
    """Binary search for the first NEW position among ``positions`` (ascending).

    The first position is taken to be OLD and the last NEW until tested.  Positions
    already known (skips found before testing, a reference tested first) are given with
    :meth:`record`.  :meth:`next` returns the position to test, or None when done; then
    :meth:`conclusion` says what was found.  With no skips the number of steps is at most
    :attr:`worst_case` (about log2 of the positions, plus one when an end borders the answer)."""

    def __init__(self, positions: Sequence[int]):
        if len(positions) < 2 or list(positions) != sorted(set(positions)):
            raise ValueError("a search needs at least two ascending positions")
        self.positions = tuple(positions)
        self.known: dict[int, Outcome] = {}

    def record(self, position: int, outcome: Outcome) -> None:
        """Remember what ``position`` showed (OLD, NEW or SKIP)."""
        if position not in self.positions or outcome is Outcome.ERROR:
            raise ValueError(f"cannot record {outcome} at {position}")
        self.known[position] = outcome

    def _bounds(self) -> tuple[int, int]:
        first, last = self.positions[0], self.positions[-1]
        lo = max([first] + [p for p, o in self.known.items() if o is Outcome.OLD])
        hi = min([last] + [p for p, o in self.known.items() if o is Outcome.NEW])
        return lo, hi

    def _candidates(self) -> list[int]:
        lo, hi = self._bounds()
        return [p for p in self.positions if lo < p < hi and p not in self.known]

    @property
    def worst_case(self) -> int:
        """Steps still needed in the worst case if nothing more is skipped."""
        lo, hi = self._bounds()
        return _worst_case(len(self._candidates()), lo in self.known, hi in self.known, {})[0]

    def _inconsistent(self) -> str | None:
        first, last = self.positions[0], self.positions[-1]
        if self.known.get(first) is Outcome.NEW:
            return "first"
        if self.known.get(last) is Outcome.OLD:
            return "last"
        return None

    def next(self) -> int | None:
        """The position to test next, or None when the search is over."""
        if self._inconsistent():
            return None
        lo, hi = self._bounds()
        cands = self._candidates()
        if cands:
            _, j = _worst_case(len(cands), lo in self.known, hi in self.known, {})
            return cands[j - 1]
        if hi not in self.known:
            return hi
        if lo not in self.known:
            return lo
        return None

    def conclusion(self, label: Callable[[int], str] = str, terms: tuple[str, str] = ("good", "bad")) -> Conclusion:
        """What the search found; ``label(position)`` names positions in the message."""
        old, new = terms
        which = self._inconsistent()
        first, last = self.positions[0], self.positions[-1]
        if which == "first":
            return Conclusion("inconsistent", f"the {old} end {label(first)} is {new}: the change is not "
                                              f"between the ends given; choose an end that is {old}")
        if which == "last":
            return Conclusion("inconsistent", f"the {new} end {label(last)} is {old}: the change is not "
                                              f"between the ends given; choose an end that is {new}")
        lo, hi = self._bounds()
        between = [p for p in self.positions if lo < p < hi]
        if self.known.get(lo) is Outcome.OLD and self.known.get(hi) is Outcome.NEW and not between:
            return Conclusion("found", f"first {new}: {label(hi)} (last {old}: {label(lo)})", hi, lo, (hi,))
        cands = tuple(between + [hi])
        untested = [p for p in (lo, hi) if self.known.get(p) is Outcome.SKIP]
        why = (f"; {', '.join(label(p) for p in untested)} could not be tested" if untested else "")
        return Conclusion("ambiguous", f"cannot decide: the first {new} is one of "
                                       f"{', '.join(label(p) for p in cands)} (skipped: "
                                       f"{', '.join(label(p) for p in between) or 'none'}){why}",
                          hi if self.known.get(hi) is Outcome.NEW else None,
                          lo if self.known.get(lo) is Outcome.OLD else None, cands)


# --- Driving a search -------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One tested position: ``label`` (``patches 1-3``, a revision), the tree ``commit``
    tested, its ``outcome``, the :class:`Judgement`, ``seconds`` per stage (apply, build,
    boot, cycles), the step's ``results`` directory, the ``reproducer`` command line,
    whether it was ``reused`` from an earlier bisect, and the ``attempt`` (2 after a retry)."""

    position: int
    label: str
    commit: str | None
    outcome: Outcome
    judgement: Judgement
    seconds: dict[str, float] = field(default_factory=dict)
    results: Path | None = None
    reproducer: str = ""
    reused: bool = False
    attempt: int = 1


#: ``run_step(position, attempt) -> (judgement, step without outcome)``: how a search tests one
#: position; the outcome is filled in by :func:`run_search` from the judgement.
RunStep = Callable[[int, int], Step]


def outcome_of(judgement: Judgement, new_is_failing: bool) -> Outcome:
    """The step's outcome: its untestable kind, else NEW when failing equals ``new_is_failing``."""
    if judgement.untestable is not None:
        return judgement.untestable
    return Outcome.NEW if judgement.failing == new_is_failing else Outcome.OLD


def run_search(search: Search, run_step: RunStep, new_is_failing: bool,
               said: Callable[[Step], None] = lambda step: None) -> tuple[list[Step], Step | None]:
    """Test positions until ``search`` is done; return the steps in test order and the step that
    stopped it with an error (None when it ran to its end).  A step with an ERROR outcome is
    run once more; a second ERROR stops the search (never counted old or new).  ``said(step)``
    hears each finished step.  ``run_step`` returns a :class:`Step` whose outcome is ignored:
    it is recomputed here from its judgement."""
    steps: list[Step] = []
    while (position := search.next()) is not None:
        for attempt in (1, 2):
            step = run_step(position, attempt)
            step = Step(**{**step.__dict__, "outcome": outcome_of(step.judgement, new_is_failing),
                           "attempt": attempt})
            steps.append(step)
            said(step)
            if step.outcome is not Outcome.ERROR:
                break
        if step.outcome is Outcome.ERROR:
            return steps, step
        search.record(position, step.outcome)
    return steps, None


def max_steps(n_positions: int) -> int:
    """``ceil(log2(n_positions))``: what a plain bisection over ``n_positions`` needs."""
    return math.ceil(math.log2(max(n_positions, 1)))


# --- git bisect run ---------------------------------------------------------------------------

#: ``git bisect run`` exit statuses (git-bisect(1), "Bisect run"): 0 old, 1 new, 125 skip.
#: Any status of 128 or more makes git abort the bisect: used when the answer is unknown.
GIT_BISECT_EXIT = {Outcome.OLD: 0, Outcome.NEW: 1, Outcome.SKIP: 125}
#: Harness exit codes of errors kept recognisable as 128 + code (6 boot failed, 7 guest hang);
#: every other error is 128, an interrupt 130.
_KEPT_ERROR_CODES = (6, 7)
GIT_BISECT_ERROR, GIT_BISECT_INTERRUPTED = 128, 130


def git_bisect_exit(judgement: Judgement, criterion: Criterion, exit_code: int | None) -> int:
    """The exit status for ``git bisect run`` of a run judged ``judgement``: 0 old, 1 new, 125 skip
    (the patch did not apply, the tree did not build, a kconfig symbol did not survive, the checks
    did not run), 134 boot failure, 135 hang, 130 interrupted, 128 any other error."""
    outcome = outcome_of(judgement, not criterion.first_fixed)
    if outcome is not Outcome.ERROR:
        return GIT_BISECT_EXIT[outcome]
    if exit_code == 130:
        return GIT_BISECT_INTERRUPTED
    return GIT_BISECT_ERROR + (exit_code if exit_code in _KEPT_ERROR_CODES else 0)


def git_bisect_exit_for_error(error_type: str, exit_code: int) -> int:
    """The ``git bisect run`` status of a run that failed before it could judge anything
    (an exception caught by the CLI): 125 for :data:`SKIP_ERRORS`, else as :func:`git_bisect_exit`."""
    if error_type in SKIP_ERRORS:
        return GIT_BISECT_EXIT[Outcome.SKIP]
    return git_bisect_exit(Judgement(None, 0, 0, Outcome.ERROR, error_type), Criterion(), exit_code)
