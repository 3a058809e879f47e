"""The end-to-end runs shared by the pipeline tests (test_pipeline, test_dvc_remote, test_verify,
test_rerun_identical): two whole mini runs per session instead of one or two per test.

- ``snakemake_run``: the smallest grid run from scratch by ``snakemake --cores 2`` (its
  ``onsuccess`` records the outputs in dvc.lock), with an API key in the environment that no
  file may hold afterwards.
- ``dvc_run``: the same grid run from scratch, independently, by ``dvc repro``. When a selected
  test needs it, it starts in the background as the Snakemake run starts: DVC runs one stage at a
  time and Snakemake leaves a core idle along its chains, so the two runs overlap on 2 cores.

Both are read-only: a test that runs anything in a project first takes a private copy with
``copy_project`` (mtimes kept, so Snakemake and DVC judge the copy as they judge the original).
"""

import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import BIN, make_scratch_project, run

CANARY = "sk-canary-8d1f0c2e-never-write-me"
SECRETS = {"OPENAI_API_KEY": CANARY, "HF_TOKEN": CANARY}


def smallest_grid(params: dict) -> None:
    """On top of make_scratch_project's one config (llama, rank 2, MHA): few steps everywhere and
    one SynTOD domain with both methods, so every stage family runs at least once. The tests
    are about what runs and what gets recorded, not about learning."""
    params["tiny"]["warmup_steps"] = 10
    params["finetune"].update(max_steps={"mini": 4, "paper": -1}, save_steps={"mini": 2, "paper": 50})
    params["ablate"].update(cells=False, depth={"mini": 5, "paper": 100})
    params["rerank"]["depth"] = 20
    S = params["syntod"]
    S.update(domains=["cooking"], methods=["graph", "naive"], n_conversations={"mini": 6, "paper": 5000})
    S["base"]["warmup_steps"] = {"mini": 4, "paper": 0}
    S["finetune"]["max_steps"] = {"mini": 2, "paper": -1}
    S["finetune"]["save_steps"] = {"mini": 1, "paper": 200}
    S["eval"]["max_conversations"] = {"mini": 1, "paper": None}
    S["eval"]["responses_per_conversation"] = {"mini": 1, "paper": None}
    # an untrained model writes until the cap: keep the generated completions short
    S["eval"]["max_new_tokens_intent"] = {"mini": 16, "paper": 4096}
    S["eval"]["max_new_tokens_response"] = {"mini": 8, "paper": 256}


def make_smallest_project(root: Path, dest: Path) -> Path:
    """A scratch project (conftest.make_scratch_project) with ``smallest_grid`` written into its params.yaml."""
    project = make_scratch_project(root, dest)
    params = yaml.safe_load((project / "params.yaml").read_text())
    smallest_grid(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def _link_cache_copy_rest(src: str, dst: str) -> None:
    # DVC never writes a cache file in place (objects are read-only, named by their hash), so the
    # cache can be shared; every other file is copied, since a rerun may rewrite it in place
    # (a log opened with "w", a metrics file) and must not reach the shared run.
    if f"{os.sep}.dvc{os.sep}cache{os.sep}" in src:
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def copy_project(src: Path, dest: Path) -> Path:
    """A private copy of a finished project at ``dest`` (which must not exist), mtimes kept."""
    shutil.copytree(src, dest, symlinks=True, copy_function=_link_cache_copy_rest)
    return dest


@pytest.fixture(scope="session")
def snakemake_run(request, root, shared_data, tmp_path_factory):
    """The smallest grid run by Snakemake from an empty project, secrets in the environment."""
    if any("dvc_run" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("dvc_run_started")  # the other run overlaps this one
    project = make_smallest_project(root, tmp_path_factory.mktemp("snakemake-run") / "project")
    output = run(["snakemake", "--cores", "2"], project, env={"IRREPRO_DATA_MIRROR": str(shared_data), **SECRETS})
    return SimpleNamespace(project=project, output=output)


@pytest.fixture(scope="session")
def dvc_run_started(root, shared_data, tmp_path_factory):
    """``dvc repro`` of the smallest grid in an empty project, running in the background."""
    project = make_smallest_project(root, tmp_path_factory.mktemp("dvc-run") / "project")
    log = project.parent / "dvc-repro.out"
    env = {**os.environ, "IRREPRO_DATA_MIRROR": str(shared_data), "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    with log.open("w") as out:
        proc = subprocess.Popen(["dvc", "repro"], cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
    yield SimpleNamespace(project=project, proc=proc, log=log)
    if proc.poll() is None:  # the session ended without waiting for it
        proc.terminate()
        proc.wait()


@pytest.fixture(scope="session")
def dvc_run(dvc_run_started):
    """The same grid run by ``dvc repro`` from an empty project: the second, independent run."""
    started = dvc_run_started
    code = started.proc.wait()
    output = started.log.read_text()
    if code != 0:
        raise AssertionError(f"dvc repro failed ({code}):\n{output[-3000:]}")
    return SimpleNamespace(project=started.project, output=output)
