"""Loading of the harness's YAML files, validated against a JSON Schema (:mod:`harness.schemas`).

The YAML is composed (``yaml.compose``, safe tags only) rather than loaded, so every value
keeps the line it starts on; a schema violation is a :class:`~harness.errors.ConfigError`
that names the file, the line, the key path and what was expected::

    matrices/x.yaml:12: rows[2].profiles: expected a non-empty list of strings, got 'virt-mmio'

Mapping keys are read as the text written (``on:`` is the key ``'on'``, not YAML 1.1's
``True``), and a key given twice is an error rather than silently the last one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.lazy import lazy_import

jsonschema = lazy_import("jsonschema")

#: A position in a document: mapping keys and list indices, e.g. ``("rows", 2, "profiles")``.
KeyPath = tuple[str | int, ...]


def _is_integer(checker, instance) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


@functools.cache
def validator() -> type:
    """The jsonschema validator class of the harness's files: draft 2020-12, except that an
    "integer" is a YAML integer: ``2.0`` is not one (JSON Schema says it is, and ``cycles: 2.0``
    would then reach ``range()``).  Booleans are neither integers nor numbers, as in jsonschema
    itself.  Made at the first use (jsonschema is imported then: :mod:`harness.lazy`)."""
    return jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))


@dataclass(frozen=True)
class Document:
    """A loaded YAML file: its ``path``, the plain Python ``data`` and the 1-based ``lines``
    each key path starts on (a mapping entry: its key's line; a list item: its own)."""

    path: Path
    data: Any
    lines: Mapping[KeyPath, int]

    def line(self, keys: KeyPath) -> int:
        """The line of ``keys``, or of its deepest prefix present in the file."""
        for n in range(len(keys), -1, -1):
            if keys[:n] in self.lines:
                return self.lines[keys[:n]]
        return 1

    def where(self, *keys: str | int, shown: KeyPath | None = None) -> str:
        """``FILE:LINE: key.path`` for an error message about ``keys`` (``FILE:LINE`` at the top
        level); ``shown`` is the key path to print when it differs from the one to locate."""
        dotted = format_keys(keys if shown is None else shown)
        return f"{self.path}:{self.line(tuple(keys))}" + (f": {dotted}" if dotted else "")


def format_keys(keys: KeyPath) -> str:
    """``("rows", 2, "profiles")`` -> ``rows[2].profiles``."""
    out = ""
    for k in keys:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


# --- Reading --------------------------------------------------------------------------------

def _convert(node: yaml.Node, keys: KeyPath, lines: dict[KeyPath, int], constructor: yaml.constructor.SafeConstructor,
             path: Path, open_nodes: set[int]) -> Any:
    """Plain Python for ``node`` (scalars as ``yaml.safe_load`` reads them), recording the line
    of every entry under ``keys`` in ``lines``."""
    if isinstance(node, yaml.ScalarNode):
        return constructor.construct_object(node)
    if id(node) in open_nodes:
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: an alias refers to a node that contains it")
    open_nodes.add(id(node))
    try:
        if isinstance(node, yaml.SequenceNode):
            out_list = []
            for i, item in enumerate(node.value):
                lines[keys + (i,)] = item.start_mark.line + 1
                out_list.append(_convert(item, keys + (i,), lines, constructor, path, open_nodes))
            return out_list
        written = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
        constructor.flatten_mapping(node)  # merge keys (<<: *anchor) first, then the keys written here
        merged = len(node.value) - written
        out: dict[str, Any] = {}
        written_here: set[str] = set()
        for n, (key_node, value_node) in enumerate(node.value):
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{path}:{line}: {format_keys(keys) or 'top level'}: a key must be a name, "
                                  f"not a {'list' if isinstance(key_node, yaml.SequenceNode) else 'mapping'}")
            key = key_node.value
            if n >= merged and key in written_here:
                raise ConfigError(f"{path}:{line}: {format_keys(keys + (key,))}: key given twice "
                                  f"(first on line {lines[keys + (key,)]})")
            if n >= merged:
                written_here.add(key)
            lines[keys + (key,)] = line
            out[key] = _convert(value_node, keys + (key,), lines, constructor, path, open_nodes)
        return out
    finally:
        open_nodes.discard(id(node))


def load_yaml(path: Path) -> Document:
    """Read ``path`` as one YAML document whose top level is a mapping.

    Returns a :class:`Document` (data and line of every key path).  Raises
    :class:`ConfigError` naming the file when it cannot be read, is not valid YAML (with the
    line), has a key given twice or a non-scalar key, or is not a mapping at the top level."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: cannot read: not UTF-8 text ({e.reason} at byte {e.start})") from e
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        lines: dict[KeyPath, int] = {}
        if root is not None:
            lines[()] = root.start_mark.line + 1
        data = None if root is None else _convert(root, (), lines, yaml.constructor.SafeConstructor(), path, set())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise ConfigError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML: {problem}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return Document(path, data, lines)


# --- Validating -----------------------------------------------------------------------------

_TYPE_WORDS = {"string": ("a string", "strings"), "integer": ("an integer", "integers"),
               "number": ("a number", "numbers"), "boolean": ("true or false", "booleans"),
               "object": ("a mapping", "mappings"), "array": ("a list", "lists"), "null": ("null", "nulls")}


def describe(schema: Any, plural: bool = False) -> str:
    """What ``schema`` accepts, in words (``a non-empty list of strings``, ``an integer >= 1``).

    A schema's ``description``, when it has one, is taken as the wording (singular only)."""
    if not isinstance(schema, dict):
        return "nothing" if schema is False else "anything"
    if "description" in schema and not plural:
        return schema["description"]
    if "enum" in schema:
        return ("values among " if plural else "one of ") + ", ".join(_plain(v) for v in schema["enum"])
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return " or ".join(describe(s, plural) for s in schema[combinator])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if not types:
        return "values" if plural else "a value"
    words = []
    for t in types:
        word = _TYPE_WORDS[t][plural]
        if t == "array":
            if schema.get("minItems") == 1:
                word = "non-empty " + word if plural else "a non-empty list"
            items = schema.get("items")
            if isinstance(items, dict) and items:
                word += " of " + describe(items, plural=True)
        elif t == "object" and schema.get("minProperties") == 1:
            word = "non-empty " + word if plural else "a non-empty mapping"
        elif t in ("integer", "number"):
            bounds = [f"{op} {schema[k]}" for k, op in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                       ("maximum", "<="), ("exclusiveMaximum", "<")) if k in schema]
            word = " ".join([word, *bounds])
        elif t == "string":
            if schema.get("minLength") == 1:
                word = "non-empty " + word if plural else "a non-empty string"
            if "pattern" in schema:
                word += f" matching {schema['pattern']}"
        words.append(word)
    return " or ".join(words)


def _plain(value: Any) -> str:
    """``value`` as written in YAML, for a message: strings bare, true/false/null lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _got(value: Any) -> str:
    """What was found, for a message: a scalar as written (strings quoted), a list or mapping by kind."""
    if isinstance(value, (bool, type(None))):
        return _plain(value)
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    if isinstance(value, dict):
        return "an empty mapping" if not value else "a mapping"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _explain(error: jsonschema.ValidationError) -> tuple[KeyPath, KeyPath, str]:
    """``(key path to locate, key path to show, what is wrong)`` for one validation error."""
    keys = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = schema.get("properties", {})
        extra = next((k for k in error.instance if k not in allowed), None)
        if extra is not None:
            return keys + (extra,), keys, f"unknown key {extra!r} (allowed: {', '.join(sorted(allowed))})"
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        return keys, keys, f"missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
    if error.validator in ("enum", "const"):
        values = error.validator_value if error.validator == "enum" else [error.validator_value]
        return keys, keys, f"expected one of {', '.join(_plain(v) for v in values)}, got {_got(error.instance)}"
    if error.validator is None:  # a `false` subschema
        return keys, keys, "not allowed here"
    if error.validator in ("type", "anyOf", "oneOf", "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum",
                           "minItems", "minProperties", "minLength", "pattern"):
        return keys, keys, f"expected {describe(schema)}, got {_got(error.instance)}"
    return keys, keys, error.message


def validate(doc: Document, schema: Mapping[str, Any]) -> None:
    """Check ``doc.data`` against ``schema`` (JSON Schema draft 2020-12, :func:`validator`).

    Raises :class:`ConfigError` for the most relevant violation (``jsonschema``'s
    ``best_match``; of equally relevant ones, the first in the file):
    ``FILE:LINE: key.path: what was expected, got what``."""
    relevance = jsonschema.exceptions.by_relevance()
    error = jsonschema.exceptions.best_match(
        validator()(schema).iter_errors(doc.data),
        key=lambda e: (-len(e.path), -doc.line(tuple(e.absolute_path)), relevance(e)))
    if error is not None:
        locate, shown, text = _explain(error)
        raise ConfigError(f"{doc.where(*locate, shown=shown)}: {text}")


def load_document(path: Path, schema: Mapping[str, Any]) -> Document:
    """:func:`load_yaml` then :func:`validate`: a :class:`Document` whose data matches ``schema``
    (its ``where`` gives ``FILE:LINE: key`` for the loader's own checks).  Raises :class:`ConfigError`."""
    doc = load_yaml(path)
    validate(doc, schema)
    return doc


def load_validated(path: Path, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level mapping of ``path``, validated against ``schema`` (:func:`load_document`).

    Raises :class:`ConfigError` naming file, line, key path and what was expected."""
    return load_document(path, schema).data
