"""Bisect without a guest: the search, judging saved results of real captured cycles, the
retry rule, the git bisect run exit codes, bisect.log and the reply mail."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import PROBE_BACKPORT, PROBE_BASELINE, load_facts, load_record
from harness import (bisect, bisect_report, bisect_run, checks, cli, dmesg, expectations, pipeline, results,
                     scenarios, series, tree)
from harness.bisect import Criterion, Judgement, Outcome, Search, Step
from harness.cache import Cache
from conftest import ROOT
from harness.proc import CommandLog


def simulate(n: int, answer: int, skips=()) -> tuple[list[int], bisect.Conclusion]:
    """Search positions 0..n where positions >= answer are NEW; return the test order and conclusion."""
    search = Search(range(n + 1))
    order = []
    while (p := search.next()) is not None:
        assert p not in order, f"position {p} tested twice"
        order.append(p)
        search.record(p, Outcome.SKIP if p in skips else Outcome.NEW if p >= answer else Outcome.OLD)
    return order, search.conclusion()


@pytest.mark.parametrize("n", range(1, 17))
def test_every_answer_is_found_with_both_neighbours_tested_within_the_promised_steps(n):
    promised = Search(range(n + 1)).worst_case
    for answer in range(1, n + 1):
        order, c = simulate(n, answer)
        assert c.status == "found" and c.first_new == answer and c.last_old == answer - 1, (n, answer, c)
        assert answer in order and answer - 1 in order
        assert len(order) <= promised, (n, answer, order)
    # about log2 of the positions: never more than one step beyond a plain bisection
    assert promised <= bisect.max_steps(n + 1) + 1


def test_six_patches_take_at_most_three_steps_and_patch_six_takes_three():
    assert Search(range(7)).worst_case == 3
    order, c = simulate(6, 6)
    assert order == [3, 5, 6] and c.first_new == 6


def test_a_skip_beside_the_answer_makes_it_ambiguous_and_names_both_candidates():
    order, c = simulate(6, 3, skips={3})
    assert c.status == "ambiguous" and c.candidates == (3, 4) and c.first_new == 4 and c.last_old == 2
    assert "one of 3, 4" in c.message


def test_a_skip_away_from_the_answer_is_stepped_around():
    order, c = simulate(6, 5, skips={3})
    assert 3 in order and c.status == "found" and c.first_new == 5


def test_everything_from_an_unappliable_patch_on_is_ambiguous_among_those_patches():
    order, c = simulate(7, 6, skips={4, 5, 6, 7})
    assert c.status == "ambiguous" and c.candidates == (4, 5, 6, 7) and c.last_old == 3
    assert "7 could not be tested" in c.message


@pytest.mark.parametrize("answer,which", [(0, "good end 0 is bad"), (7, "bad end 6 is good")])
def test_an_end_that_is_not_what_it_was_said_to_be_is_reported_not_blamed(answer, which):
    _, c = simulate(6, answer)
    assert c.status == "inconsistent" and which in c.message and c.first_new is None


# --- judging saved results of real cycles --------------------------------------------------

def _doc(tmp_path: Path, capture: Path, stems, error: str | None = None, error_type: str | None = None,
         expect: dict | None = None) -> dict:
    """results.json of real captured cycles judged against ``expect``, as run_cell writes it."""
    run = results.RunResult(command="harness run ...", out_dir=tmp_path / capture.name, profile="virt-mmio")
    for stem in stems:
        rec = load_record(stem, capture)
        tl = dmesg.parse(rec.dmesg)
        run.cycles.append(results.CycleResult(rec, tl, tuple(checks.check_cycle(rec, load_facts(capture), tl,
                                                                                 expect or {})), f"{stem}.dmesg"))
    run.error, run.error_type = error, error_type
    run.error_verdict = "HANG" if error_type == "GuestHang" else "ERROR" if error else None
    return results.to_json(run)


def test_consumer_ready_fails_on_the_baseline_captures_and_passes_on_the_backport(tmp_path):
    crit = Criterion(("consumer-ready",))
    base = bisect.judge(_doc(tmp_path, PROBE_BASELINE, ["s2idle-rtc-1", "s2idle-rtc-2"]), crit)
    back = bisect.judge(_doc(tmp_path, PROBE_BACKPORT, ["s2idle-rtc-1", "s2idle-rtc-2"]), crit)
    assert (base.failing, base.failed_cycles, base.cycles) == (True, 2, 2)
    assert (back.failing, back.failed_cycles, back.cycles) == (False, 0, 2)
    # the baseline capture's consumer line says the provider was not ready at resume_early
    assert any("not-ready" in line for line in base.evidence), base.evidence
    assert bisect.outcome_of(base, new_is_failing=True) is Outcome.NEW
    assert bisect.outcome_of(back, new_is_failing=True) is Outcome.OLD
    # --first-fixed: the backport is the new side
    assert bisect.outcome_of(back, new_is_failing=False) is Outcome.NEW


def test_expected_failures_still_count_as_failed(tmp_path):
    expect = expectations.load_expectations(ROOT / "patches" / "baseline-6.12" / "expect.yaml")
    doc = _doc(tmp_path, PROBE_BASELINE, ["s2idle-rtc-1"], expect=expect)
    assert {c["verdict"] for c in doc["cycles"][0]["checks"] if c["name"] == "consumer-ready"} == {"XFAIL"}
    assert bisect.judge(doc, Criterion(("consumer-ready",))).failing is True
    # ... while --verdict mode follows the expectations: the baseline is as expected
    assert bisect.judge(doc, Criterion()).failing is False


def test_threshold_counts_failed_cycles(tmp_path):
    doc = _doc(tmp_path, PROBE_BASELINE, ["s2idle-rtc-1", "s2idle-rtc-2"])
    assert bisect.judge(doc, Criterion(("consumer-ready",), threshold=2)).failing is True
    j = bisect.judge(doc, Criterion(("consumer-ready",), threshold=3))
    assert j.failing is False and j.failed_cycles == 2 and "2/2" in j.reason


def test_a_check_that_ran_in_no_cycle_makes_the_step_a_skip(tmp_path):
    # without the series the probe has no restore_noirq: no-second-reinit has nothing to look at
    doc = _doc(tmp_path, PROBE_BASELINE, ["s2idle-rtc-1", "s2idle-rtc-2"])
    assert {c["verdict"] for cy in doc["cycles"] for c in cy["checks"] if c["name"] == "no-second-reinit"} == {"SKIP"}
    j = bisect.judge(doc, Criterion(("no-second-reinit",)))
    assert j.untestable is Outcome.SKIP and "no-second-reinit was SKIP" in j.reason
    # with another check that did run, the step can tell
    assert bisect.judge(doc, Criterion(("no-second-reinit", "consumer-ready"))).failing is True


@pytest.mark.parametrize("error_type,untestable", [
    ("ApplyError", Outcome.SKIP), ("BuildError", Outcome.SKIP), ("KconfigMismatch", Outcome.SKIP),
    ("GuestHang", Outcome.ERROR), ("BootError", Outcome.ERROR), ("GuestCrash", Outcome.ERROR),
    ("SeriesError", Outcome.ERROR)])
def test_errors_are_skips_only_when_the_tree_cannot_be_tested(tmp_path, error_type, untestable):
    # a hang after a cycle that failed is still an error: the answer is unknown
    doc = _doc(tmp_path, PROBE_BASELINE, ["s2idle-rtc-1"], error=f"{error_type}: it went wrong\ndetail",
               error_type=error_type)
    j = bisect.judge(doc, Criterion(("consumer-ready",)))
    assert j.untestable is untestable and j.failing is None and j.reason == f"{error_type}: it went wrong"


# --- driving a search: retries ------------------------------------------------------------

def _fake_runner(outcomes: dict[int, list[Judgement]]):
    calls = []

    def run(index: int, attempt: int) -> Step:
        calls.append((index, attempt))
        j = outcomes[index][min(attempt, len(outcomes[index])) - 1]
        return Step(index, f"patches 1-{index}", f"{index:040x}", Outcome.SKIP, j)
    return run, calls


def _j(failing: bool | None, untestable: Outcome | None = None) -> Judgement:
    return Judgement(failing, int(bool(failing)), 3, untestable, "r")


def test_an_error_is_retried_once_and_then_counted():
    outcomes = {k: [_j(k >= 6)] for k in range(7)}
    outcomes[3] = [_j(None, Outcome.ERROR), _j(False)]
    run, calls = _fake_runner(outcomes)
    steps, error = bisect.run_search(Search(range(7)), run, True)
    assert error is None and calls[:2] == [(3, 1), (3, 2)]
    assert [s.outcome for s in steps[:2]] == [Outcome.ERROR, Outcome.OLD] and steps[1].attempt == 2


def test_a_second_error_stops_the_bisect_without_counting_the_step():
    outcomes = {k: [_j(k >= 6)] for k in range(7)}
    outcomes[3] = [_j(None, Outcome.ERROR)]
    run, calls = _fake_runner(outcomes)
    search = Search(range(7))
    steps, error = bisect.run_search(search, run, True)
    assert calls == [(3, 1), (3, 2)] and error is steps[-1] and 3 not in search.known


# --- git bisect run exit codes ------------------------------------------------------------

@pytest.mark.parametrize("judgement,first_fixed,exit_code,expected", [
    (_j(False), False, None, 0), (_j(True), False, None, 1),
    (_j(True), True, None, 0), (_j(False), True, None, 1),
    (_j(None, Outcome.SKIP), False, 4, 125), (_j(None, Outcome.SKIP), False, 5, 125),
    (_j(None, Outcome.ERROR), False, 6, 134), (_j(None, Outcome.ERROR), False, 7, 135),
    (_j(None, Outcome.ERROR), False, 1, 128), (_j(None, Outcome.ERROR), False, 3, 128),
    (_j(None, Outcome.ERROR), False, 130, 130)])
def test_git_bisect_run_exit_codes(judgement, first_fixed, exit_code, expected):
    assert bisect.git_bisect_exit(judgement, Criterion(("consumer-ready",), first_fixed=first_fixed),
                                  exit_code) == expected


def test_errors_before_any_judgement_never_read_as_bad():
    assert bisect.git_bisect_exit_for_error("ApplyError", 4) == 125
    assert bisect.git_bisect_exit_for_error("KconfigMismatch", 2) == 125
    assert bisect.git_bisect_exit_for_error("UsageError", 2) == 128
    assert bisect.git_bisect_exit_for_error("SeriesError", 3) == 128


def test_cli_usage_errors_with_bisect_exit_abort_git_bisect(capsys):
    assert cli.main(["run", "--bisect-exit", "--no-such-option"]) == 128
    assert cli.main(["run", "--bisect-exit", "--check", "no-such-check"]) == 128
    with pytest.raises(SystemExit) as e:  # without --bisect-exit argparse's own exit 2 stands
        cli.main(["run", "--no-such-option"])
    assert e.value.code == 2


def test_bisect_needs_a_check_or_the_verdict(capsys):
    assert cli.main(["bisect", "--series", "patches/v9-backport-6.12"]) == 2
    assert "--check NAME" in capsys.readouterr().err
    assert cli.main(["bisect", "--revisions", "a", "b", "--check", "consumer-ready", "--good", "1"]) == 2


# --- bisect.json, bisect.log and the reply mail ----------------------------------------------

def _finished_run(tmp_path: Path, spec: str = "v9-backport-6.12") -> bisect_report.BisectRun:
    """A finished ``--first-fixed`` bisect for consumer-ready over the backport's five patches whose
    steps are real captured cycles: the baseline's capture stands for the steps before the
    virtio-mmio wiring (the provider is not ready at the consumer's resume_early), the backport's
    for patch 5.  With ``spec`` another revision's patches are named (same captures)."""
    rev, _ = series.load_revision(str(ROOT / "patches" / spec), Cache(tmp_path / "cache"), CommandLog())
    kt = tree.KernelTree(tmp_path / "linux", "d68cc9f5f251" + "0" * 28, "6.12.117", "debian/6.12.117-1_deb12u1",
                         True)
    crit = Criterion(("consumer-ready",), first_fixed=True)
    scenario = scenarios.with_cycles(scenarios.find_scenario("s2idle-rtc"), 2)
    req = pipeline.Request(series=rev.source)
    positions = tuple(bisect_run.Position(k, f"patches 1-{k}" if k else "base (no patch)", replace(req, upto=k),
                                          None, f"{k + 1:040x}", rev.patches[k - 1] if k else None)
                      for k in range(rev.total + 1))
    plan = bisect_run.Plan("patches", positions, rev, kt, kt.commit)
    search = Search(range(rev.total + 1))
    steps = []
    while (k := search.next()) is not None:
        capture = PROBE_BACKPORT if k >= 5 else PROBE_BASELINE
        step_dir = tmp_path / "out" / "steps" / f"k{k}"
        step_dir.mkdir(parents=True)
        doc = _doc(tmp_path, capture, ["s2idle-rtc-1", "s2idle-rtc-2"])
        doc["cell"] = f"patches 1-{k}/virt-mmio/s2idle-rtc"
        (step_dir / "results.json").write_text(json.dumps(doc))
        for stem in ("s2idle-rtc-1", "s2idle-rtc-2"):
            shutil.copy(capture / f"{stem}.dmesg", step_dir / f"{stem}.dmesg")
        j = bisect.judge(doc, crit)
        steps.append(Step(k, positions[k].label, f"{k + 1:040x}", bisect.outcome_of(j, False), j,
                          {"build": 20.0, "cycles": 7.0}, step_dir, f"harness run --upto {k} --bisect-exit"))
        search.record(k, steps[-1].outcome)
    return bisect_report.BisectRun(plan, crit, scenario, tuple(steps), search.conclusion(terms=crit.terms), None,
                                   3, 81.0, tmp_path / "out")


def test_bisect_json_and_log_name_the_first_fixed_patch(tmp_path):
    run = _finished_run(tmp_path)
    paths = bisect_report.write(run)
    doc = json.loads(paths["json"].read_text())
    first = doc["result"]["first_new"]
    assert doc["result"]["status"] == "found" and first["index"] == 5 and doc["result"]["last_old"]["position"] == 4
    assert first["subject"] == "virtio-mmio: wire up noirq system sleep PM callbacks"
    assert first["message_id"] == "2e106878664dfb3d61be8ed8e186ad5e09f3fd0e.1795281987.git.harness@localhost"
    assert [s["outcome"] for s in doc["steps"]] == ["broken", "broken", "fixed"]
    assert doc["steps"][2]["results"] == "steps/k5/results.json" and doc["steps"][0]["failed_cycles"] == 2
    assert doc["criterion"]["terms"] == {"old": "broken", "new": "fixed"}
    log = paths["log"].read_text().splitlines()
    assert log[3] == f"git bisect start --term-old=broken --term-new=fixed '{6:040x}' '{1:040x}'"
    assert f"git bisect broken {5:040x}" in log and f"git bisect fixed {6:040x}" in log
    assert log[-1] == f"# first fixed commit: [{6:040x}] {first['subject']}"
    html = paths["html"].read_text()
    assert "last broken: patches 1-4" in html and "first fixed: patches 1-5" in html


def test_the_reply_mail_reads_back_as_a_reply_to_the_patch(tmp_path):
    run = _finished_run(tmp_path)
    path = bisect_report.write_reply(run, tmp_path / "reply.eml", "Bisect Bot <bot@example.org>")
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    patch = run.plan.revision.patches[4]
    original = email.message_from_bytes(patch.raw, policy=email.policy.default)
    assert msg["In-Reply-To"] == f"<{patch.msgid}>"
    assert msg["References"].split() == ["<cover.1795281987.git.harness@localhost>", f"<{patch.msgid}>"]
    assert msg["Subject"] == "Re: " + " ".join(str(original["Subject"]).split())
    assert msg["Subject"].startswith("Re: [RFC PATCH 6.12-backport v9 5/5] virtio-mmio: wire up")
    assert msg["To"] == patch.author and msg["From"] == "Bisect Bot <bot@example.org>"
    body = msg.get_content()
    assert "With the patch (patches 1-5): consumer-ready failed in 0/2 cycles" in body
    assert "Without it (patches 1-4): consumer-ready failed in 2/2 cycles" in body
    assert "harness run --upto 5 --bisect-exit" in body and "not-ready" in body


def test_no_reply_without_a_single_patch_or_its_message_id(tmp_path):
    run = _finished_run(tmp_path)
    ambiguous = replace(run, conclusion=bisect.Conclusion("ambiguous", "cannot decide", None, 4, (5,)))
    with pytest.raises(ValueError, match="did not name one patch"):
        bisect_report.reply_mail(ambiguous, "a@b")
    # the injected defects are format-patch files without a Message-ID: nothing to reply to
    defect = _finished_run(tmp_path / "d", "defects/double-reinit")
    defect = replace(defect, conclusion=bisect.Conclusion("found", "first bad: patch 6", 6, 5, (6,)),
                     steps=defect.steps + (replace(defect.steps[-1], position=6, label="patches 1-6"),))
    with pytest.raises(ValueError, match="no Message-ID"):
        bisect_report.reply_mail(defect, "a@b")


def test_an_inner_bisect_starts_where_a_stacked_revision_stops_being_the_reference(tmp_path):
    cache, log = Cache(tmp_path / "cache"), CommandLog()

    def position(name: str, base: str = "b" * 40) -> bisect_run.Position:
        rev, _ = series.load_revision(str(ROOT / "patches" / name), cache, log)
        return bisect_run.Position(0, name, pipeline.Request(series=name, base=base), None, revision=rev)

    backport, late = position("v9-backport-6.12"), position("defects/late-provider")
    assert bisect_run.shared_prefix(backport, late) == 5
    assert bisect_run.shared_prefix(late, position("defects/no-noirq-wiring")) == 0  # a sibling, not a prefix
    assert bisect_run.shared_prefix(backport, position("defects/late-provider", base="c" * 40)) == 0
    assert bisect_run.shared_prefix(bisect_run.Position(0, "bare", pipeline.Request(), None), late) == 0
