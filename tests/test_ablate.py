"""LoRA ablations: variant enumeration, in-memory toggling against independent references, the
sweep (runs, aliases, resume), the stage drivers and CLI, and the collect table's deltas."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from irrepro.rerank import ablate as AB  # noqa: E402
from irrepro.rerank import evaluate as E  # noqa: E402
from irrepro.rerank.score import _pad_token_id, candidates, encode_pairs, score_encoded  # noqa: E402
from irrepro.rerank.targets import MODULES, target_modules  # noqa: E402
from irrepro.study1 import ablation as S  # noqa: E402
from irrepro.trec import read_run, write_run  # noqa: E402

from conftest import TOY_BASE_PASSAGES, make_lora_adapter, plain_peft, tiny_base_factory, write_toy_collection  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

FAMILIES = ["llama", "mistral", "pythia"]
N_LAYERS = 3  # bands of 2 -> band-0-1 and a shorter last band-2-2
ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "how long is the life cycle of a flea",
    "a flea can live up to a year depending on its hosts",
    "what is the capital of france paris is the capital",
    "machine learning models rank passages for queries",
] * 20
PAIRS = [
    ("how long is the life cycle of a flea", "a flea can live up to a year depending on its hosts"),
    ("fox", "the quick brown fox jumps over the lazy dog"),
    ("capital of france", "paris"),
    ("capital of france", "what is the capital of france paris is the capital " * 3),
    ("machine learning", "models rank passages"),
    ("flea", "the lazy dog"),
]


# ----------------------------------------------------------------------------- fixtures / helpers
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models score fastest on one thread, and the cores are shared; restore afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def base3(tmp_path_factory):
    """Factory: a random tiny base of ``family`` with three transformer layers (model + tokenizer)."""
    return tiny_base_factory(tmp_path_factory, TEXTS, "base3", layers=N_LAYERS)


def expected_names(family: str, targets: str, n_layers: int, band_size: int, cells: bool) -> dict[str, str | None]:
    """``{variant: same_as}`` written out from the rules, independently of enumerate_variants."""
    mha, mlp = MODULES[family]["mha"], MODULES[family]["mlp"]
    projs = target_modules(family, targets)
    out: dict[str, str | None] = {"full": None, "head_only": None}
    out.update({f"layer-{i}": "head_only" if n_layers == 1 else None for i in range(n_layers)})
    for i in range(0, n_layers, band_size):
        j = min(i + band_size, n_layers) - 1
        out[f"band-{i}-{j}"] = "head_only" if (i, j) == (0, n_layers - 1) else (f"layer-{i}" if i == j else None)
    out.update({f"proj-{p}": "head_only" if len(projs) == 1 else None for p in mha + mlp if p in projs})
    for group, members in (("mha", mha), ("mlp", mlp)):
        present = [p for p in members if p in projs]
        if present:
            out[group] = "head_only" if present == projs else (f"proj-{present[0]}" if len(present) == 1 else None)
    if cells:
        out.update({f"cell-{i}-{p}": None for i in range(n_layers) for p in mha + mlp if p in projs})
    return out


def toggle_state(pm) -> dict:
    """Everything the toggling may touch: per-layer switch and active adapters, every requires_grad."""
    layers = {n: (m.disable_adapters, list(m.active_adapters)) for n, m in AB._lora_layers(pm).items()}
    return {"layers": layers, "grad": {n: p.requires_grad for n, p in pm.named_parameters()},
            "active": pm.active_adapter}


def toy_files(tmp_path: Path) -> tuple[dict, dict]:
    """Three queries, seven passages, graded qrels and a first-stage run as files."""
    passages = {**TOY_BASE_PASSAGES, "d5": "lorem ipsum dolor sit amet",
                "d6": "how long is the life cycle of a flea " * 5, "d7": "paris"}
    files = {"topics": tmp_path / "topics.tsv", "qrels": tmp_path / "qrels.txt", "run": tmp_path / "bm25.trec"}
    write_toy_collection(files, passages, {"q1": {"d1": 3, "d6": 1}, "q2": {"d3": 2, "d7": 3}, "q3": {"d2": 2}})
    return files, passages


# ----------------------------------------------------------------------------- enumeration
@pytest.mark.parametrize("targets", ["mha", "mlp", "all"])
@pytest.mark.parametrize("family", FAMILIES)
def test_sites_and_variants_per_family(base3, tmp_path, family, targets):
    base = base3(family)
    model, _ = E.load_base(base)
    pm = E.AdapterSwitcher(model).attach(make_lora_adapter(base, tmp_path / "a", 1, family, targets))
    sites = AB.lora_sites(pm, family)
    projs = target_modules(family, targets)
    assert [(s.layer, s.projection) for s in sites] == [(i, p) for i in range(N_LAYERS) for p in projs]
    assert all(f"layers.{s.layer}." in s.module and s.module.endswith(s.projection) for s in sites)

    variants = AB.enumerate_variants(sites, family, N_LAYERS, band_size=2, cells=True)
    by = {v.name: v for v in variants}
    assert {v.name: v.same_as for v in variants} == expected_names(family, targets, N_LAYERS, 2, True)
    assert list(by)[:2] == ["full", "head_only"] and len(by) == len(variants)
    all_modules = {s.module for s in sites}
    assert by["full"].off == frozenset() and by["head_only"].off == all_modules
    assert by["layer-1"].off == {s.module for s in sites if s.layer == 1} and by["layer-1"].layers == (1,)
    assert by["band-0-1"].layers == (0, 1) and by["band-2-2"].layers == (2,)
    p = projs[-1]
    assert by[f"proj-{p}"].off == {s.module for s in sites if s.projection == p}
    assert by[f"proj-{p}"].layers == (0, 1, 2) and by[f"proj-{p}"].projections == (p,)
    assert by[f"cell-2-{p}"].off == {s.module for s in sites if (s.layer, s.projection) == (2, p)}
    for group in ("mha", "mlp"):
        members = [x for x in MODULES[family][group] if x in projs]
        if members:
            assert by[group].off == {s.module for s in sites if s.projection in members}
            assert by[group].projections == tuple(members)
        else:  # switches off nothing this adapter has: skipped
            assert group not in by
    for v in variants:  # an alias switches off exactly what its target does; distinct ones differ
        if v.same_as:
            assert v.off == by[v.same_as].off and by[v.same_as].same_as is None
    distinct = [v.off for v in variants if v.same_as is None]
    assert len(set(distinct)) == len(distinct)


def test_enumerate_variants_options():
    sites = [AB.LoraSite(f"m.layers.{i}.mlp.{p}", i, p) for i in range(5) for p in ("gate_proj", "down_proj")]
    names = {v.name: v.same_as for v in AB.enumerate_variants(sites, "llama", 5, band_size=1, cells=False)}
    # written out by hand: no up_proj LoRA -> no proj-up_proj; bands of 1 are the layers
    assert names == {
        "full": None, "head_only": None, **{f"layer-{i}": None for i in range(5)},
        **{f"band-{i}-{i}": f"layer-{i}" for i in range(5)},
        "proj-gate_proj": None, "proj-down_proj": None, "mlp": "head_only",
    }
    bands = [v.name for v in AB.enumerate_variants(sites, "llama", 5, band_size=2) if v.kind == "band"]
    assert bands == ["band-0-1", "band-2-3", "band-4-4"]
    assert [v.name for v in AB.enumerate_variants(sites, "llama", 5, band_size=8) if v.kind == "band"] == ["band-0-4"]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="band_size"):
            AB.enumerate_variants(sites, "llama", 5, band_size=bad)


# ----------------------------------------------------------------------------- toggling vs references
@pytest.mark.parametrize("family", FAMILIES)
def test_variant_scores_equal_independent_references(base3, tmp_path, family):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    base = base3(family)
    adapter = make_lora_adapter(base, tmp_path / "a", 7, family, "all")
    model, tok = E.load_base(base)
    pm = E.AdapterSwitcher(model).attach(adapter)
    encoded, pad = encode_pairs(tok, PAIRS), _pad_token_id(pm, tok)
    score = lambda m: score_encoded(m, encoded, pad, batch_size=4)  # noqa: E731
    state0, before = toggle_state(pm), score(pm)

    reference = plain_peft(base, adapter)
    np.testing.assert_allclose(before, score(reference), rtol=1e-5, atol=1e-6)  # full = plain peft

    # head_only = the base model with the adapter's head weights loaded by hand
    head = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).eval()
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    with torch.no_grad():
        head.score.weight.copy_(saved["base_model.model.score.weight"])
    by = {v.name: v for v in AB.enumerate_variants(AB.lora_sites(pm, family), family, N_LAYERS, 2)}
    with AB.lora_disabled(pm, by["head_only"].off):
        np.testing.assert_allclose(score(pm), score(head), rtol=1e-5, atol=1e-6)

    # the others = a fresh copy whose switched-off modules have lora_B zeroed
    mha, mlp = MODULES[family]["mha"], MODULES[family]["mlp"]
    for name in ("layer-1", "band-0-1", f"proj-{mlp[0]}", "mha", "mlp", f"cell-2-{mha[-1]}", f"cell-0-{mlp[-1]}"):
        v = by[name]
        ref = copy.deepcopy(reference)
        with torch.no_grad():
            zeroed = 0
            for pname, p in ref.named_parameters():
                if ".lora_B." in pname and pname.split(".lora_B.")[0] in v.off:
                    p.zero_()
                    zeroed += 1
        assert zeroed == len(v.off) > 0
        with AB.lora_disabled(pm, v.off):
            got = score(pm)
        np.testing.assert_allclose(got, score(ref), rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.abs(got - before).max() > 1e-4, f"{name}: switching LoRA off changed nothing"

    # toggling restores exactly, also when scoring fails inside
    with pytest.raises(RuntimeError, match="boom"):
        with AB.lora_disabled(pm, by["mha"].off):
            assert toggle_state(pm) != state0
            raise RuntimeError("boom")
    assert toggle_state(pm) == state0
    np.testing.assert_array_equal(score(pm), before)
    E.check_active_adapter(pm, pm.active_adapter, adapter)  # head and LoRA weights untouched
    with pytest.raises(KeyError, match="not LoRA layers"):
        with AB.lora_disabled(pm, ["base_model.model.score"]):
            pass


# ----------------------------------------------------------------------------- sweep
def test_sweep_runs_aliases_resume_and_full_equals_evaluate(base3, tmp_path, monkeypatch):
    base = base3("llama")
    adapter = make_lora_adapter(base, tmp_path / "a", 9, "llama", "mha")
    files, passages = toy_files(tmp_path)
    datasets = {"toy": {"topics": files["topics"], "run": files["run"]}}
    out = tmp_path / "ablate"
    kw = dict(datasets=datasets, passages=passages, depth=4, band_size=2, cells=True, batch_size=3)
    info = AB.sweep(base, adapter, out_dir=out, **kw)
    names = {v["name"]: v["same_as"] for v in info["variants"]}
    assert info["family"] == "llama" and names == expected_names("llama", "mha", N_LAYERS, 2, True)
    assert sorted(p.name for p in (out / "toy").glob("*.trec")) == sorted(f"{n}.trec" for n in names)

    runs = {n: read_run(out / "toy" / f"{n}.trec") for n in names}
    for n, same in names.items():
        if same:
            assert runs[n] == runs[same]  # scored once, reported under both names
    assert runs["mha"] == runs["head_only"] and runs["layer-0"] != runs["full"]
    keys, _ = candidates(read_run(files["run"]), {"q1": "", "q2": "", "q3": ""}, passages, 4)
    assert sorted((q, d) for q in runs["full"] for d in runs["full"][q]) == sorted(keys)

    # full = plain checkpoint evaluation of the same adapter
    E.evaluate_checkpoints(base, [("c", 1, adapter)], {"toy": {**files, "rel_level": 2}}, passages, depth=4,
                           metrics=None, runs_dir=tmp_path / "eval", out_tsv=None, batch_size=3)
    ev = read_run(tmp_path / "eval/toy/step-1.trec")
    assert ev.keys() == runs["full"].keys()
    for q in ev:
        np.testing.assert_allclose([runs["full"][q][d] for d in ev[q]], list(ev[q].values()), rtol=1e-6, atol=1e-7)

    # resume: every run reusable -> nothing scored, files untouched
    before = {p.name: p.read_bytes() for p in (out / "toy").iterdir()}
    calls = []
    real = AB.score_encoded

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(AB, "score_encoded", counting)
    AB.sweep(base, adapter, out_dir=out, **kw)
    assert calls == [] and {p.name: p.read_bytes() for p in (out / "toy").iterdir()} == before
    # bands of 1: band-i-i become aliases of layer-i; layer-2 already had band-2-2 -> reused
    (out / "toy" / "stale-variant.trec").write_text("x")
    AB.sweep(base, adapter, out_dir=out, **{**kw, "band_size": 1})
    assert len(calls) == 2  # layer-0, layer-1 (their new aliases band-0-0, band-1-1 were missing)
    left = {p.name for p in (out / "toy").glob("*.trec")}
    assert "band-0-1.trec" not in left and "stale-variant.trec" not in left and "band-1-1.trec" in left
    # another adapter under the same directory is recomputed
    other = make_lora_adapter(base, tmp_path / "b", 10, "llama", "mha")
    calls.clear()
    AB.sweep(base, other, out_dir=out, **{**kw, "cells": False})
    assert len(calls) == len([n for n, s in expected_names("llama", "mha", N_LAYERS, 2, False).items() if s is None])


# ----------------------------------------------------------------------------- stage drivers + CLI
def _raw_dir(tmp_path: Path, files: dict) -> Path:
    """A raw data directory laid out as the download stage writes it (sources.yaml's dest)."""
    raw = tmp_path / "raw"
    (raw / "trec-dl").mkdir(parents=True)
    shutil.copy(files["topics"], raw / "trec-dl/topics.dl19-passage.txt")
    shutil.copy(files["qrels"], raw / "trec-dl/qrels.dl19-passage.txt")
    return raw


def test_ablate_and_collect_cli(base3, tmp_path):
    from irrepro.cli import main

    base = base3("llama")
    adapters = tmp_path / "lora"
    make_lora_adapter(base, adapters / "checkpoint-50", 11, "llama", "mha")
    make_lora_adapter(base, adapters / "checkpoint-100", 12, "llama", "mha")
    files, passages = toy_files(tmp_path)
    raw = _raw_dir(tmp_path, files)
    bm25 = tmp_path / "bm25"
    bm25.mkdir()
    shutil.copy(files["run"], bm25 / "dl19.trec")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": d, "contents": t}) + "\n" for d, t in passages.items()))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ablate"].update(families=["llama"], ranks=[8], targets=["mha"], depth={"mini": 5, "paper": 5})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    common = ["--params", str(params_file), "--profile", "mini"]
    out = tmp_path / "ablate" / "llama-r8-mha"

    assert main(["ablate", *common, "--config", "llama-r8-mha", "--base", str(base), "--adapters", str(adapters),
                 "--raw", str(raw), "--runs", str(bm25), "--corpus", str(corpus), "--out", str(out),
                 "--log", str(tmp_path / "ablate.log")]) == 0
    rec = json.loads((out / "variants.json").read_text())
    assert (rec["config"], rec["step"], rec["family"]) == ("llama-r8-mha", 100, "llama")
    assert rec["adapter"] == str(adapters / "checkpoint-100")  # final = highest step
    assert {v["name"]: v["same_as"] for v in rec["variants"]} == expected_names("llama", "mha", N_LAYERS, 2, True)
    assert set(rec["variants"][0]) == {"name", "kind", "layers", "projections", "same_as"}
    assert len(read_run(out / "dl19" / "full.trec")["q1"]) == 5
    log_text = (tmp_path / "ablate.log").read_text()
    assert "pairs/s" in log_text and "variants" in log_text
    assert not list(tmp_path.joinpath("ablate").glob(".*tmp*"))  # atomic: no temp left

    assert main(["ablate-collect", *common, "--raw", str(raw), "--runs", str(bm25), "--ablate-runs",
                 str(tmp_path / "ablate"), "--out-tsv", str(tmp_path / "ablation.tsv"),
                 "--out-json", str(tmp_path / "ablation.json"), "--log", str(tmp_path / "collect.log")]) == 0
    with open(tmp_path / "ablation.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    metrics = params["evaluate"]["metrics"]["mini"]
    assert len(rows) == (len(rec["variants"]) + 1) * len(metrics)
    assert {(r["config"], r["family"], r["rank"], r["targets"], r["step"]) for r in rows} == {
        ("llama-r8-mha", "llama", "8", "mha", "100")}
    for r in rows:
        if r["variant"] == "full":
            assert float(r["delta_full"]) == 0.0
        if r["variant"] in ("head_only", "mha"):
            assert float(r["delta_head_only"]) == 0.0
    metric = params["ablate"]["metric"]
    assert json.loads((tmp_path / "ablation.json").read_text()) == {"llama-r8-mha": {"dl19": {
        v: round(float(next(r["value"] for r in rows if r["variant"] == v and r["metric"] == metric)), 4)
        for v in ("full", "head_only", "mha")}}}  # an MHA-only adapter has no mlp variant


def test_pick_checkpoint(tmp_path):
    for step in (50, 100):  # adapter directories (what checkpoints() accepts)
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
        (tmp_path / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"x")
    (tmp_path / "checkpoint-x").mkdir()
    assert S.pick_checkpoint(str(tmp_path), "final") == (100, str(tmp_path / "checkpoint-100"))
    assert S.pick_checkpoint(str(tmp_path), 50) == (50, str(tmp_path / "checkpoint-50"))
    with pytest.raises(FileNotFoundError, match=r"checkpoint-75.*saved steps: \[50, 100\]"):
        S.pick_checkpoint(str(tmp_path), 75)
    with pytest.raises(FileNotFoundError, match="no checkpoint-<step>"):
        S.pick_checkpoint(str(tmp_path / "checkpoint-x"), "final")
    spec = "hf:org/name@" + "a" * 40
    assert S.pick_checkpoint(spec, "final") == (0, spec)


# ----------------------------------------------------------------------------- collect on hand-made runs
def _write(path: Path, ranking: dict[str, list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_run({q: {d: float(10 - i) for i, d in enumerate(docs)} for q, docs in ranking.items()}, path, tag="x")


def test_collect_deltas_on_hand_made_runs(tmp_path):
    files = {"topics": tmp_path / "t.tsv", "qrels": tmp_path / "q.txt"}
    files["topics"].write_text("q1\tflea\nq2\tparis\n")
    files["qrels"].write_text("q1 0 d1 3\nq2 0 d2 2\nq2 0 d9 1\n")  # d9: below rel_level 2, not relevant
    raw = _raw_dir(tmp_path, files)
    _write(tmp_path / "bm25/dl19.trec", {"q1": ["d3", "d1", "d4"], "q2": ["d4", "d9", "d2"]})
    cfg = tmp_path / "ablate/llama-r8-mha"
    variants = [
        {"name": "full", "kind": "full", "layers": [], "projections": [], "same_as": None},
        {"name": "head_only", "kind": "head_only", "layers": [0, 1], "projections": ["q_proj", "v_proj"],
         "same_as": None},
        {"name": "layer-0", "kind": "layer", "layers": [0], "projections": ["q_proj", "v_proj"], "same_as": None},
        {"name": "mha", "kind": "group", "layers": [0, 1], "projections": ["q_proj", "v_proj"], "same_as": "head_only"},
    ]
    cfg.mkdir(parents=True)
    (cfg / "variants.json").write_text(json.dumps({"config": "llama-r8-mha", "step": 60, "adapter": "a",
                                                   "family": "llama", "variants": variants}))
    _write(cfg / "dl19/full.trec", {"q1": ["d1", "d3"], "q2": ["d2", "d4"]})       # rr 1, 1
    _write(cfg / "dl19/head_only.trec", {"q1": ["d3", "d4", "d1"], "q2": ["d4", "d2"]})  # rr 1/3, 1/2
    _write(cfg / "dl19/layer-0.trec", {"q1": ["d3", "d1"], "q2": ["d2", "d4"]})    # rr 1/2, 1
    P = {"ablate": {"families": ["llama"], "ranks": [8], "targets": ["mha"], "datasets": ["dl19"], "depth": 2,
                    "metric": "mrr@10"},
         "evaluate": {"metrics": ["mrr@10", "recall@2"], "rel_level": {"dl19": 2}}}
    out_tsv, out_json = tmp_path / "a.tsv", tmp_path / "a.json"
    S.ablate_collect(P, str(raw), str(tmp_path / "bm25"), str(tmp_path / "ablate"), str(out_tsv), str(out_json))

    lines = out_tsv.read_text().splitlines()
    assert lines[0].split("\t") == list(S.TSV_COLUMNS)
    got = {(r["variant"], r["metric"]): r for r in csv.DictReader(lines, delimiter="\t")}
    # by hand: value, delta vs full, delta vs head_only
    expect = {
        ("full", "mrr@10"): (1.0, 0.0, 1 - 5 / 12), ("full", "recall@2"): (1.0, 0.0, 0.5),
        ("head_only", "mrr@10"): (5 / 12, 5 / 12 - 1, 0.0), ("head_only", "recall@2"): (0.5, -0.5, 0.0),
        ("layer-0", "mrr@10"): (0.75, -0.25, 0.75 - 5 / 12), ("layer-0", "recall@2"): (1.0, 0.0, 0.5),
        ("mha", "mrr@10"): (5 / 12, 5 / 12 - 1, 0.0), ("mha", "recall@2"): (0.5, -0.5, 0.0),
        # BM25 cut at depth 2: q1 d3,d1 -> 1/2; q2 d4,d9 -> 0
        ("bm25", "mrr@10"): (0.25, -0.75, 0.25 - 5 / 12), ("bm25", "recall@2"): (0.5, -0.5, 0.0),
    }
    assert set(got) == set(expect) and len(lines) == 1 + len(expect)
    for key, (value, d_full, d_head) in expect.items():
        r = got[key]
        assert (float(r["value"]), float(r["delta_full"]), float(r["delta_head_only"])) == pytest.approx(
            (value, d_full, d_head), abs=1e-6), key
        assert (r["config"], r["family"], r["rank"], r["targets"], r["step"], r["dataset"]) == (
            "llama-r8-mha", "llama", "8", "mha", "60", "dl19")
    assert (got[("layer-0", "mrr@10")]["layers"], got[("layer-0", "mrr@10")]["projections"]) == ("0", "q_proj,v_proj")
    assert (got[("full", "mrr@10")]["layers"], got[("bm25", "mrr@10")]["kind"]) == ("-", "first_stage")
    assert json.loads(out_json.read_text()) == {
        "llama-r8-mha": {"dl19": {"full": 1.0, "head_only": 0.4167, "mha": 0.4167}}}

    # bad inputs name the file
    args = (str(raw), str(tmp_path / "bm25"), str(tmp_path / "ablate"), str(tmp_path / "b.tsv"),
            str(tmp_path / "b.json"))
    with pytest.raises(FileNotFoundError, match="llama-r8-mlp"):
        S.ablate_collect({**P, "ablate": {**P["ablate"], "targets": ["mha", "mlp"]}}, *args)
    (cfg / "dl19/layer-0.trec").unlink()
    with pytest.raises(FileNotFoundError, match="layer-0.trec"):
        S.ablate_collect(P, *args)
    (cfg / "variants.json").write_text(json.dumps({"config": "llama-r8-mha", "step": 60, "family": "mistral",
                                                   "variants": variants}))
    with pytest.raises(ValueError, match=r"variants\.json.*mistral"):
        S.ablate_collect(P, *args)
    assert not (tmp_path / "b.tsv").exists()
