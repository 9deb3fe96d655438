"""The analysis modules touch no process: they import with subprocess and pexpect blocked."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
