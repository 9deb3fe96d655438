"""LAVA export: the profile becomes a qemu device dictionary and each cell a job that passes
LAVA's own schema (Debian's lava-common, installed by make setup)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import lava, matrix, qemu, scenarios
from harness.errors import ConfigError
from conftest import ROOT

PROFILE = qemu.find_profile(ROOT / "qemu-profiles", "virt-mmio")


def test_profile_splits_into_options_command_line_and_disk():
    options, append, disk = lava.split_profile(PROFILE)
    assert "-kernel" not in options and "-initrd" not in options and "-append" not in options
    assert options[:2] == ["-M", "virt"] and "virtio-rng-device" in options and "virtio-rng-pci" in options
    assert append == PROFILE.append
    assert disk == ["-drive", "if=none,id=disk0,format=raw,file={disk}"]


def test_job_runs_each_cycle_and_asks_whether_the_consumer_found_the_provider(tmp_path):
    s = scenarios.find_scenario("s2idle-rtc")
    job = lava.job("v9-backport-6.12/virt-mmio/s2idle-rtc", s, PROFILE, Path("/k/Image"), Path("/k/initrd"),
                   Path("/k/disk.img"))
    deploy, boot, test = (next(iter(a.values())) for a in job["actions"])
    assert deploy["images"]["kernel"]["url"] == "file:///k/Image"
    assert deploy["images"]["kernel"]["image_arg"].startswith("-kernel {kernel} -append 'console=ttyAMA0")
    assert boot["prompts"] == ["harness# "]
    script = test["interactive"][0]["script"]
    named = [c["name"] for c in script if "name" in c]
    assert named == [f"s2idle-rtc-{i}-{what}" for i in (1, 2, 3) for what in ("state-write", "consumer-ready")]
    write = next(c for c in script if c.get("name") == "s2idle-rtc-1-state-write")["command"]
    # the wakeup_count handshake around the arming, so that an early alarm is not a lost one
    assert ("read c < /sys/power/wakeup_count && echo 0 > /sys/class/rtc/rtc0/wakealarm && echo +1 > "
            "/sys/class/rtc/rtc0/wakealarm && echo $c > /sys/power/wakeup_count && break; done && echo mem > "
            "/sys/power/state") in write
    ready = next(c for c in script if c.get("name") == "s2idle-rtc-1-consumer-ready")
    # the marker is split in the command, so the echoed command line cannot match it
    assert "HARNESS-PROVIDER-READY" not in ready["command"]
    assert ready["successes"] == [{"message": "HARNESS-PROVIDER-READY"}]


def test_hibernation_is_not_exported():
    with pytest.raises(ConfigError, match="hibernate cycles are not exported"):
        lava.job("x", scenarios.find_scenario("hibernate-test-resume"), PROFILE, Path("/k"), Path("/i"), Path("/d"))


@pytest.mark.parametrize("profile", sorted({c.request.profile for c in matrix.find_matrix("default").cells}))
def test_every_job_of_the_default_matrix_passes_lavas_schema(profile, tmp_path):
    paths = []
    for cell in matrix.find_matrix("default").cells:
        if cell.request.profile != profile or cell.skip or cell.scenario.kind == "hibernate":
            continue
        prof = qemu.find_profile(ROOT / "qemu-profiles", profile)
        paths.append(lava.dump(tmp_path / cell.dirname / "job.yaml", lava.job(
            cell.id, cell.scenario, prof, tmp_path / "Image", tmp_path / "initrd", tmp_path / "disk.img")))
    assert paths
    lava.validate(paths)


def test_a_job_that_breaks_the_schema_is_refused_naming_file_and_key(tmp_path):
    job = lava.job("x", scenarios.find_scenario("s2idle-rtc"), PROFILE, tmp_path / "I", tmp_path / "r", tmp_path / "d")
    job["actions"][1]["boot"]["method"] = "qemu-typo"
    path = lava.dump(tmp_path / "job.yaml", job)
    with pytest.raises(ConfigError, match=f"{path}: unknown action type .*qemu_typo"):
        lava.validate([path])


def test_results_are_read_from_lava_runs_log_lines():
    log = "\n".join([
        '{"dt": "2026-11-21T20:10:22", "lvl": "results", "msg": {"case": "validate", "definition": "lava", "result": "pass"}}',
        '{"dt": "2026-11-21T20:10:22", "lvl": "target", "msg": "harness# "}',
        '{"dt": "2026-11-21T20:10:50", "lvl": "results", "msg": {"case": "s2idle-rtc-1-consumer-ready", '
        '"definition": "0_s2idle_rtc", "duration": "0.22", "result": "fail"}}',
        '{"dt": "2026-11-21T20:10:51", "lvl": "results", "msg": {"case": "job", "definition": "lava", "result": "pass"}}',
    ])
    assert lava.results(log) == {"validate": "pass", "s2idle-rtc-1-consumer-ready": "fail", "job": "pass"}
