"""Golden reranker inputs with the real Llama 3 and Mistral-7B-v0.1 tokenizers.

The pipeline (training collator and scoring batches) must feed the model exactly the ids
the authors' code would: one string ``query:  {q} document:  {title} {p}``, the tokenizer's
own BOS, joint right truncation to 32 + 164 = 196 tokens, no EOS, right padding to a
multiple of 16 with the pad id of the authors' rule (Mistral: unk 0; Llama 3: eos 128001).

Expected ids come from an independent route: ``tiktoken`` directly for Llama 3 (BOS and
truncation by hand) and ``sentencepiece`` directly for Mistral. The tokenizer files are the
ones PyPI ships in ``llama-models`` (``llama_models/llama3/tokenizer.model``) and
``mistral-common`` (``mistral_common/data/tokenizer.model.v1``); the Hugging Face tokenizers
are built from them (tiktoken BPE -> ``TikTokenConverter`` with Llama 3.1's special tokens;
the SentencePiece model -> ``LlamaTokenizer``).

Measured finding pinned here: Hugging Face's BPE and SentencePiece's own BPE split a run
of exactly two spaces differently (``"query:  what"``: HF ``▁▁ | what``, SentencePiece
``▁ | ▁what``); the authors' format has such runs after ``query:`` and before a title. The
authors ran the Hugging Face tokenizer, so that is what the pipeline must (and does) feed;
the Mistral check therefore compares with SentencePiece segment by segment and allows a
difference only inside segments that hold a run of two or more spaces.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
sentencepiece = pytest.importorskip("sentencepiece")
tiktoken = pytest.importorskip("tiktoken")

from irrepro.rerank.data import GroupCollator, GroupDataset  # noqa: E402
from irrepro.rerank.evaluate import load_base  # noqa: E402
from irrepro.rerank.score import score_pairs  # noqa: E402

QMAX, PMAX = 32, 164
MAX_LEN = QMAX + PMAX  # the authors' rerank_max_len

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
    "<|eot_id|>", "<|python_tag|>",
]
LLAMA3_SPECIALS += [f"<|reserved_special_token_{i}|>" for i in range(2, 2 + 256 - len(LLAMA3_SPECIALS))]


def _package_file(package: str, rel: str) -> Path:
    """A data file of an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"PyPI package {package.replace('_', '-')} is not installed (it ships the real tokenizer file)")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    assert path.is_file(), f"{path} missing from the installed {package}"
    return path


# ----------------------------------------------------------------------------- real DL19 pairs
@pytest.fixture(scope="module")
def dl19_pairs(shared_data):
    """(query, passage, title, expected string) for four real DL19 pairs: plain, a title with
    '-', MS MARCO's placeholder title '-', and the longest DL19 passage (truncated)."""
    topics = dict(line.rstrip("\n").split("\t", 1)
                  for line in (shared_data / "trec-dl/topics.dl19-passage.txt").read_text(encoding="utf-8").splitlines())
    hits = json.loads((shared_data / "bm25-top100/retrieve_results_dl19.json").read_text(encoding="utf-8"))
    text = {h["docid"]: (str(h["qid"]), h["content"]) for e in hits for h in e["hits"]}
    longest = max(text, key=lambda d: len(text[d][1]))

    def pair(docid, title):
        qid, passage = text[docid]
        return topics[qid], passage, title

    pairs = [
        pair("5611210", ""),                                   # "how long is life cycle of flea"
        pair("5611210", "Flea life-cycle - Orkin"),            # a title with '-'
        pair(sorted(text)[7], "-"),                            # the placeholder title
        pair(longest, "A-Z"),                                  # 1,110 characters: truncated
    ]
    out = []
    for q, p, t in pairs:
        cleaned = t.replace("-", " ").strip()  # the authors' clean-up, written out
        expected = ("query:  " + q + " document:  " + cleaned + " " + p).strip()
        out.append((q, p, t, expected))
    assert "document:   " in out[0][3] and "document:  Flea life cycle   Orkin " in out[1][3]
    return out


# ----------------------------------------------------------------------------- tokenizers + tiny models
def _save_model(tok, model_cls, config_cls, out: Path, **cfg) -> Path:
    torch.manual_seed(0)
    config = config_cls(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, max_position_embeddings=256, num_labels=1, **cfg)
    model_cls(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    """(base dir, independent encoder): HF tokenizer converted from the tiktoken file + a tiny
    Llama with Llama 3.1's vocabulary and special ids (no pad id in the config, as the real one)."""
    from tiktoken.load import load_tiktoken_bpe
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = _package_file("llama_models", "llama3/tokenizer.model")
    ranks = load_tiktoken_bpe(str(path))
    specials = {t: len(ranks) + i for i, t in enumerate(LLAMA3_SPECIALS)}
    assert specials["<|begin_of_text|>"] == 128000 and specials["<|end_of_text|>"] == 128001
    backend = TikTokenConverter(vocab_file=str(path), pattern=LLAMA3_PATTERN,
                                extra_special_tokens=LLAMA3_SPECIALS).converted()
    backend.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 128000)]),
    ])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    base = _save_model(tok, LlamaForSequenceClassification, LlamaConfig, tmp_path_factory.mktemp("llama3"),
                       vocab_size=128256, bos_token_id=128000, eos_token_id=128001)
    enc = tiktoken.Encoding(name="llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)

    def expected(text: str) -> list[int]:
        return ([128000] + enc.encode(text, disallowed_special=()))[:MAX_LEN]  # BOS by hand, then truncate

    return base, expected


@pytest.fixture(scope="module")
def mistral(tmp_path_factory):
    """(base dir, sentencepiece processor): HF tokenizer from Mistral-7B-v0.1's SentencePiece
    model + a tiny Mistral (vocabulary 32000, bos 1, eos 2, no pad id in the config)."""
    from transformers import LlamaTokenizer, MistralConfig, MistralForSequenceClassification

    path = _package_file("mistral_common", "data/tokenizer.model.v1")
    src = tmp_path_factory.mktemp("mistral-spm")
    shutil.copy(path, src / "tokenizer.model")
    tok = LlamaTokenizer.from_pretrained(str(src), add_bos_token=True, add_eos_token=False)
    base = _save_model(tok, MistralForSequenceClassification, MistralConfig, tmp_path_factory.mktemp("mistral"),
                       vocab_size=32000, bos_token_id=1, eos_token_id=2)
    return base, sentencepiece.SentencePieceProcessor(model_file=str(path))


def _segments(pieces_a: list[str], pieces_b: list[str]):
    """Split two tokenisations of one string at their common token boundaries:
    ``[(slice_a, slice_b, text)]``."""
    def ends(pieces):
        out, pos = [], 0
        for p in pieces:
            pos += len(p)
            out.append(pos)
        return out

    ea, eb = ends(pieces_a), ends(pieces_b)
    assert ea[-1] == eb[-1], "the two tokenisations do not cover the same text"
    common = sorted(set(ea) & set(eb))
    segs, ia, ib = [], 0, 0
    for c in common:
        ja, jb = ea.index(c) + 1, eb.index(c) + 1
        segs.append((slice(ia, ja), slice(ib, jb), "".join(pieces_a[ia:ja])))
        ia, ib = ja, jb
    return segs


def _check_mistral_ids(ids: list[int], text: str, sp) -> int:
    """Assert ``ids`` are BOS + the SentencePiece tokenisation of ``text`` (truncated to
    196), up to the two-space split; return how many segments differ."""
    assert ids[0] == sp.bos_id() == 1 and sp.eos_id() not in ids
    body = ids[1:]
    pieces = [sp.id_to_piece(i) for i in body]
    ref = sp.encode(text)
    ref_pieces = [sp.id_to_piece(i) for i in ref]
    # the ids spell the string exactly (SentencePiece's own pieces, its dummy-prefix '▁')
    spelled = "".join(pieces).replace("▁", " ")
    assert (" " + text).startswith(spelled)
    if len(ids) < MAX_LEN:
        assert spelled == " " + text
    else:
        assert len(ids) == MAX_LEN
    # compare with SentencePiece over the same stretch of text
    n_ref, total = 0, 0
    while total < len("".join(pieces)):
        total += len(ref_pieces[n_ref])
        n_ref += 1
    assert total == len("".join(pieces)), "truncation did not stop at a common token boundary"
    differing = 0
    for sa, sb, seg in _segments(pieces, ref_pieces[:n_ref]):
        if body[sa] != ref[:n_ref][sb]:
            assert "▁▁" in seg, f"ids differ from SentencePiece outside a run of spaces: {seg!r}"
            differing += 1
    return differing


# ----------------------------------------------------------------------------- helpers on our side
def _collated_rows(tok, pairs):
    """The training collator's batch for one record per pair (group size 1: the positive)."""
    records = [{"query_id": str(i), "query": q, "positive_passages": [{"docid": str(i), "title": t, "text": p}],
                "negative_passages": []} for i, (q, p, t, _) in enumerate(pairs)]
    ds = GroupDataset(records)
    return GroupCollator(tok, group_size=1, qmax=QMAX, pmax=PMAX)([ds[i] for i in range(len(ds))])


def _scoring_batches(model, tok, pairs):
    """Scores and the batches the scoring path actually feeds the model (a forward hook)."""
    seen = []

    def hook(module, args, kwargs):
        seen.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone()))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        scores = score_pairs(model, tok, [(q, {"text": p, "title": t}) for q, p, t, _ in pairs],
                             batch_size=2, qmax=QMAX, pmax=PMAX, dtype="float32")
    finally:
        handle.remove()
    return scores, seen


def _unpad(ids_row, mask_row) -> list[int]:
    n = int(mask_row.sum())
    assert mask_row[:n].all() and not mask_row[n:].any(), "mask is not a right-padding mask"
    return ids_row[:n].tolist()


def _check_padding(ids, mask, pad_id):
    width = ids.shape[1]
    lengths = mask.sum(dim=1)
    assert width % 16 == 0 and width == -(-int(lengths.max()) // 16) * 16
    assert (ids[mask == 0] == pad_id).all()


def _check_collated_rows(tok, pairs, pad_id) -> list[list[int]]:
    """The collator's batch is right-padded with ``pad_id`` to a multiple of 16; its unpadded rows."""
    batch = _collated_rows(tok, pairs)
    _check_padding(batch["input_ids"], batch["attention_mask"], pad_id)
    return [_unpad(i, m) for i, m in zip(batch["input_ids"], batch["attention_mask"])]


def _check_scored_as_alone(model, tok, pairs, rows, pad_id):
    """The scoring path feeds exactly ``rows`` (padded like the collator's) and each padded row
    scores as the unpadded row alone: the score is read at the last real token. Returns the
    batches fed and the scores alone."""
    scores, seen = _scoring_batches(model, tok, pairs)
    fed = []
    for ids, mask in seen:
        _check_padding(ids, mask, pad_id)
        fed += [_unpad(i, m) for i, m in zip(ids, mask)]
    assert sorted(fed) == sorted(rows)
    with torch.inference_mode():
        alone = [model(input_ids=torch.tensor([r])).logits[0, 0].item() for r in rows]
    np.testing.assert_allclose(scores, alone, rtol=1e-5, atol=1e-6)
    return seen, alone


# ----------------------------------------------------------------------------- the tests
def test_llama3_inputs_equal_tiktoken(llama3, dl19_pairs):
    base, expected = llama3
    model, tok = load_base(base, device="cpu", dtype="float32")
    assert tok.pad_token_id == tok.eos_token_id == 128001 and model.config.pad_token_id == 128001
    assert tok.unk_token_id is None  # Llama 3 has no unk: the authors' collator pads with eos
    want = [expected(s) for *_, s in dl19_pairs]
    assert [len(w) for w in want][-1] == MAX_LEN and all(len(w) < MAX_LEN for w in want[:-1])
    assert all(128001 not in w for w in want)  # no EOS appended

    assert _check_collated_rows(tok, dl19_pairs, 128001) == want
    seen, alone = _check_scored_as_alone(model, tok, dl19_pairs, want, 128001)
    # the authors' config pad id 0 reads a padded position instead (registry: study1-llama3-score-position)
    model.config.pad_token_id = 0
    with torch.inference_mode():
        ids, mask = seen[-1]
        theirs = model(input_ids=ids, attention_mask=mask).logits[:, 0]
    model.config.pad_token_id = 128001
    short = int(mask.sum(dim=1).argmin())
    assert abs(theirs[short].item() - alone[want.index(_unpad(ids[short], mask[short]))]) > 1e-4


def test_mistral_inputs_equal_sentencepiece(mistral, dl19_pairs):
    base, sp = mistral
    model, tok = load_base(base, device="cpu", dtype="float32")
    assert tok.pad_token_id == tok.unk_token_id == 0 and model.config.pad_token_id == 0  # the authors' ids
    texts = [s for *_, s in dl19_pairs]

    rows = _check_collated_rows(tok, dl19_pairs, 0)
    assert len(rows[-1]) == MAX_LEN and all(len(r) < MAX_LEN for r in rows[:-1])
    differing = [_check_mistral_ids(r, s, sp) for r, s in zip(rows, texts)]
    # only the two-space runs differ: after "query:" in every pair, before the title when titled
    assert differing == [1, 2, 1, 2]

    _check_scored_as_alone(model, tok, dl19_pairs, rows, 0)


def test_two_space_split_differs_between_hf_and_sentencepiece(mistral):
    """The measured divergence the Mistral test tolerates, pinned so a change is noticed."""
    base, sp = mistral
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    s = "query:  what is a flea"
    assert tok.convert_ids_to_tokens(tok(s)["input_ids"])[:5] == ["<s>", "▁query", ":", "▁▁", "what"]
    assert sp.encode(s, out_type=str)[:4] == ["▁query", ":", "▁", "▁what"]
    # three spaces (the untitled "document:   passage") split alike
    assert tok("document:   Fleas")["input_ids"][1:] == sp.encode("document:   Fleas")
