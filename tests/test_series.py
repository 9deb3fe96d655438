"""Series input and application, on series made by ``git format-patch`` in
throwaway repositories created by the tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from harness import proc, series, tree
from harness.cache import Cache
from conftest import ROOT
from harness.errors import ApplyError, ConfigError, SeriesError
from harness.proc import CommandLog

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "A U Thor", "GIT_AUTHOR_EMAIL": "author@example.org",
           "GIT_COMMITTER_NAME": "C O Mitter", "GIT_COMMITTER_EMAIL": "committer@example.org",
           "GIT_AUTHOR_DATE": "2026-05-16T01:57:56Z", "GIT_COMMITTER_DATE": "2026-05-16T01:57:56Z"}
LOG = CommandLog(None)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=GIT_ENV).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repo with a base commit and three patches on top (drivers/a.c, b.c, a.c)."""
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "master")
    (r / "drivers").mkdir()
    (r / "drivers" / "a.c").write_text("".join(f"int a{i};\n" for i in range(20)))
    (r / "drivers" / "b.c").write_text("int b;\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "base")
    git(r, "tag", "base")
    for n, (f, old, new) in enumerate([("a.c", "int a3;", "int a3 = 3;"), ("b.c", "int b;", "long b;"),
                                       ("a.c", "int a15;", "int a15 = 15;")], 1):
        p = r / "drivers" / f
        p.write_text(p.read_text().replace(old, new))
        git(r, "commit", "-qam", f"drivers: change {n}", "-m", f"Why change {n} is needed.")
    return r


def format_patch(repo: Path, out: Path, *args: str) -> Path:
    git(repo, "format-patch", "-q", "--thread", "-o", str(out), *args)
    return out


def as_mbox(patch_dir: Path, order=None) -> Path:
    files = sorted(patch_dir.glob("*.patch"))
    if order:
        files = [files[i] for i in order]
    mbox = patch_dir.with_suffix(".mbx")
    mbox.write_bytes(b"".join(f.read_bytes() for f in files))
    return mbox


def test_directory_with_cover_and_base_commit(repo, tmp_path):
    d = format_patch(repo, tmp_path / "p", "--cover-letter", "--base=base", "--rfc", "-v9", "base..HEAD")
    s = series.from_directory(d)
    assert (s.version, s.total, s.base_commit) == (9, 3, git(repo, "rev-parse", "base"))
    assert [p.subject for p in s.patches] == ["drivers: change 1", "drivers: change 2", "drivers: change 3"]
    assert s.cover is not None and s.cover.index == 0 and s.patches[0].rfc
    assert s.patches[0].prefix == "RFC PATCH v9 1/3"
    assert s.patches[1].diffstat == [("drivers/b.c", 1, 1)]
    assert s.patches[0].author == "A U Thor <author@example.org>"
    assert s.patches[2].in_reply_to == s.cover.msgid
    assert "Why change 1 is needed." in s.patches[0].body


def test_mbox_in_any_order_is_applied_in_index_order_and_without_prefix_options(repo, tmp_path):
    d = format_patch(repo, tmp_path / "p", "base..HEAD")
    s = series.from_mbox(as_mbox(d, order=[2, 0, 1]))
    assert [p.index for p in s.patches] == [1, 2, 3]
    assert (s.version, s.cover, s.base_commit, s.patches[0].rfc) == (1, None, None, False)


def test_single_patch_without_counter_is_1_of_1(repo, tmp_path):
    d = format_patch(repo, tmp_path / "p", "--subject-prefix=PATCH net-next", "-1")
    s = series.from_directory(d)
    assert (s.total, s.patches[0].index, s.patches[0].subject) == (1, 1, "drivers: change 3")


def test_missing_patch_is_named(repo, tmp_path):
    d = format_patch(repo, tmp_path / "p", "-v2", "base..HEAD")
    next(d.glob("*0002*")).unlink()
    with pytest.raises(SeriesError, match=r"v2 is incomplete: missing patch\(es\) 2/3"):
        series.from_directory(d)


def test_duplicate_patch_is_named(repo, tmp_path):
    d = format_patch(repo, tmp_path / "p", "base..HEAD")
    files = sorted(d.glob("*.patch"))
    (d / "9999-again.patch").write_bytes(files[1].read_bytes())
    with pytest.raises(SeriesError, match=r"patch 2/3 appears twice"):
        series.from_directory(d)


def test_mixed_revisions_are_refused(repo, tmp_path):
    v1 = format_patch(repo, tmp_path / "v1", "base..HEAD")
    v2 = format_patch(repo, tmp_path / "v2", "-v2", "base..HEAD")
    mbox = tmp_path / "mixed.mbx"
    mbox.write_bytes(sorted(v1.glob("*.patch"))[0].read_bytes() + b"".join(
        f.read_bytes() for f in sorted(v2.glob("*.patch"))[1:]))
    with pytest.raises(SeriesError, match="mixes revisions v1, v2"):
        series.from_mbox(mbox)


def test_patch_without_diff_is_refused(repo, tmp_path):
    git(repo, "commit", "-q", "--allow-empty", "-m", "drivers: nothing")
    d = format_patch(repo, tmp_path / "p", "--always", "HEAD~2..HEAD")
    with pytest.raises(SeriesError, match=r"patch 2/2 'drivers: nothing' has no diff"):
        series.from_directory(d)


def test_mail_that_is_not_a_patch_is_refused(repo, tmp_path):
    d = format_patch(repo, tmp_path / "p", "-k", "-1")  # -k: subject without [PATCH]
    with pytest.raises(SeriesError, match=r"not a patch mail \(subject 'drivers: change 3'"):
        series.from_directory(d)


def test_corrupt_mbox_is_refused(tmp_path):
    bad = tmp_path / "bad.mbx"
    bad.write_bytes(b"\x00\x01garbage without any mail\n")
    with pytest.raises(SeriesError, match="no mails found"):
        series.from_mbox(bad)


def test_cover_without_base_commit(repo, tmp_path):
    s = series.from_directory(format_patch(repo, tmp_path / "p", "--cover-letter", "base..HEAD"))
    assert s.cover is not None and s.base_commit is None


def test_message_id_through_b4_with_a_local_mbox(repo, tmp_path):
    d = format_patch(repo, tmp_path / "p", "--cover-letter", "--base=base", "-v3", "base..HEAD")
    s0 = series.from_directory(d)
    cache = Cache(tmp_path / "cache")
    s = series.load(f"<{s0.cover.msgid}>", cache, LOG, local_mbox=as_mbox(d))
    assert (s.version, s.total, s.base_commit) == (3, 3, s0.base_commit)
    assert [p.msgid for p in s.patches] == [p.msgid for p in s0.patches]
    assert s.cover.msgid == s0.cover.msgid
    # cached: a second load does not need the local mbox any more
    assert series.fetch_msgid(s0.cover.msgid, cache, LOG, local_mbox=as_mbox(d)).is_file()


def test_unreachable_message_id_is_a_series_error_with_a_way_out(tmp_path):
    with pytest.raises(SeriesError, match=r"(?s)b4 could not fetch .*absent\.mbx does not exist.*pass the \.mbx file instead") as err:
        series.load("20990101000000.1-1-nobody@example.org", Cache(tmp_path), LOG,
                    local_mbox=tmp_path / "absent.mbx")
    assert err.value.exit_code == 3


def test_shipped_manifests_describe_v6_and_v9():
    v6 = series.load_manifest(ROOT / "patches" / "v6" / "series.yaml")
    v9 = series.load_manifest(ROOT / "patches" / "v9" / "series.yaml")
    assert (v6.version, len(v6.subjects), v6.message_id) == (6, 4, "20260427173045.28652-1-baver.bae@gmail.com")
    assert (v9.version, len(v9.subjects)) == (9, 5)
    assert v9.subjects[0] == "virtio-mmio: move guest page size setting into vm_reset()"
    assert v9.patch_msgids[3] == "20260516015756.20948-5-baver.bae@gmail.com"


def _manifest(tmp_path, mbox: Path, subjects: list[str], version: int = 1, extra: str = "",
              name: str = "manifest") -> Path:
    d = tmp_path / name
    d.mkdir()
    lines = [f"name: t\ntitle: t\nversion: {version}\nmessage_id: x@y\nmbox: {mbox}\n{extra}patches:"]
    lines += [f"  - subject: \"{s}\"" for s in subjects]
    (d / "series.yaml").write_text("\n".join(lines) + "\n")
    return d


def test_manifest_with_local_mbox_is_checked_against_the_series(repo, tmp_path):
    mbox = as_mbox(format_patch(repo, tmp_path / "p", "base..HEAD"))
    good = _manifest(tmp_path, mbox, ["drivers: change 1", "drivers: change 2", "drivers: change 3"])
    s, m = series.load_revision(str(good), Cache(tmp_path / "c"), LOG)
    assert s.total == 3 and m.name == "t"
    bad = _manifest(tmp_path, mbox, ["drivers: change 1", "drivers: typo", "drivers: change 3"], name="bad")
    with pytest.raises(SeriesError, match=r"patch 2 is 'drivers: change 2', expected 'drivers: typo'"):
        series.load_revision(str(bad), Cache(tmp_path / "c"), LOG)


def test_manifest_with_unknown_key_names_it(repo, tmp_path):
    d = _manifest(tmp_path, tmp_path / "none.mbx", ["x"], extra="patchez: 3\n")
    with pytest.raises(ConfigError, match=r"series\.yaml:6: unknown key 'patchez' \(allowed: base, mbox, "):
        series.load_revision(str(d), Cache(tmp_path / "c"), LOG)


# --- applying -----------------------------------------------------------------------

def kernel_tree(repo: Path) -> tree.KernelTree:
    return tree.KernelTree(repo, git(repo, "rev-parse", "HEAD"), "0.0", "test", embedded=False)


def user_state(repo: Path) -> str:
    return "\n".join(git(repo, *a) for a in (["rev-parse", "HEAD"], ["for-each-ref"], ["status", "--porcelain"],
                                             ["stash", "list"], ["symbolic-ref", "HEAD"]))


@pytest.fixture
def user_repo(repo, tmp_path):
    """The user's checkout: reset to base, with a stash and an uncommitted change."""
    s = series.from_directory(format_patch(repo, tmp_path / "p", "--cover-letter", "--base=base", "-v9",
                                           "base..HEAD"))
    git(repo, "reset", "-q", "--hard", "base")
    (repo / "drivers" / "b.c").write_text("int b; /* stashed */\n")
    git(repo, "stash", "-q")
    (repo / "drivers" / "a.c").write_text((repo / "drivers" / "a.c").read_text() + "/* wip */\n")
    return repo, s


def test_apply_makes_a_reused_worktree_and_leaves_the_user_checkout_alone(user_repo, tmp_path):
    repo, s = user_repo
    before = user_state(repo)
    kt = kernel_tree(repo)
    base, warning = tree.resolve_base(kt, None, s.base_commit, LOG)
    assert (base, warning) == (git(repo, "rev-parse", "base"), None)
    cache = Cache(tmp_path / "cache")
    applied = tree.apply_series(kt, base, s.patches, cache, LOG, s.version, s.base_commit)
    assert applied.path.parent == cache.root / "worktrees"
    assert [(i, subj) for i, subj, _ in applied.patch_commits] == [
        (1, "drivers: change 1"), (2, "drivers: change 2"), (3, "drivers: change 3")]
    assert git(applied.path, "rev-list", "--count", f"{base}..HEAD") == "3"
    assert "int a15 = 15;" in (applied.path / "drivers" / "a.c").read_text()
    assert user_state(repo) == before
    again = tree.apply_series(kt, base, s.patches, cache, LOG, s.version)
    assert (again.path, again.commit) == (applied.path, applied.commit)
    # the same revision on the same base gives the same commit ids anywhere
    other = tree.apply_series(kt, base, s.patches, Cache(tmp_path / "other"), LOG, s.version)
    assert other.commit == applied.commit and other.path != applied.path


def test_only_the_most_recent_worktrees_keep_their_source_and_a_released_one_comes_back_for_a_build(user_repo, tmp_path):
    repo, s = user_repo
    before = user_state(repo)
    kt = kernel_tree(repo)
    base = git(repo, "rev-parse", "base")
    cache = Cache(tmp_path / "cache")
    first = tree.apply_series(kt, base, s.patches[:1], cache, LOG, 9)
    (first.path / "build-k").mkdir()
    (first.path / "build-k" / "Image").write_bytes(b"kernel")
    a_c = (first.path / "drivers" / "a.c").read_text()
    second = tree.apply_series(kt, base, s.patches[:2], cache, LOG, 9)
    assert (first.path / "drivers" / "a.c").is_file()  # two are kept
    third = tree.apply_series(kt, base, s.patches, cache, LOG, 9)
    # the least recently used one gave its files back; its commits and build directory stay
    assert sorted(p.name for p in first.path.iterdir()) == [".git", "build-k"]
    assert (second.path / "drivers" / "a.c").is_file() and (third.path / "drivers" / "a.c").is_file()
    assert git(first.path, "rev-parse", "HEAD") == first.commit
    again = tree.apply_series(kt, base, s.patches[:1], cache, LOG, 9)
    assert (again.path, again.commit) == (first.path, first.commit)
    assert not (again.path / "drivers").exists()  # a cached build boots without its source
    pristine = Path(json.loads(again.path.with_suffix(".json").read_text())["pristine"])
    shutil.rmtree(pristine)  # gone (gc, or a worktree made before there were any): made again
    tree.ensure_checkout(again.path, LOG)  # what a build in it calls first
    assert (again.path / "drivers" / "a.c").read_text() == a_c
    assert (again.path / "drivers" / "b.c").stat().st_ino == (pristine / "tree" / "drivers" / "b.c").stat().st_ino
    assert (again.path / "build-k" / "Image").read_bytes() == b"kernel"
    assert git(again.path, "status", "--porcelain", "--untracked-files=no") == ""
    # now the second is the least recently used
    assert not (second.path / "drivers").exists() and (third.path / "drivers" / "a.c").is_file()
    assert user_state(repo) == before


def test_worktrees_link_the_pristine_checkout_and_no_write_reaches_a_linked_file(user_repo, tmp_path, caplog):
    repo, s = user_repo
    before = user_state(repo)
    kt = kernel_tree(repo)
    base = git(repo, "rev-parse", "base")
    cache = Cache(tmp_path / "cache")
    one = tree.apply_series(kt, base, s.patches[:1], cache, LOG, 9)  # changes drivers/a.c
    pristine = Path(json.loads(one.path.with_suffix(".json").read_text())["pristine"])
    shared, changed = (one.path / "drivers" / "b.c", one.path / "drivers" / "a.c")
    assert shared.stat().st_ino == (pristine / "tree" / "drivers" / "b.c").stat().st_ino
    assert changed.stat().st_ino != (pristine / "tree" / "drivers" / "a.c").stat().st_ino
    assert (pristine / "tree" / "drivers" / "a.c").read_text() == git(repo, "show", "base:drivers/a.c") + "\n"
    assert "int a3 = 3;" in changed.read_text()
    # the pristine checkout is no worktree of the user's repository; its user state is as it was
    assert worktree_paths(repo) == [str(repo), str(one.path)]
    assert user_state(repo) == before
    assert git(one.path, "status", "--porcelain", "--untracked-files=no") == ""
    # an editor that writes into a linked file changes every tree that links it ...
    with open(shared, "a") as f:
        f.write("/* edited in place */\n")
    assert "edited in place" in (pristine / "tree" / "drivers" / "b.c").read_text()
    # ... a new worktree does not get the edit (git sees the pristine file's size and mtime change)
    all_three = tree.apply_series(kt, base, s.patches, cache, LOG, 9)
    assert (all_three.path / "drivers" / "b.c").read_text() == "long b;\n"
    # and the edited worktree gets its file back from git before a build, with a warning
    with caplog.at_level("WARNING", logger="harness.tree"):
        tree.ensure_checkout(one.path, LOG)
    assert shared.read_text() == "int b;\n"
    assert "drivers/b.c" in caplog.text and "changed in place" in caplog.text
    assert user_state(repo) == before


def test_a_file_system_that_refuses_hard_links_gets_a_full_checkout(user_repo, tmp_path, monkeypatch):
    repo, s = user_repo
    real_run = tree.run

    def cp_fails_halfway(argv, log, **kw):  # cp links what it can, then EXDEV
        res = real_run(argv, log, **kw)
        return proc.Completed(res.argv, 1, "cp: cannot create hard link: Invalid cross-device link", 0.0) \
            if argv[0] == "cp" else res
    monkeypatch.setattr(tree, "run", cp_fails_halfway)
    kt = kernel_tree(repo)
    applied = tree.apply_series(kt, git(repo, "rev-parse", "base"), s.patches, Cache(tmp_path / "c"), LOG, 9)
    pristine = Path(json.loads(applied.path.with_suffix(".json").read_text())["pristine"])
    b_c = applied.path / "drivers" / "b.c"
    assert b_c.read_text() == "long b;\n" and "int a15 = 15;" in (applied.path / "drivers" / "a.c").read_text()
    assert (applied.path / "drivers" / "a.c").stat().st_nlink == 1  # written by git, not linked
    assert (pristine / "tree" / "drivers" / "a.c").stat().st_nlink == 1
    assert git(applied.path, "status", "--porcelain", "--untracked-files=no") == ""


def test_only_the_most_recent_pristine_checkouts_stay_and_one_of_a_gone_repository_goes(repo, tmp_path):
    cache = Cache(tmp_path / "cache")
    clones = [tmp_path / f"clone{i}" for i in range(3)]
    for c in clones:
        subprocess.run(["git", "clone", "-q", str(repo), str(c)], check=True, timeout=60)

    def pristines() -> list[str]:
        purged = lambda: not list((cache.root / tree.PRISTINE_DIR).glob(".*.tmp"))  # noqa: E731
        deadline = time.monotonic() + 10
        while not purged() and time.monotonic() < deadline:
            time.sleep(0.01)
        return sorted(json.loads((p / tree.PRISTINE_RECORD).read_text())["repository"]
                      for p in (cache.root / tree.PRISTINE_DIR).iterdir())

    applied = []
    for c in clones:
        kt = kernel_tree(c)
        applied.append(tree.apply_series(kt, kt.commit, (), cache, LOG))
        time.sleep(0.01)  # distinct last uses
    assert pristines() == [str(clones[1]), str(clones[2])]  # PRISTINES_KEPT, the oldest went
    shutil.rmtree(clones[1])  # a repository that is gone: its pristine checkout goes at the next apply
    # one being deleted by another process's rm (its record not reached yet) is left to that rm
    deleting = cache.root / tree.PRISTINE_DIR / ".0123456789abcdef.99999.tmp"
    deleting.mkdir()
    (deleting / tree.PRISTINE_RECORD).write_text(json.dumps({"repository": str(tmp_path / "gone")}))
    kt = kernel_tree(clones[2])
    tree.apply_series(kt, git(clones[2], "rev-parse", "HEAD~1"), (), cache, LOG)
    assert (deleting / tree.PRISTINE_RECORD).is_file()
    shutil.rmtree(deleting)
    assert pristines() == [str(clones[2])]
    # the first clone's worktree (released meanwhile) gets its files back, its pristine made again
    tree.ensure_checkout(applied[0].path, LOG)
    assert (applied[0].path / "drivers" / "b.c").read_text() == "long b;\n"
    assert len(pristines()) == 2


def worktree_paths(repo: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in git(repo, "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")]


def test_upto_applies_the_first_k_patches(user_repo, tmp_path):
    repo, s = user_repo
    kt = kernel_tree(repo)
    applied = tree.apply_series(kt, git(repo, "rev-parse", "base"), s.patches[:2], Cache(tmp_path / "c"), LOG, 9)
    assert len(applied.patch_commits) == 2 and applied.describe == "test+v9.2"
    assert "int a15;" in (applied.path / "drivers" / "a.c").read_text()


def test_conflict_names_patch_file_and_base_and_leaves_nothing_applied(user_repo, tmp_path):
    repo, s = user_repo
    git(repo, "stash", "drop", "-q")
    git(repo, "checkout", "-q", "--", ".")
    (repo / "drivers" / "b.c").write_text("short b;\n")  # the user's tree moved on
    git(repo, "commit", "-qam", "drivers: b is short")
    before = user_state(repo)
    kt = kernel_tree(repo)
    base, warning = tree.resolve_base(kt, None, "0123456789abcdef0123", LOG)
    assert base == kt.commit and "is not in" in warning
    cache = Cache(tmp_path / "cache")
    with pytest.raises(ApplyError) as err:
        tree.apply_series(kt, base, s.patches, cache, LOG, s.version, s.base_commit)
    msg = str(err.value)
    assert err.value.exit_code == 4
    assert "patch 2/3 did not apply: 'drivers: change 2'" in msg
    assert "drivers/b.c" in msg and f"the series asks for base-commit {s.base_commit}" in msg
    assert list((cache.root / "worktrees").iterdir()) == []
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    assert user_state(repo) == before


def test_unknown_base_ref_is_a_usage_error(user_repo):
    repo, _ = user_repo
    with pytest.raises(Exception, match="--base 'v99' is not a commit"):
        tree.resolve_base(kernel_tree(repo), "v99", None, LOG)


# --- the CLI over the same throwaway repositories ----------------------------------------

def test_cli_series_show_by_message_id_through_b4(repo, tmp_path, capsys, monkeypatch):
    from harness import cli
    d = format_patch(repo, tmp_path / "p", "--cover-letter", "--base=base", "-v4", "base..HEAD")
    cover = series.from_directory(d).cover
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    assert cli.main(["series", "show", cover.msgid, "--b4-local-mbox", str(as_mbox(d))]) == 0
    out = capsys.readouterr().out
    assert "v4, 3 patches, base-commit: " + git(repo, "rev-parse", "base") in out
    assert "drivers: change 2" in out and "A U Thor" in out


def test_cli_apply_prints_worktree_and_commits_and_exit_4_on_conflict(user_repo, tmp_path, capsys, monkeypatch):
    from harness import cli
    repo, s = user_repo
    (repo / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 99\nSUBLEVEL = 0\nEXTRAVERSION =\n")
    git(repo, "add", "Makefile")
    git(repo, "commit", "-qm", "a kernel-looking Makefile")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    patches = str(next(tmp_path.glob("p")))
    assert cli.main(["apply", patches, "--tree", str(repo), "--upto", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"worktree: {tmp_path / 'cache' / 'worktrees'}")
    assert "drivers: change 1" in out and "drivers: change 2" in out and "drivers: change 3" not in out
    (repo / "drivers" / "b.c").write_text("short b;\n")
    git(repo, "commit", "-qam", "conflicting change")
    # the series' base-commit is still in the tree, so by default it applies there ...
    assert cli.main(["apply", patches, "--tree", str(repo)]) == 0
    capsys.readouterr()
    # ... and on the tree's HEAD it conflicts
    assert cli.main(["apply", patches, "--tree", str(repo), "--base", "HEAD"]) == 4
    err = capsys.readouterr().err
    assert "patch 2/3 did not apply: 'drivers: change 2'" in err


def test_cli_upto_beyond_the_series_is_a_usage_error(user_repo, tmp_path, capsys, monkeypatch):
    from harness import cli
    repo, _ = user_repo
    (repo / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 99\n")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    assert cli.main(["apply", str(tmp_path / "p"), "--tree", str(repo), "--upto", "7"]) == 2
    assert "--upto 7: the revision has 3 patches" in capsys.readouterr().err


def test_defect_directory_stacks_its_patch_on_the_revision_it_names(repo, tmp_path):
    format_patch(repo, tmp_path / "rev", "--cover-letter", "--base=base", "-v9", "base..HEAD~1")
    defect = tmp_path / "defects" / "d"
    format_patch(repo, defect, "-1")
    (defect / "defect.yaml").write_text("name: d\non_top_of: ../../rev\nbreaks: change 3\n")
    s, _ = series.load_revision(str(defect), Cache(tmp_path / "c"), LOG)
    assert [(p.index, p.total, p.version, p.subject) for p in s.patches] == [
        (1, 3, 9, "drivers: change 1"), (2, 3, 9, "drivers: change 2"), (3, 3, 9, "drivers: change 3")]
    assert s.base_commit == git(repo, "rev-parse", "base") and s.source == str(defect)


def test_defect_yaml_key_that_yaml_reads_as_a_boolean_is_named(repo, tmp_path):
    defect = tmp_path / "d"
    format_patch(repo, defect, "-1")
    (defect / "defect.yaml").write_text("name: d\non: ../rev\nbreaks: x\n")  # YAML 1.1 reads 'on' as True
    with pytest.raises(ConfigError, match=r"defect\.yaml:2: unknown key 'on' \(allowed: breaks, name, on_top_of\)"):
        series.load_revision(str(defect), Cache(tmp_path / "c"), LOG)


def test_an_embedded_tree_keeps_its_commits_but_no_checkout_and_worktrees_still_come_from_it(tmp_path):
    import subprocess
    from harness.tree import _drop_checkout
    repo = tmp_path / "linux"
    (repo / "kernel").mkdir(parents=True)
    (repo / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\n")
    (repo / "kernel" / "fork.c").write_text("int x;\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q", "-b", "master"], ["add", "-A"], ["commit", "-q", "-m", "import"]):
        subprocess.run([*git, "-C", str(repo), *args], check=True, timeout=60)
    _drop_checkout(repo, CommandLog())
    assert sorted(p.name for p in repo.iterdir()) == [".git"]
    wt = tmp_path / "wt"
    subprocess.run([*git, "-C", str(repo), "worktree", "add", "-q", "--detach", str(wt), "HEAD"], check=True,
                   timeout=60)
    assert (wt / "kernel" / "fork.c").read_text() == "int x;\n"
    shown = subprocess.run(["git", "-C", str(repo), "show", "HEAD:Makefile"], capture_output=True, text=True,
                           check=True, timeout=60).stdout
    assert "SUBLEVEL = 117" in shown
