"""``harness gc``: the plan over made-up entries, and scan + apply on a cache in a temporary
directory with real git worktrees of an embedded tree and of a user's repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT
from harness import cli, gc, timeouts, tree
from harness.cache import Cache, disk_usage, remove_tree
from harness.cli_args import build_parser
from harness.errors import SetupError
from harness.proc import CommandLog

NOW = 2_000_000_000.0
DAY = gc.DAY
LOG = CommandLog(None)
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "A U Thor", "GIT_AUTHOR_EMAIL": "author@example.org",
           "GIT_COMMITTER_NAME": "C O Mitter", "GIT_COMMITTER_EMAIL": "committer@example.org"}


def entry(name: str, days: float, size: int = 100, kind: str = "run", needs: tuple[str, ...] = (),
          protected: bool = False) -> gc.Entry:
    return gc.Entry(kind, Path("/c") / name, size, NOW - days * DAY, protected, "", tuple(Path("/c") / n for n in needs))


def names(entries) -> list[str]:
    return [str(e.path.relative_to("/c")) for e in entries]


# --- plan ----------------------------------------------------------------------------------------

def test_plan_removes_least_recently_used_first_until_the_cache_fits_the_budget():
    entries = [entry("runs/new", 1), entry("runs/old", 9), entry("runs/mid", 5), entry("runs/older", 20)]
    assert names(gc.plan(entries, NOW, None, 250)) == ["runs/older", "runs/old"]
    assert names(gc.plan(entries, NOW, None, 400)) == []
    assert names(gc.plan(entries, NOW, None, 0)) == ["runs/older", "runs/old", "runs/mid", "runs/new"]
    assert gc.plan(entries, NOW, None, 250)[0].reason == "over the size budget (250B)"


def test_plan_by_age_takes_only_what_is_older_and_either_test_can_pick():
    entries = [entry("runs/new", 1), entry("runs/old", 9), entry("runs/older", 20)]
    assert names(gc.plan(entries, NOW, 7, None)) == ["runs/older", "runs/old"]
    assert gc.plan(entries, NOW, 7, None)[0].reason == "unused for more than 7 days"
    # a budget on top takes more, still least recently used first
    assert names(gc.plan(entries, NOW, 7, 50)) == ["runs/older", "runs/old", "runs/new"]
    assert gc.plan(entries, NOW, None, None) == []


def test_plan_never_picks_protected_or_recently_used_entries_nor_what_they_need():
    entries = [entry("ccache", 400, 10_000, "ccache", protected=True),
               entry("src/linux-source-1.tar.xz", 300, kind="tarball"),
               entry("trees/linux-1", 200, 5000, "tree", needs=("src/linux-source-1.tar.xz",), protected=True),
               entry("runs/running", 0.01),  # 15 minutes: a run may still be writing it
               entry("runs/old", 50)]
    assert names(gc.plan(entries, NOW, 0, 0)) == ["runs/old"]


def test_plan_takes_builds_before_their_worktree_and_a_worktree_with_its_builds():
    entries = [entry("worktrees/a", 10, 10, "worktree"),
               entry("worktrees/a/build-1", 10, 200, "build", needs=("worktrees/a",)),
               entry("worktrees/a/build-2", 12, 300, "build", needs=("worktrees/a",)),
               entry("runs/r", 1, 100)]
    # a little over: the least recently used build alone goes, not its worktree
    assert names(gc.plan(entries, NOW, None, 400)) == ["worktrees/a/build-2"]
    # the worktree counts as used when its newest build was; it goes after both builds
    assert names(gc.plan(entries, NOW, None, 100)) == ["worktrees/a/build-2", "worktrees/a/build-1", "worktrees/a"]
    # by age: the worktree needs its builds gone first, so they are listed before it
    wt_old = [entry("worktrees/a", 40, 10, "worktree"),
              entry("worktrees/a/build-1", 40, 200, "build", needs=("worktrees/a",))]
    chosen = gc.plan(wt_old, NOW, 30, None)
    assert names(chosen) == ["worktrees/a/build-1", "worktrees/a"]


def test_plan_takes_a_tree_only_with_its_worktrees_and_keeps_its_tarball_while_it_is_used():
    entries = [entry("src/linux-source-1.tar.xz", 300, kind="tarball"),
               entry("trees/linux-1", 200, 5000, "tree", needs=("src/linux-source-1.tar.xz",)),
               entry("worktrees/a", 3, 10, "worktree", needs=("trees/linux-1",)),
               entry("worktrees/a/build-1", 3, 200, "build", needs=("worktrees/a",))]
    # the tarball and the tree count as used 3 days ago, when their worktree was
    assert names(gc.plan(entries, NOW, 30, None)) == []
    assert names(gc.plan(entries, NOW, 2, None)) == [
        "worktrees/a/build-1", "worktrees/a", "trees/linux-1", "src/linux-source-1.tar.xz"]
    # with the tree protected (no --trees), its worktree and build may still go, the rest stays
    protected = [e if e.kind != "tree" else gc.Entry(e.kind, e.path, e.size_bytes, e.last_used, True, "", e.needs)
                 for e in entries]
    assert names(gc.plan(protected, NOW, 2, None)) == ["worktrees/a/build-1", "worktrees/a"]


@pytest.mark.parametrize("text,size", [("20G", 20 << 30), ("500M", 500 << 20), ("1.5T", int(1.5 * (1 << 40))),
                                       ("800k", 800 << 10), ("4096", 4096), ("2GiB", 2 << 30), ("3 GB", 3 << 30)])
def test_sizes_are_read_in_powers_of_1024(text, size):
    assert gc.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "20X", "-1G", "1,5G"])
def test_a_size_that_is_not_one_is_refused(text):
    with pytest.raises(ValueError, match="not a size"):
        gc.parse_size(text)


def test_sizes_are_printed_as_du_h_does_and_the_cli_reads_them():
    assert [gc.format_size(n) for n in (512, 60 << 10, 302 << 20, int(7.4 * (1 << 30)))] == \
        ["512B", "60.0K", "302M", "7.4G"]
    assert build_parser().parse_args(["gc", "--max-size", "8G"]).max_size == 8 << 30
    assert build_parser().parse_args(["matrix", "--gc", "20G"]).gc == 20 << 30
    with pytest.raises(SystemExit):
        build_parser().parse_args(["gc", "--older-than", "-3"])


# --- scan and apply on a cache with real worktrees ---------------------------------------------------

def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=GIT_ENV).stdout.strip()


def make_repo(path: Path) -> tuple[str, str]:
    """A repository with two commits; returns their shas."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "master")
    (path / "Makefile").write_text("VERSION = 1\nPATCHLEVEL = 0\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "one")
    (path / "a.c").write_text("int a;\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "two")
    return git(path, "rev-parse", "HEAD~1"), git(path, "rev-parse", "HEAD")


def age(path: Path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t), follow_symlinks=False)


def worktree_paths(repo: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in git(repo, "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")]


@pytest.fixture
def fake_cache(tmp_path):
    """A cache with an embedded tree (and its tarball), two worktrees of it (one used 40 days
    ago with a finished build, one just now), a worktree of a user's repository used 40 days
    ago, and a 40-day-old run."""
    cache = Cache(tmp_path / "cache")
    embedded = cache.root / "trees" / "linux-1.0-1"
    first, second = make_repo(embedded)
    (cache.root / "src").mkdir()
    (cache.root / "src" / "linux-source-1.0-1.tar.xz").write_bytes(b"x" * 4096)
    kt = tree.KernelTree(embedded, second, "1.0.0", "debian/1.0-1", embedded=True, name="debian-1.0")
    old = tree.apply_series(kt, first, (), cache, LOG)
    build = old.path / "build-0123456789abcdef"
    build.mkdir()
    (build / "Image").write_bytes(b"k" * 100_000)
    (build / "harness-build.json").write_text("{}")
    new = tree.apply_series(kt, second, (), cache, LOG)
    user = tmp_path / "user-linux"
    _, user_head = make_repo(user)
    git(user, "worktree", "add", "-q", "--detach", str(tmp_path / "users-own-worktree"))
    theirs = tree.apply_series(tree.KernelTree(user, user_head, "1.0.0", "v1", embedded=False), user_head, (),
                               cache, LOG)
    run = cache.root / "runs" / "20260101T000000Z"
    run.mkdir(parents=True)
    (run / "results.json").write_text("{}")
    for path in (old.path.with_suffix(".json"), build / "harness-build.json", build / "Image",
                 theirs.path.with_suffix(".json"), pristine_of(theirs.path) / tree.PRISTINE_RECORD,
                 run / "results.json", run):
        age(path, 40)
    purged(cache)  # the third apply released the oldest checkout
    return cache, embedded, user, old.path, new.path, theirs.path, run


def pristine_of(worktree: Path) -> Path:
    """The pristine checkout whose files ``worktree`` links (its record names it)."""
    return Path(json.loads(worktree.with_suffix(".json").read_text())["pristine"])


def purged(cache: Cache, within: float = 10.0) -> None:
    """Wait until the detached deletions of released checkouts (tree._purge) are done."""
    deadline = time.monotonic() + within
    while list((cache.root / "worktrees").glob(".*.tmp")):
        assert time.monotonic() < deadline, list((cache.root / "worktrees").glob(".*.tmp"))
        time.sleep(0.01)


def test_scan_finds_each_kind_with_sizes_and_its_last_use(fake_cache):
    cache, embedded, user, old, new, theirs, run = fake_cache
    by_path = {e.path: e for e in gc.scan(cache)}
    assert by_path[embedded].kind == "tree" and by_path[embedded].protected
    assert by_path[embedded].needs == (cache.root / "src" / "linux-source-1.0-1.tar.xz",)
    assert [e.protected for e in gc.scan(cache, include_trees=True) if e.kind == "tree"] == [False]
    build = by_path[old / "build-0123456789abcdef"]
    assert (build.kind, build.needs) == ("build", (old,)) and build.size_bytes >= 100_000
    pristine = pristine_of(old)
    assert by_path[old].kind == "worktree" and by_path[old].needs == (embedded, pristine)
    assert by_path[old].size_bytes < build.size_bytes  # the build is not counted twice
    assert time.time() - by_path[old].last_used > 39 * DAY
    assert time.time() - by_path[new].last_used < 600
    assert by_path[theirs].needs == (pristine_of(theirs),)
    assert by_path[theirs].reason == f"worktree of {user.resolve()}"
    # one pristine checkout per repository; the files it shares with the checked-out worktree
    # (new) count once, in the pristine checkout
    assert pristine_of(new) == pristine != pristine_of(theirs)
    assert by_path[pristine].kind == "pristine" and by_path[pristine].reason == f"pristine checkout of {embedded}"
    assert (new / "Makefile").stat().st_ino == (pristine / "tree" / "Makefile").stat().st_ino
    alone = disk_usage(new)[0] + disk_usage(new.with_suffix(".json"))[0]
    assert by_path[new].size_bytes + (new / "Makefile").stat().st_blocks * 512 <= alone
    assert by_path[pristine].size_bytes >= (pristine / "tree" / "Makefile").stat().st_blocks * 512
    assert by_path[run].kind == "run" and time.time() - by_path[run].last_used > 39 * DAY
    assert by_path[cache.root / "locks"].protected


def test_dry_run_lists_what_would_go_and_deletes_nothing(fake_cache, capsys):
    cache, embedded, user, old, new, theirs, run = fake_cache
    before = worktree_paths(embedded), worktree_paths(user)
    out = gc.collect(cache, dry_run=True, max_age_days=30)
    chosen = [e.path for e in out.chosen]
    assert set(chosen) == {old / "build-0123456789abcdef", old, theirs, pristine_of(theirs), run}
    assert chosen.index(old / "build-0123456789abcdef") < chosen.index(old)
    assert chosen.index(theirs) < chosen.index(pristine_of(theirs))  # the pristine checkout goes last
    assert out.freed == sum(e.size_bytes for e in out.chosen) and out.after == out.before - out.freed
    assert all(p.exists() for p in (old, theirs, run, old / "build-0123456789abcdef"))
    assert (worktree_paths(embedded), worktree_paths(user)) == before
    gc.print_outcome(out)
    text = capsys.readouterr().out
    assert "worktrees/" + old.name in text and "would free" in text and "embedded trees" in text


def test_gc_removes_old_worktrees_and_their_git_records_and_leaves_the_embedded_tree(fake_cache):
    cache, embedded, user, old, new, theirs, run = fake_cache
    user_before = git(user, "stash", "list"), git(user, "for-each-ref"), git(user, "status", "--porcelain")
    # the user's own worktree, deleted by hand: its stale record is theirs, gc leaves it
    subprocess.run(["rm", "-rf", str(user.parent / "users-own-worktree")], check=True)
    leftover = cache.root / "worktrees" / f".{old.name}.99999.tmp"
    leftover.mkdir()
    age(leftover, 2)
    theirs_pristine = pristine_of(theirs)
    out = gc.collect(cache, max_age_days=30)
    assert {e.path for e in out.chosen} == {old / "build-0123456789abcdef", old, theirs, theirs_pristine, run,
                                            leftover}
    assert out.freed >= 100_000
    for gone in (old, old.with_suffix(".json"), theirs, theirs.with_suffix(".json"), theirs_pristine, run,
                 leftover):
        assert not gone.exists(), gone
    assert pristine_of(new).is_dir()  # the embedded tree's, linked by new
    assert new.is_dir() and new.with_suffix(".json").is_file() and (embedded / ".git").is_dir()
    assert (cache.root / "src" / "linux-source-1.0-1.tar.xz").is_file()
    assert not list((cache.root / "worktrees").glob(".*.tmp"))
    assert worktree_paths(embedded) == [str(embedded), str(new)]
    # the user's repository lost the record of the harness's worktree and nothing else
    assert worktree_paths(user) == [str(user), str(user.parent / "users-own-worktree")]
    assert (git(user, "stash", "list"), git(user, "for-each-ref"), git(user, "status", "--porcelain")) == user_before
    # the next apply makes the removed revision again
    again = tree.apply_series(tree.KernelTree(embedded, git(embedded, "rev-parse", "HEAD"), "1.0.0", "t", True),
                              git(embedded, "rev-parse", "HEAD~1"), (), cache, LOG)
    assert again.path == old and (old / "Makefile").is_file()


def test_budget_removes_least_recently_used_and_trees_only_when_asked(fake_cache):
    cache, embedded, user, old, new, theirs, run = fake_cache
    out = gc.collect(cache, max_size_bytes=0)
    assert embedded.is_dir() and new.is_dir()  # protected, and used just now
    assert not old.exists() and not theirs.exists()
    assert out.after > 0 and any("over the" in line for line in gc.summary_lines(out))
    # days later, with --trees: the tree goes too, after its worktree, and then its tarball
    out = gc.collect(cache, max_size_bytes=0, include_trees=True, now=time.time() + 3 * DAY)
    assert [e.kind for e in out.chosen] == ["worktree", "pristine", "tree", "tarball"]
    assert not embedded.exists() and not new.exists() and not (cache.root / "src" / "linux-source-1.0-1.tar.xz").exists()
    assert (cache.root / "locks").is_dir()


def test_a_release_keeps_the_worktree_records_last_use(fake_cache):
    cache, embedded, user, old, new, theirs, run = fake_cache
    record = new.with_suffix(".json")
    age(record, 5)
    before = record.stat().st_mtime
    assert new in tree.release_checkouts(cache, kept=0)
    assert not json.loads(record.read_text())["checked_out"] and record.stat().st_mtime == before


def test_a_release_moves_the_source_out_at_once_and_deletes_it_in_the_background(fake_cache):
    """The files go from the worktree before release_checkouts returns (a rename each); their
    deletion, 20-30 s for a kernel, runs in a detached rm that nobody waits for."""
    cache, embedded, user, old, new, theirs, run = fake_cache
    files = sorted(p.name for p in new.iterdir() if p.name != ".git")
    assert files and tree.release_checkouts(cache, kept=0) == [new, theirs]
    assert [p.name for p in new.iterdir()] == [".git"]
    purged(cache)
    assert not list(cache.root.rglob("*.tmp"))
    tree.ensure_checkout(new, LOG)
    assert sorted(p.name for p in new.iterdir() if p.name != ".git") == files


# --- the lock -----------------------------------------------------------------------------------

@pytest.fixture
def lock_holder(fake_cache):
    """Another harness process holding the cache's sources lock until it is killed."""
    cache = fake_cache[0]
    script = ("import sys, time\nfrom pathlib import Path\nfrom harness.cache import Cache\n"
              "with Cache(Path(sys.argv[1])).sources_lock():\n    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(cache.root)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    yield holder
    holder.kill()
    holder.wait()


def test_gc_refuses_while_another_harness_holds_the_lock_and_a_dry_run_says_so(fake_cache, lock_holder,
                                                                                monkeypatch, capsys):
    cache, embedded, user, old, new, theirs, run = fake_cache
    monkeypatch.setattr(timeouts, "GC_LOCK_WAIT", 0.2)
    with pytest.raises(SetupError, match="another harness process is running.*--wait"):
        gc.collect(cache, max_age_days=30)
    assert old.is_dir() and theirs.is_dir() and run.is_dir()
    monkeypatch.setenv("HARNESS_CACHE", str(cache.root))
    assert cli.main(["gc", "--older-than", "30"]) == 2
    assert "another harness process is running" in capsys.readouterr().err
    assert cli.main(["gc", "--dry-run", "--older-than", "30", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dry_run"] and {e["path"] for e in doc["removed"]} >= {f"worktrees/{old.name}", "runs/" + run.name}
    assert old.is_dir()
    out = gc.collect(cache, dry_run=True, max_age_days=30)
    assert out.busy and any("holds the cache's sources lock" in line for line in gc.summary_lines(out))


def test_gc_with_wait_goes_on_when_the_other_harness_is_done(fake_cache, lock_holder):
    cache, embedded, user, old, new, theirs, run = fake_cache
    said = []
    threading.Timer(0.5, lock_holder.kill).start()
    out = gc.collect(cache, max_age_days=30, wait=True, say=said.append)
    assert any("waiting" in s for s in said) and not old.exists() and out.freed > 0


def test_matrix_gc_after_a_run_says_why_it_was_skipped(fake_cache, lock_holder, monkeypatch):
    monkeypatch.setattr(timeouts, "GC_LOCK_WAIT", 0.2)
    said = []
    gc.after_run(fake_cache[0], 1 << 20, said.append)
    assert said and said[0].startswith("gc skipped: another harness process is running")
    assert fake_cache[3].is_dir()


def test_a_gc_interrupted_after_its_rename_leaves_nothing_valid_and_the_next_one_finishes(fake_cache):
    cache, embedded, user, old, new, theirs, run = fake_cache
    trash = old.with_name(f".{old.name}.12345.tmp")
    os.rename(old, trash)  # where apply renames, before it drops the record and git's record
    assert tree._worktree_record(old) is None  # the harness would make the worktree again
    out = gc.collect(cache, max_age_days=30, now=time.time() + 2 * 3600)
    assert {trash, old.with_suffix(".json")} <= {e.path for e in out.chosen}
    assert not trash.exists() and not old.with_suffix(".json").exists()
    assert str(old) not in worktree_paths(embedded)


def test_apply_touches_nothing_outside_the_cache(tmp_path):
    outside = tmp_path / "mine"
    outside.mkdir()
    with pytest.raises(ValueError, match="not inside the cache"):
        gc.apply(Cache(tmp_path / "cache"), [gc.Entry("run", outside, 1, 0.0)], LOG)
    assert outside.is_dir()


def test_removing_a_leftover_that_a_detached_rm_is_deleting_too_is_no_error(tmp_path, monkeypatch):
    """A released checkout's rm -rf may still run when gc deletes its temporary directory:
    files that vanish under gc's feet count as deleted."""
    leftover = tmp_path / ".0123456789abcdef.4242.tmp"
    (leftover / "drivers").mkdir(parents=True)
    for name in ("a.c", "b.c"):
        (leftover / "drivers" / name).write_text("x")
    real_unlink = os.unlink

    def racing_unlink(name, *args, **kwargs):  # the other rm deletes the file first
        real_unlink(name, *args, **kwargs)
        real_unlink(name, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", racing_unlink)
    remove_tree(leftover)
    monkeypatch.undo()
    assert not leftover.exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "f").write_text("x")
    monkeypatch.setattr(os, "unlink", lambda *a, **k: (_ for _ in ()).throw(PermissionError("no")))
    with pytest.raises(PermissionError):
        remove_tree(tmp_path / "kept")
