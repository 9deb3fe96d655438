"""The analysis modules touch no process: they import with subprocess and pexpect blocked."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

_BLOCKED = ("subprocess", "pexpect", "paramiko", "harness.guest", "harness.proc", "harness.suspend")


def test_dmesg_ftrace_and_checks_import_and_judge_with_process_modules_blocked():
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name in {_BLOCKED!r}:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from harness import checks, dmesg, ftrace, model  # noqa: F401
        timeline = dmesg.parse(open({str(ROOT / "tests/fixtures/probe-v9-backport-6.12/s2idle-rtc-1.dmesg")!r}).read())
        (tr,) = timeline.transitions
        print(checks.check_noirq_before_normal(tr, []).verdict)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "PASS"


def test_parse_and_version_import_neither_ssh_nor_schema_nor_template_libraries():
    """paramiko, jsonschema, kcidb-io and jinja2 are imported at their first use
    (harness/lazy.py): `harness parse` and `harness --version` load none of them."""
    fixture = ROOT / "tests/fixtures/probe-v9-backport-6.12/s2idle-rtc-1.dmesg"
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        from harness import cli
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(["parse", "--json", {str(fixture)!r}]) == 0
            try:
                cli.main(["--version"])
            except SystemExit:
                pass
        print(sorted(m for m in ("paramiko", "jsonschema", "kcidb_io", "jinja2") if m in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_lazy_module_read_by_many_threads_at_once_runs_once(tmp_path):
    """A matrix's cells are threads that reach SSH together: the first attribute read of a lazy
    module from 8 threads at once runs the module's code once and gives every thread the same
    object.  importlib.util.LazyLoader fails this on Python 3.11.7: 7 of the 8 threads got
    ``AttributeError: module 'slow_module' has no attribute 'VALUE'``."""
    (tmp_path / "slow_module.py").write_text(
        "import builtins, time\nbuiltins.slow_module_runs = getattr(builtins, 'slow_module_runs', 0) + 1\n"
        "time.sleep(0.3)\nVALUE = object()\n")
    script = textwrap.dedent(f"""
        import builtins, sys, threading
        sys.path.insert(0, {str(tmp_path)!r})
        from harness.lazy import lazy_import
        mod = lazy_import("slow_module")
        assert not hasattr(builtins, "slow_module_runs")  # not run before the first read
        barrier, seen = threading.Barrier(8), []
        def read():
            barrier.wait()
            try:
                seen.append(mod.VALUE)
            except AttributeError as e:
                seen.append(e)
        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(builtins.slow_module_runs, len(seen), len({{id(v) for v in seen}}), mod.VALUE is sys.modules["slow_module"].VALUE)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "8", "1", "True"]


def test_a_missing_module_is_an_error_at_once():
    from harness.lazy import lazy_import
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        lazy_import("no_such_module_here")


def test_a_module_imported_already_without_a_spec_is_taken_as_it_is(monkeypatch):
    """cryptography 50 replaces ``cryptography.hazmat.primitives.serialization`` in sys.modules
    by a wrapper whose ``__spec__`` is None; once paramiko has imported it, find_spec() raised
    ValueError and harness/ssh.py did not import (tests/test_ssh.py alone failed to collect)."""
    import types
    from harness.lazy import lazy_import
    wrapper = types.ModuleType("wrapped_module_without_spec")
    wrapper.VALUE = 7
    assert wrapper.__spec__ is None
    monkeypatch.setitem(sys.modules, "wrapped_module_without_spec", wrapper)
    assert lazy_import("wrapped_module_without_spec").VALUE == 7


def test_harness_parse_imports_none_of_the_pipeline():
    """`harness parse` is a log filter: main() reads it with harness/parse_log.py's grammar and
    imports neither the rest of the CLI nor the pipeline, nor filelock (asyncio, 8 MB): it
    started in 0.3 s and 34 MB, the interpreter alone is 11 MB.  The same text as the full
    grammar's help for it."""
    fixture = ROOT / "tests/fixtures/probe-v9-backport-6.12/s2idle-rtc-1.dmesg"
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        from harness import cli
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert cli.main(["parse", "--json", {str(fixture)!r}]) == 0
        assert out.getvalue().startswith('{{"transitions": [{{"kind": "suspend"')
        print(sorted(m for m in sys.modules if m.startswith("harness.") or m in ("filelock", "asyncio", "yaml", "rich")))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(sorted(["harness.cache", "harness.cli", "harness.dmesg", "harness.errors",
                                              "harness.lazy", "harness.logs", "harness.parse_log", "harness.proc",
                                              "harness.timeouts", "harness.verdict"]))
    from harness import cli_args, parse_log
    full = next(a for a in cli_args.build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "parse")[1]
    assert full.format_help().replace("usage: harness parse", "") == \
        parse_log.build_parser().format_help().replace("usage: harness parse", "")
