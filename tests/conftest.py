import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Under `pytest -n 2` (make test) each worker has one core's share; torch's default of one thread
# per core would put four busy threads on two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "workflow"))

# the whole-pipeline runs shared by the end-to-end tests (session fixtures)
pytest_plugins = ["pipeline_fixtures"]

# The modules that read the session's pipeline runs (pipeline_fixtures): under pytest-xdist they
# must share one worker, or each worker would make both runs again.
PIPELINE_MODULES = {"test_pipeline", "test_dvc_remote", "test_verify", "test_rerun_identical"}


def _work_unit(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return "pipeline" if Path(module).stem in PIPELINE_MODULES else module


def pytest_collection_modifyitems(items):
    """The pipeline modules first (the order within stays): under xdist one worker starts on
    them, the longest unit (~7 of the suite's ~14 CPU-minutes), while the other takes the rest.
    A module that reads the session runs but is not in PIPELINE_MODULES is refused."""
    stray = {Path(item.nodeid.split("::", 1)[0]).stem for item in items
             if {"snakemake_run", "dvc_run"} & set(getattr(item, "fixturenames", ()))} - PIPELINE_MODULES
    if stray:
        raise pytest.UsageError(f"{sorted(stray)} use the session pipeline runs: add them to PIPELINE_MODULES "
                                "in tests/conftest.py, or each xdist worker makes those runs again")
    items.sort(key=lambda item: _work_unit(item.nodeid) != "pipeline")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``make test`` runs ``pytest -n 2``: whole modules go to a worker, so each module's fixtures
    are built once, and the pipeline modules go together, in collection order (not xdist's
    default of the largest test count first), so the pipeline unit starts at once and small
    modules come last. (xdist's own ``--dist loadgroup`` does not group under pytest 9: it
    renames ``item._nodeid``, which pytest 9's ``Node.nodeid`` no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    config.option.loadscopereorder = False
    return ByModule(config, log)


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


TINY_SIZES = {"hidden": 32, "layers": 2, "heads": 4, "intermediate": 64}


def save_tiny_base(out: Path, family: str, tokenizer, dtype=None, **sizes) -> Path:
    """A randomly initialised (seed 0) tiny base of ``family`` saved at ``out`` with ``tokenizer``;
    ``sizes`` override TINY_SIZES (init_model's keywords), ``dtype`` a torch dtype to save in."""
    from irrepro.tiny import init_model

    model = init_model(family, tokenizer, seed=0, **{**TINY_SIZES, **sizes})
    if dtype is not None:
        model.to(dtype)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_base_factory(tmp_path_factory, texts, prefix: str, vocab_size: int = 300, **sizes):
    """Factory ``family -> directory``: one tiny base per family, built on first use, with a
    tokenizer trained on ``texts`` (for module- or session-scoped fixtures)."""
    from irrepro.tiny import train_tokenizer

    cache = {}

    def make(family: str):
        if family not in cache:
            tok = train_tokenizer(texts, vocab_size=vocab_size)
            cache[family] = save_tiny_base(tmp_path_factory.mktemp(f"{prefix}-{family}"), family, tok, **sizes)
        return cache[family]

    return make


# SynTOD-format cooking conversations with a planted pattern: each intent has its own
# utterance, and the query slot is the dish named (test_syntod_tod, test_syntod_evaluation)
SYNTOD_HEADER = ("Conversation between human and AI that helps with recipes, allowed user intents are; "
                 "search_recipe, next_step, set_timer, chitchat:")
DISHES = ["pasta", "curry", "pancakes", "soup", "salad", "tacos"]
UTTER = {"search_recipe": "i want to cook {dish}", "next_step": "what comes next",
         "set_timer": "please set a timer", "chitchat": "how are you today"}
REPLY = {"search_recipe": "here are some {dish} recipes", "next_step": "now stir the pot",
         "set_timer": "the timer is running", "chitchat": "i am fine, thanks"}


def cooking_conversation(rng) -> str:
    """One SynTOD-format conversation: the four intents in ``rng``'s order, dishes drawn by ``rng``."""
    import json

    turns = [f"{SYNTOD_HEADER} ### ASSISTANT: Hello! What shall we cook?"]
    for intent in rng.sample(list(UTTER), len(UTTER)):
        dish = rng.choice(DISHES)
        ann = {"intent": intent, "query": dish} if intent == "search_recipe" else {"intent": intent}
        turns.append(f"### HUMAN: {UTTER[intent].format(dish=dish)} ## {json.dumps(ann)}")
        turns.append(f"### ASSISTANT: {REPLY[intent].format(dish=dish)}")
    return " ".join(turns)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory):
    """Factory: a randomly initialised tiny base model directory (model + tokenizer) per family."""
    return tiny_base_factory(tmp_path_factory, TINY_TEXTS, "tiny")


@pytest.fixture
def restore_torch_threads():
    """Training and scoring on one thread set torch's thread count for the process; give it back."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def make_lora_adapter(base_dir: Path, out: Path, seed: int, family: str, targets: str = "all", head: bool = True) -> Path:
    """A real peft LoRA adapter made directly with peft, with random non-zero B matrices (so LoRA
    changes the scores) and, with ``head``, a random score head."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from irrepro.rerank.targets import target_modules

    quiet_transformers()
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    cfg = LoraConfig(
        task_type="SEQ_CLS" if head else None,
        r=2,
        lora_alpha=4,
        target_modules=target_modules(family, targets),
        modules_to_save=["score"] if head else None,
    )
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "modules_to_save" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    pm.save_pretrained(out)
    return out


def plain_peft(base_dir: Path, adapter_dir: Path):
    """The reference: plain transformers + plain peft (nothing of ours), eval mode."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    return PeftModel.from_pretrained(model, adapter_dir).eval()


# a toy TREC collection for the reranking tests: three queries and the four passages every test's
# collection starts with (each test adds its own fillers and judgments)
TOY_TOPICS = {"q1": "how long is the life cycle of a flea", "q2": "what is the capital of france", "q3": "fox dog"}
TOY_BASE_PASSAGES = {
    "d1": "a flea can live up to a year depending on its hosts",
    "d2": "the quick brown fox jumps over the lazy dog",
    "d3": "what is the capital of france paris is the capital",
    "d4": "machine learning models rank passages for queries",
}


def write_topics_qrels(topics_path: Path, qrels_path: Path, topics: dict, qrels: dict) -> None:
    """``{qid: query}`` as a TREC topics TSV and graded ``{qid: {docid: grade}}`` as a qrels file."""
    for path in (topics_path, qrels_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    topics_path.write_text("".join(f"{q}\t{t}\n" for q, t in topics.items()), encoding="utf-8")
    qrels_path.write_text("".join(f"{q} 0 {d} {g}\n" for q, ds in qrels.items() for d, g in ds.items()),
                          encoding="utf-8")


def write_toy_collection(files: dict, passages: dict, qrels: dict) -> dict:
    """TOY_TOPICS, ``qrels`` and a first-stage run that ranks every passage for every query in docid
    order (each query's scores one lower than the last's) to ``files["topics"|"qrels"|"run"]``;
    returns the run."""
    from irrepro.trec import write_run

    docs = sorted(passages)
    first = {q: {d: float(10 - i - k) for i, d in enumerate(docs)} for k, q in enumerate(TOY_TOPICS)}
    write_topics_qrels(files["topics"], files["qrels"], TOY_TOPICS, qrels)
    write_run(first, files["run"], tag="bm25")
    return first


def send_body(handler, code: int, data: bytes, headers: dict | None = None) -> None:
    """Answer a request of a test HTTP server (http.server handler) with ``data`` labelled as JSON
    (bytes, so a test can also send a malformed body), plus any extra ``headers``."""
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


def send_json(handler, code: int, doc) -> None:
    """Answer a request of a test HTTP server (http.server handler) with ``doc`` as JSON."""
    import json

    send_body(handler, code, json.dumps(doc).encode())


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
