"""Published adapters as the authors uploaded them, and the route that evaluates them.

The uploads are rebuilt in real huggingface_hub cache layouts (blobs/, snapshots/<commit>/,
refs/main) and read with HF_HUB_OFFLINE=1: an ``adapter_model.bin`` holding the weights next
to an empty (zero-element tensors) ``adapter_model.safetensors``, as the authors' trainer
saves under ZeRO-3, and a 2-row score head (their training build's default ``num_labels``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from test_rerank_eval import build_hub_cache, toy_dataset  # noqa: E402

from irrepro.cli import main as cli_main  # noqa: E402
from irrepro.params import load_params  # noqa: E402
from irrepro.rerank import evaluate as E  # noqa: E402
from irrepro.rerank.hub import (  # noqa: E402
    AdapterSpecError,
    adapter_weights_file,
    head_labels,
    resolve_adapter,
    safetensors_is_empty,
)
from irrepro.rerank.inputs import encode_pair  # noqa: E402
from irrepro.rerank.targets import target_modules  # noqa: E402
from irrepro.study1 import published as PUB  # noqa: E402
from irrepro.trec import read_run, write_run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

ROOT = Path(__file__).resolve().parents[1]
REPO = "AtharvaNijasureUMass/finegrained_checkpoint_experiment_tiny"
BASE_REPO = "someorg/tiny-llama-base"


def make_adapter(base_dir: Path, out: Path, seed: int, labels: int) -> Path:
    """A non-trivial LoRA adapter with a ``labels``-row score head, saved by peft (safetensors)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=labels)
    pm = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=2, lora_alpha=4, modules_to_save=["score"],
                                          target_modules=target_modules("llama", "all")))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    pm.save_pretrained(out)
    return out


def as_authors_upload(adapter: Path, out: Path) -> Path:
    """The same adapter laid out as the authors' trainer saved it: the weights in
    adapter_model.bin (torch.save), adapter_model.safetensors with the same keys but no data."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True)
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    torch.save(weights, out / "adapter_model.bin")
    save_file({k: torch.empty(0, dtype=v.dtype) for k, v in weights.items()}, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_bytes((adapter / "adapter_config.json").read_bytes())
    return out


def logit0_scores(base_dir: Path, adapter: Path, labels: int, pairs) -> np.ndarray:
    """Reference: plain transformers + peft on the peft-saved adapter, logit 0, one pair at a time."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from irrepro.rerank.model import load_tokenizer

    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=labels)
    tok = load_tokenizer(base_dir)
    model.config.pad_token_id = tok.pad_token_id
    model = PeftModel.from_pretrained(model, adapter).eval()
    with torch.inference_mode():
        return np.array([model(input_ids=torch.tensor([encode_pair(AutoTokenizer.from_pretrained(base_dir), q, p)])
                               ).logits[0, 0].item() for q, p in pairs])


@pytest.fixture
def offline_cache(tmp_path, monkeypatch, no_network):
    import huggingface_hub.constants as C

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)  # the library reads the variable at import time
    return cache


@pytest.fixture
def uploads(tmp_path, tiny_base_dir, offline_cache):
    """The base and an authors'-style repo (checkpoint-50/, checkpoint-100/, root) in the hub cache."""
    base = tiny_base_dir("llama")
    peft_saved = {n: make_adapter(base, tmp_path / f"peft-{n}", seed=60 + i, labels=2)
                  for i, n in enumerate(["checkpoint-50", "checkpoint-100", "root"])}
    authors = {n: as_authors_upload(a, tmp_path / f"authors-{n}") for n, a in peft_saved.items()}
    files = {}
    for name, d in authors.items():
        files.update({(p.name if name == "root" else f"{name}/{p.name}"): p for p in d.iterdir()})
    commit = hashlib.sha1(b"authors upload").hexdigest()
    snapshot = build_hub_cache(offline_cache, REPO, files, commit)
    base_commit = hashlib.sha1(b"tiny base").hexdigest()
    build_hub_cache(offline_cache, BASE_REPO, {p.name: p for p in base.iterdir() if p.is_file()}, base_commit)
    return dict(base=base, peft=peft_saved, authors=authors, commit=commit, snapshot=snapshot, base_commit=base_commit)


# ----------------------------------------------------------------------------- resolve_adapter
def test_empty_safetensors_upload_loads_the_bin_weights(uploads, tmp_path, caplog):
    u = uploads
    raw_dir = u["snapshot"] / "checkpoint-50"
    assert safetensors_is_empty(raw_dir / "adapter_model.safetensors")
    assert adapter_weights_file(raw_dir).name == "adapter_model.bin"
    caplog.set_level(logging.INFO, logger="irrepro.rerank.hub")
    got = resolve_adapter(f"hf:{REPO}@{u['commit']}:checkpoint-50")
    assert sorted(p.name for p in got.iterdir()) == ["adapter_config.json", "adapter_model.bin"]
    assert any("is empty (header only); loading the weights from adapter_model.bin" in r.getMessage()
               for r in caplog.records)
    assert resolve_adapter(f"hf:{REPO}@{u['commit']}:checkpoint-50") == got  # the view is reused
    assert head_labels(got) == 2
    # a local directory laid out the same way is handled the same way
    local = resolve_adapter(u["authors"]["checkpoint-50"])
    assert local != u["authors"]["checkpoint-50"] and head_labels(local) == 2
    # a normal peft directory is returned as it is
    assert resolve_adapter(u["peft"]["root"]) == u["peft"]["root"]


def test_two_row_head_is_scored_by_logit_0_like_the_peft_saved_adapter(uploads, tmp_path):
    u = uploads
    datasets, passages, topics, first = toy_dataset(tmp_path)
    E.evaluate_checkpoints(u["base"], [("authors", 50, f"hf:{REPO}@{u['commit']}:checkpoint-50")], datasets,
                           passages, depth=5, metrics=["ndcg@10"], runs_dir=tmp_path / "runs", out_tsv=tmp_path / "m.tsv",
                           batch_size=4)
    run = read_run(tmp_path / "runs/toy/step-50.trec")
    keys = [(q, d) for q in run for d in run[q]]
    ref = logit0_scores(u["base"], u["peft"]["checkpoint-50"], 2, [(topics[q], passages[d]) for q, d in keys])
    np.testing.assert_allclose([run[q][d] for q, d in keys], ref, rtol=1e-4, atol=1e-5)


def test_unscorable_heads_and_missing_weights_are_refused(tiny_base_dir, tmp_path):
    base = tiny_base_dir("llama")
    three = as_authors_upload(make_adapter(base, tmp_path / "three", seed=1, labels=3), tmp_path / "three-authors")
    with pytest.raises(AdapterSpecError, match=r"score head of shape \[\(3, 32\)\].*only \[1, hidden\]"):
        head_labels(resolve_adapter(three))
    datasets, passages, _, _ = toy_dataset(tmp_path)
    with pytest.raises(AdapterSpecError, match="score head of shape"):  # before any model is loaded
        E.evaluate_checkpoints(base, [("x", 1, three)], datasets, passages, depth=5, metrics=["ndcg@10"],
                               runs_dir=tmp_path / "r", out_tsv=tmp_path / "m.tsv")
    (three / "adapter_model.bin").unlink()
    with pytest.raises(AdapterSpecError, match=r"adapter_model.safetensors is empty \(header only\) and there is no "
                                               r"adapter_model.bin"):
        resolve_adapter(three)


# ----------------------------------------------------------------------------- the route
def _raw_and_runs(tmp_path: Path):
    """A raw dir holding dl19's topics/qrels at the download stage's paths, a first-stage run, a corpus."""
    datasets, passages, topics, first = toy_dataset(tmp_path)
    raw = tmp_path / "raw"
    (raw / "trec-dl").mkdir(parents=True)
    (raw / "trec-dl/topics.dl19-passage.txt").write_bytes(Path(datasets["toy"]["topics"]).read_bytes())
    (raw / "trec-dl/qrels.dl19-passage.txt").write_bytes(Path(datasets["toy"]["qrels"]).read_bytes())
    runs = tmp_path / "bm25"
    write_run(first, runs / "dl19.trec", tag="bm25")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": d, "contents": t}) + "\n" for d, t in passages.items()))
    return raw, runs, corpus


def test_fetch_pins_main_and_eval_scores_every_published_folder(uploads, tmp_path):
    """The rules' two commands (`irrepro published-fetch`, `irrepro published-eval`) on params
    that list the tiny repo (revision null) in the mini profile."""
    u = uploads
    raw_params = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw_params["profile"] = "mini"
    raw_params["published"]["adapters"] = {"mini": [{"repo": REPO, "family": "llama", "base": BASE_REPO,
                                                     "revision": None}], "paper": []}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw_params, sort_keys=False))
    P = load_params(params)
    assert P["rerank"]["checkpoint_datasets"] == ["dl19"] and P["rerank"]["final_datasets"] == []
    pins = tmp_path / "PUBLISHED.json"
    assert cli_main(["published-fetch", "--params", str(params), "--profile", "mini", "--out", str(pins)]) == 0
    doc = json.loads(pins.read_text())
    (pin,) = doc["adapters"]
    assert (pin["revision"], pin["base_revision"]) == (u["commit"], u["base_commit"])  # main, pinned at first fetch
    assert [f["checkpoint"] for f in pin["folders"]] == ["checkpoint-50", "checkpoint-100", "root"]
    assert (pin["name"], pin["rank"]) == ("tiny", 2)

    raw, runs, corpus = _raw_and_runs(tmp_path)
    assert cli_main(["published-eval", "--params", str(params), "--profile", "mini", "--pins", str(pins),
                     "--raw", str(raw), "--runs", str(runs), "--corpus", str(corpus), "--out-runs",
                     str(tmp_path / "out-runs"), "--out-tsv", str(tmp_path / "pub.tsv")]) == 0
    table = PUB.read_table(tmp_path / "pub.tsv")
    assert {(r["checkpoint"], r["step"]) for r in table} == {("checkpoint-50", "50"), ("checkpoint-100", "100"),
                                                             ("root", "")}
    assert {r["metric"] for r in table} == set(P["evaluate"]["metrics"])
    assert len(table) == 3 * len(P["evaluate"]["metrics"])
    # the published checkpoint-50 run is the run of the same weights loaded from a plain peft directory
    E.evaluate_checkpoints(u["base"], [("ref", 50, u["peft"]["checkpoint-50"])],
                           {"dl19": {"topics": str(raw / "trec-dl/topics.dl19-passage.txt"),
                                     "qrels": str(raw / "trec-dl/qrels.dl19-passage.txt"),
                                     "run": str(runs / "dl19.trec"), "rel_level": 2}},
                           str(corpus), P["rerank"]["depth"], ["ndcg@10"], tmp_path / "ref-runs", None,
                           qmax=P["finetune"]["query_max_len"], pmax=P["finetune"]["passage_max_len"])
    got = read_run(tmp_path / "out-runs/tiny/checkpoint-50/dl19/step-50.trec")
    ref = read_run(tmp_path / "ref-runs/dl19/step-50.trec")
    assert got.keys() == ref.keys()
    for q in ref:
        np.testing.assert_allclose([got[q][d] for d in ref[q]], list(ref[q].values()), rtol=1e-5, atol=1e-6)
    md = PUB.final_markdown(table, "paper")
    assert f"| {REPO} | llama | 2 |" in md and "| root |" in md


def test_empty_list_writes_empty_outputs_without_loading_anything(tmp_path, no_network):
    P = load_params(ROOT / "params.yaml", "mini")
    assert P["published"]["adapters"] == []
    pins = tmp_path / "PUBLISHED.json"
    assert PUB.pin_published([], pins) == {"adapters": []}
    assert PUB.evaluate_published(P, pins, "raw", "runs", "corpus", tmp_path / "runs", tmp_path / "t.tsv") == []
    assert (tmp_path / "t.tsv").read_text() == "\t".join(PUB.COLUMNS) + "\n"
    # the runs directory is never empty (DVC would not restore an empty directory output)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["RUNS.txt"] and not (tmp_path / "runs/RUNS.txt").read_text()
    assert "None evaluated in the mini profile" in PUB.final_markdown([], "mini")
    paper = load_params(ROOT / "params.yaml", "paper")["published"]["adapters"]
    assert len(paper) == 11 and all(a["repo"].startswith("AtharvaNijasureUMass/finegrained_checkpoint_experiment_")
                                    for a in paper)
