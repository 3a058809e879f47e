"""Per-job provenance, stored in the job's run sidecar under logs/<profile>/."""

import json
import platform
import subprocess
from importlib import metadata

from irrepro import provenance, sidecar


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


PARAMS = {"profile": "mini", "finetune": {"seed": 42, "lr": 1e-3}, "syntod": {"llm": {"seed": 7}, "item_split": {"seed": 0}}}


def test_sidecar_records_commit_dirty_versions_hardware_and_seeds(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "f.txt").write_text("a\n")
    _git(tmp_path, "add", "f.txt")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()

    log = tmp_path / "logs/mini/finetune/llama-r8-mha.log"
    sidecar.start("finetune", ["finetune", "--config", "x"], log)
    provenance.record(PARAMS, root=tmp_path)
    sidecar.finish(0)
    doc = json.loads(sidecar.sidecar_path(log).read_text())["provenance"]
    assert doc["git"] == {"commit": head, "dirty": False}
    assert doc["python"] == platform.python_version()
    assert doc["packages"]["ranx"] == metadata.version("ranx")
    assert doc["packages"]["pyserini"] == metadata.version("pyserini")
    assert doc["lucene"] and doc["lucene"][0].isdigit() and doc["java"].startswith("21")
    assert doc["hardware"]["cpu_count"] >= 1 and isinstance(doc["hardware"]["gpus"], list)
    assert doc["seeds"] == {"finetune.seed": 42, "syntod.llm.seed": 7, "syntod.item_split.seed": 0}

    (tmp_path / "f.txt").write_text("b\n")  # a changed tracked file makes the tree dirty
    (tmp_path / "untracked.txt").write_text("new\n")  # an untracked one does not
    sidecar.start("index", ["index"], tmp_path / "logs/mini/index.log")
    assert provenance.record(PARAMS, root=tmp_path)["git"]["dirty"] is True
    sidecar.finish(0)
    jobs = provenance.read_all("mini", tmp_path)
    assert [(j["job"], j["command"]) for j in jobs] == [("finetune/llama-r8-mha", "finetune"), ("index", "index")]


def test_no_git_repo_gives_nulls_and_secrets_are_never_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_canary_token_123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-456")
    log = tmp_path / "logs/paper/plan.log"
    sidecar.start("plan", ["plan"], log)
    provenance.record({"profile": "paper"}, root=tmp_path)
    text = sidecar.sidecar_path(log).read_text()
    assert json.loads(text)["provenance"]["git"] == {"commit": None, "dirty": None}
    assert "canary" not in text
