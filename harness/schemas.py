"""JSON Schemas (draft 2020-12) of the harness's YAML files, one constant per kind of file.

:func:`harness.config.load_validated` checks a file against one of these; its errors name
file, line and key path.  Every mapping is closed (``additionalProperties: false``) and
every key has a ``type``; booleans are neither integers nor numbers, and an integer is not
``2.0`` (:func:`harness.config.validator`).  A leaf's ``description``, when it has one, is
the wording of "expected ..." in an error message.  What a schema cannot say (a revision
directory exists, a profile is named after its file) each loader checks itself.

The names of checks, scenario kinds and pm_test levels are imported from where they are
defined, so a new check is known here without an edit.
"""

from __future__ import annotations

from typing import Any

from harness import checks, model

Schema = dict[str, Any]


def _strings(non_empty: bool = True, **extra: Any) -> Schema:
    """A list of strings (non-empty unless told)."""
    return {"type": "array", "items": {"type": "string"}, **({"minItems": 1} if non_empty else {}), **extra}


def _closed(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    """A mapping with exactly ``properties`` as its keys, ``required`` of them mandatory."""
    return {"type": "object", "additionalProperties": False, "required": list(required), "properties": properties}


_POSITIVE_INT: Schema = {"type": "integer", "minimum": 1}
_NAME: Schema = {"type": "string", "minLength": 1}
_SECONDS: Schema = {"type": "number", "exclusiveMinimum": 0}

#: An ``expect`` mapping (an ``expect.yaml``'s, a scenario's or a step's): check name -> pass, fail or any.
EXPECT: Schema = {**_closed({name: {"enum": list(checks.EXPECTED_OUTCOMES)} for name in checks.ALL_CHECKS}),
                  "description": f"a mapping of check names to {', '.join(checks.EXPECTED_OUTCOMES)}"}

#: ``patches/*/expect.yaml``: which checks a revision is expected to fail, and why.
EXPECT_FILE: Schema = _closed({
    "revision": {"type": "string"},
    "reason": {"type": "string"},
    "expect": EXPECT,
}, required=("expect",))

#: A guest shell command of a scenario's ``before`` (one line: it is sent to the guest's shell as is).
_COMMAND: Schema = {"type": "string", "pattern": r"^\s*[^\n]*\s*$", "description": "a one-line guest shell command"}

#: What a scenario (uniform cycles) or one of its steps may add to a cycle.
_STEP_PROPERTIES: dict[str, Schema] = {
    "before": {"type": "array", "items": _COMMAND, "description": "a list of one-line guest shell commands"},
    "expect": EXPECT,
    "checks": {"type": "array", "items": {"enum": list(checks.SCENARIO_CHECKS)},
               "description": f"a list of scenario check names ({', '.join(checks.SCENARIO_CHECKS)})"},
}

#: ``scenarios/*.yaml``: what the cycles of a cell do (:mod:`harness.scenarios`).
SCENARIO: Schema = _closed({
    "name": {"type": "string"},
    "description": {"type": "string"},
    "kind": {"enum": list(model.SCENARIO_KINDS)},
    "pm_test_level": {"enum": list(model.PM_TEST_LEVELS)},
    "cycles": _POSITIVE_INT,
    "wake_seconds": _POSITIVE_INT,
    "timeout": _SECONDS,
    "steps": {"type": "array", "minItems": 1,
              "items": _closed({"label": {"type": "string"}, **_STEP_PROPERTIES})},
    **_STEP_PROPERTIES,
}, required=("name", "kind"))

#: ``matrices/*.yaml``: rows of revisions x scenarios x QEMU profiles (:mod:`harness.matrix`).
MATRIX: Schema = _closed({
    "name": {"type": "string"},
    "description": {"type": "string"},
    "profiles": _strings(),
    "kconfig": _strings(),
    "rows": {"type": "array", "minItems": 1, "items": _closed({
        "revision": _NAME,
        "scenarios": _strings(),
        "cycles": _POSITIVE_INT,
        "profiles": _strings(),
        "expect": _NAME,
        "tree": _NAME,
    }, required=("revision", "scenarios"))},
}, required=("name", "rows"))

#: ``qemu-profiles/*.yaml``: one QEMU machine set-up; its keys are the fields of
#: :class:`harness.qemu.QemuProfile` (a test keeps the two equal).
QEMU_PROFILE: Schema = _closed({
    "name": {"type": "string"},
    "description": {"type": "string"},
    "binary": {"type": "string"},
    "machine": {"type": "string"},
    "cpu": {"type": "string"},
    "memory_mb": _POSITIVE_INT,
    "smp": _POSITIVE_INT,
    "disk_mb": _POSITIVE_INT,
    "append": {"type": "string"},
    "args": _strings(),
}, required=("name", "description", "binary", "machine", "cpu", "memory_mb", "smp", "disk_mb", "append", "args"))

#: A file mode for gen_init_cpio: octal digits, quoted (YAML 1.1 reads a bare 0755 as the integer 493).
_MODE: Schema = {"type": "string", "pattern": "^[0-7]{3,4}$", "description": 'an octal mode in quotes, like "0755"'}

#: A file of the guest initramfs: ``src`` (in the recipe directory or the sysroot), ``dest`` in the guest.
_ROOTFS_FILE: Schema = _closed({
    "src": {"type": "string"},
    "dest": {"type": "string"},
    "mode": _MODE,
    "libs": {"type": "boolean"},
}, required=("src", "dest", "mode"))

#: ``guest-rootfs/rootfs.yaml``: what goes into the guest initramfs (:mod:`harness.rootfs`).
ROOTFS_RECIPE: Schema = _closed({
    "dirs": _strings(),
    "nodes": {"type": "array", "items": _closed({
        "path": {"type": "string"},
        "mode": _MODE,
        "type": {"enum": ["c", "b"]},
        "major": {"type": "integer", "minimum": 0},
        "minor": {"type": "integer", "minimum": 0},
    }, required=("path", "mode", "type", "major", "minor"))},
    "files": {"type": "array", "minItems": 1, "items": _ROOTFS_FILE},
    "sysroot": {"type": "array", "items": _ROOTFS_FILE},
}, required=("dirs", "files"))

#: ``patches/*/series.yaml``: a revision posted to lore, by message-id (:func:`harness.series.load_manifest`).
#: ``tree`` must name an embedded tree; that list lives in :mod:`harness.fetch`, which the loader checks.
SERIES_MANIFEST: Schema = _closed({
    "name": {"type": "string"},
    "title": {"type": "string"},
    "version": _POSITIVE_INT,
    "rfc": {"type": "boolean"},
    "message_id": {"type": "string"},
    "patches": {"type": "array", "minItems": 1, "items": _closed({
        "subject": {"type": "string"},
        "message_id": {"type": "string"},
    }, required=("subject",))},
    "base": {"type": ["string", "null"]},
    "mbox": {"type": ["string", "null"]},
    "tree": {"type": ["string", "null"]},
    "notes": {"type": "string"},
}, required=("name", "title", "version", "message_id", "patches"))

#: ``patches/defects/*/defect.yaml``: an injected defect and the revision it goes ``on_top_of``: a
#: path relative to its directory, or one per embedded tree (:func:`harness.series.defect_base`
#: checks that the default tree has one).
DEFECT: Schema = _closed({
    "name": {"type": "string"},
    "on_top_of": {"anyOf": [
        {"type": "string"},
        {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
    ], "description": "a revision path, or a mapping of tree names to revision paths"},
    "breaks": {"type": "string"},
}, required=("name", "on_top_of", "breaks"))
