"""Tokenizer files of the paper's hub repos, built offline from the real tokenizer models on PyPI.

* ``llama3``: Llama 3's tiktoken BPE (``llama_models/llama3/tokenizer.model`` of the
  ``llama-models`` package) converted to a ``tokenizer.json`` with transformers' own
  :class:`~transformers.convert_slow_tokenizer.TikTokenConverter` (the converter behind
  transformers' Llama 3 weight conversion), Llama 3.1's 256 special tokens (ids 128000-128255,
  :data:`LLAMA31_SPECIALS`) and the hub file's post-processor (``<|begin_of_text|>`` before
  every sequence).
* ``sentencepiece``: Mistral-7B-v0.1's SentencePiece model (``mistral_common/data/
  tokenizer.model.v1``) shipped as ``tokenizer.model`` plus the ``tokenizer.json`` that
  transformers converts from it (``LlamaTokenizer``, BOS added). Used for the Llama-2 layout of
  the SynTOD base too (its own model is not on PyPI; see :mod:`.realconfigs`).
* ``neox``: a byte-level BPE in GPT-NeoX-20B's layout (``<|endoftext|>`` = 0, ``<|padding|>`` = 1,
  NFC normaliser, no prefix space, no BOS/EOS added) trained on the given texts; Pythia's own
  vocabulary is not on PyPI.

Every builder writes ``tokenizer.json``, ``tokenizer_config.json`` (the repo's fields plus
``added_tokens_decoder``) and ``special_tokens_map.json`` into a directory.
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
from pathlib import Path
from typing import Iterable

from .realconfigs import RepoSpec

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Llama 3.1's special tokens in id order from 128000 (as in transformers' convert_llama_weights_to_hf
# DEFAULT_LLAMA_SPECIAL_TOKENS["3.1"]; llama_models ships the 3.2 list, which differs at 128005 and 128011).
LLAMA31_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
] + [f"<|reserved_special_token_{i}|>" for i in range(3, 248)]
NEOX_SPECIALS = ["<|endoftext|>", "<|padding|>"]


def llama3_model_file() -> Path:
    return Path(str(importlib.resources.files("llama_models").joinpath("llama3/tokenizer.model")))


def mistral_v1_model_file() -> Path:
    return Path(str(importlib.resources.files("mistral_common").joinpath("data/tokenizer.model.v1")))


def _added_tokens_decoder(tok) -> dict:
    """``added_tokens_decoder`` of tokenizer_config.json: id -> the added token's flags."""
    keys = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
    return {str(t["id"]): {k: t[k] for k in keys} for t in json.loads(tok.to_str())["added_tokens"]}


def _write_configs(tok, spec: RepoSpec, out: Path) -> None:
    cfg = {"added_tokens_decoder": _added_tokens_decoder(tok), **spec.tokenizer_config}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(spec.special_tokens_map, indent=2) + "\n")


def build_llama3(spec: RepoSpec, out: Path) -> None:
    from tokenizers import AddedToken, processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(str(llama3_model_file()), pattern=LLAMA3_PATTERN).converted()
    n_base = tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA31_SPECIALS])
    bos = LLAMA31_SPECIALS[0]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
                                      special_tokens=[(bos, n_base)]),
    ])
    if tok.token_to_id(bos) != 128000 or tok.get_vocab_size() != spec.config["vocab_size"]:
        raise RuntimeError(f"Llama 3 tokenizer layout: {bos} = {tok.token_to_id(bos)}, size {tok.get_vocab_size()}")
    tok.save(str(out / "tokenizer.json"))
    _write_configs(tok, spec, out)


def build_sentencepiece(spec: RepoSpec, out: Path) -> None:
    """``tokenizer.model`` + the ``tokenizer.json`` transformers converts from it (its
    ``LlamaTokenizer`` with the repo's settings: BOS added, no EOS)."""
    from transformers import AutoTokenizer

    work = out / ".sp-convert"
    work.mkdir()
    try:
        shutil.copyfile(mistral_v1_model_file(), work / "tokenizer.model")
        (work / "tokenizer_config.json").write_text(json.dumps(spec.tokenizer_config))
        hf = AutoTokenizer.from_pretrained(str(work))
        tok = hf.backend_tokenizer
        if len(hf) != spec.config["vocab_size"] or tok.token_to_id("<s>") != spec.config["bos_token_id"]:
            raise RuntimeError(f"SentencePiece tokenizer layout: size {len(hf)}, <s> = {tok.token_to_id('<s>')}")
        tok.save(str(out / "tokenizer.json"))
        shutil.copyfile(work / "tokenizer.model", out / "tokenizer.model")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _write_configs(tok, spec, out)


def build_neox(spec: RepoSpec, out: Path, texts: Iterable[str], vocab_size: int = 2048) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=NEOX_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    ids = [tok.token_to_id(t) for t in NEOX_SPECIALS]
    if ids != [0, 1] or tok.get_vocab_size() > spec.config["vocab_size"]:
        raise RuntimeError(f"NeoX tokenizer layout: special ids {ids}, size {tok.get_vocab_size()}")
    tok.save(str(out / "tokenizer.json"))
    _write_configs(tok, spec, out)


def build_tokenizer(spec: RepoSpec, out: str | Path, texts: Iterable[str] | None = None) -> None:
    """Write ``spec``'s tokenizer files into ``out`` (``texts``: the NeoX BPE's training text)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if spec.tokenizer == "llama3":
        build_llama3(spec, out)
    elif spec.tokenizer == "sentencepiece":
        build_sentencepiece(spec, out)
    elif spec.tokenizer == "neox":
        if texts is None:
            raise ValueError(f"{spec.repo_id}: the NeoX-layout tokenizer needs training texts")
        build_neox(spec, out, texts)
    else:
        raise ValueError(f"{spec.repo_id}: unknown tokenizer kind {spec.tokenizer!r}")
