"""Modules imported when first used: paramiko, jsonschema (with kcidb-io) and jinja2 are half
a second and 26 MB of every ``harness`` process (``harness --version``: 0.76-0.86 s and 60 MB
with them, 0.31-0.38 s and 34 MB without), which ``harness parse``, ``gc``, ``doctor`` and
``--version`` never use; and filelock (harness/cache.py), which imports asyncio (8 MB).

Not :class:`importlib.util.LazyLoader`: on Python 3.11 (Debian 12's) threads that read a lazy
module's first attribute while another thread runs its code get an AttributeError (measured:
7 of 8 threads on 3.11.7; tests/test_layering.py), and a matrix's cells are threads that
connect over SSH at the same time.  Here the first read calls
:func:`importlib.import_module`, which holds the import system's per-module lock: a second
thread waits for the module to be whole."""

from __future__ import annotations

import importlib
import importlib.util
import sys


class LazyModule:
    """Stands for module ``name``: each attribute read is the module's (imported at the first
    read, thread-safe as above; later reads find it in ``sys.modules``), so that a later
    change to the module's namespace is seen too."""

    def __init__(self, name: str):
        self._lazy_name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._lazy_name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._lazy_name!r}>"


def lazy_import(name: str) -> LazyModule:
    """Module ``name`` (dotted names too: the parent packages are imported now), imported at the
    first read of one of its attributes.  Raises ModuleNotFoundError now when there is no such
    module, so that a missing package is still an error at start-up.  A module imported already
    is not looked up again: find_spec() raises ValueError on one whose ``__spec__`` is None, as
    cryptography 50's deprecation wrapper of ``cryptography.hazmat.primitives.serialization``
    is once paramiko has imported it."""
    if name not in sys.modules and importlib.util.find_spec(name) is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return LazyModule(name)
