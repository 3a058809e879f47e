"""The mini "pretrained" bases: tokenizer, real-class models, warm-up, determinism, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from irrepro import tiny  # noqa: E402

# Tiny sizes: a few seconds for all three families.
SIZES = dict(hidden=32, layers=2, heads=4, intermediate=64, max_positions=64)
WARMUP = dict(warmup_steps=40, seq_len=32, batch_size=4, lr=1e-2, seed=0, log_every=10)

REAL_CLASSES = {
    "llama": ("LlamaForCausalLM", "LlamaForSequenceClassification"),
    "mistral": ("MistralForCausalLM", "MistralForSequenceClassification"),
    "pythia": ("GPTNeoXForCausalLM", "GPTNeoXForSequenceClassification"),
}

NON_ASCII = "Ã‚Â mojibake, café naïve résumé Zürich Ångström — “quotes” 日本語 ½°C"

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "how long is the life cycle of a flea",
    "a flea can live up to a year depending on its hosts",
    "what is the capital of france? paris is the capital",
    "machine learning models rank passages for queries",
    "the café in zürich serves a naïve résumé of crêpes",
    "Ã‚Â appears when utf-8 text is decoded twice",
    "rivers flow downhill to the sea and lakes",
]


def _write_corpus(path: Path, n: int = 160) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            text = " ".join(SENTENCES[(i + k) % len(SENTENCES)] for k in range(1 + i % 3))
            fh.write(json.dumps({"id": str(i), "contents": text}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    tiny.build_tokenizer(corpus, out, vocab_size=300)
    return out


@pytest.fixture(scope="module")
def bases(tmp_path_factory, tokenizer_dir, corpus):
    """family -> (out_dir, summary), each built once for the module."""
    built = {}
    for family in tiny.FAMILIES:
        out = tmp_path_factory.mktemp(f"base-{family}") / "base"
        built[family] = (out, tiny.build_base(family, tokenizer_dir, corpus, out, **SIZES, **WARMUP))
    return built


def _train_loss(model, tokenizer, corpus) -> float:
    chunks, _ = tiny.pack_chunks(tokenizer, tiny.iter_corpus_texts(corpus), WARMUP["seq_len"])
    model.eval()
    with torch.no_grad():
        return model(input_ids=chunks, labels=chunks).loss.item()


# --------------------------------------------------------------------------- corpus + tokenizer


def test_iter_corpus_texts(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(
        '{"id": "1", "contents": "first passage"}\n'
        "\n"
        '{"id": "2", "contents": "second", "title": "T"}\n'
        '{"id": "3", "contents": "caf\\u00e9 \\u00c3\\u201a\\u00c2"}\n',
        encoding="utf-8",
    )
    assert list(tiny.iter_corpus_texts(p)) == ["first passage", "T second", "café Ã‚Â"]
    p.write_text('{"id": "1", "contents": "ok"}\n{"id": "2", "text": "no contents"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"c\.jsonl:2"):
        list(tiny.iter_corpus_texts(p))


def test_build_tokenizer_is_deterministic(tmp_path, corpus, tokenizer_dir):
    again = tmp_path / "again"
    summary = tiny.build_tokenizer(corpus, again, vocab_size=300)
    assert (again / "tokenizer.json").read_bytes() == (tokenizer_dir / "tokenizer.json").read_bytes()
    from irrepro.utils import sha256_file

    assert summary["tokenizer_json_sha256"] == sha256_file(again / "tokenizer.json")
    assert summary["passages"] == 160 and summary["vocab_size"] == 300


def test_tokenizer_pad_differs_from_eos_and_round_trips_non_ascii(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert tok.pad_token == "<pad>" and tok.eos_token == "</s>" and tok.bos_token == "<s>"
    assert tok.pad_token_id != tok.eos_token_id
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id}) == 4
    for text in (NON_ASCII, "query: how long is the life cycle of a flea", "  leading and trailing  "):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text
    # No special tokens are added implicitly (rerank.inputs adds bos/eos itself).
    assert tok("hello", add_special_tokens=True)["input_ids"] == tok("hello", add_special_tokens=False)["input_ids"]


def test_empty_corpus_rejected(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty corpus"):
        tiny.build_tokenizer(empty, tmp_path / "tok", vocab_size=300)
    assert not (tmp_path / "tok").exists()


# --------------------------------------------------------------------------- bases


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_base_loads_as_the_real_classes(bases, family):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    out, summary = bases[family]
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    lm_cls, seq_cls = (getattr(transformers, name) for name in REAL_CLASSES[family])

    lm = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(lm, lm_cls) and type(lm).__name__ == REAL_CLASSES[family][0]
    clf = AutoModelForSequenceClassification.from_pretrained(out, num_labels=1)
    assert isinstance(clf, seq_cls) and type(clf).__name__ == REAL_CLASSES[family][1]

    tok = AutoTokenizer.from_pretrained(str(out))
    assert clf.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    assert clf.config.hidden_size == SIZES["hidden"] and clf.config.num_hidden_layers == SIZES["layers"]
    batch = tok.pad({"input_ids": [[1, 5, 6, 7, 2], [1, 8, 2]]}, return_tensors="pt")
    with torch.no_grad():
        assert clf(**batch).logits.shape == (2, 1)

    w = json.loads((out / "warmup.json").read_text())
    # the file holds results only; the build time is returned (and in the run sidecar), not saved
    assert "seconds" not in w and w == {k: v for k, v in summary.items() if k != "seconds"} and summary["seconds"] > 0
    assert w["family"] == family and w["model_class"] == REAL_CLASSES[family][0]
    assert w["sizes"] == SIZES and w["warmup"]["steps"] == WARMUP["warmup_steps"]
    assert [p["step"] for p in w["curve"]] == [0, 10, 20, 30, 40]


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_warmup_lowers_lm_loss_on_training_text(bases, corpus, tokenizer_dir, family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, summary = bases[family]
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    before = _train_loss(tiny.init_model(family, tok, seed=WARMUP["seed"], **SIZES), tok, corpus)
    after = _train_loss(AutoModelForCausalLM.from_pretrained(out), tok, corpus)
    assert after < before - 1.0, (before, after)
    assert summary["final_loss"] < summary["initial_loss"] - 1.0
    assert summary["initial_loss"] == pytest.approx(before, abs=0.2)  # random init: ~ln(vocab)


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_same_seed_gives_identical_weights(tmp_path, bases, corpus, tokenizer_dir, family):
    from safetensors.torch import load_file

    first, summary = bases[family]
    again = tmp_path / "again"
    assert tiny.build_base(family, tokenizer_dir, corpus, again, **SIZES, **WARMUP)["final_loss"] == summary["final_loss"]
    a, b = load_file(first / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (first / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()

    other = tmp_path / "other-seed"
    tiny.build_base(family, tokenizer_dir, corpus, other, **SIZES, **{**WARMUP, "seed": 1, "warmup_steps": 2})
    c = load_file(other / "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_progress_is_logged_with_counts(tmp_path, corpus, tokenizer_dir, caplog):
    caplog.set_level("INFO", logger="irrepro.tiny")
    tiny.build_base("llama", tokenizer_dir, corpus, tmp_path / "b", **SIZES, **{**WARMUP, "warmup_steps": 4, "log_every": 2})
    text = caplog.text
    assert "160 passages" in text and "step 2/4" in text and "step 4/4" in text


def test_unknown_family_is_rejected_listing_the_known_ones(tmp_path, corpus, tokenizer_dir):
    out = tmp_path / "gpt2"
    with pytest.raises(ValueError, match="unknown model family 'gpt2'") as e:
        tiny.build_base("gpt2", tokenizer_dir, corpus, out, **SIZES, **WARMUP)
    assert all(f in str(e.value) for f in tiny.FAMILIES)
    assert not out.exists()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    for fn in (tiny.tiny_config, tiny.init_model):
        with pytest.raises(ValueError, match="known: \\['llama', 'mistral', 'pythia'\\]"):
            fn("bert", tok)


def test_bad_sizes_are_rejected(tmp_path, corpus, tokenizer_dir):
    with pytest.raises(ValueError, match="exceeds max_positions"):
        tiny.build_base("llama", tokenizer_dir, corpus, tmp_path / "b", **{**SIZES, "max_positions": 16}, **WARMUP)
    with pytest.raises(ValueError, match="not divisible"):
        tiny.build_base("llama", tokenizer_dir, corpus, tmp_path / "b", **{**SIZES, "heads": 5}, **WARMUP)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("where", ["training", "saving"])
def test_crash_during_build_leaves_no_out_dir(tmp_path, corpus, tokenizer_dir, monkeypatch, where):
    if where == "training":
        def boom(*args, **kwargs):
            raise RuntimeError("simulated crash in the optimiser")

        monkeypatch.setattr(torch.optim.AdamW, "step", boom)
    else:
        real_save = transformers.PreTrainedModel.save_pretrained

        def boom(self, save_directory, *args, **kwargs):
            real_save(self, save_directory, *args, **kwargs)  # half the output is on disk...
            raise RuntimeError("simulated crash while saving")

        monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", boom)

    out = tmp_path / "base"
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny.build_base("pythia", tokenizer_dir, corpus, out, **SIZES, **{**WARMUP, "warmup_steps": 3})
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind either


def test_crash_keeps_a_previous_out_dir_intact(tmp_path, corpus, tokenizer_dir, monkeypatch):
    out = tmp_path / "base"
    out.mkdir()
    (out / "marker").write_text("previous build")

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(tiny, "_lm_loss", boom)
    with pytest.raises(RuntimeError):
        tiny.build_base("mistral", tokenizer_dir, corpus, out, **SIZES, **WARMUP)
    assert sorted(p.name for p in out.iterdir()) == ["marker"]


def test_default_sizes_are_consistent():
    d = tiny.DEFAULT_SIZES
    assert d["hidden"] % d["heads"] == 0
    assert d["seq_len"] <= d["max_positions"]
    assert d["max_positions"] >= 1 + 32 + 164 + 1  # the reranker's longest input fits
    import inspect

    params = inspect.signature(tiny.build_base).parameters
    assert all(k in params for k in d if k != "vocab_size")
    assert "vocab_size" in inspect.signature(tiny.build_tokenizer).parameters
