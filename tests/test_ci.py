"""CI workflow definitions generated from the matrices: committed, current, loadable, and
each job running exactly one cell."""

from __future__ import annotations

import shlex

import pytest
import yaml

from harness import ci, cli, matrix
from conftest import ROOT

MATRICES = sorted(p.stem for p in (ROOT / "matrices").glob("*.yaml"))


@pytest.mark.parametrize("name", MATRICES)
def test_committed_workflows_are_what_generate_writes_now(name, tmp_path):
    assert cli.main(["ci", "generate", name, "--out", str(tmp_path)]) == 0
    for f in (f"github-{name}.yml", f"gitlab-{name}.yml"):
        assert (tmp_path / f).read_text() == (ROOT / "ci" / f).read_text(), \
            f"ci/{f} is stale: run `harness ci generate {name}`"


@pytest.mark.parametrize("name", MATRICES)
def test_every_job_runs_exactly_one_cell_and_keeps_its_reports(name):
    mx = matrix.find_matrix(name)
    gh = yaml.safe_load((ROOT / "ci" / f"github-{name}.yml").read_text())
    gl = yaml.safe_load((ROOT / "ci" / f"gitlab-{name}.yml").read_text())
    assert set(gh["on"]) == {"schedule", "workflow_dispatch"}
    assert len(gh["jobs"]) == len(mx.cells) == len([k for k in gl if k.startswith("cell-")])
    for cell in mx.cells:
        job = gh["jobs"][ci.job_name(cell.id)]
        assert job["name"] == cell.id and job["container"]["image"] == "debian:12"
        run = next(s["run"] for s in job["steps"] if s.get("name") == "run the cell")
        argv = shlex.split(run)
        assert argv[0] == ".venv/bin/harness"
        args = cli.build_parser().parse_args(argv[1:])
        assert [c.id for c in matrix.select_cells(matrix.find_matrix(args.matrix), args.cell).cells] == [cell.id]
        upload = job["steps"][-1]
        assert upload["if"] == "always()" and upload["with"]["path"] == f"results/{cell.dirname}" == args.out
        lab = gl[ci.job_name(cell.id)]
        assert lab["script"] == [run] and lab["artifacts"]["reports"]["junit"] == f"results/{cell.dirname}/junit.xml"


def test_job_names_are_valid_and_distinct():
    ids = [c.id for name in MATRICES for c in matrix.find_matrix(name).cells]
    names = {ci.job_name(i) for i in set(ids)}
    assert len(names) == len(set(ids))
    assert all(n.replace("-", "").replace("_", "").isalnum() for n in names)
