"""harness doctor: each check decides from what it is shown (a PATH, a cache directory, a
statvfs result, an HTTP answer) and names the command that fixes a gap."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
from pathlib import Path
from types import SimpleNamespace

from conftest import ROOT

from harness import doctor, fetch, toolchain
from harness.cache import Cache


def _script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


# --- host tools -------------------------------------------------------------------------------------

def test_a_path_without_the_cross_compiler_is_missing_with_the_apt_fix(tmp_path):
    checks = {c.name: c for c in doctor.host_tool_checks(search_path=str(tmp_path))}
    gcc = checks["aarch64-linux-gnu-gcc"]
    assert gcc.status == "MISSING" and not gcc.ok and gcc.required
    assert gcc.fix.endswith("apt-get install gcc-aarch64-linux-gnu")
    # every tool of toolchain.HOST_TOOLS is checked, with the package named there
    for tool, package in toolchain.HOST_TOOLS.items():
        assert checks[tool].fix == doctor.apt_install(package)
    assert checks["apt-get"].status == "MISSING"
    assert doctor.exit_status(checks.values()) == 2


def test_a_tool_on_path_is_ok_with_its_version_and_a_broken_one_is_reinstalled(tmp_path):
    _script(tmp_path, "ccache", 'echo "ccache version 4.8.3"')
    _script(tmp_path, "qemu-system-aarch64", 'echo "qemu: cannot load libfoo.so" >&2; exit 127')
    checks = {c.name: c for c in doctor.host_tool_checks(search_path=str(tmp_path))}
    assert checks["ccache"].ok and checks["ccache"].detail.startswith("ccache version 4.8.3 (")
    qemu = checks["qemu-system-aarch64"]
    assert qemu.status == "MISSING" and "exited 127" in qemu.detail and "libfoo" in qemu.detail
    assert qemu.fix.endswith("apt-get install --reinstall qemu-system-arm")


def test_the_version_line_skips_a_wrapper_scripts_complaint():
    out = "/usr/bin/chromium: 9: [: 25276059648: unexpected operator\nChromium 156.0.8078.114 built on Debian\n"
    assert doctor._version_line(out) == "Chromium 156.0.8078.114 built on Debian"
    assert doctor._version_line("GNU Make 4.3\nBuilt for x86_64\n") == "GNU Make 4.3"
    assert doctor._version_line("") == ""


def test_tests_only_tools_warn_and_do_not_fail(tmp_path):
    checks = [c for c in doctor.tests_only_checks(search_path=str(tmp_path)) if c.name.startswith(("chromium", "lava-run"))]
    assert [c.status for c in checks] == ["WARN", "WARN"]
    assert checks[0].fix.endswith("apt-get install chromium")
    assert checks[1].fix.endswith("apt-get install lava-dispatcher")
    assert doctor.exit_status(checks) == 0


# --- the cache --------------------------------------------------------------------------------------

def test_guest_packages_are_missing_from_an_empty_cache_and_found_in_a_filled_one(tmp_path):
    cache = Cache(tmp_path / "cache")
    checks = doctor.guest_package_checks(cache)
    assert [c.name for c in checks] == [f"guest package {p}" for p in fetch.GUEST_PACKAGES]
    assert all(c.status == "MISSING" and c.fix.endswith("harness setup") for c in checks)
    (cache.root / "debs").mkdir(parents=True)
    for pkg in fetch.GUEST_PACKAGES:
        (cache.root / "debs" / f"{pkg}_1%3a2.0-1_arm64.deb").write_bytes(b"")
    checks = doctor.guest_package_checks(cache)
    assert all(c.ok and c.detail.startswith("1:2.0-1 (") for c in checks)


def test_embedded_trees_absent_downloaded_or_imported(tmp_path):
    cache = Cache(tmp_path)
    checks = {c.name: c for c in doctor.tree_checks(cache)}
    assert set(checks) == {f"tree {name}" for name in fetch.EMBEDDED_TREES}
    lts = checks["tree debian-6.12"]
    assert lts.status == "WARN" and "not in the cache" in lts.detail and lts.fix.endswith("setup --tree debian-6.12")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "linux-source-6.12.117-1_deb12u1.tar.xz").write_bytes(b"")
    lts = {c.name: c for c in doctor.tree_checks(cache)}["tree debian-6.12"]
    assert lts.status == "WARN" and "downloaded, not imported" in lts.detail
    (tmp_path / "trees" / "linux-6.12.117-1_deb12u1" / ".git").mkdir(parents=True)
    checks = {c.name: c for c in doctor.tree_checks(cache)}
    assert checks["tree debian-6.12"].ok and "6.12.117-1_deb12u1 imported" in checks["tree debian-6.12"].detail
    assert not checks["tree debian-7.2"].ok  # the 6.12 tarball is not the 7.x tree's


def test_a_leftover_atomic_directory_warns_with_the_rm_fix(tmp_path):
    cache = Cache(tmp_path / "cache")
    (cache.root / "sysroot" / "0123456789abcdef").mkdir(parents=True)
    (cache.root / "locks").mkdir()
    (cache.root / "locks" / "sources.lock").write_text("")  # stale locks are fine
    # the temporary name cache.atomic_dir gives, as an interrupted write leaves it
    leftover = Path(tempfile.mkdtemp(dir=cache.root / "sysroot", prefix=".0123456789abcdee.", suffix=".tmp"))
    # not the harness's: git's, ccache's and Kbuild's files are left alone
    (cache.root / "trees" / "linux-6.12" / ".git" / ".pack.abcdefgh.tmp").mkdir(parents=True)
    (cache.root / "ccache" / ".x.abcdefgh.tmp").mkdir(parents=True)
    (cache.root / "trees" / "linux-6.12" / ".tmp_vmlinux.kallsyms1").write_text("")
    check = doctor.leftover_check_of(cache)
    assert check.status == "WARN" and not check.required
    assert "sysroot/.0123456789abcdee." in check.detail
    assert check.fix == f"rm -rf {leftover}"
    assert doctor.exit_status([check]) == 0
    subprocess.run(check.fix, shell=True, check=True, timeout=60)
    assert doctor.leftover_check_of(cache).ok


def test_leftovers_are_not_to_be_removed_while_another_harness_holds_the_lock(tmp_path):
    leftover = tmp_path / "build" / ".abc.abcdefgh.tmp"
    check = doctor.leftovers_check(tmp_path, [leftover], busy=True, now=0.0)
    assert check.status == "WARN" and "rm" not in check.fix and "work in progress" in check.detail


def test_a_cache_that_does_not_exist_yet_has_no_leftovers(tmp_path):
    assert doctor.leftover_check_of(Cache(tmp_path / "nowhere")).ok
    assert not (tmp_path / "nowhere").exists()


# --- disk -------------------------------------------------------------------------------------------

def test_free_disk_below_20_gb_warns_and_names_harness_cache():
    low = doctor.disk_check(Path("/c"), SimpleNamespace(f_bavail=19 * 10**9 // 4096, f_frsize=4096))
    assert low.status == "WARN" and not low.required and "below 20 GB" in low.detail
    assert "HARNESS_CACHE" in low.fix
    assert doctor.disk_check(Path("/c"), SimpleNamespace(f_bavail=21 * 10**9 // 4096, f_frsize=4096)).ok


def test_free_disk_of_a_cache_not_created_yet_is_its_nearest_existing_parent(tmp_path):
    seen = []

    def statvfs(path):
        seen.append(path)
        return SimpleNamespace(f_bavail=100, f_frsize=10**9)

    check = doctor.disk_check_of(Cache(tmp_path / "a" / "b"), statvfs)
    assert seen == [tmp_path] and check.ok and "100.0 GB free" in check.detail


# --- network ----------------------------------------------------------------------------------------

def test_lore_unreachable_is_a_warning_and_any_http_answer_is_reachable():
    def refused(request, timeout):
        assert timeout == doctor.timeouts.NETWORK_PROBE and request.get_method() == "HEAD"
        raise urllib.error.URLError("Name or service not known")

    check = doctor.probe_lore(refused)
    assert check.status == "WARN" and "Name or service not known" in check.detail

    def forbidden(request, timeout):
        raise urllib.error.HTTPError(request.full_url, 405, "Method Not Allowed", {}, None)

    assert doctor.probe_lore(forbidden).ok


# --- output -----------------------------------------------------------------------------------------

def test_plain_output_shows_status_fix_and_one_install_line_for_everything_missing(tmp_path):
    checks = [doctor.Check("ccache", False, "not on PATH", doctor.apt_install("ccache")),
              doctor.Check("flex", False, "not on PATH", doctor.apt_install("flex")),
              doctor.Check("git", True, "git version 2.39.5 (/usr/bin/git)"),
              doctor.Check("chromium (tests)", False, "not on PATH", doctor.apt_install("chromium"), False)]
    text = doctor.render_plain(checks, Cache(tmp_path))
    assert "MISSING  ccache" in text and "WARN     chromium (tests)" in text and "ok       git" in text
    assert f"fix: {doctor.apt_install('ccache')}" in text
    assert f"install what is missing: {doctor.apt_install('ccache', 'flex')}" in text
    assert f"install what the tests use: {doctor.apt_install('chromium')}" in text
    assert "2 required missing, 1 warning" in text
    assert doctor.exit_status(checks) == 2


def test_the_rich_table_renders(tmp_path):
    from rich.console import Console
    out = io.StringIO()
    checks = [doctor.Check("ccache", False, "not on PATH [x]", doctor.apt_install("ccache"))]
    doctor.print_checks(checks, Cache(tmp_path), Console(file=out, width=160))
    assert "MISSING" in out.getvalue() and "[x]" in out.getvalue() and "apt-get install ccache" in out.getvalue()


def test_harness_doctor_json_runs_and_says_what_is_missing(tmp_path):
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "harness", "doctor", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.stdout.startswith("{"), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["cache"] == str(tmp_path / "cache")
    names = {c["name"]: c for c in doc["checks"]}
    assert {"aarch64-linux-gnu-gcc", "b4", "disk space", "cache temporary files", "lore.kernel.org"} <= set(names)
    assert all(set(c) == {"name", "status", "ok", "required", "detail", "fix"} for c in doc["checks"])
    # an empty cache has no guest packages: required, so exit 2
    assert names["guest package busybox-static"]["status"] == "MISSING"
    assert proc.returncode == doc["exit_code"] == 2 and doc["ok"] is False, proc.stderr
    assert not (tmp_path / "cache").exists()  # doctor only looks: it creates no cache


def test_qemu_version_runs_once_per_binary_file_and_is_kept_in_the_cache(tmp_path, monkeypatch):
    """``qemu --version`` costs 0.5 s of CPU a run: the cache keeps its answer per binary file
    (path, size, mtime), so a new binary is asked again."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    qemu = bin_dir / "qemu-system-aarch64"
    qemu.write_text(f"#!/bin/sh\necho x >> {calls}\necho 'QEMU emulator version 7.2.99'\n")
    qemu.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    cache = Cache(tmp_path / "cache")
    for _ in range(2):
        toolchain._qemu_version.cache_clear()  # as a new process
        assert toolchain.qemu_version(cache=cache) == "QEMU emulator version 7.2.99"
    assert calls.read_text().count("x") == 1 and len(list((cache.root / "tools").glob("qemu-version-*"))) == 1
    qemu.write_text(qemu.read_text().replace("7.2.99", "8.0.0") + "# upgraded\n")
    toolchain._qemu_version.cache_clear()
    assert toolchain.qemu_version(cache=cache) == "QEMU emulator version 8.0.0"
    assert calls.read_text().count("x") == 2
