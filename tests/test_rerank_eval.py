"""Scoring path, checkpoint evaluation with adapter switching, and published-adapter resolution."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from irrepro.rerank import evaluate as E  # noqa: E402
from irrepro.rerank.hub import AdapterSpecError, parse_spec, resolve_adapter  # noqa: E402
from irrepro.rerank.inputs import encode_pair  # noqa: E402
from irrepro.rerank.score import (  # noqa: E402
    candidates,
    encode_pairs,
    rerank,
    resolve_dtype,
    score_pairs,
)
from irrepro.trec import read_run  # noqa: E402

from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: E402

from conftest import TOY_BASE_PASSAGES, TOY_TOPICS, make_lora_adapter, plain_peft, write_toy_collection  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

FAMILIES = ["llama", "mistral", "pythia"]
CANARY = "hf_CANARYtoken0123456789abcdefXYZ"

PAIRS = [
    ("how long is the life cycle of a flea", "a flea can live up to a year depending on its hosts"),
    ("fox", "the quick brown fox jumps over the lazy dog"),
    ("fox", "the quick brown fox jumps over the lazy dog"),  # exact duplicate: a tie
    ("capital of france", "paris"),
    ("capital of france", "what is the capital of france paris is the capital " * 30),  # truncated at pmax
    ("machine learning " * 40, "models rank passages"),  # query truncated at qmax
    ("lorem", "lorem ipsum dolor sit amet consectetur adipiscing elit"),
    ("how long is the life cycle of a flea", "the quick brown fox"),
    ("fox", "a"),
    ("machine learning models", "machine learning models rank passages for queries " * 3),
]


# ----------------------------------------------------------------------------- helpers
def plain_load(base_dir: Path, adapter_dir: Path):
    """The reference: plain transformers + plain peft, nothing of ours."""
    from transformers import AutoTokenizer

    return plain_peft(base_dir, adapter_dir), AutoTokenizer.from_pretrained(base_dir)


def reference_scores(model, tokenizer, pairs, qmax=32, pmax=164) -> np.ndarray:
    """One pair at a time, unpadded: the definition of the score."""
    out = []
    with torch.inference_mode():
        for q, p in pairs:
            ids = torch.tensor([encode_pair(tokenizer, q, p, qmax=qmax, pmax=pmax)])
            out.append(model(input_ids=ids).logits[0, 0].item())
    return np.array(out)


def toy_dataset(tmp_path: Path):
    """Three queries, seven passages, a first-stage run and graded qrels, as TREC files."""
    passages = {**TOY_BASE_PASSAGES, "d5": "lorem ipsum dolor sit amet consectetur adipiscing elit",
                "d6": "how long is the life cycle of a flea " * 12, "d7": "paris"}
    data = tmp_path / "data"
    files = {"topics": data / "topics.tsv", "qrels": data / "qrels.txt", "run": data / "run.trec"}
    qrels = {"q1": {"d1": 3, "d6": 1, "d2": 0}, "q2": {"d3": 2, "d7": 3}, "q3": {"d2": 2}}
    first = write_toy_collection(files, passages, qrels)
    return {"toy": {**{k: str(p) for k, p in files.items()}, "rel_level": 2}}, passages, dict(TOY_TOPICS), first


# ----------------------------------------------------------------------------- scoring
@pytest.mark.parametrize("family", FAMILIES)
def test_encode_pairs_is_encode_pair(tiny_base_dir, family):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base_dir(family))
    for qmax, pmax in [(32, 164), (4, 7)]:
        assert encode_pairs(tok, PAIRS, qmax=qmax, pmax=pmax) == [
            encode_pair(tok, q, p, qmax=qmax, pmax=pmax) for q, p in PAIRS
        ]
    assert encode_pairs(tok, []) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_score_pairs_equals_unbatched_reference(tiny_base_dir, tmp_path, family):
    base = tiny_base_dir(family)
    model, tok = plain_load(base, make_lora_adapter(base, tmp_path / "a", seed=3, family=family))
    ref = reference_scores(model, tok, PAIRS)
    assert np.ptp(ref) > 1e-3, "degenerate reference: an order bug would go unnoticed"
    lengths = [len(e) for e in encode_pairs(tok, PAIRS)]
    assert len(set(lengths)) >= 6  # the batches really mix lengths (dynamic padding at work)
    for bs in (1, 3, 4, 64):
        got = score_pairs(model, tok, PAIRS, batch_size=bs)
        assert got.shape == (len(PAIRS),) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
        assert got[1] == pytest.approx(got[2], abs=1e-5)  # the tie stays a tie
    # shorter truncation limits agree with the reference at the same limits
    np.testing.assert_allclose(
        score_pairs(model, tok, PAIRS, batch_size=4, qmax=4, pmax=7),
        reference_scores(model, tok, PAIRS, qmax=4, pmax=7),
        rtol=1e-4,
        atol=1e-5,
    )
    assert score_pairs(model, tok, []).shape == (0,)
    assert model.training is False


def test_score_pairs_restores_training_mode_and_dtypes(tiny_base_dir, tmp_path):
    base = tiny_base_dir("llama")
    model, tok = plain_load(base, make_lora_adapter(base, tmp_path / "a", seed=4, family="llama"))
    ref = score_pairs(model, tok, PAIRS)
    model.train()
    np.testing.assert_allclose(score_pairs(model, tok, PAIRS), ref, rtol=1e-5, atol=1e-6)  # dropout off inside
    assert model.training is True
    model.eval()
    assert resolve_dtype("auto", "cpu") is None
    assert resolve_dtype("float32", "cpu") is None
    assert resolve_dtype("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError):
        resolve_dtype("int8", "cpu")
    bf16 = score_pairs(model, tok, PAIRS, dtype="bfloat16")
    # bf16 autocast of a random tiny model with large LoRA perturbations: one pair moves by
    # ~0.9 even unbatched (measured), so only closeness to fp32 is asserted
    np.testing.assert_allclose(bf16, ref, atol=0.15 * (np.abs(ref).max() + 1))


def test_score_pairs_reports_a_bad_pair_by_its_input_position(tiny_base_dir, tmp_path):
    # the error names the pair's position in the caller's list, whatever batch it is scored in
    base = tiny_base_dir("llama")
    model, tok = plain_load(base, make_lora_adapter(base, tmp_path / "a", seed=5, family="llama"))
    assert tok.pad_token is not None
    pairs = list(PAIRS)
    pairs[5] = ("fox", f"the quick brown fox {tok.pad_token}")
    with pytest.raises(ValueError, match=r"^pair 5 ends with the pad token id"):
        score_pairs(model, tok, pairs, batch_size=2)


def test_rerank_takes_top_depth_in_first_stage_order(tiny_base_dir, tmp_path):
    base = tiny_base_dir("llama")
    model, tok = plain_load(base, make_lora_adapter(base, tmp_path / "a", seed=5, family="llama"))
    datasets, passages, topics, first = toy_dataset(tmp_path)
    keys, pairs = candidates(first, topics, passages, depth=3)
    assert [k for k in keys if k[0] == "q1"] == [("q1", "d1"), ("q1", "d2"), ("q1", "d3")]
    run = rerank(model, tok, first, topics, passages, depth=3, batch_size=2)
    assert {q: sorted(d) for q, d in run.items()} == {q: sorted(d for _, d in keys if _ == q) for q in first}
    ref = reference_scores(model, tok, pairs)
    np.testing.assert_allclose([run[q][d] for q, d in keys], ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(KeyError, match="no text"):
        candidates(first, topics, {k: v for k, v in passages.items() if k != "d2"}, depth=3)
    with pytest.raises(KeyError, match="topic"):
        candidates(first, {"q1": "x"}, passages, depth=3)


def test_candidates_on_dl19(shared_data):
    from irrepro.trec import read_run as rr

    run = rr(shared_data / "bm25-top100/trec_results_dl19.txt")
    data = json.loads((shared_data / "bm25-top100/retrieve_results_dl19.json").read_text(encoding="utf-8"))
    passages = {h["docid"]: h["content"] for e in data for h in e["hits"]}
    topics = {str(e["hits"][0]["qid"]): e["query"] for e in data}
    keys, pairs = candidates(run, topics, passages, depth=100)
    assert len(keys) == len(pairs) == 4300
    keys10, _ = candidates(run, topics, passages, depth=10)
    assert len(keys10) == 430


# ----------------------------------------------------------------------------- evaluate_checkpoints
@pytest.mark.parametrize("family", FAMILIES)
def test_evaluate_checkpoints_switches_adapters_and_heads(tiny_base_dir, tmp_path, family):
    """Each checkpoint's run holds *its own* scores (LoRA and head), as plain peft computes them."""
    base = tiny_base_dir(family)
    a1 = make_lora_adapter(base, tmp_path / "ckpt-50", seed=11, family=family, targets="all")
    a2 = make_lora_adapter(base, tmp_path / "ckpt-100", seed=12, family=family, targets="mlp")  # other targets too
    datasets, passages, topics, first = toy_dataset(tmp_path)
    runs_dir, tsv = tmp_path / "runs", tmp_path / "metrics.tsv"
    rows = E.evaluate_checkpoints(
        base, [("r2-all", 50, a1), ("r2-all", 100, a2)], datasets, passages, depth=5,
        metrics=["ndcg@10", "mrr@10"], runs_dir=runs_dir, out_tsv=tsv, batch_size=4,
    )
    keys, pairs = candidates(first, topics, passages, depth=5)
    got = {}
    for step, adapter in ((50, a1), (100, a2)):
        run = read_run(runs_dir / "toy" / f"step-{step}.trec")
        got[step] = np.array([run[q][d] for q, d in keys])
        ref = reference_scores(*plain_load(base, adapter), pairs)  # plain transformers + peft round trip
        np.testing.assert_allclose(got[step], ref, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got[50], got[100], atol=1e-3)  # the second is not the first one's
    # the tidy TSV: header + adapters x datasets x metrics rows, same as returned
    lines = tsv.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["config", "step", "dataset", "metric", "value"]
    assert len(lines) == 1 + 2 * 1 * 2 == 1 + len(rows)
    for line, row in zip(lines[1:], rows):
        c, s, d, m, v = line.split("\t")
        assert (c, int(s), d, m) == (row["config"], row["step"], row["dataset"], row["metric"])
        assert float(v) == pytest.approx(row["value"], abs=1e-6)
        assert 0.0 <= row["value"] <= 1.0


def test_evaluate_checkpoints_per_dataset_steps(tiny_base_dir, tmp_path):
    """A dataset with ``steps`` is reranked with those checkpoints only (the final-only schedule)."""
    base = tiny_base_dir("llama")
    a1 = make_lora_adapter(base, tmp_path / "ckpt-50", seed=13, family="llama")
    a2 = make_lora_adapter(base, tmp_path / "ckpt-100", seed=14, family="llama")
    datasets, passages, topics, first = toy_dataset(tmp_path)
    datasets = {"curve": datasets["toy"], "final": {**datasets["toy"], "steps": [100]},
                "none": {**datasets["toy"], "steps": []}}
    runs_dir = tmp_path / "runs"
    rows = E.evaluate_checkpoints(base, [("c", 50, a1), ("c", 100, a2)], datasets, passages, depth=5,
                                  metrics=["ndcg@10"], runs_dir=runs_dir, out_tsv=tmp_path / "m.tsv", batch_size=4)
    assert [(r["step"], r["dataset"]) for r in rows] == [(50, "curve"), (100, "curve"), (100, "final")]
    assert sorted(p.name for p in (runs_dir / "curve").glob("*.trec")) == ["step-100.trec", "step-50.trec"]
    assert sorted(p.name for p in (runs_dir / "final").glob("*.trec")) == ["step-100.trec"]
    assert not (runs_dir / "none").exists()
    # the final-only run is the final adapter's, identical to its curve run
    assert read_run(runs_dir / "final" / "step-100.trec") == read_run(runs_dir / "curve" / "step-100.trec")
    with pytest.raises(ValueError, match=r"dataset 'final': steps \[150\] are not among the adapters' steps \[50, 100\]"):
        E.evaluate_checkpoints(base, [("c", 50, a1), ("c", 100, a2)], {"final": {**datasets["final"], "steps": [150]}},
                               passages, depth=5, metrics=["ndcg@10"], runs_dir=runs_dir, out_tsv=None)


def test_head_check_catches_a_head_that_did_not_switch(tiny_base_dir, tmp_path):
    base = tiny_base_dir("llama")
    a1 = make_lora_adapter(base, tmp_path / "a1", seed=21, family="llama")
    a2 = make_lora_adapter(base, tmp_path / "a2", seed=22, family="llama")
    model, _ = E.load_base(base)
    sw = E.AdapterSwitcher(model)
    pm = sw.attach(a1)
    pm = sw.attach(a2)
    assert list(pm.peft_config) == [sw.active]  # the previous adapter was deleted
    head = pm.base_model.model.score
    first_head = peft.utils.load_peft_weights(str(a1))["base_model.model.score.weight"]
    with torch.no_grad():  # simulate the bug: LoRA switched, head still the first adapter's
        head.modules_to_save[sw.active].weight.copy_(first_head)
    with pytest.raises(E.HeadNotSwitched, match="score"):
        E.check_active_adapter(pm, sw.active, a2)
    # an adapter without a trained head is refused (peft would silently use the random base head)
    headless = make_lora_adapter(base, tmp_path / "headless", seed=23, family="llama", head=False)
    with pytest.raises(E.HeadNotSwitched, match="no trained 'score' head"):
        E.AdapterSwitcher(E.load_base(base)[0]).attach(headless)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_merged_adapter_is_merge_and_unload_and_restores_the_base_exactly(tiny_base_dir, tmp_path, dtype):
    """Scoring merges the adapter as the authors' inference does (plain peft merge_and_unload,
    the same weights bit for bit, in bf16 too), and leaves the base weights as they were,
    which in bf16 unmerging alone would not."""
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = tiny_base_dir("llama")
    adapter = make_lora_adapter(base, tmp_path / "a", seed=41, family="llama", targets="all")
    pm = E.AdapterSwitcher(E.load_base(base, dtype=dtype)[0]).attach(adapter)
    lora = {name.removeprefix("base_model.model."): m for name, m in pm.named_modules() if isinstance(m, LoraLayer)}
    before = {name: m.get_base_layer().weight.detach().clone() for name, m in lora.items()}
    authors = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=getattr(torch, dtype))
    authors = peft.PeftModel.from_pretrained(authors, adapter).merge_and_unload()
    with E.merged_adapter(pm):
        for name, m in lora.items():
            assert m.merged
            assert torch.equal(m.get_base_layer().weight, authors.get_submodule(name).weight), name
            assert not torch.equal(m.get_base_layer().weight, before[name]), name  # the update is in
        if dtype == "float32":  # the head computes in fp32 (a registered deviation), so compare scores in fp32
            tok = AutoTokenizer.from_pretrained(base)
            np.testing.assert_allclose(reference_scores(pm, tok, PAIRS), reference_scores(authors.eval(), tok, PAIRS),
                                       rtol=1e-5, atol=1e-6)
    for name, m in lora.items():
        assert not m.merged
        assert torch.equal(m.get_base_layer().weight, before[name]), name
    if dtype == "bfloat16":  # why the originals are kept: W + delta - delta is not W in bf16
        pm.merge_adapter()
        pm.unmerge_adapter()
        assert any(not torch.equal(m.get_base_layer().weight, before[n]) for n, m in lora.items())


def test_evaluate_checkpoints_resume_and_validation(tiny_base_dir, tmp_path, monkeypatch):
    base = tiny_base_dir("llama")
    a1 = make_lora_adapter(base, tmp_path / "a1", seed=31, family="llama")
    datasets, passages, _, _ = toy_dataset(tmp_path)
    kw = dict(datasets=datasets, passages=passages, depth=4, metrics=["ndcg@10"], runs_dir=tmp_path / "runs",
              out_tsv=tmp_path / "m.tsv", batch_size=8)
    rows = E.evaluate_checkpoints(base, [("c", 50, a1)], **kw)
    run_file = tmp_path / "runs/toy/step-50.trec"
    before = run_file.read_bytes()

    def boom(*a, **k):
        raise AssertionError("base model loaded although the run could be reused")

    monkeypatch.setattr(E, "load_base", boom)
    assert E.evaluate_checkpoints(base, [("c", 50, a1)], **kw) == rows
    assert run_file.read_bytes() == before
    # a different adapter under the same step is recomputed, not reused
    a2 = make_lora_adapter(base, tmp_path / "a2", seed=32, family="llama")
    with pytest.raises(AssertionError, match="reused"):
        E.evaluate_checkpoints(base, [("c", 50, a2)], **kw)
    monkeypatch.undo()
    E.evaluate_checkpoints(base, [("c", 50, a2)], **kw)
    assert run_file.read_bytes() != before
    with pytest.raises(ValueError, match="duplicate checkpoint steps"):
        E.evaluate_checkpoints(base, [("c", 50, a1), ("d", 50, a2)], **kw)


def test_compare_to_bm25(tiny_base_dir, tmp_path):
    base = tiny_base_dir("llama")
    a1 = make_lora_adapter(base, tmp_path / "a1", seed=41, family="llama")
    datasets, passages, _, _ = toy_dataset(tmp_path)
    E.evaluate_checkpoints(base, [("c", 50, a1)], datasets, passages, depth=5, metrics=["ndcg@10"],
                           runs_dir=tmp_path / "runs", out_tsv=tmp_path / "m.tsv")
    res = E.compare_to_bm25(datasets, {"step-50": {"toy": tmp_path / "runs/toy/step-50.trec"}}, ["ndcg@10", "mrr@10"],
                            out_md=tmp_path / "sig.md", depth=5)
    assert set(res) == {"toy"} and res["toy"]["runs"] == ["bm25", "step-50"]
    assert "| bm25 |" in (tmp_path / "sig.md").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- hub
def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def build_hub_cache(cache: Path, repo_id: str, files: dict[str, Path], commit: str, branch: str = "main") -> Path:
    """A real huggingface_hub cache entry: blobs/ (content-addressed), snapshots/{commit}/ (symlinks), refs/."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for rel, src in files.items():
        data = src.read_bytes()
        blob = hashlib.sha256(data).hexdigest() if rel.endswith(".safetensors") else _git_blob_sha1(data)
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        (repo / "blobs" / blob).write_bytes(data)
        link = repo / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(repo / "blobs" / blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    return repo / "snapshots" / commit


@pytest.fixture
def hub_cache(tmp_path, tiny_base_dir, monkeypatch, no_network):
    """A pre-populated offline hub cache holding one adapter at the root and one in checkpoint-50/."""
    import huggingface_hub.constants as C

    base = tiny_base_dir("llama")
    root_ad = make_lora_adapter(base, tmp_path / "local-root", seed=51, family="llama")
    sub_ad = make_lora_adapter(base, tmp_path / "local-sub", seed=52, family="llama")
    commit = hashlib.sha1(b"irrepro test commit").hexdigest()
    files = {p.name: p for p in root_ad.iterdir() if p.is_file()}
    files.update({f"checkpoint-50/{p.name}": p for p in sub_ad.iterdir() if p.is_file()})
    cache = tmp_path / "hub"
    snapshot = build_hub_cache(cache, "someorg/finegrained_checkpoint_experiment_tiny", files, commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)  # the library reads the variable at import time
    return {"base": base, "root": root_ad, "sub": sub_ad, "commit": commit, "snapshot": snapshot,
            "repo": "someorg/finegrained_checkpoint_experiment_tiny"}


def test_resolve_adapter_from_offline_hub_cache(hub_cache, tmp_path):
    h = hub_cache
    got = resolve_adapter(f"hf:{h['repo']}@{h['commit']}")
    assert got == h["snapshot"] and (got / "adapter_config.json").is_file()
    got_sub = resolve_adapter(f"hf:{h['repo']}@{h['commit']}:checkpoint-50")
    assert got_sub == h["snapshot"] / "checkpoint-50"
    assert resolve_adapter(f"hf:{h['repo']}@main") == h["snapshot"]  # a branch, via refs/ (logged as mutable)
    assert resolve_adapter(h["root"]) == h["root"]
    with pytest.raises(LocalEntryNotFoundError):  # unknown commit: nothing cached, nothing fetched
        resolve_adapter(f"hf:{h['repo']}@{'0' * 40}")
    with pytest.raises(AdapterSpecError, match="no peft adapter"):
        resolve_adapter(f"hf:{h['repo']}@{h['commit']}:checkpoint-999")

    # the hub adapters score exactly like the local directories they were made from
    datasets, passages, _, _ = toy_dataset(tmp_path)
    kw = dict(datasets=datasets, passages=passages, depth=5, metrics=["ndcg@10"], batch_size=4)
    E.evaluate_checkpoints(h["base"], [("hub", 1, f"hf:{h['repo']}@{h['commit']}"),
                                       ("hub", 2, f"hf:{h['repo']}@{h['commit']}:checkpoint-50")],
                           runs_dir=tmp_path / "hub-runs", out_tsv=tmp_path / "hub.tsv", **kw)
    E.evaluate_checkpoints(h["base"], [("loc", 1, h["root"]), ("loc", 2, h["sub"])],
                           runs_dir=tmp_path / "loc-runs", out_tsv=tmp_path / "loc.tsv", **kw)
    for step in (1, 2):
        assert read_run(tmp_path / f"hub-runs/toy/step-{step}.trec") == read_run(tmp_path / f"loc-runs/toy/step-{step}.trec")


@pytest.mark.parametrize(
    "spec, match",
    [
        ("hf:AtharvaNijasureUMass/finegrained_checkpoint_experiment_llama3", "no revision"),
        ("hf:org/name@", "no revision"),
        ("hf:orgname@abc", "org/name"),
        ("hf:org/name@rev:../x", "subfolder"),
        ("hf:org/name@rev:", "subfolder"),
        ("/definitely/not/a/dir", "neither a local directory"),
    ],
)
def test_bad_specs_are_rejected(spec, match):
    with pytest.raises(AdapterSpecError, match=match):
        resolve_adapter(spec)


def test_parse_spec():
    s = parse_spec("hf:AtharvaNijasureUMass/finegrained_checkpoint_experiment_llama3@" + "a" * 40 + ":checkpoint-500")
    assert (s.repo_id, s.revision, s.subfolder) == (
        "AtharvaNijasureUMass/finegrained_checkpoint_experiment_llama3", "a" * 40, "checkpoint-500")
    assert str(s).endswith(":checkpoint-500")


def test_token_only_from_environment(monkeypatch, tmp_path):
    import huggingface_hub

    seen = {}

    def fake_snapshot_download(repo_id, **kw):
        seen.update(kw)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("HF_TOKEN", CANARY)
    with pytest.raises(AdapterSpecError):  # tmp_path holds no adapter
        resolve_adapter("hf:org/name@" + "b" * 40)
    assert seen["token"] == CANARY and seen["revision"] == "b" * 40
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(AdapterSpecError):
        resolve_adapter("hf:org/name@" + "b" * 40)
    assert seen["token"] is False  # never a stored login


def test_token_never_logged_or_written(hub_cache, tmp_path, monkeypatch, caplog, capsys):
    h = hub_cache
    monkeypatch.setenv("HF_TOKEN", CANARY)
    caplog.set_level(logging.DEBUG)
    datasets, passages, _, _ = toy_dataset(tmp_path)
    out = tmp_path / "out"
    E.evaluate_checkpoints(h["base"], [("hub", 1, f"hf:{h['repo']}@{h['commit']}")], datasets, passages, depth=5,
                           metrics=["ndcg@10"], runs_dir=out / "runs", out_tsv=out / "m.tsv")
    with pytest.raises(LocalEntryNotFoundError):
        resolve_adapter(f"hf:{h['repo']}@{'0' * 40}")  # error paths too
    captured = capsys.readouterr()
    assert CANARY not in caplog.text and CANARY not in captured.out and CANARY not in captured.err
    assert any("hf:" in r.getMessage() for r in caplog.records)  # the resolution was logged...
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".trec" for p in written)
    for p in written:  # ...but the token is in no file
        assert CANARY.encode() not in p.read_bytes(), p
