"""The Snakefile (workflow/rules/*.smk) and dvc.yaml describe the same DAG.

dvc.yaml is generated from the rules (irrepro.dvcgen, tests/test_dvcgen.py); this test checks
the result job by job, independently of the generator.

For each profile, every job of the Snakemake DAG (but `all`) must match one DVC stage
(matrix/foreach stages expanded) writing the same outputs, with the identical command and
the same inputs as deps; the rule name is the stage name (before DVC's `@` suffix).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def snakemake_jobs(workdir: Path, profile: str) -> dict:
    """Every job of the full DAG (forceall), keyed by its sorted outputs."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
        StorageSettings,
    )

    with SnakemakeApi(OutputSettings()) as api:
        wf_api = api.workflow(
            snakefile=workdir / "Snakefile",
            workdir=workdir,
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(config={"profile": profile}),
            storage_settings=StorageSettings(),
        )
        wf_api.dag(dag_settings=DAGSettings(forceall=True))
        wf = wf_api._workflow
        wf._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
        wf._build_dag()
        out = {}
        for job in wf.dag.jobs:
            if job.rule.name == "all":
                continue
            out[tuple(sorted(map(str, job.output)))] = {
                "name": job.rule.name,
                "cmd": " ".join(job.shellcmd.split()),
                "deps": {str(f) for f in job.input},
            }
        return out


def dvc_stages(workdir: Path) -> dict:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    out = {}
    with Repo(str(workdir)) as repo:
        for stage in repo.index.stages:
            out[tuple(sorted(o.def_path for o in stage.outs))] = {
                "name": stage.name,
                "cmd": " ".join(stage.cmd.split()),
                "deps": {d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)},
            }
    return out


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def assert_same_inputs(smk_inputs: set, dvc_deps: set, stage: str) -> None:
    """Equal, except that DVC may depend on a directory holding several Snakemake inputs
    (a stage that reads every config's output cannot list them in dvc.yaml)."""
    uncovered = [i for i in smk_inputs if not any(_under(i, d) for d in dvc_deps)]
    unused = [d for d in dvc_deps if not any(_under(i, d) for i in smk_inputs)]
    assert not uncovered and not unused, f"{stage}: inputs not in deps {uncovered}; deps not inputs {unused}"


@pytest.fixture(params=["mini", "paper"])
def project_copy(request, root, tmp_path):
    """The workflow definition files in a scratch dir, with params.yaml set to the profile."""
    for name in ("Snakefile", "dvc.yaml", "params.yaml"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "workflow", tmp_path / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "envs", tmp_path / "envs")
    shutil.copytree(root / "notebooks", tmp_path / "notebooks")
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    raw["profile"] = request.param
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    return tmp_path, request.param


def test_snakefile_and_dvc_yaml_agree(project_copy):
    workdir, profile = project_copy
    smk = snakemake_jobs(workdir, profile)
    dvc = dvc_stages(workdir)
    assert sorted(smk) == sorted(dvc), "Snakemake jobs and DVC stages write different outputs"
    for outs, job in smk.items():
        stage = dvc[outs]
        assert stage["name"].split("@")[0] == job["name"], f"{outs}: rule {job['name']} vs stage {stage['name']}"
        assert job["cmd"] == stage["cmd"], f"{stage['name']}: commands differ"
        assert_same_inputs(job["deps"], stage["deps"], stage["name"])
        assert f"--profile {profile}" in job["cmd"]
        assert job["cmd"].startswith("irrepro "), f"{stage['name']}: rules call the package's CLI"


def test_agreement_check_detects_drift(project_copy):
    """The comparison is not vacuous: an edited dvc.yaml command is noticed."""
    workdir, profile = project_copy
    text = (workdir / "dvc.yaml").read_text().replace("--log logs/${profile}/bm25.log", "--log logs/${profile}/bm25x.log", 1)
    (workdir / "dvc.yaml").write_text(text)
    smk, dvc = snakemake_jobs(workdir, profile), dvc_stages(workdir)
    key = (f"runs/{profile}/bm25",)
    assert smk[key]["cmd"] != dvc[key]["cmd"]


def test_committed_dvc_lock_is_valid(root):
    """A damaged dvc.lock breaks every dvc command on a fresh clone."""
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA

    lock = root / "dvc.lock"
    if not lock.exists():
        pytest.skip("no dvc.lock committed")
    COMPILED_LOCKFILE_SCHEMA(yaml.safe_load(lock.read_text()))
