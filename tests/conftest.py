import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "workflow"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} (the offline data mirror) is absent")
    return SHARED_DATA


@pytest.fixture
def no_network(monkeypatch):
    """Point every proxy at a closed loopback port so an accidental download fails fast."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    return os.environ


TINY_TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "how long is the life cycle of a flea",
    "a flea can live up to a year depending on its hosts",
    "what is the capital of france paris is the capital",
    "machine learning models rank passages for queries",
    "lorem ipsum dolor sit amet consectetur adipiscing elit",
] * 20


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory):
    """Factory: a randomly initialised tiny base model directory (model + tokenizer) per family."""
    from irrepro.tiny import init_model, train_tokenizer

    cache = {}

    def make(family: str):
        if family not in cache:
            out = tmp_path_factory.mktemp(f"tiny-{family}")
            tok = train_tokenizer(TINY_TEXTS, vocab_size=300)
            init_model(family, tok, seed=0, hidden=32, layers=2, heads=4, intermediate=64).save_pretrained(out)
            tok.save_pretrained(out)
            cache[family] = out
        return cache[family]

    return make


BIN = str(Path(sys.executable).parent)


def run(cmd, cwd, check=True, env=None):
    """Run a tool of the venv in ``cwd``; on failure raise with the output's tail."""
    env = {**os.environ, **(env or {}), "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def make_scratch_project(root: Path, dest: Path) -> Path:
    """A copy of the workflow definition in a new git + DVC repository at ``dest``, with the grid
    cut to one config (llama, rank 2, MHA) and a shorter tiny-base warm-up, so a whole mini run
    takes a few minutes on 2 cores. Needs $IRREPRO_DATA_MIRROR (or ../shared/data) for the data."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        if (root / name).exists():
            shutil.copy(root / name, dest / name)
    for folder in ("workflow", "envs", "notebooks"):
        if (root / folder).is_dir():
            shutil.copytree(root / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    run(["git", "init", "-q"], dest)
    run(["dvc", "init", "-q"], dest)
    shutil.copy(root / ".dvc" / "config", dest / ".dvc" / "config")
    if (root / ".dvc" / "plots").is_dir():  # the project's DVC plot templates (dvc.yaml names them)
        shutil.copytree(root / ".dvc" / "plots", dest / ".dvc" / "plots", dirs_exist_ok=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["finetune"].update(families=["llama"], ranks=[2], targets=["mha"])
    if "ablate" in params:
        params["ablate"].update(families=["llama"], ranks=[2], targets=["mha"])
    params["tiny"]["warmup_steps"] = 40
    if "syntod" in params:  # one domain, both methods, a few conversations
        S = params["syntod"]
        S.update(domains=["cooking"], n_conversations={"mini": 16, "paper": 5000})
        S["base"]["warmup_steps"] = {"mini": 20, "paper": 0}
        S["finetune"]["max_steps"] = {"mini": 4, "paper": -1}
        S["finetune"]["save_steps"] = {"mini": 2, "paper": 200}
        S["eval"]["max_conversations"] = {"mini": 2, "paper": None}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest
