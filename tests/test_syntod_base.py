"""The SynTOD TOD base (``irrepro syntod-base``): the mini base built from the real seed
catalogs and the graphs' vocabulary -- corpus content (never a test conversation), a
tokenizer that writes the SynTOD markers and intent names compactly, a real llama class with
``syntod.base.max_positions`` positions -- and the paper path's pinned hub pointer."""

import json
import re
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from irrepro.cli import main  # noqa: E402
from irrepro.params import load_params  # noqa: E402
from irrepro.syntod import stages  # noqa: E402
from irrepro.syntod.graph import GRAPH_DIR  # noqa: E402

WARMUP_STEPS = 20
SEEDS = {"recipe_seed_test_set.jsonl", "ecommerce_product_catalog_test.jsonl"}
PUBLISHED = ("recipe_test_gemini_v3.jsonl", "recipe_test_llama_v3.jsonl", "ecommerce_test_gemini_v3.jsonl",
             "ecommerce_test_llama_v3.jsonl")
MARKERS = ("### ASSISTANT:", "### HUMAN:", "### RESULTS:", "### RECIPE:", "### SUGGESTIONS:")


def _graph_names(domain: str) -> tuple[list[str], set[str]]:
    """Intent and slot names of a shipped graph, read from its YAML (not via irrepro)."""
    raw = yaml.safe_load((GRAPH_DIR / f"{domain}.yaml").read_text())
    slots = {s for spec in raw["intents"].values() for s in ((spec or {}).get("slots") or {})}
    slots |= {s for node in raw["nodes"].values() for s in ((node.get("annotation") or {}).get("slots") or {})}
    return list(raw["intents"]), slots


@pytest.fixture(scope="module")
def built(tmp_path_factory, shared_data, root):
    """The mini base built once through the CLI, with a params copy whose warm-up is short."""
    tmp = tmp_path_factory.mktemp("syntod-base")
    raw = tmp / "raw"
    (raw / "syntod").mkdir(parents=True)
    for name in SEEDS:  # only the seeds: the stage must not need (or see) the test conversations
        (raw / "syntod" / name).symlink_to(shared_data / "syntod" / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["syntod"]["base"]["warmup_steps"] = {"mini": WARMUP_STEPS, "paper": 0}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    P = load_params(tmp / "params.yaml", "mini")
    out = tmp / "models" / "syntod_base"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the cores are shared: more threads only contend
    try:
        code = main(["syntod-base", "--params", str(tmp / "params.yaml"), "--profile", "mini", "--raw", str(raw),
                     "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return {"P": P, "out": out, "raw": raw, "tmp": tmp}


def _corpus(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]


def test_model_is_a_real_llama_with_the_syntod_positions(built):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    P, out = built["P"], built["out"]
    B, T = P["syntod"]["base"], P["tiny"]
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert isinstance(model, LlamaForCausalLM) and B["family"] == "llama"
    cfg = model.config
    assert cfg.max_position_embeddings == B["max_positions"] == 1024
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (T["hidden"], T["layers"], T["heads"])
    assert cfg.vocab_size == len(tok) <= T["vocab_size"] and tok.model_max_length == B["max_positions"]
    summary = json.loads((out / "warmup.json").read_text())
    assert summary["warmup"]["steps"] == WARMUP_STEPS and summary["final_loss"] < summary["initial_loss"]
    # every position is usable: a full-length input runs and gives finite logits
    ids = torch.randint(5, len(tok), (1, B["max_positions"]))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, B["max_positions"], len(tok)) and torch.isfinite(logits).all()
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temporary left behind


def test_tokenizer_writes_markers_and_intents_compactly(built, shared_data):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built["out"])

    def n(text):
        return len(tok(text, add_special_tokens=False)["input_ids"])

    for marker in MARKERS:
        assert n(marker) <= 4 and n(" " + marker) <= 3, (marker, tok.tokenize(" " + marker))
    assert n(' ## {"intent": "') <= 5
    for domain in ("cooking", "ecommerce"):
        intents, slots = _graph_names(domain)
        for name in intents + sorted(slots):
            # every word of a name is one token; the byte-level pre-tokenizer (irrepro.tiny,
            # GPT-2 rules) splits at "_", so a name of k words takes 2k - 1 tokens (<= 5 here)
            words = name.split("_")
            assert n(name) == 2 * len(words) - 1 <= 5, (name, tok.tokenize(name))
            assert n(f'"{name}"') <= n(name) + 2, name  # as written in an annotation
    # byte-level: lossless on the published text although it was never seen
    text = json.loads((shared_data / "syntod" / PUBLISHED[1]).read_text().splitlines()[0])["text"]
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_corpus_is_catalogs_and_vocabulary_only(built, shared_data, tmp_path):
    out, P = built["out"], built["P"]
    docs = _corpus(out)
    text = "\n".join(d["contents"] for d in docs)
    recipes = [json.loads(x) for x in (shared_data / "syntod" / "recipe_seed_test_set.jsonl").read_text().splitlines()]
    products = [json.loads(x) for x in
                (shared_data / "syntod" / "ecommerce_product_catalog_test.jsonl").read_text().splitlines()]
    copies = stages.VOCAB_COPIES
    # only the training items of the item split (syntod_items' train.jsonl), never a test item
    from irrepro.syntod.items import split_domain

    train = {d: {str(r["id"]) for r in split_domain(P, d, built["raw"])[0]} for d in ("cooking", "ecommerce")}
    assert 0 < len(train["cooking"]) < len(recipes) and 0 < len(train["ecommerce"]) < len(products)
    assert len(docs) == len(train["cooking"]) + len(train["ecommerce"]) + 2 * copies
    assert json.loads((out / "corpus.json").read_text())["documents"] == {
        "cooking:item": len(train["cooking"]), "cooking:vocabulary": copies,
        "ecommerce:item": len(train["ecommerce"]), "ecommerce:vocabulary": copies}
    item_ids = {d["id"] for d in docs}
    for r in recipes:
        seen = f"cooking:item:{r['id']}" in item_ids
        assert seen == (str(r["id"]) in train["cooking"])
        if seen:
            assert r["title"] in text and r["steps"][-1]["text"] in text
    held_out = [r for r in recipes if str(r["id"]) not in train["cooking"]]
    assert not any(r["steps"][-1]["text"] in text for r in held_out if len(r["steps"][-1]["text"]) > 40)
    for p in products:
        if f"ecommerce:item:{p.get('asin') or p.get('id')}" in item_ids:
            assert p["title"] in text
    # the graphs' vocabulary: both headers, every intent as an annotation, every turn marker
    assert "helps with recipes, allowed user intents are; search_recipe, " in text
    assert "helps with shopping, allowed user intents are; suggest_product, show_results, " in text  # as published
    annotations = [json.JSONDecoder().raw_decode(text, m.end() - 1)[0] for m in re.finditer(r"## \{", text)]
    for domain in ("cooking", "ecommerce"):
        intents, slots = _graph_names(domain)
        assert set(intents) <= {a.get("intent") for a in annotations}
        assert slots <= {k for a in annotations for k in a}
    for marker in MARKERS:
        assert text.count(marker) >= copies
    # no conversation at all: a human turn is only an annotation skeleton, never an utterance ...
    assert re.findall(r"### HUMAN: (?!## \{)", text) == []
    # ... and no utterance of the published test conversations (their assistant turns quote
    # recipe steps verbatim, so those are catalog text: only what users say is checked)
    for name in PUBLISHED:
        convs = [json.loads(x)["text"] for x in (shared_data / "syntod" / name).read_text().splitlines()[:20]]
        utterances = [u.strip() for c in convs for u in re.findall(r"### HUMAN: (.*?)(?= ## \{| ###|$)", c)
                      if len(u.strip()) > 30]
        assert len(utterances) > 50, name
        assert [u for u in utterances if u in text] == [], name
    assert "Maruna" not in text  # the published greetings' bot names
    # the same raw data and split give the same corpus
    from irrepro.syntod.items import write_records

    catalogs = {}
    for d in ("cooking", "ecommerce"):
        catalogs[d] = tmp_path / f"{d}-train.jsonl"
        write_records(split_domain(P, d, built["raw"])[0], catalogs[d])
    assert stages.base_corpus(built["raw"], seed=P["tiny"]["seed"], catalogs=catalogs) == docs


def test_paper_base_is_a_pinned_hub_pointer(monkeypatch, tmp_path):
    import huggingface_hub

    from irrepro.study1.bases import resolve_base

    calls = []

    def fake_snapshot_download(repo_id, revision=None, token=None):
        calls.append((repo_id, revision))
        return str(tmp_path / "hub" / ("c" * 40))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    P = {"syntod": {"base": {"family": "llama", "id": "meta-llama/Llama-2-7b-hf", "revision": None,
                             "max_positions": 1024, "warmup_steps": 0}}}
    assert stages.base_stage(P, str(tmp_path / "no-raw-needed"), str(tmp_path / "base")) == {
        "id": "meta-llama/Llama-2-7b-hf", "revision": "c" * 40}
    assert json.loads((tmp_path / "base" / "BASE.json").read_text()) == {"id": "meta-llama/Llama-2-7b-hf",
                                                                         "revision": "c" * 40}
    resolve_base(tmp_path / "base")
    assert calls == [("meta-llama/Llama-2-7b-hf", None), ("meta-llama/Llama-2-7b-hf", "c" * 40)]


def test_bad_params_and_inputs_are_errors(tmp_path, built):
    with pytest.raises(ValueError, match="syntod.base is missing"):
        stages.base_stage({"syntod": {}}, "raw", str(tmp_path / "b"))
    with pytest.raises(ValueError, match="syntod.base lacks max_positions"):
        stages.base_stage({"syntod": {"base": {"family": "llama", "id": "tiny", "revision": None,
                                               "warmup_steps": 1}}}, "raw", str(tmp_path / "b"))
    P = {**built["P"], "syntod": {**built["P"]["syntod"], "base": {**built["P"]["syntod"]["base"], "family": "gpt2"}}}
    with pytest.raises(ValueError, match="syntod.base.family must be one of"):
        stages.base_stage(P, str(built["raw"]), str(tmp_path / "b"))
    empty = tmp_path / "empty-raw"
    empty.mkdir()
    code = main(["syntod-base", "--params", str(built["tmp"] / "params.yaml"), "--profile", "mini", "--raw", str(empty),
                 "--out", str(tmp_path / "b")])
    assert code == 2 and not (tmp_path / "b").exists()
