"""Export matrix cells as LAVA job definitions, for labs that spread boots over many machines.

LAVA is the scheduler KernelCI and LKFT use; the harness does not write its own.  Each
cell becomes a ``qemu`` device-type job, as tuxrun writes them: ``deploy`` to ``tmpfs``
the cell's ``Image``, initramfs and a fresh disk image (``file://`` URLs; a lab rewrites
them to its artifact store), ``boot`` with the ``qemu`` method up to the harness's shell
prompt, and an ``interactive`` test that runs the scenario's cycles over the serial console
and reports, per cycle, whether the state write returned and whether the consumer found its
provider ready at ``resume_early`` (the series' claim).  The job's serial log holds the
whole kernel log, which ``harness parse`` turns into phases and callbacks.

A device dictionary for the profile (``device-<profile>.yaml``, the rendered form
``lava-run --device`` takes) is written beside the jobs; the QEMU options come from the
profile, so the lab machine runs what the harness runs.  Jobs are validated with
``lava_common.schemas.validate`` from Debian's ``lava-common`` (system Python), and one
runs end to end under ``lava-run`` from ``lava-dispatcher`` in the tests.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from harness import checks, model, qemu, suspend, timeouts
from harness.errors import ConfigError, SetupError
from harness.proc import CommandLog, run

#: Debian's interpreter, where lava-common and lava-dispatcher install their modules.
SYSTEM_PYTHON = "/usr/bin/python3"
_PROMPT = "harness# "
_SENTINELS = {"kernel": "@KERNEL@", "initrd": "@RAMDISK@", "disk": "@DISK@"}


def split_profile(profile: qemu.QemuProfile) -> tuple[list[str], str, list[str]]:
    """Split a profile's argv into (options without the images, kernel command line, the disk
    image's argv with ``{disk}`` for LAVA to substitute).

    Raises ConfigError when the profile has no ``-kernel``/``-initrd`` to replace."""
    argv = qemu.render_argv(profile, kernel=Path(_SENTINELS["kernel"]), initrd=Path(_SENTINELS["initrd"]),
                            disk=Path(_SENTINELS["disk"]))
    options, append, disk, i = [], "", [], 1
    seen = set()
    while i < len(argv):
        arg, nxt = argv[i], argv[i + 1] if i + 1 < len(argv) else ""
        if arg in ("-kernel", "-initrd") and nxt in _SENTINELS.values():
            seen.add(arg)
            i += 2
        elif arg == "-append":
            append, i = nxt, i + 2
        elif _SENTINELS["disk"] in nxt:
            disk, i = [arg, nxt.replace(_SENTINELS["disk"], "{disk}")], i + 2
        else:
            options.append(arg)
            i += 1
    if seen != {"-kernel", "-initrd"}:
        raise ConfigError(f"{profile.path}: a LAVA job needs -kernel {{{{ kernel }}}} and -initrd {{{{ initrd }}}}")
    return options, append, disk


def device_dictionary(profile: qemu.QemuProfile) -> dict:
    """The rendered ``qemu`` device dictionary for ``profile`` (what ``lava-run --device`` reads)."""
    options, _, _ = split_profile(profile)
    return {
        "device_type": "qemu",
        "available_architectures": ["arm64"],
        # what lava-dispatcher reads from a device's constants (lava_dispatcher: get_constant())
        "constants": {"shutdown-message": "reboot: Restarting system", "boot-message": "Booting Linux",
                      "cpu-reset-messages": ["Resetting CPU"], "default-shell-prompt": "lava-test: # ",
                      "kernel-start-message": "Linux version [0-9]", "failure_retry": 1, "boot_retry": 0,
                      "spawn_maxread": 4092,
                      "posix": {"lava_test_results_dir": "/lava-%s", "lava_test_shell_file": "~/.bashrc",
                                "lava_test_sh_cmd": "/bin/sh"}},
        "actions": {
            "deploy": {"methods": {"tmpfs": None, "image": {"parameters": {"guest": {"size": 64}}}}},
            "boot": {"connections": {"serial": None},
                     "methods": {"qemu": {"parameters": {"command": profile.binary,
                                                         "options": [shlex.quote(o) for o in options]}}}},
        },
        "timeouts": {"actions": {"apply-overlay-image": {"minutes": 2}, "lava-test-shell": {"minutes": 10}},
                     "connections": {"lava-test-shell": {"minutes": 10}}},
    }


def _marker(word: str) -> str:
    """``echo HARNESS-WORD`` split so that the echoed command line never matches the output."""
    return f"echo HARNESS-'{word}'"


def _cycle_commands(scenario: model.Scenario, index: int) -> list[dict]:
    name = f"{scenario.name}-{index}"
    step = scenario.steps[index - 1]
    if scenario.kind == "hibernate":
        raise ConfigError(f"scenario {scenario.name}: {scenario.kind} cycles are not exported to LAVA "
                          "(they need swap set-up the interactive test does not do)")
    arm, state = suspend.arm_command(scenario)
    if scenario.kind == "rtc":  # the wakeup_count handshake, tried three times (harness.suspend.WAKEUP_COUNT)
        arm = (f"for t in 1 2 3; do read c < {suspend.WAKEUP_COUNT} && {arm} && "
               f"echo $c > {suspend.WAKEUP_COUNT} && break; done")
    cmds = [{"command": c} for c in step.before]
    cmds += [
        {"command": f"dmesg -c > /dev/null; {arm} && echo {state} > /sys/power/state && {_marker('RESUMED')} "
                    f"|| {_marker('STATE-WRITE-FAILED')}",
         "name": f"{name}-state-write", "successes": [{"message": "HARNESS-RESUMED"}],
         "failures": [{"message": "HARNESS-STATE-WRITE-FAILED"}]},
        {"command": f"dmesg | grep -q {shlex.quote(checks.CONSUMER_READY_LINE)} && "
                    f"{_marker('PROVIDER-READY')} || {_marker('PROVIDER-NOT-READY')}",
         "name": f"{name}-consumer-ready", "successes": [{"message": "HARNESS-PROVIDER-READY"}],
         "failures": [{"message": "HARNESS-PROVIDER-NOT-READY"}]},
        {"command": "dmesg"},
    ]
    if scenario.kind == "pm_test":
        cmds.append({"command": suspend.PM_TEST_OFF})
    return cmds


def job(cell_id: str, scenario: model.Scenario, profile: qemu.QemuProfile, kernel: Path, initrd: Path,
        disk: Path) -> dict:
    """The LAVA job definition of one cell (a mapping to dump as YAML)."""
    _, append, disk_argv = split_profile(profile)
    images = {
        "kernel": {"image_arg": f"-kernel {{kernel}} -append {shlex.quote(append)}", "url": kernel.resolve().as_uri()},
        "ramdisk": {"image_arg": "-initrd {ramdisk}", "url": initrd.resolve().as_uri()},
    }
    if disk_argv:
        images["disk"] = {"image_arg": " ".join(disk_argv), "url": disk.resolve().as_uri()}
    script = [{"command": c} for c in suspend.SETUP_COMMANDS]
    for i in range(1, scenario.cycles + 1):
        script += _cycle_commands(scenario, i)
    timeout = int(5 + scenario.cycles * (scenario.timeout + 30) // 60)
    return {
        "device_type": "qemu",
        "job_name": f"virtio-pm-harness {cell_id}",
        "priority": "medium",
        "visibility": "public",
        "context": {"arch": "arm64"},
        "timeouts": {"job": {"minutes": timeout + 10}, "action": {"minutes": 5},
                     "connection": {"minutes": 2}},
        "metadata": {"harness.cell": cell_id, "harness.profile": profile.name, "harness.scenario": scenario.name},
        "actions": [
            {"deploy": {"to": "tmpfs", "timeout": {"minutes": 5}, "images": images}},
            {"boot": {"method": "qemu", "media": "tmpfs", "timeout": {"minutes": 5}, "prompts": [_PROMPT]}},
            {"test": {"timeout": {"minutes": timeout},
                      "interactive": [{"name": scenario.name.replace("-", "_"), "prompts": [_PROMPT],
                                       "script": script}]}},
        ],
    }


def results(log_text: str) -> dict[str, str]:
    """Test case -> ``pass``/``fail`` from ``lava-run``'s log (one YAML/JSON mapping per line,
    ``lvl: results``), including LAVA's own ``job`` case: the job's verdict."""
    out = {}
    for line in log_text.splitlines():
        if '"lvl": "results"' not in line:
            continue
        try:
            msg = yaml.safe_load(line)["msg"]
        except (yaml.YAMLError, KeyError, TypeError):
            continue
        if msg.get("case") != "file-download":
            out[msg["case"]] = msg.get("result")
    return out


def validate(paths: list[Path]) -> None:
    """Validate job files with ``lava_common.schemas.validate`` (Debian's lava-common, strict).

    Raises SetupError when lava-common is not installed and ConfigError naming the file and
    LAVA's message when a job does not pass the schema."""
    code = ("import sys, yaml\nfrom lava_common.schemas import validate\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n        validate(yaml.safe_load(open(p)), strict=True)\n"
            "    except Exception as e:\n        print(f'{p}: {e}'); sys.exit(1)\n")
    try:
        res = run([SYSTEM_PYTHON, "-c", code, *map(str, paths)], CommandLog(), timeout=timeouts.APT_NETWORK)
    except FileNotFoundError:
        raise SetupError(f"{SYSTEM_PYTHON} not found: install Debian's lava-common (make setup does)") from None
    if res.returncode != 0:
        if "No module named 'lava_common'" in res.output:
            raise SetupError("Debian's lava-common is not installed (apt-get install lava-common; make setup does)")
        raise ConfigError(f"LAVA schema: {res.output.strip()[-500:]}")


def dump(path: Path, doc: dict) -> Path:
    """Write ``doc`` as YAML to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=160))
    return path
