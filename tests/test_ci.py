"""CI workflow definitions generated from the matrices: committed, current, loadable; one build
job per distinct build, each cell job needing exactly its build job and running exactly one cell
from the prebuilt artifacts; and the prebuilt loader refusing artifacts of another build."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from harness import ci, cli, cli_args, matrix, prebuilt, qemu, rootfs, tree
from harness.build import BuildResult
from harness.cache import file_sha256
from harness.errors import BuildError, UsageError
from harness.modules import GuestModule
from harness.paths import DATA_ROOT
from harness.pipeline import GuestArtifacts
from conftest import ROOT

MATRICES = sorted(p.stem for p in (ROOT / "matrices").glob("*.yaml"))


@pytest.mark.parametrize("name", MATRICES)
def test_committed_workflows_are_what_generate_writes_now(name, tmp_path):
    assert cli.main(["ci", "generate", name, "--out", str(tmp_path)]) == 0
    for f in (f"github-{name}.yml", f"gitlab-{name}.yml"):
        assert (tmp_path / f).read_text() == (ROOT / "ci" / f).read_text(), \
            f"ci/{f} is stale: run `harness ci generate {name}`"


def _triple(cell: matrix.Cell) -> tuple:
    """What makes a build distinct: tree, revision, kconfig."""
    return (cell.request.tree, cell.request.series, cell.request.fragments)


def _argv(run: str):
    argv = shlex.split(run)
    assert argv[0] == ".venv/bin/harness"
    return cli_args.build_parser().parse_args(argv[1:])


@pytest.mark.parametrize("name", MATRICES)
def test_one_build_job_per_distinct_tree_revision_and_kconfig(name):
    mx = matrix.find_matrix(name)
    gh = yaml.safe_load((ROOT / "ci" / f"github-{name}.yml").read_text())
    gl = yaml.safe_load((ROOT / "ci" / f"gitlab-{name}.yml").read_text())
    distinct = {_triple(c) for c in mx.cells}
    gh_builds = {k: v for k, v in gh["jobs"].items() if k.startswith("build-")}
    assert len(gh_builds) == len(distinct) == len([k for k in gl if k.startswith("build-")])
    built = set()
    for job_id, job in gh_builds.items():
        step = next(s for s in job["steps"] if s.get("name") == "build")
        args = _argv(step["run"])
        assert args.command == "prebuild" and args.matrix == name and len(args.build) == 1
        cells = prebuilt.distinct_builds(matrix.find_matrix(args.matrix).cells)[args.build[0]]
        assert len({_triple(c) for c in cells}) == 1  # one build job builds one distinct kernel
        built.add(_triple(cells[0]))
        upload = job["steps"][-1]
        assert upload["uses"].startswith("actions/upload-artifact") and upload["if"] == "always()"
        assert upload["with"] == {"name": job_id, "path": f"{args.out}/{args.build[0]}", "retention-days": 3}
        caches = [s for s in job["steps"] if s.get("uses", "").startswith("actions/cache")]
        assert {s["name"] for s in caches} == {"ccache", "downloads"}
        assert all(ci._tree(cells[0]) in s["with"]["key"] for s in caches)  # keyed by tree
        lab = gl[job_id]
        assert lab["stage"] == "build" and lab["script"] == [step["run"]]
        assert lab["artifacts"]["paths"] == [upload["with"]["path"]]
        assert {c["key"] for c in lab["cache"]} == {f"downloads-{ci._tree(cells[0])}", f"ccache-{ci._tree(cells[0])}"}
    assert built == distinct


@pytest.mark.parametrize("name", MATRICES)
def test_every_cell_job_needs_its_build_and_runs_exactly_its_cell_prebuilt(name):
    mx = matrix.find_matrix(name)
    gh = yaml.safe_load((ROOT / "ci" / f"github-{name}.yml").read_text())
    gl = yaml.safe_load((ROOT / "ci" / f"gitlab-{name}.yml").read_text())
    assert set(gh["on"]) == {"schedule", "workflow_dispatch"}
    assert len([k for k in gh["jobs"] if k.startswith("cell-")]) == len(mx.cells) == \
        len([k for k in gl if k.startswith("cell-")])
    for cell in mx.cells:
        job = gh["jobs"][ci.job_name(cell.id)]
        assert job["name"] == cell.id and job["container"]["image"] == "debian:12"
        build_job = gh["jobs"][job["needs"]]
        build_args = _argv(next(s["run"] for s in build_job["steps"] if s.get("name") == "build"))
        assert build_args.build == [prebuilt.build_id(cell.request)]  # exactly its build
        run = next(s["run"] for s in job["steps"] if s.get("name") == "run the cell")
        args = _argv(run)
        assert args.command == "matrix" and args.prebuilt == build_args.out
        assert [c.id for c in matrix.select_cells(matrix.find_matrix(args.matrix), args.cell).cells] == [cell.id]
        assert "make setup-run" in [s.get("run") for s in job["steps"]]  # no compiler, no kernel tree
        download = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/download-artifact"))
        assert download["with"]["name"] == job["needs"]
        assert download["with"]["path"] == f"{build_args.out}/{build_args.build[0]}"
        upload = job["steps"][-1]
        assert upload["if"] == "always()" and upload["with"]["path"] == f"results/{cell.dirname}" == args.out
        lab = gl[ci.job_name(cell.id)]
        assert lab["stage"] == "test" and lab["needs"] == [{"job": job["needs"], "artifacts": True}]
        assert lab["script"] == [run] and lab["artifacts"]["reports"]["junit"] == f"results/{cell.dirname}/junit.xml"


def test_job_names_are_valid_and_distinct():
    cells = [c for name in MATRICES for c in matrix.find_matrix(name).cells]
    ids = {c.id for c in cells}
    names = {ci.job_name(i) for i in ids}
    assert len(names) == len(ids)
    builds = {prebuilt.build_id(c.request) for c in cells}
    assert len({ci.build_job_name(b) for b in builds}) == len(builds)
    assert all(n.replace("-", "").replace("_", "").isalnum() for n in names | {ci.build_job_name(b) for b in builds})


# --- the prebuilt artifacts ------------------------------------------------------------------------

CELL = "baseline-6.12/virt-mmio/pm-test-platform"


def _cell(cell_id: str = CELL) -> matrix.Cell:
    return matrix.select_cells(matrix.find_matrix("default"), [cell_id]).cells[0]


def _fake_artifacts(tmp: Path, req) -> GuestArtifacts:
    """Guest artifacts made of small files (no build, no QEMU)."""
    src = tmp / "src"
    src.mkdir(parents=True)
    for name in ("Image", "System.map", ".config", "build.log", "probe.ko"):
        (src / name).write_text(f"fake {name}\n")
    initrd = src / "initramfs.cpio.gz"
    initrd.write_bytes(b"\x1f\x8bfake")
    kt = tree.KernelTree(src, "c" * 40, "6.12.117", "debian/6.12.117-1", True, "debian-6.12")
    applied = tree.AppliedTree(src / "wt", "c" * 40, "debian/6.12.117-1", kt, "c" * 40, None, ())
    built = BuildResult("b" * 16, src, src / "Image", src / "System.map", src / ".config", src / "build.log",
                        700.0, False, "c" * 40, "aarch64-linux-gnu-gcc 12.2.0")
    return GuestArtifacts(applied, None, built, (GuestModule("probe", src / "probe.ko"),),
                          rootfs.Initramfs(initrd, file_sha256(initrd), "file /init x 0755 0 0\n"),
                          qemu.find_profile(DATA_ROOT / "qemu-profiles", req.profile), 1.0, 700.0)


def test_build_id_and_key_ignore_the_profile_but_not_the_tree_revision_or_kconfig():
    a, b = _cell("baseline-6.12/virt-mmio/s2idle-rtc"), _cell("baseline-6.12/virt-gicv3/pm-test-platform")
    assert prebuilt.build_id(a.request) == prebuilt.build_id(b.request) == "bare-debian-6.12"
    assert prebuilt.request_key(a.request) == prebuilt.request_key(b.request)
    others = [_cell("v9-backport-6.12/virt-mmio/s2idle-rtc"), _cell("baseline-7.2@debian-7.2/virt-mmio/s2idle-rtc")]
    keys = {prebuilt.request_key(c.request) for c in [a] + others}
    assert len(keys) == 3
    assert prebuilt.request_key(replace(a.request, kconfig=("base-virt-arm64",))) not in keys


def test_prebuilt_loader_accepts_its_own_export_without_building(tmp_path):
    cell = _cell()
    where = prebuilt.export(cell.request, _fake_artifacts(tmp_path, cell.request), tmp_path / "out")
    assert where == tmp_path / "out" / "bare-debian-6.12"
    rec = json.loads((where / "artifacts.json").read_text())
    assert rec["key"] == prebuilt.request_key(cell.request) and rec["build"]["key"] == "b" * 16
    assert rec["tree"]["commit"] == "c" * 40 and rec["series"] == {"patchset_hash": "", "patches": []}
    gicv3 = _cell("baseline-6.12/virt-gicv3/s2idle-rtc")  # another cell of the same build
    art = prebuilt.PrebuiltArtifacts(tmp_path / "out")(gicv3.request)
    assert art.build.image == where / "Image" and art.build.image.read_text() == "fake Image\n"
    assert art.build.cache_hit and art.build.seconds == 0 and art.build.key == "b" * 16
    assert art.initramfs.path == where / "initramfs.cpio.gz" and art.modules[0].ko == where / "modules" / "probe.ko"
    assert art.profile.name == "virt-gicv3" and art.prebuilt == where and art.tree.describe == "debian/6.12.117-1"
    # exported again (a rerun): replaced in place
    assert prebuilt.export(cell.request, _fake_artifacts(tmp_path / "again", cell.request), tmp_path / "out") == where


def _tamper(where: Path, **changes) -> None:
    rec = json.loads((where / "artifacts.json").read_text())
    rec.update(changes)
    (where / "artifacts.json").write_text(json.dumps(rec))


def test_prebuilt_loader_refuses_a_mismatching_key_naming_both(tmp_path):
    cell = _cell()
    where = prebuilt.export(cell.request, _fake_artifacts(tmp_path, cell.request), tmp_path / "out")
    _tamper(where, key="0123456789abcdef")
    with pytest.raises(UsageError) as e:
        prebuilt.PrebuiltArtifacts(tmp_path / "out")(cell.request)
    assert "0123456789abcdef" in str(e.value) and prebuilt.request_key(cell.request) in str(e.value)
    assert e.value.exit_code == 2


def test_prebuilt_loader_refuses_a_damaged_initramfs_and_a_missing_build(tmp_path):
    cell = _cell()
    where = prebuilt.export(cell.request, _fake_artifacts(tmp_path, cell.request), tmp_path / "out")
    (where / "initramfs.cpio.gz").write_bytes(b"truncated")
    with pytest.raises(UsageError, match="sha256"):
        prebuilt.PrebuiltArtifacts(tmp_path / "out")(cell.request)
    with pytest.raises(UsageError, match="no v9-backport-6.12/artifacts.json.*have: bare-debian-6.12"):
        prebuilt.PrebuiltArtifacts(tmp_path / "out")(_cell("v9-backport-6.12/virt-mmio/s2idle-rtc").request)


def test_a_failed_prebuild_is_reported_by_every_cell_of_the_build(tmp_path):
    cell = _cell()
    prebuilt.export(cell.request, BuildError("kernel build failed: foo.c:1: error: x"), tmp_path / "out")
    with pytest.raises(BuildError, match="foo.c:1"):
        prebuilt.PrebuiltArtifacts(tmp_path / "out")(cell.request)
    prebuilt.export(cell.request, "lore unreachable", tmp_path / "out")
    with pytest.raises(UsageError, match="lore unreachable"):
        prebuilt.PrebuiltArtifacts(tmp_path / "out")(cell.request)


def test_matrix_with_mismatching_prebuilt_exits_2_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    cell = _cell()
    where = prebuilt.export(cell.request, _fake_artifacts(tmp_path, cell.request), tmp_path / "pb")
    _tamper(where, key="0123456789abcdef")
    assert cli.main(["matrix", "default", "--cell", CELL, "--prebuilt", str(tmp_path / "pb"),
                     "--out", str(tmp_path / "res")]) == 2
    res = json.loads((tmp_path / "res" / cell.dirname / "results.json").read_text())
    assert res["error_type"] == "UsageError" and "0123456789abcdef" in res["error"]
    assert not (tmp_path / "cache" / "worktrees").exists()  # nothing was checked out or built


def test_prebuild_lists_the_distinct_builds(capsys):
    assert cli.main(["prebuild", "default", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len({_triple(c) for c in matrix.find_matrix("default").cells})
    assert cli.main(["prebuild", "default", "--build", "nope", "--list"]) == 2
