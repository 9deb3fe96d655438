"""End-to-end: the series' claim on real kernels (needs `make setup`).

The same guest (probe module, consumer, kconfig) runs on the embedded 6.12
tree without the series (baseline) and with the v9-design backport applied
from patches/v9-backport-6.12; the verdicts must be exactly the ones each
revision is expected to show.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e

SERIES_CHECKS = ("noirq-callback", "noirq-before-normal", "noirq-request", "consumer-ready")
PROVIDER = "a003e00.virtio_mmio"  # QEMU gives the first -device (virtio-rng-device) the top slot


def run(out, *args):
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(out), "--rtc-cycles", "2",
                           "--pm-test-cycles", "1", "--hibernate-cycles", "1", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=3000)
    return proc, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return run(tmp_path_factory.mktemp("baseline"))


@pytest.fixture(scope="module")
def backport(tmp_path_factory):
    return run(tmp_path_factory.mktemp("backport"), "--series", str(ROOT / "patches" / "v9-backport-6.12"))


def verdicts(results):
    return [{c["name"]: c["verdict"] for c in cycle["checks"]} for cycle in results["cycles"]]


def test_baseline_shows_the_failure_the_series_fixes_as_expected_failures(baseline):
    proc, results = baseline
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results["verdict"] == "PASS"
    for v in verdicts(results):
        assert {k: v[k] for k in SERIES_CHECKS} == dict.fromkeys(SERIES_CHECKS, "XFAIL")
        assert v["no-second-reinit"] == "SKIP"  # no noirq API in the tree
        assert v["devices-work"] == "PASS" and v["no-kernel-warnings"] == "PASS"


def test_baseline_consumer_finds_the_provider_not_ready(baseline):
    _, results = baseline
    for cycle in results["cycles"]:
        consumer = next(c for c in cycle["checks"] if c["name"] == "consumer-ready")
        assert any("consumer resume_early provider=not-ready" in e for e in consumer["evidence"])
        mmio_resume = {e["device"]: e["callback"] for e in cycle["resume_devices"]["resume" if cycle["kind"] != "hibernate" else "restore"]
                       if e["driver"] == "virtio-mmio"}
        assert mmio_resume.get(PROVIDER, "").startswith("platform_pm_")


def test_backport_passes_every_check_in_every_cycle(backport):
    proc, results = backport
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results["verdict"] == "PASS"
    assert results["tree"]["series_version"] == 9 and len(results["tree"]["patches"]) == 5
    for v in verdicts(results):
        assert set(v.values()) == {"PASS"} | ({"SKIP"} if v["wake-source"] == "SKIP" else set()), v


def test_backport_restores_the_provider_in_the_noirq_phase(backport):
    _, results = backport
    for cycle in results["cycles"]:
        noirq = "restore_noirq" if cycle["kind"] == "hibernate" else "resume_noirq"
        devices = {(e["driver"], e["device"]): e["callback"] for e in cycle["resume_devices"][noirq]}
        assert devices[("virtio-mmio", PROVIDER)] == "virtio_mmio_restore_noirq"
        consumer = next(c for c in cycle["checks"] if c["name"] == "consumer-ready")
        assert any("consumer resume_early provider=ready" in e for e in consumer["evidence"])
        request = next(c for c in cycle["checks"] if c["name"] == "noirq-request")
        assert "request=ok" in request["evidence"][0]


def test_summary_prints_phases_and_evidence(backport, baseline):
    for proc, _ in (backport, baseline):
        assert "resume_noirq" in proc.stdout and "consumer-ready" in proc.stdout
    assert "virtio_mmio_restore_noirq" in backport[0].stdout
    assert "XFAIL" in baseline[0].stdout and "provider=not-ready" in baseline[0].stdout


def test_apply_upto_k_applies_the_first_k_patches_of_the_backport_to_the_embedded_tree():
    proc = subprocess.run([sys.executable, "-m", "harness", "apply", str(ROOT / "patches" / "v9-backport-6.12"),
                           "--upto", "3"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    applied = [line.split(None, 2)[2] for line in lines if line.startswith("  ")]
    assert applied == ["virtio-mmio: move guest page size setting into vm_reset()",
                       "virtio: separate device re-initialisation from the PM restore path",
                       "virtio_ring: export virtqueue_reinit_vring() for noirq restore"]
    worktree = lines[0].split(": ", 1)[1]
    virtio_h = (ROOT / worktree / "include" / "linux" / "virtio.h").read_text()
    assert "virtqueue_reinit_vring" in virtio_h and "restore_noirq" not in virtio_h


# --- the HTML report, as a person sees it in a browser --------------------------------------------

#: Colours of the report's stylesheet (harness/templates/report.html.j2, timeline.PHASE_COLOURS).
PROVIDER_RGB, NOIRQ_RGB, NORMAL_RGB = (214, 39, 40), (200, 230, 255), (255, 241, 196)
ARTIFACTS = ROOT / "results" / "test-artifacts"


def screenshot(html, png):
    """Headless Debian chromium, as the env notes say to start it here (no network, no sandbox as root)."""
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={png.parent / 'chromium-profile'}", "--window-size=1400,1000",
                    f"--screenshot={png}", html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image
    return Image.open(png).convert("RGB")


def provider_bar_backgrounds(img):
    """The band colour just above each provider bar (a solid red block at least 3x9 px)."""
    px, (w, h) = img.load(), img.size
    found = set()
    for y in range(1, h - 9):
        for x in range(w - 3):
            if px[x, y] == PROVIDER_RGB and px[x + 2, y] == PROVIDER_RGB and px[x, y + 8] == PROVIDER_RGB \
                    and px[x, y - 1] != PROVIDER_RGB:
                found.add(px[x + 1, y - 1])
    return found


@pytest.mark.parametrize("revision", ["baseline", "backport"])
def test_report_screenshot_shows_the_provider_in_the_noirq_band_only_with_the_series(
        revision, baseline, backport):
    proc, results = baseline if revision == "baseline" else backport
    run_dir = Path(results["console_log"]).parent
    assert (run_dir / "report.html").is_file(), proc.stdout[-2000:]
    img = screenshot(run_dir / "report.html", ARTIFACTS / f"report-{revision}.png")
    backgrounds = provider_bar_backgrounds(img)
    if revision == "backport":
        assert NOIRQ_RGB in backgrounds, backgrounds
    else:
        assert NOIRQ_RGB not in backgrounds and NORMAL_RGB in backgrounds, backgrounds


# --- the same cells as LAVA jobs, run by LAVA's own dispatcher --------------------------------------

def test_exported_lava_jobs_run_under_lava_run_to_the_expected_verdicts(tmp_path):
    from harness import lava
    cells = ["baseline-6.12/virt-mmio/s2idle-rtc", "v9-backport-6.12/virt-mmio/s2idle-rtc"]
    proc = subprocess.run([sys.executable, "-m", "harness", "lava", "export", "--out", str(tmp_path),
                           *[a for c in cells for a in ("--cell", c)]], cwd=ROOT, capture_output=True, text=True,
                          timeout=3000)
    assert proc.returncode == 0 and "2 job(s) pass LAVA's schema" in proc.stdout, proc.stdout + proc.stderr
    verdicts = {}
    for n, cell in enumerate(cells, 1):
        d = cell.replace("/", "__")
        run = subprocess.run(["lava-run", "--job-id", str(n), "--output-dir", str(tmp_path / f"run-{n}"),
                              "--device", str(tmp_path / "device-virt-mmio.yaml"), str(tmp_path / d / "job.yaml")],
                             capture_output=True, text=True, timeout=900)
        (tmp_path / f"lava-run-{n}.log").write_text(run.stdout + run.stderr)
        verdicts[cell] = lava.results(run.stdout + run.stderr)
        assert verdicts[cell].get("job") == "pass", (cell, verdicts[cell], run.stdout[-3000:])
    for i in (1, 2, 3):
        assert verdicts[cells[0]][f"s2idle-rtc-{i}-state-write"] == "pass"
        assert verdicts[cells[0]][f"s2idle-rtc-{i}-consumer-ready"] == "fail"  # what the series fixes
        assert verdicts[cells[1]][f"s2idle-rtc-{i}-consumer-ready"] == "pass"
    # the job's serial log carries the PM core's lines, which harness parse reads
    assert "virtio_mmio_restore_noirq returned 0" in (tmp_path / "lava-run-2.log").read_text()
