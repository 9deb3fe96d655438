"""JSON Schema validation of the YAML files (harness/schemas.py, harness/config.py): every
shipped file validates, and a wrong value is a ConfigError naming file, line and key path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conftest import ROOT
from harness import config, expectations, matrix, qemu, rootfs, scenarios, schemas, series
from harness.cache import Cache
from harness.errors import ConfigError
from harness.proc import CommandLog

#: Every kind of shipped YAML file, with its schema.
SHIPPED = [(p, schemas.MATRIX) for p in sorted((ROOT / "matrices").glob("*.yaml"))] + \
    [(p, schemas.SCENARIO) for p in sorted((ROOT / "scenarios").glob("*.yaml"))] + \
    [(p, schemas.QEMU_PROFILE) for p in sorted((ROOT / "qemu-profiles").glob("*.yaml"))] + \
    [(ROOT / "guest-rootfs" / "rootfs.yaml", schemas.ROOTFS_RECIPE)] + \
    [(p, schemas.EXPECT_FILE) for p in sorted((ROOT / "patches").glob("**/expect.yaml"))] + \
    [(p, schemas.SERIES_MANIFEST) for p in sorted((ROOT / "patches").glob("**/series.yaml"))] + \
    [(p, schemas.DEFECT) for p in sorted((ROOT / "patches").glob("**/defect.yaml"))]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def error_of(load, *args) -> str:
    with pytest.raises(ConfigError) as err:
        load(*args)
    return str(err.value)


# --- Shipped files ---------------------------------------------------------------------------

def test_every_shipped_yaml_file_is_covered():
    dirs = ("matrices", "scenarios", "qemu-profiles", "guest-rootfs", "patches")
    assert {p for d in dirs for p in (ROOT / d).glob("**/*.yaml")} == {p for p, _ in SHIPPED}
    assert len({id(schema) for _, schema in SHIPPED}) == 7


@pytest.mark.parametrize("path, schema", SHIPPED, ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else "")
def test_every_shipped_file_validates(path, schema):
    assert config.load_validated(path, schema)


def test_every_shipped_file_loads_through_its_loader():
    for p in (ROOT / "matrices").glob("*.yaml"):
        assert matrix.load_matrix(p).cells
    for p in (ROOT / "qemu-profiles").glob("*.yaml"):
        assert qemu.load_profile(p).name == p.stem
    for p in (ROOT / "patches").glob("**/expect.yaml"):
        expectations.load_expectations(p)
    for p in (ROOT / "patches").glob("**/series.yaml"):
        assert series.load_manifest(p).subjects
    assert rootfs.load_recipe(ROOT / "guest-rootfs")["files"]


@pytest.mark.parametrize("name", ["MATRIX", "SCENARIO", "QEMU_PROFILE", "ROOTFS_RECIPE", "EXPECT_FILE",
                                  "SERIES_MANIFEST", "DEFECT"])
def test_every_schema_is_a_valid_draft_2020_12_schema(name):
    config.validator().check_schema(getattr(schemas, name))


def test_qemu_profile_schema_has_exactly_the_profile_fields():
    fields = {f.name for f in dataclasses.fields(qemu.QemuProfile)} - {"path"}
    assert set(schemas.QEMU_PROFILE["properties"]) == fields == set(schemas.QEMU_PROFILE["required"])


# --- The reported bugs ----------------------------------------------------------------------

MATRIX_ROWS = """\
name: m
rows:
  - revision: baseline-6.12
    scenarios: [s2idle-rtc]
  - revision: v9-backport-6.12
    scenarios: [s2idle-rtc]
  - revision: v9-backport-6.12
    scenarios: [pm-test-platform]
    profiles: virt-mmio
"""


def test_matrix_row_profiles_given_as_a_string_is_rejected(tmp_path):
    path = write(tmp_path / "x.yaml", MATRIX_ROWS)
    msg = error_of(matrix.load_matrix, path)
    assert msg == f"{path}:9: rows[2].profiles: expected a non-empty list of strings, got 'virt-mmio'"


def test_matrix_kconfig_given_as_a_string_is_rejected(tmp_path):
    path = write(tmp_path / "x.yaml", "name: m\nkconfig: virtio\nrows:\n  - {revision: v9, scenarios: [s2idle-rtc]}\n")
    msg = error_of(matrix.load_matrix, path)
    assert msg == f"{path}:2: kconfig: expected a non-empty list of strings, got 'virtio'"


def test_scenario_checks_given_as_a_string_is_rejected(tmp_path):
    path = write(tmp_path / "s.yaml", "name: s\nkind: rtc\ncycles: 1\nchecks: freeze-refused\n")
    msg = error_of(scenarios.load_scenario, path)
    assert msg.startswith(f"{path}:4: checks: expected a list of scenario check names (")
    assert msg.endswith("got 'freeze-refused'")


def test_step_checks_given_as_a_string_is_rejected(tmp_path):
    path = write(tmp_path / "s.yaml", "name: s\nkind: rtc\nsteps:\n  - label: a\n  - label: b\n"
                                      "    checks: freeze-refused\n")
    assert error_of(scenarios.load_scenario, path).startswith(f"{path}:6: steps[1].checks: expected a list of")


def test_scenario_cycles_true_is_rejected(tmp_path):
    path = write(tmp_path / "s.yaml", "name: s\nkind: rtc\ncycles: true\n")
    assert error_of(scenarios.load_scenario, path) == f"{path}:3: cycles: expected an integer >= 1, got true"


def test_matrix_row_cycles_true_is_rejected(tmp_path):
    path = write(tmp_path / "x.yaml", "name: m\nrows:\n  - revision: v9-backport-6.12\n    scenarios: [s2idle-rtc]\n"
                                      "    cycles: true\n")
    assert error_of(matrix.load_matrix, path) == f"{path}:5: rows[0].cycles: expected an integer >= 1, got true"


def test_scenario_timeout_true_is_rejected(tmp_path):
    path = write(tmp_path / "s.yaml", "name: s\nkind: rtc\ntimeout: true\n")
    assert error_of(scenarios.load_scenario, path) == f"{path}:3: timeout: expected a number > 0, got true"


def test_of_several_violations_the_first_in_the_file_is_reported(tmp_path):
    path = write(tmp_path / "s.yaml", "name: s\nkind: rtc\nwake_seconds: 0\ncycles: true\ntimeout: true\n"
                                      "checks: freeze-refused\n")
    assert error_of(scenarios.load_scenario, path) == f"{path}:3: wake_seconds: expected an integer >= 1, got 0"


def test_booleans_and_whole_floats_are_not_integers():
    v = config.validator()({"type": "integer"})
    assert v.is_valid(3) and not v.is_valid(True) and not v.is_valid(False) and not v.is_valid(3.0)
    assert not config.validator()({"type": "number"}).is_valid(True)


@pytest.mark.parametrize("name, text, line, shown", [
    ("m.yaml", "name: m\nrows:\n  - revision: v9\n    scenarios: [s2idle-rtc]\n    cycle: 3\n", 5,
     "rows[0]: unknown key 'cycle' (allowed: cycles, expect, profiles, revision, scenarios, tree)"),
    ("m.yaml", "name: m\nprofile: [virt-mmio]\nrows:\n  - {revision: v9, scenarios: [s2idle-rtc]}\n", 2,
     "unknown key 'profile' (allowed: description, kconfig, name, profiles, rows)"),
    ("s.yaml", "name: s\nkind: rtc\nsteps:\n  - label: a\n    expect:\n      devices-work: fail\n"
     "      consumer-redy: fail\n", 7, "steps[0].expect: unknown key 'consumer-redy' (allowed: "),
    ("virt-x.yaml", "name: virt-x\ngpu: virgl\n", 2, "unknown key 'gpu' (allowed: append, args, binary, cpu, "),
    ("rootfs.yaml", "dirs: [/bin]\nnodes:\n  - {path: /dev/null, mode: '0666', type: c, major: 1, minr: 3}\n"
     "files: [{src: init, dest: /init, mode: '0755'}]\n", 3,
     "nodes[0]: unknown key 'minr' (allowed: major, minor, mode, path, type)"),
    ("expect.yaml", "expect: {}\nreasons: none\n", 2, "unknown key 'reasons' (allowed: expect, reason, revision)"),
    ("series.yaml", "name: t\ntitle: t\nversion: 1\nmessage_id: x@y\npatches:\n  - subject: a\n    msgid: b\n", 7,
     "patches[0]: unknown key 'msgid' (allowed: message_id, subject)"),
    ("defect.yaml", "name: d\non_top: ../v9\nbreaks: x\n", 2, "unknown key 'on_top' (allowed: breaks, name, on_top_of)"),
])
def test_unknown_keys_are_named_with_their_line(tmp_path, name, text, line, shown):
    schema = {"m.yaml": schemas.MATRIX, "s.yaml": schemas.SCENARIO, "virt-x.yaml": schemas.QEMU_PROFILE,
              "rootfs.yaml": schemas.ROOTFS_RECIPE, "expect.yaml": schemas.EXPECT_FILE,
              "series.yaml": schemas.SERIES_MANIFEST, "defect.yaml": schemas.DEFECT}[name]
    path = write(tmp_path / name, text)
    assert error_of(config.load_validated, path, schema).startswith(f"{path}:{line}: {shown}")


# --- Other schema violations ------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("name: s\n", ":1: missing key 'kind'"),
    ("description: x\n", ":1: missing keys 'name', 'kind'"),
    ("name: s\nkind: rtc\nsteps: []\n", ":3: steps: expected a non-empty list of mappings, got an empty list"),
    ("name: s\nkind: rtc\nexpect: [noirq-callback]\n",
     ":3: expect: expected a mapping of check names to pass, fail, any, got a list"),
    ("name: s\nkind: rtc\nbefore: echo 1 > /sys/x\n", ":3: before: expected a list of one-line guest shell commands"),
    ("name: 5\nkind: rtc\n", ":1: name: expected a string, got 5"),
])
def test_scenario_violations(tmp_path, text, message):
    path = write(tmp_path / "s.yaml", text)
    assert error_of(scenarios.load_scenario, path).startswith(f"{path}{message}")


def test_rootfs_mode_written_without_quotes_is_rejected(tmp_path):
    (tmp_path / "init").write_text("#!/bin/sh\n")
    write(tmp_path / "rootfs.yaml", "dirs: [/bin]\nfiles:\n  - src: init\n    dest: /init\n    mode: 0755\n")
    assert error_of(rootfs.load_recipe, tmp_path) == \
        f'{tmp_path / "rootfs.yaml"}:5: files[0].mode: expected an octal mode in quotes, like "0755", got 493'


def test_defect_on_top_of_of_the_wrong_shape_is_rejected(tmp_path):
    path = write(tmp_path / "defect.yaml", "name: d\non_top_of: 3\nbreaks: x\n")
    assert error_of(config.load_validated, path, schemas.DEFECT) == \
        f"{path}:2: on_top_of: expected a revision path, or a mapping of tree names to revision paths, got 3"


def test_defect_on_top_of_without_the_default_tree_names_the_line(tmp_path):
    write(tmp_path / "defect.yaml", "name: d\nbreaks: x\non_top_of:\n  debian-7.2: ../v9-backport-7.2\n")
    msg = error_of(series.load_revision, str(tmp_path), Cache(tmp_path / "c"), CommandLog(None))
    assert msg.startswith(f"{tmp_path / 'defect.yaml'}:3: on_top_of: has no entry for the default tree")


def test_manifest_tree_that_is_not_embedded_names_the_line(tmp_path):
    path = write(tmp_path / "series.yaml", "name: t\ntitle: t\nversion: 1\nmessage_id: x@y\ntree: ~/linux\n"
                                           "patches:\n  - subject: a\n")
    assert error_of(series.load_manifest, path).startswith(f"{path}:5: tree: must name an embedded tree")


def test_profile_named_otherwise_than_its_file_names_the_line(tmp_path):
    src = (ROOT / "qemu-profiles" / "virt-mmio.yaml").read_text()
    path = write(tmp_path / "virt-other.yaml", src)
    assert error_of(qemu.load_profile, path) == f"{path}:5: name: is 'virt-mmio' but the file is virt-other.yaml"


# --- Reading YAML -----------------------------------------------------------------------------

def test_lines_are_recorded_for_every_key_path(tmp_path):
    doc = config.load_yaml(write(tmp_path / "a.yaml", "# comment\na: 1\nb:\n  - x\n  - {c: 2,\n     d: [3]}\n"))
    assert doc.data == {"a": 1, "b": ["x", {"c": 2, "d": [3]}]}
    assert doc.lines == {(): 2, ("a",): 2, ("b",): 3, ("b", 0): 4, ("b", 1): 5, ("b", 1, "c"): 5,
                         ("b", 1, "d"): 6, ("b", 1, "d", 0): 6}
    assert doc.where("b", 1, "d", 5) == f"{doc.path}:6: b[1].d[5]" and doc.where() == f"{doc.path}:2"


def test_a_key_given_twice_is_an_error_with_both_lines(tmp_path):
    path = write(tmp_path / "a.yaml", "a: 1\nb:\n  c: 2\n  c: 3\n")
    assert error_of(config.load_yaml, path) == f"{path}:4: b.c: key given twice (first on line 3)"


def test_merge_keys_are_read_and_may_be_overridden(tmp_path):
    doc = config.load_yaml(write(tmp_path / "a.yaml", "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n"))
    assert doc.data["other"] == {"x": 1, "y": 3} and doc.lines[("other", "y")] == 4


def test_scalars_are_read_as_safe_load_reads_them(tmp_path):
    doc = config.load_yaml(write(tmp_path / "a.yaml", "a: [1, 2.5, true, null, '07', 0755, x]\n"))
    assert doc.data["a"] == [1, 2.5, True, None, "07", 493, "x"]


@pytest.mark.parametrize("text, message", [
    ("a: [1, 2\nb: 3\n", ":2: not valid YAML: while parsing a flow sequence expected ',' or ']'"),
    ("- 1\n- 2\n", ": expected a mapping of keys at the top level"),
    ("", ": expected a mapping of keys at the top level"),
    ("a: &x [*x]\n", ":1: an alias refers to a node that contains it"),
    ("? [a]\n: 1\n", ":1: top level: a key must be a name, not a list"),
])
def test_unreadable_yaml_is_named(tmp_path, text, message):
    path = write(tmp_path / "a.yaml", text)
    assert error_of(config.load_yaml, path).startswith(f"{path}{message}")


def test_a_missing_file_cannot_be_read(tmp_path):
    assert error_of(config.load_yaml, tmp_path / "none.yaml") == \
        f"{tmp_path / 'none.yaml'}: cannot read: No such file or directory"
