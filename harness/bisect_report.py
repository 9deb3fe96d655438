"""What a bisect leaves: ``bisect.json``, ``bisect.log`` (``git bisect log`` form), the
terminal table, ``report.html`` (the last old and first new step side by side) and, on
request, a plain-text reply to the first bad patch's mail in the form kernel test bots use
on the lists (RFC 2822, ``In-Reply-To``/``References``; written to a file, never sent).
"""

from __future__ import annotations

import email.policy
import email.utils
import json
import sys
import textwrap
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness import __version__, model, timeline
from harness.bisect import Conclusion, Criterion, Outcome, Step
from harness.bisect_run import Plan
from harness.cache import atomic_write

_STYLE = {Outcome.OLD: "green", Outcome.NEW: "bold red", Outcome.SKIP: "yellow", Outcome.ERROR: "bold magenta"}


@dataclass(frozen=True)
class BisectRun:
    """A finished bisect: the plan, criterion and scenario, the steps in the order they ran,
    the conclusion, the step that stopped it with an error (if any), the worst-case step count
    promised at the start, wall seconds, and the bisect inside the found revision
    (``--then-patches``) if one ran."""

    plan: Plan
    criterion: Criterion
    scenario: model.Scenario
    steps: tuple[Step, ...]
    conclusion: Conclusion
    error: Step | None
    worst_case: int
    seconds: float
    out: Path
    inner: "BisectRun | None" = None

    @property
    def terms(self) -> tuple[str, str]:
        if self.plan.kind == "revisions":
            return ("same", "different")
        return self.criterion.terms

    def term(self, outcome: Outcome) -> str:
        if outcome in (Outcome.OLD, Outcome.NEW):
            return self.terms[outcome is Outcome.NEW]
        return outcome.value

    def label(self, index: int) -> str:
        """A position for a person: ``patch 4 ([v9 4/5] subject)``, ``the base``, a revision."""
        pos = self.plan.positions[[p.index for p in self.plan.positions].index(index)]
        if self.plan.kind == "revisions":
            return pos.label
        if pos.patch is None:
            return "the base (no patch)"
        return f"patch {pos.index} ([v{pos.patch.version} {pos.patch.index}/{pos.patch.total}] {pos.patch.subject})"

    def step_at(self, index: int | None) -> Step | None:
        """The last non-error step that tested ``index``."""
        found = [s for s in self.steps if s.position == index and s.outcome is not Outcome.ERROR]
        return found[-1] if found else None


def _position_json(run: BisectRun, index: int | None) -> dict | None:
    if index is None:
        return None
    pos = next(p for p in run.plan.positions if p.index == index)
    step = run.step_at(index)
    out = {"position": index, "label": run.label(index), "commit": (step.commit if step else None) or pos.commit}
    if pos.patch is not None:
        out.update(index=pos.patch.index, subject=pos.patch.subject, author=pos.patch.author,
                   message_id=pos.patch.msgid, version=pos.patch.version)
    if run.plan.kind == "revisions":
        out["revision"] = pos.label
    return out


def _step_json(run: BisectRun, step: Step) -> dict:
    j = step.judgement
    return {"position": step.position, "label": step.label, "commit": step.commit,
            "outcome": run.term(step.outcome), "failing": j.failing, "failed_cycles": j.failed_cycles,
            "cycles": j.cycles, "reason": j.reason, "evidence": list(j.evidence),
            "seconds": {k: round(v, 3) for k, v in step.seconds.items()}, "reused": step.reused,
            "attempt": step.attempt,
            "results": str(step.results.relative_to(run.out)) + "/results.json" if step.results else None,
            "reproducer": step.reproducer}


def to_json(run: BisectRun) -> dict:
    """The ``bisect.json`` document."""
    c = run.conclusion
    doc = {
        "harness_version": __version__,
        "kind": run.plan.kind,
        "revision": run.plan.revision.source if run.plan.revision else None,
        "revisions": [p.label for p in run.plan.positions] if run.plan.kind == "revisions" else None,
        "tree": {"path": str(run.plan.tree.path), "commit": run.plan.tree.commit,
                 "describe": run.plan.tree.describe, "version": run.plan.tree.version},
        "base": run.plan.base,
        "criterion": {"checks": list(run.criterion.checks), "verdict": not run.criterion.checks,
                      "threshold": run.criterion.threshold, "first_fixed": run.criterion.first_fixed,
                      "terms": {"old": run.terms[0], "new": run.terms[1]}, "describe": run.criterion.describe()},
        "scenario": run.scenario.name,
        "cycles": run.scenario.cycles,
        "profile": run.plan.positions[0].request.profile,
        "positions": [p.index for p in run.plan.positions],
        "worst_case_steps": run.worst_case,
        "steps_run": sum(1 for s in run.steps if s.results is not None),
        "steps": [_step_json(run, s) for s in run.steps],
        "result": {"status": c.status, "message": c.message,
                   "first_new": _position_json(run, c.first_new), "last_old": _position_json(run, c.last_old),
                   "candidates": [_position_json(run, p) for p in c.candidates]},
        "error": _step_json(run, run.error) if run.error else None,
        "seconds": round(run.seconds, 3),
    }
    if run.inner is not None:
        doc["inner"] = to_json(run.inner)
    return doc


def git_log(run: BisectRun) -> str:
    """``bisect.log`` in the form ``git bisect log`` prints (replayable with ``git bisect replay``
    in the tree the worktrees came from, while the applied commits are still in its object store)."""
    old, new = run.criterion.terms
    first, last = run.plan.positions[0], run.plan.positions[-1]

    def subject(index: int) -> str:
        pos = next(p for p in run.plan.positions if p.index == index)
        return pos.patch.subject if pos.patch else pos.label

    def commit(index: int) -> str:
        step = run.step_at(index)
        pos = next(p for p in run.plan.positions if p.index == index)
        return (step.commit if step else None) or pos.commit or f"<{pos.label}>"

    lines = [f"# virtio-pm-harness {__version__} bisect: {run.criterion.describe()} marks {new}; "
             f"{run.scenario.cycles} x {run.scenario.name}"]
    if run.plan.kind == "revisions":
        lines.append("# over revisions: each commit is a revision's applied HEAD, not one history "
                     "(not replayable with git bisect replay)")
    terms = f" --term-old={old} --term-new={new}" if run.criterion.first_fixed else ""
    lines += [f"# {new}: [{commit(last.index)}] {subject(last.index)}",
              f"# {old}: [{commit(first.index)}] {subject(first.index)}",
              f"git bisect start{terms} '{commit(last.index)}' '{commit(first.index)}'"]
    for step in run.steps:
        if step.outcome is Outcome.ERROR:
            lines.append(f"# error at [{commit(step.position)}] {subject(step.position)}: {step.judgement.reason}")
            continue
        word = {Outcome.OLD: old, Outcome.NEW: new}.get(step.outcome, "skip")
        lines += [f"# {word}: [{commit(step.position)}] {subject(step.position)}",
                  f"git bisect {word} {commit(step.position)}"]
    c = run.conclusion
    if c.status == "found":
        lines.append(f"# first {new} commit: [{commit(c.first_new)}] {subject(c.first_new)}")
    else:
        lines.append(f"# {c.status}: {c.message}")
    return "\n".join(lines) + "\n"


def _cell_doc(step: Step, side: str) -> tuple[Path, dict]:
    doc = json.loads((step.results / "results.json").read_text())
    parts = doc.get("cell", "").split("/")
    profile, scenario = (parts[-2], parts[-1]) if len(parts) >= 3 else ("?", "?")
    doc["cell"] = f"{side}: {step.label}/{profile}/{scenario}"
    return step.results, doc


def write(run: BisectRun) -> dict[str, Path]:
    """Write ``bisect.json``, ``bisect.log`` and (when both sides of the change ran) ``report.html``
    into the bisect's directory; return their paths by kind."""
    paths = {"json": atomic_write(run.out / "bisect.json", json.dumps(to_json(run), indent=2) + "\n"),
             "log": atomic_write(run.out / "bisect.log", git_log(run))}
    c = run.conclusion
    old_step, new_step = run.step_at(c.last_old), run.step_at(c.first_new)
    if old_step and new_step and old_step.results and new_step.results:
        old, new = run.terms
        pairs = [_cell_doc(old_step, f"last {old}"), _cell_doc(new_step, f"first {new}")]
        paths["html"] = atomic_write(run.out / "report.html", timeline.render(
            pairs, f"virtio-pm-harness bisect: {c.message}"))
    return paths


def print_run(run: BisectRun, console: Console | None = None) -> None:
    """The step table (in test order), the conclusion and the evidence on both sides of it."""
    console = console or Console(highlight=False, width=None if sys.stdout.isatty() else 170)
    if run.plan.kind == "revisions":
        what = f"the first revision where '{run.criterion.describe()}' differs from {run.plan.positions[0].label}"
    else:
        what = f"{run.terms[1]} = {run.criterion.describe()}"
    table = Table(title=f"bisect ({run.plan.kind}): {escape(what)}; {run.scenario.cycles} x {run.scenario.name}")
    for col in ("#", "position", "commit", "outcome", "failed cycles", "apply", "build", "boot", "cycles", "s",
                "note"):
        table.add_column(col)
    for n, step in enumerate(run.steps, 1):
        s = step.seconds
        note = ("reused" if step.reused else "") + (" retry" if step.attempt > 1 else "")
        if step.outcome in (Outcome.SKIP, Outcome.ERROR):
            note = f"{note} {step.judgement.reason}".strip()
        table.add_row(str(n), escape(run.label(step.position)), (step.commit or "-")[:12],
                      f"[{_STYLE[step.outcome]}]{run.term(step.outcome)}[/]",
                      f"{step.judgement.failed_cycles}/{step.judgement.cycles}" if step.judgement.cycles else "-",
                      *(f"{s[k]:.1f}" if k in s else "-" for k in ("apply", "build", "boot", "cycles", "total")),
                      escape(note))
    console.print(table)
    c = run.conclusion
    ran = sum(1 for s in run.steps if s.results is not None)
    console.print(f"{ran} step(s) run, {sum(1 for s in run.steps if s.reused)} reused; "
                  f"at most {run.worst_case} expected without skips; {run.seconds:.0f} s")
    if run.error:
        console.print(f"stopped: {run.label(run.error.position)} ended in an error twice: "
                      f"{run.error.judgement.reason}", style="bold red", markup=False)
    if c.status == "found":
        pos = next(p for p in run.plan.positions if p.index == c.first_new)
        step = run.step_at(c.first_new)
        what = "patch" if pos.patch else "revision"
        line = f"first {run.terms[1]} {what}: {run.label(c.first_new)}"
        if pos.patch:
            line += (f" (commit {(step.commit or '?')[:12]}, {pos.patch.author}"
                     + (f", Message-ID <{pos.patch.msgid}>)" if pos.patch.msgid else ")"))
        console.print(line, style="bold", markup=False)
        old_step = run.step_at(c.last_old)
        side = Table(show_lines=False)
        side.add_column(f"last {run.terms[0]}: {escape(run.label(c.last_old))}", overflow="fold")
        side.add_column(f"first {run.terms[1]}: {escape(run.label(c.first_new))}", overflow="fold")
        left, right = old_step.judgement.evidence, step.judgement.evidence
        for i in range(max(len(left), len(right))):
            side.add_row(escape(left[i]) if i < len(left) else "", escape(right[i]) if i < len(right) else "")
        console.print(side)
    else:
        console.print(f"{c.status}: {c.message}", style="bold red" if c.status != "found" else "bold",
                      markup=False)
    if run.inner is not None:
        console.print(f"inside {run.label(c.first_new)} (its steps: {run.inner.out / 'bisect.json'}):",
                      style="bold", markup=False)
        print_run(run.inner, console)


# --- The reply mail ---------------------------------------------------------------------------

def _indent(lines, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in lines) or prefix + "(none)"


def reply_mail(run: BisectRun, sender: str, date: str | None = None) -> EmailMessage:
    """A plain-text reply to the mail of the first new patch (``--reply FILE``), or to the found
    revision's cover letter; raises ValueError when the bisect named neither.

    To the patch's author, Cc its other recipients; ``Subject: Re: <the patch's subject line>``;
    ``In-Reply-To`` its Message-ID and ``References`` its references plus that id.  The body says
    what changed, at which step, the evidence on both sides, the reproducer and the step table."""
    found = run.inner if run.inner is not None and run.inner.conclusion.status == "found" else run
    c = found.conclusion
    if c.status != "found":
        raise ValueError(f"the bisect did not name one patch ({c.status}: {c.message})")
    pos = next(p for p in found.plan.positions if p.index == c.first_new)
    patch = pos.patch
    if patch is None:
        raise ValueError("the bisect named a revision, not a patch: rerun with --then-patches to name a patch")
    if not patch.msgid:
        raise ValueError(f"patch {patch.index} ({patch.origin}) has no Message-ID to reply to: it is a "
                         f"format-patch file, not a mail of the list")
    original = email.message_from_bytes(patch.raw, policy=email.policy.default)
    new_step, old_step = found.step_at(c.first_new), found.step_at(c.last_old)
    author = email.utils.parseaddr(patch.author)
    msg = EmailMessage(policy=email.policy.SMTP.clone(max_line_length=998))  # RFC 5322 2.1.1: ids stay whole
    msg["From"] = sender
    msg["To"] = patch.author
    others = [a for a in email.utils.getaddresses(original.get_all("To", []) + original.get_all("Cc", []))
              if a[1] and a[1].lower() not in (author[1].lower(), email.utils.parseaddr(sender)[1].lower())]
    if others:
        msg["Cc"] = ", ".join(email.utils.formataddr(a) for a in dict.fromkeys(others))
    subject = " ".join(str(original.get("Subject", patch.subject)).split())
    msg["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    msg["Date"] = date or email.utils.formatdate(localtime=False)
    msg["Message-ID"] = email.utils.make_msgid(domain="virtio-pm-harness.invalid")
    msg["In-Reply-To"] = f"<{patch.msgid}>"
    refs = " ".join(str(original.get("References", "")).split())
    msg["References"] = f"{refs} <{patch.msgid}>".strip()
    old, new = found.terms
    checks = " and ".join(f'"{c}"' for c in found.criterion.checks) or "the run's verdict"
    crit = found.criterion
    j_new, j_old = new_step.judgement, old_step.judgement
    change = ("starts to pass" if crit.first_fixed else "starts to fail")
    body = [
        f"Hi {author[0] or author[1]},",
        "",
        *textwrap.wrap(f"virtio-pm-harness bisected a change in {checks} on a real arm64 kernel in QEMU: "
                       f"it {change} with this patch ([v{patch.version} {patch.index}/{patch.total}] "
                       f"{patch.subject}).", 72),
        "",
        f"  series:   {found.plan.revision.title} (v{patch.version}, {found.plan.revision.total} patches)",
        f"  tree:     {found.plan.tree.describe} (Linux {found.plan.tree.version}), base {found.plan.base}",
        f"  commit:   {new_step.commit} (patches 1-{patch.index} applied with git am on the base)",
        f"  machine:  qemu-system-aarch64 -M virt, profile {pos.request.profile}",
        f"  scenario: {found.scenario.name}, {found.scenario.cycles} cycles per step",
        f"  {new}:    {crit.describe()}",
        "",
        f"With the patch ({new_step.label}): {j_new.reason}",
        _indent(j_new.evidence),
        "",
        f"Without it ({old_step.label}): {j_old.reason}",
        _indent(j_old.evidence),
        "",
        "To reproduce (exits 0 if " + old + ", 1 if " + new + ", 125 if it cannot be tested):",
        _indent([new_step.reproducer]),
        "",
        "Bisect steps (in the order run):",
        _indent(f"{s.label}: {found.term(s.outcome)}"
                + (f" ({s.judgement.failed_cycles}/{s.judgement.cycles} cycles failed)" if s.judgement.cycles
                   else f" ({s.judgement.reason})") for s in found.steps),
        "",
        "This mail was written by virtio-pm-harness from a bisect run; nothing was",
        "sent automatically.",
        "",
        "-- ",
        f"virtio-pm-harness {__version__}",
    ]
    msg.set_content("\n".join(body) + "\n")
    return msg


def write_reply(run: BisectRun, path: Path, sender: str) -> Path:
    """Write :func:`reply_mail` to ``path`` (atomically) and return it."""
    return atomic_write(path, reply_mail(run, sender).as_bytes())

