"""Atomic cache writes: a failed or interrupted write leaves nothing behind."""

from __future__ import annotations

import pytest

from harness.cache import Cache, atomic_dir, atomic_write, content_key


def test_cache_root_honours_harness_cache(tmp_path):
    assert Cache.from_env({"HARNESS_CACHE": str(tmp_path)}).root == tmp_path
    assert Cache.from_env({"HOME": "/h"}).root.name == "virtio-pm-harness"


def test_atomic_dir_failure_leaves_no_entry_and_no_temporary(tmp_path):
    final = tmp_path / "entry"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(final) as tmp:
            (tmp / "half").write_text("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_success_renames_into_place(tmp_path):
    with atomic_dir(tmp_path / "entry") as tmp:
        (tmp / "f").write_text("x")
    assert (tmp_path / "entry" / "f").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_atomic_write_replaces_whole_file(tmp_path):
    p = atomic_write(tmp_path / "a" / "f.json", "1")
    atomic_write(p, b"22")
    assert p.read_text() == "22" and [x.name for x in p.parent.iterdir()] == ["f.json"]


def test_content_key_separates_parts():
    assert content_key("ab", "c") != content_key("a", "bc")
    assert len(content_key("x")) == 16
