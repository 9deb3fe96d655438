"""End-to-end: `harness bisect` and `git bisect run harness run --bisect-exit` on real kernels
(needs `make setup`).  Every step applies, builds, boots and suspends a real guest; steps run
fresh (--no-reuse) except where reuse itself is under test."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import series, tree
from harness.cache import Cache
from conftest import ROOT
from harness.proc import CommandLog

pytestmark = pytest.mark.e2e

BACKPORT = str(ROOT / "patches" / "v9-backport-6.12")
DOUBLE_REINIT = str(ROOT / "patches" / "defects" / "double-reinit")
LATE_PROVIDER = str(ROOT / "patches" / "defects" / "late-provider")
NO_WIRING = str(ROOT / "patches" / "defects" / "no-noirq-wiring")
#: A bisect runs a few steps of about a minute and a half each (build with ccache, boot, 3 cycles).
BISECT_TIMEOUT = 1800


def harness(*args: str, timeout: float = BISECT_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def bisect_doc(out: Path) -> dict:
    return json.loads((out / "bisect.json").read_text())


def test_bisect_names_the_injected_defect_in_at_most_three_steps(tmp_path):
    """The double-reinit defect is patch 6 of a six-patch series (the backport's five, then the
    defect).  Its checks are no-second-reinit and devices-work; both pass (or, for
    no-second-reinit on the bare tree, do not apply) from the base up to the whole backport, so
    the search from 0 to 6 is monotone."""
    out = tmp_path / "bisect"
    proc = harness("bisect", "--series", DOUBLE_REINIT, "--check", "no-second-reinit", "--check", "devices-work",
                   "--out", str(out), "--no-reuse")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    doc = bisect_doc(out)
    first, last = doc["result"]["first_new"], doc["result"]["last_old"]
    assert doc["result"]["status"] == "found" and first["index"] == 6 and last["position"] == 5, doc["result"]
    assert first["subject"].startswith("DEFECT double-reinit")
    assert doc["worst_case_steps"] == 3 and doc["steps_run"] <= 3
    steps = {s["position"]: s for s in doc["steps"]}
    assert steps[6]["outcome"] == "bad" and steps[6]["failed_cycles"] >= 1
    assert steps[5]["outcome"] == "good" and steps[5]["failed_cycles"] == 0 and steps[5]["cycles"] == 3
    assert any("devices-work: FAIL" in line or "no-second-reinit: FAIL" in line for line in steps[6]["evidence"])
    for s in doc["steps"]:  # every step really ran: its results are kept, with its stage timings
        assert (out / s["results"]).is_file() and not s["reused"]
        assert {"apply", "build", "boot", "cycles"} <= set(s["seconds"]), s["seconds"]
        assert f"--upto {s['position']}" in s["reproducer"] and "--bisect-exit" in s["reproducer"]
    assert "first bad patch: patch 6 ([v9 6/6] DEFECT double-reinit" in proc.stdout
    assert (out / "report.html").is_file() and "first bad commit" in (out / "bisect.log").read_text()


@pytest.fixture(scope="module")
def first_fixed(tmp_path_factory):
    out = tmp_path_factory.mktemp("first-fixed") / "bisect"
    proc = harness("bisect", "--series", BACKPORT, "--check", "consumer-ready", "--first-fixed", "--out", str(out),
                   "--no-reuse", "--reply", str(out.parent / "reply.eml"))
    return proc, out


def test_first_fixed_names_the_virtio_mmio_wiring(first_fixed):
    """Which patch of the backport makes the consumer find its provider ready at resume_early?
    Patch 5, the virtio-mmio wiring, and no earlier one: up to patch 3 the probe has no
    restore_noirq (the API is not in the headers) and the provider comes back in the normal
    phase, after the consumer's resume_early; with patch 4 the probe implements restore_noirq
    but virtio-mmio is not yet noirq_safe, so virtio_device_freeze() refuses with -EOPNOTSUPP
    and every suspend aborts (seen in the step's dmesg: "platform_pm_suspend returns -95");
    only patch 5 sets noirq_safe and registers SET_NOIRQ_SYSTEM_SLEEP_PM_OPS."""
    proc, out = first_fixed
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    doc = bisect_doc(out)
    first = doc["result"]["first_new"]
    assert first["index"] == 5 and first["subject"] == "virtio-mmio: wire up noirq system sleep PM callbacks"
    assert doc["criterion"]["terms"] == {"old": "broken", "new": "fixed"}
    steps = {s["position"]: s for s in doc["steps"]}
    assert steps[5]["outcome"] == "fixed" and steps[5]["failed_cycles"] == 0
    assert steps[4]["outcome"] == "broken" and steps[4]["failed_cycles"] == 3
    assert any("provider=not-ready" in line for line in steps[4]["evidence"]), steps[4]["evidence"]
    k4 = (out / "steps" / "k4" / "s2idle-rtc-1.dmesg").read_text()
    assert "virtio-mmio a003e00.virtio_mmio: PM: failed to suspend: error -95" in k4
    assert any("provider=ready" in line for line in steps[5]["evidence"]), steps[5]["evidence"]
    assert doc["steps_run"] <= 3


def test_the_reply_mail_threads_under_the_patch(first_fixed):
    _, out = first_fixed
    msg = email.message_from_bytes((out.parent / "reply.eml").read_bytes(), policy=email.policy.default)
    rev, _ = series.load_revision(BACKPORT, Cache.from_env(), CommandLog())
    patch = rev.patches[4]
    assert msg["In-Reply-To"] == f"<{patch.msgid}>"
    assert msg["References"].split()[-1] == f"<{patch.msgid}>" and rev.cover.msgid in msg["References"]
    assert msg["Subject"].startswith("Re: [RFC PATCH 6.12-backport v9 5/5] virtio-mmio: wire up")
    body = msg.get_content()
    assert "consumer-ready failed in 0/3 cycles" in body and "consumer-ready failed in 3/3 cycles" in body


def test_asking_again_reuses_every_step(first_fixed, tmp_path):
    _, first_out = first_fixed
    proc = harness("bisect", "--series", BACKPORT, "--check", "consumer-ready", "--first-fixed",
                   "--out", str(tmp_path / "again"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    again, before = bisect_doc(tmp_path / "again"), bisect_doc(first_out)
    assert all(s["reused"] for s in again["steps"]) and again["result"] == before["result"]
    assert [s["position"] for s in again["steps"]] == [s["position"] for s in before["steps"]]


def _renumbered(mail: bytes, index: int, total: int) -> bytes:
    return re.sub(rb"(\[RFC PATCH 6\.12-backport v9 )\d+/\d+\]", rb"\g<1>%d/%d]" % (index, total), mail, count=1)


#: A patch written against another tree: its context is not in drivers/virtio/virtio.c and it has
#: no blob index, so `git am --3way` cannot apply it.
_FOREIGN_PATCH = b"""From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: Someone Else <someone@example.org>
Date: Sun, 22 Nov 2026 10:00:00 +0000
Subject: [RFC PATCH 6.12-backport v9 5/6] virtio: a change written against another tree
Message-Id: <foreign.1@example.org>

Its context lines do not exist in this tree.
---
 drivers/virtio/virtio.c | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/drivers/virtio/virtio.c b/drivers/virtio/virtio.c
--- a/drivers/virtio/virtio.c
+++ b/drivers/virtio/virtio.c
@@ -9000,3 +9000,3 @@ static int no_such_function(void)
 \tint this_line_is_not_in_the_tree;
-\treturn no_such_value;
+\treturn another_value;
 }
--
2.39.5
"""


def test_a_patch_that_does_not_apply_is_a_skip_and_the_answer_names_both_candidates(tmp_path):
    """Backport patches 1-4, a patch that does not apply, then the wiring patch: steps 5 and 6
    cannot be built, so the first fixed patch is one of them and the bisect says it cannot
    decide between the two, with the reason."""
    rev, _ = series.load_revision(BACKPORT, Cache.from_env(), CommandLog())
    mails = tmp_path / "series"
    mails.mkdir()
    for k, p in enumerate(rev.patches[:4], 1):
        (mails / f"{k:04d}.patch").write_bytes(_renumbered(p.raw, k, 6))
    (mails / "0005.patch").write_bytes(_FOREIGN_PATCH)
    (mails / "0006.patch").write_bytes(_renumbered(rev.patches[4].raw, 6, 6))
    out = tmp_path / "bisect"
    proc = harness("bisect", "--series", str(mails), "--check", "consumer-ready", "--first-fixed", "--good", "4",
                   "--out", str(out), "--no-reuse")
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-3000:]
    doc = bisect_doc(out)
    assert doc["result"]["status"] == "ambiguous"
    assert [c["index"] for c in doc["result"]["candidates"]] == [5, 6]
    steps = {s["position"]: s for s in doc["steps"]}
    assert steps[5]["outcome"] == steps[6]["outcome"] == "skip" and "5/6" in steps[5]["reason"]
    assert "did not apply" in steps[5]["reason"] and steps[5]["results"] is None
    assert steps[4]["outcome"] == "broken" and steps[4]["failed_cycles"] == 3
    assert "cannot decide" in proc.stdout and "patch 5" in proc.stdout and "patch 6" in proc.stdout


def test_over_revisions_the_first_different_one_is_named_then_its_patch(tmp_path):
    """consumer-ready passes on the backport and fails on both defects; the first revision that
    differs is late-provider, and inside it the search starts at patch 5 (its first five patches
    are the backport) and names its defect patch."""
    out = tmp_path / "bisect"
    proc = harness("bisect", "--revisions", BACKPORT, LATE_PROVIDER, NO_WIRING, "--check", "consumer-ready",
                   "--then-patches", "--out", str(out), "--no-reuse")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    doc = bisect_doc(out)
    assert doc["kind"] == "revisions" and doc["result"]["status"] == "found"
    assert doc["result"]["first_new"]["revision"] == LATE_PROVIDER
    assert doc["result"]["last_old"]["revision"] == BACKPORT
    outcomes = {s["label"]: s["outcome"] for s in doc["steps"]}
    assert outcomes == {BACKPORT: "same", LATE_PROVIDER: "different"}  # no-noirq-wiring never needed
    inner = doc["inner"]
    assert inner["positions"] == [5, 6] and inner["result"]["first_new"]["index"] == 6
    assert inner["result"]["first_new"]["subject"].startswith("DEFECT late-provider")


# --- git bisect run over a real history ---------------------------------------------------------

@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A throwaway git repository: the embedded tree, the backport's five commits, then the
    double-reinit defect commit (applied with git am, as a developer's branch would hold them)."""
    cache, log = Cache.from_env(), CommandLog()
    kt = tree.embedded_tree(cache, log)
    repo = tmp_path_factory.mktemp("history") / "linux"
    subprocess.run(["git", "clone", "-q", "--shared", str(kt.path), str(repo)], check=True, timeout=900)
    rev, _ = series.load_revision(DOUBLE_REINIT, cache, log)
    mails = []
    for p in rev.patches:
        f = repo.parent / f"{p.index:04d}.patch"
        f.write_bytes(p.raw)
        mails.append(str(f))
    env = {**os.environ, "GIT_COMMITTER_NAME": "history", "GIT_COMMITTER_EMAIL": "history@localhost"}
    subprocess.run(["git", "-C", str(repo), "am", "-q", "--3way", *mails], check=True, timeout=300, env=env)
    shas = subprocess.run(["git", "-C", str(repo), "rev-list", "--reverse", f"{kt.commit}..HEAD"], check=True,
                          capture_output=True, text=True).stdout.split()
    assert len(shas) == 6
    return repo, kt.commit, shas


def test_git_bisect_run_names_the_defect_commit(history, tmp_path):
    repo, base, shas = history
    git = ["git", "-C", str(repo)]
    head_before = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    subprocess.run([*git, "bisect", "start", shas[-1], base], check=True, capture_output=True, timeout=60)
    try:
        proc = subprocess.run([*git, "bisect", "run", sys.executable, "-m", "harness", "run", "--tree", ".",
                               "--bisect-exit", "--check", "no-second-reinit", "--check", "devices-work",
                               "--scenario", "s2idle-rtc:3"], capture_output=True, text=True, timeout=BISECT_TIMEOUT)
        log = subprocess.run([*git, "bisect", "log"], capture_output=True, text=True).stdout
    finally:
        subprocess.run([*git, "bisect", "reset"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert f"{shas[5]} is the first bad commit" in proc.stdout, proc.stdout[-3000:]
    assert "DEFECT double-reinit" in proc.stdout
    assert re.findall(r"^git bisect (good|bad) ", log, re.M), log  # every step was judged, none skipped
    # git moved HEAD and put it back; the harness wrote nothing into the tree
    assert subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() == head_before
    assert subprocess.run([*git, "status", "--porcelain", "--ignored"], capture_output=True,
                          text=True).stdout == ""
