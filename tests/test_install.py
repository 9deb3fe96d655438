"""A non-editable install finds its data (kconfigs, profiles, scenarios, matrices, patches,
guest-rootfs) from any directory: they ship inside the package (harness/paths.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import ROOT

_NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "results", "*.egg-info", "__pycache__",
                                     ".pytest_cache")


def test_a_non_editable_install_lists_matrices_and_parses_from_another_directory(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)  # a clean source tree: no stale build/ to ship
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    # the dependencies come from the running environment (its directories, not its .pth files,
    # so the checkout's editable install is not seen); the harness itself is installed
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "test-deps.pth").write_text("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")
    pip = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", src],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert pip.returncode == 0, pip.stderr
    run = tmp_path / "elsewhere"
    run.mkdir()

    def harness(*args: str) -> str:
        proc = subprocess.run([venv / "bin" / "harness", *args], capture_output=True, text=True, timeout=120,
                              cwd=run, env={"PATH": "/usr/bin:/bin", "HARNESS_CACHE": str(tmp_path / "cache")})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    where = subprocess.run([venv / "bin" / "python", "-c", "from harness import paths; print(paths.DATA_ROOT)"],
                           capture_output=True, text=True, timeout=60, cwd=run).stdout.strip()
    assert where.startswith(str(site)) and where.endswith("harness/data")
    assert "v9-backport-6.12/virt-mmio/s2idle-rtc" in harness("matrix", "--list")
    fixture = ROOT / "tests" / "fixtures" / "linux-6.12.117" / "s2idle-rtc-1.dmesg"
    assert harness("parse", str(fixture)).startswith("transition 1: suspend (s2idle)")
