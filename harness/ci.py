"""CI workflow definitions generated from a matrix: build once, boot many.

``harness ci generate`` writes a GitHub Actions workflow and a GitLab CI pipeline with two
kinds of job, as KernelCI and tuxsuite split them:

* one *build job* per distinct build of the matrix (:func:`harness.prebuilt.build_id`: a
  distinct tree, revision and kconfig), which sets the machine up for its tree only
  (``make setup SETUP_ARGS="--tree NAME"``), restores ccache and the downloads from the CI
  cache keyed by tree, runs ``harness prebuild MATRIX --build ID --out prebuilt`` and keeps
  ``prebuilt/ID/`` (kernel, modules, initramfs, artifacts.json) as its artifact, also when
  the build failed (the failure is recorded there and reported by every cell of the build);
* one *cell job* per cell, which ``needs`` exactly its build job, installs only what a boot
  needs (``make setup-run``: QEMU and the venv, no cross compiler, no kernel tree), fetches
  that artifact, runs exactly its cell (``harness matrix NAME --cell ID --prebuilt prebuilt``,
  which refuses artifacts whose recorded key is not the cell's) and keeps its results
  directory (results.json, junit.xml, kcidb.json, report.html, console logs); GitLab also reads
  the JUnit file as the job's test report.

Nightly by schedule, and by hand.  The files are data (``yaml.safe_dump``), so they always load.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from harness import prebuilt, series, tree
from harness.matrix import Cell, Matrix

#: The Debian release the README's commands are written for.
IMAGE = "debian:12"
_TIMEOUT_MINUTES = 90
#: A cell job only boots: 10-60 s of guest time, plus set-up.
_CELL_TIMEOUT_MINUTES = 30
#: Where the jobs keep the harness cache (inside the workspace, so CI caches can restore it).
CACHE_DIR = ".harness-cache"
#: The cache's download directories (harness.fetch): apt lists, .debs, linux-source tarballs.
DOWNLOADS = ("apt-arm64", "apt-sources", "debs", "src")
PREBUILT = "prebuilt"
_APT = "apt-get update && apt-get install -y --no-install-recommends git make python3 ca-certificates"


def job_name(cell_id: str) -> str:
    """A job id both systems accept (``[A-Za-z_][A-Za-z0-9_-]*``), from a cell id."""
    return "cell-" + re.sub(r"[^A-Za-z0-9_-]+", "-", cell_id).strip("-")


def build_job_name(build: str) -> str:
    """The build job's id, from a build id (:func:`harness.prebuilt.build_id`)."""
    return "build-" + re.sub(r"[^A-Za-z0-9_-]+", "-", build).strip("-")


def builds(mx: Matrix) -> dict[str, list[Cell]]:
    """Build id -> the cells of ``mx`` that boot it, in matrix order."""
    return prebuilt.distinct_builds(mx.cells)


def _tree(cell: Cell) -> str:
    """The embedded tree a build job sets up and keys its caches by: the row's, else a manifest
    revision's own ``tree:``, else the default tree (a checkout's path: the default's set-up,
    the checkout is the CI's business)."""
    name = cell.request.tree
    if name is None and cell.request.series and (Path(cell.request.series) / "series.yaml").is_file():
        name = series.load_manifest(Path(cell.request.series) / "series.yaml").tree
    return name if name in tree.EMBEDDED_TREES else tree.DEFAULT_TREE


def _setup(cell: Cell) -> str:
    return f"make setup SETUP_ARGS={shlex.quote('--tree ' + _tree(cell))}"


def _prebuild(mx: Matrix, build: str) -> str:
    return (f".venv/bin/harness prebuild {shlex.quote(mx.path.stem)} --build {shlex.quote(build)} "
            f"--out {PREBUILT}")


def _run(mx: Matrix, cell: Cell) -> str:
    return (f".venv/bin/harness matrix {shlex.quote(mx.path.stem)} --cell {shlex.quote(cell.id)} "
            f"--prebuilt {PREBUILT} --out results/{cell.dirname}")


def github(mx: Matrix) -> dict:
    """The GitHub Actions workflow (a mapping to dump as YAML) for ``mx``: ``build-<id>`` jobs
    and ``cell-<id>`` jobs that need them."""
    env = {"HARNESS_CACHE": f"${{{{ github.workspace }}}}/{CACHE_DIR}"}
    jobs = {}
    for build, cells in builds(mx).items():
        t = _tree(cells[0])
        jobs[build_job_name(build)] = {
            "name": f"build {build}",
            "runs-on": "ubuntu-latest",
            "container": {"image": IMAGE},
            "timeout-minutes": _TIMEOUT_MINUTES,
            "env": dict(env),
            "steps": [
                {"run": _APT},
                {"uses": "actions/checkout@v4"},
                {"name": "downloads", "uses": "actions/cache@v4",
                 "with": {"path": "\n".join(f"{CACHE_DIR}/{d}" for d in DOWNLOADS),
                          "key": f"downloads-{t}-${{{{ hashFiles('harness/fetch.py') }}}}"}},
                # a cache entry is never overwritten: a new key per run, restored by prefix
                {"name": "ccache", "uses": "actions/cache@v4",
                 "with": {"path": f"{CACHE_DIR}/ccache", "key": f"ccache-{t}-{build}-${{{{ github.run_id }}}}",
                          "restore-keys": f"ccache-{t}-{build}-\nccache-{t}-"}},
                {"name": "set up", "run": _setup(cells[0])},
                {"name": "build", "run": _prebuild(mx, build)},
                {"uses": "actions/upload-artifact@v4", "if": "always()",
                 "with": {"name": build_job_name(build), "path": f"{PREBUILT}/{build}", "retention-days": 3}},
            ],
        }
    for build, cells in builds(mx).items():
        for cell in cells:
            jobs[job_name(cell.id)] = {
                "name": cell.id,
                "needs": build_job_name(build),
                # also after a failed build: its cells then report the recorded BuildError
                "if": "${{ !cancelled() }}",
                "runs-on": "ubuntu-latest",
                "container": {"image": IMAGE},
                "timeout-minutes": _CELL_TIMEOUT_MINUTES,
                "env": dict(env),
                "steps": [
                    {"run": _APT},
                    {"uses": "actions/checkout@v4"},
                    {"name": "set up", "run": "make setup-run"},
                    {"uses": "actions/download-artifact@v4",
                     "with": {"name": build_job_name(build), "path": f"{PREBUILT}/{build}"}},
                    {"name": "run the cell", "run": _run(mx, cell)},
                    {"uses": "actions/upload-artifact@v4", "if": "always()",
                     "with": {"name": cell.dirname, "path": f"results/{cell.dirname}"}},
                ],
            }
    return {"name": f"nightly-{mx.name}", "on": {"schedule": [{"cron": "0 2 * * *"}], "workflow_dispatch": {}},
            "jobs": jobs}


def gitlab(mx: Matrix) -> dict:
    """The GitLab CI pipeline (a mapping to dump as YAML) for ``mx``: ``build-<id>`` jobs in
    stage ``build``, ``cell-<id>`` jobs in stage ``test`` that need them."""
    doc: dict = {"stages": ["build", "test"],
                 "variables": {"HARNESS_CACHE": f"$CI_PROJECT_DIR/{CACHE_DIR}"},
                 "default": {"image": IMAGE, "timeout": f"{_TIMEOUT_MINUTES} minutes"}}
    rules = [{"if": '$CI_PIPELINE_SOURCE == "schedule"'}, {"when": "manual", "allow_failure": True}]
    apt = ["apt-get update", "apt-get install -y --no-install-recommends git make python3 ca-certificates"]
    for build, cells in builds(mx).items():
        t = _tree(cells[0])
        doc[build_job_name(build)] = {
            "stage": "build",
            "rules": [dict(r) for r in rules],
            "cache": [{"key": f"downloads-{t}", "paths": [f"{CACHE_DIR}/{d}" for d in DOWNLOADS]},
                      {"key": f"ccache-{t}", "paths": [f"{CACHE_DIR}/ccache"]}],
            "before_script": apt + [_setup(cells[0])],
            "script": [_prebuild(mx, build)],
            "artifacts": {"when": "always", "expire_in": "3 days", "paths": [f"{PREBUILT}/{build}"]},
        }
    for build, cells in builds(mx).items():
        for cell in cells:
            doc[job_name(cell.id)] = {
                "stage": "test",
                # when: always: also after a failed build, whose cells then report the recorded BuildError
                "rules": [{"if": '$CI_PIPELINE_SOURCE == "schedule"', "when": "always"},
                          {"when": "manual", "allow_failure": True}],
                "needs": [{"job": build_job_name(build), "artifacts": True}],
                "timeout": f"{_CELL_TIMEOUT_MINUTES} minutes",
                "before_script": apt + ["make setup-run"],
                "script": [_run(mx, cell)],
                "artifacts": {"when": "always", "paths": [f"results/{cell.dirname}"],
                              "reports": {"junit": f"results/{cell.dirname}/junit.xml"}},
            }
    return doc


class _Dumper(yaml.SafeDumper):
    """Safe YAML without anchors and aliases, multi-line strings as literal blocks."""

    def ignore_aliases(self, data) -> bool:
        return True


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                              style="|" if "\n" in s else None))


def render(mx: Matrix) -> dict[str, str]:
    """File name -> YAML text: ``github-<name>.yml`` and ``gitlab-<name>.yml``."""
    header = f"# Generated by `harness ci generate {mx.path.stem}` from {mx.path.name}; do not edit by hand.\n"
    dump = lambda d: header + yaml.dump(d, Dumper=_Dumper, sort_keys=False, width=120)  # noqa: E731
    return {f"github-{mx.name}.yml": dump(github(mx)), f"gitlab-{mx.name}.yml": dump(gitlab(mx))}
