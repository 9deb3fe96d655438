"""End-to-end: build once, boot many, as the CI jobs do (needs `make setup`): `harness prebuild`
exports one cell's build (a cache hit after the other e2e tests), and `harness matrix --prebuilt`
boots it with an empty cache: no tree, no compiler, no sysroot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e

CELL = "baseline-6.12/virt-mmio/pm-test-platform"


def test_a_cell_boots_prebuilt_artifacts_with_an_empty_cache(tmp_path):
    pb = tmp_path / "prebuilt"
    proc = subprocess.run([sys.executable, "-m", "harness", "prebuild", "default", "--cell", CELL, "--out", str(pb)],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads((pb / "bare-debian-6.12" / "artifacts.json").read_text())
    assert rec["build_id"] == "bare-debian-6.12" and (pb / "bare-debian-6.12" / "Image").is_file()

    empty = tmp_path / "cache"
    empty.mkdir()
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "harness", "matrix", "default", "--cell", CELL, "--prebuilt", str(pb),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HARNESS_CACHE": str(empty)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "baseline-6.12__virt-mmio__pm-test-platform" / "results.json").read_text())
    assert res["verdict"] == "PASS" and res["cycles"]
    assert res["build"]["cache_hit"] is True and res["build"]["prebuilt"] == str(pb / "bare-debian-6.12")
    assert res["build"]["key"] == rec["build"]["key"] and res["initramfs"]["sha256"] == rec["initramfs"]["sha256"]
    assert res["tree"]["commit"] == rec["tree"]["commit"] and res["timings"]["build"] == 0
    assert not any((empty / d).exists() for d in ("trees", "pristine", "worktrees", "ccache", "sysroot", "rootfs"))
