"""The Snakefile (workflow/rules/*.smk) and dvc.yaml describe the same DAG.

For each profile, every Snakemake rule (but `all`) must have a DVC stage of the same name
with the identical command, the same inputs as deps and the same outputs as outs.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml


def snakemake_rules(workdir: Path, profile: str) -> dict:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

    with SnakemakeApi(OutputSettings()) as api:
        wf_api = api.workflow(
            snakefile=workdir / "Snakefile",
            workdir=workdir,
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(config={"profile": profile}),
            storage_settings=StorageSettings(),
        )
        wf = wf_api._workflow
        out = {}
        for rule in wf.rules:
            if rule.name == "all":
                continue
            names = {**wf.globals, "input": rule.input, "output": rule.output, "log": rule.log, "params": rule.params}
            cmd = rule.shellcmd.format(**names)
            out[rule.name] = {
                "cmd": " ".join(cmd.split()),
                "deps": {str(f) for f in rule.input},
                "outs": {str(f) for f in rule.output},
            }
        return out


def dvc_stages(workdir: Path) -> dict:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    out = {}
    with Repo(str(workdir)) as repo:
        for stage in repo.index.stages:
            out[stage.name] = {
                "cmd": " ".join(stage.cmd.split()),
                "deps": {d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)},
                "outs": {o.def_path for o in stage.outs},
            }
    return out


@pytest.fixture(params=["mini", "paper"])
def project_copy(request, root, tmp_path):
    """The workflow definition files in a scratch dir, with params.yaml set to the profile."""
    for name in ("Snakefile", "dvc.yaml", "params.yaml"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "workflow", tmp_path / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "envs", tmp_path / "envs")
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    raw["profile"] = request.param
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    return tmp_path, request.param


def test_snakefile_and_dvc_yaml_agree(project_copy):
    workdir, profile = project_copy
    smk = snakemake_rules(workdir, profile)
    dvc = dvc_stages(workdir)
    assert sorted(smk) == sorted(dvc), "rule names differ from stage names"
    for name in smk:
        assert smk[name]["cmd"] == dvc[name]["cmd"], f"{name}: commands differ"
        assert smk[name]["deps"] == dvc[name]["deps"], f"{name}: inputs differ from deps"
        assert smk[name]["outs"] == dvc[name]["outs"], f"{name}: outputs differ from outs"
        assert f"--profile {profile}" in smk[name]["cmd"]
        assert smk[name]["cmd"].startswith("irrepro "), f"{name}: rules call the package's CLI"


def test_agreement_check_detects_drift(project_copy):
    """The comparison is not vacuous: an edited dvc.yaml command is noticed."""
    workdir, profile = project_copy
    text = (workdir / "dvc.yaml").read_text().replace("--out runs/${profile}/bm25", "--out runs/${profile}/bm25x", 1)
    (workdir / "dvc.yaml").write_text(text)
    assert snakemake_rules(workdir, profile)["bm25"]["cmd"] != dvc_stages(workdir)["bm25"]["cmd"]
