"""kconfig fragments and QEMU profiles: parsing, merging, validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import kconfig, qemu, rootfs
from conftest import ROOT
from harness.errors import ConfigError

PROFILES = ROOT / "qemu-profiles"


def test_shipped_fragments_parse_and_later_fragments_override(tmp_path):
    paths = kconfig.fragment_paths(ROOT / "kconfigs", kconfig.DEFAULT_FRAGMENTS)
    merged = {r.symbol: r for r in kconfig.merge(paths)}
    assert merged["VIRTIO_MMIO"].value == "y" and merged["VIRTIO_MMIO"].file.name == "virtio.config"
    for symbol in ("PM_DEBUG", "PM_ADVANCED_DEBUG", "PM_SLEEP_DEBUG", "PM_TEST_SUSPEND", "SUSPEND",
                   "HIBERNATION", "RTC_DRV_PL031", "MODULES", "KALLSYMS", "VIRTIO_PCI"):
        assert merged[symbol].value == "y", symbol
    override = tmp_path / "off.config"
    override.write_text("# CONFIG_HIBERNATION is not set\n")
    merged = {r.symbol: r for r in kconfig.merge(paths + [override])}
    assert merged["HIBERNATION"].value == "n" and merged["HIBERNATION"].where == f"{override}:1"


def test_fragment_with_a_bad_line_names_file_and_line(tmp_path):
    frag = tmp_path / "bad.config"
    frag.write_text("CONFIG_A=y\n\nVIRTIO=y\n")
    with pytest.raises(ConfigError, match=r"bad\.config:3: not a kconfig line"):
        kconfig.parse_fragment(frag)


def test_unknown_fragment_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known: .*virtio"):
        kconfig.fragment_paths(ROOT / "kconfigs", ["no-such-fragment"])


def test_verify_reports_dropped_and_changed_symbols(tmp_path):
    frag = tmp_path / "f.config"
    frag.write_text("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"x\"\n")
    config = kconfig.parse_config("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\nCONFIG_D=\"x\"\n")
    bad = kconfig.verify(kconfig.parse_fragment(frag), config)
    assert [(m.request.symbol, m.request.value, m.actual, m.request.line) for m in bad] == [
        ("B", "m", "y", 2), ("C", "n", "y", 3)]


def test_render_round_trips_through_the_config_parser(tmp_path):
    reqs = kconfig.merge(kconfig.fragment_paths(ROOT / "kconfigs", kconfig.DEFAULT_FRAGMENTS))
    assert kconfig.verify(reqs, kconfig.parse_config(kconfig.render(reqs))) == []


def test_profile_renders_the_requested_machine():
    p = qemu.find_profile(PROFILES, "virt-mmio")
    argv = qemu.render_argv(p, kernel=Path("/k/Image"), initrd=Path("/i.cpio.gz"), disk=Path("/d.img"),
                            extra_append="initcall_debug")
    assert argv[0] == "qemu-system-aarch64"
    joined = " ".join(argv)
    for part in ("-M virt", "-cpu cortex-a57", "-m 512", "-smp 2", "-nographic", "-no-reboot",
                 "-kernel /k/Image", "-initrd /i.cpio.gz", "-device virtio-rng-device",
                 "file=/d.img", "-device virtio-blk-device,drive=disk0", "-netdev user,id=net0",
                 "-device virtio-net-device,netdev=net0", "-device virtio-rng-pci"):
        assert part in joined, part
    assert argv[argv.index("-append") + 1] == "console=ttyAMA0 log_buf_len=4M panic=-1 initcall_debug"


def _profile(tmp_path, text: str) -> Path:
    src = (PROFILES / "virt-mmio.yaml").read_text()
    path = tmp_path / "virt-mmio.yaml"
    path.write_text(text if text else src)
    return path


def test_profile_with_unknown_key_names_file_and_key(tmp_path):
    src = (PROFILES / "virt-mmio.yaml").read_text()
    path = _profile(tmp_path, src + "gpu: yes\n")
    line = len(src.splitlines()) + 1
    with pytest.raises(ConfigError, match=rf"virt-mmio\.yaml:{line}: unknown key 'gpu' \(allowed: append, args, "):
        qemu.load_profile(path)


def test_profile_with_missing_key_names_it(tmp_path):
    src = (PROFILES / "virt-mmio.yaml").read_text().replace("cpu: cortex-a57\n", "")
    with pytest.raises(ConfigError, match=r"virt-mmio\.yaml:5: missing key 'cpu'$"):
        qemu.load_profile(_profile(tmp_path, src))


def test_profile_with_wrong_type_names_the_key(tmp_path):
    src = (PROFILES / "virt-mmio.yaml").read_text().replace("memory_mb: 512", "memory_mb: lots")
    with pytest.raises(ConfigError, match=r"virt-mmio\.yaml:10: memory_mb: expected an integer >= 1, got 'lots'"):
        qemu.load_profile(_profile(tmp_path, src))


def test_profile_template_with_unknown_variable_is_an_error(tmp_path):
    src = (PROFILES / "virt-mmio.yaml").read_text().replace('"{{ cpu }}"', '"{{ cpu_model }}"')
    profile = qemu.load_profile(_profile(tmp_path, src))
    with pytest.raises(ConfigError, match=r"args\[3\].*cpu_model"):
        qemu.render_argv(profile, kernel=Path("k"), initrd=Path("i"), disk=Path("d"))


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ConfigError, match="known: virt-gicv3, virt-mmio, virt-mmio-notime, virt-smp1"):
        qemu.find_profile(PROFILES, "virt-nope")


def _recipe(tmp_path, text: str) -> Path:
    (tmp_path / "init").write_text("#!/bin/sh\n")
    (tmp_path / "rootfs.yaml").write_text(text)
    return tmp_path


def test_shipped_rootfs_recipe_loads():
    recipe = rootfs.load_recipe(ROOT / "guest-rootfs")
    assert {"path": "/dev/console", "mode": "0600", "type": "c", "major": 5, "minor": 1} in recipe["nodes"]


def test_rootfs_recipe_with_unknown_key_names_entry_and_key(tmp_path):
    d = _recipe(tmp_path, "dirs: [/bin]\nfiles:\n  - {src: init, dest: /init, mode: '0755', owner: 0}\n")
    with pytest.raises(ConfigError, match=r"rootfs\.yaml:3: files\[0\]: unknown key 'owner' \(allowed: dest, libs, mode, src\)"):
        rootfs.load_recipe(d)


def test_rootfs_recipe_with_missing_source_file_names_it(tmp_path):
    d = _recipe(tmp_path, "dirs: [/bin]\nfiles:\n  - {src: inti, dest: /init, mode: '0755'}\n")
    with pytest.raises(ConfigError, match=r"rootfs\.yaml:3: files\[0\]\.src: .*inti does not exist"):
        rootfs.load_recipe(d)
