"""The one verdict type: what a check, a cycle, a run, a matrix cell and a matrix end with.

Each output maps it once, in a table of its own, keyed by :class:`Verdict` and complete
(tests assert it): JUnit (:data:`harness.junit.ELEMENT`), KCIDB
(:data:`harness.kcidb.STATUS`), the exit status (:data:`harness.commands.VERDICT_EXIT`), the
terminal (:data:`harness.terminal.STYLE`) and the HTML report (a ``v-<VERDICT>`` CSS class in
``templates/report.html.j2``; :data:`harness.timeline.MARKED` for the checks it marks).
"""

from __future__ import annotations

import enum
from typing import Iterable


class Verdict(enum.StrEnum):
    """A verdict.  A ``str``: it compares equal to its name, so ``results.json`` and the
    files written before it existed read back as the same values."""

    PASS = "PASS"    #: every check passed
    FAIL = "FAIL"    #: a check failed that was expected to pass
    SKIP = "SKIP"    #: not judged: the check does not apply, or the cell could not be run here
    ERROR = "ERROR"  #: the harness could not judge: boot failure, bad input, a guest command failed
    HANG = "HANG"    #: the guest stopped answering (a suspend that never resumed, a boot that never ended)
    XFAIL = "XFAIL"  #: failed, as the revision's expectations say it does (the baseline's bug)
    XPASS = "XPASS"  #: passed, where the revision's expectations say it fails: the expectation is stale

    @property
    def bad(self) -> bool:
        """True for the verdicts that fail a run: FAIL, XPASS, ERROR, HANG."""
        return self in BAD


#: The verdicts that fail a run, a cycle or a cell.
BAD = frozenset({Verdict.FAIL, Verdict.XPASS, Verdict.ERROR, Verdict.HANG})

#: How :func:`overall` ranks verdicts, worst first; anything else (PASS, SKIP, XFAIL) is PASS.
_PRECEDENCE = (Verdict.HANG, Verdict.ERROR, Verdict.FAIL, Verdict.XPASS)


def overall(verdicts: Iterable[str]) -> Verdict:
    """Combine verdicts: HANG > ERROR > FAIL > XPASS > PASS (SKIP and XFAIL count as PASS)."""
    present = set(verdicts)
    return next((v for v in _PRECEDENCE if v in present), Verdict.PASS)
