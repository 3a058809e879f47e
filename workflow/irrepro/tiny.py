"""Tiny base models of the real architecture families, built offline (the mini stand-ins).

A byte-level BPE tokenizer trained on the mini corpus, and small configs of the real
``transformers`` classes (Llama, Mistral, GPT-NeoX/Pythia), saved as ordinary model
directories that ``AutoModel*.from_pretrained`` loads.

The paper fine-tunes *pretrained* bases. Nothing can be downloaded here, so each mini base
is a random initialisation followed by a short causal-LM warm-up on the mini corpus
(``build_base``): a real instance of the family's class that has at least seen the text it
will rerank. It is a stand-in, not a language model of any quality, and reports say so.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Iterable, Iterator

from .errors import InputError
from .jsonl import json_lines
from .utils import atomic_path, sha256_file
from .vocab import FAMILIES

log = logging.getLogger("irrepro.tiny")

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}

# Measured on the mini corpus (9,658 DL19/DL20 BM25 top-100 passages), 1 CPU thread: each
# base builds in well under a minute and its LM loss drops clearly (see the module's report
# in the workflow docs); the lead copies these into params.yaml.
DEFAULT_SIZES = {
    "vocab_size": 4096,
    "hidden": 64,
    "layers": 2,
    "heads": 4,
    "intermediate": 128,
    "max_positions": 256,  # >= 198 = 1 + 32 + 164 + 1, the reranker's longest input
    "warmup_steps": 500,
    "seq_len": 128,
    "batch_size": 8,
    "lr": 3e-3,
    "seed": 0,
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {list(FAMILIES)}")


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """Byte-level BPE trained on ``texts``; pad differs from eos (see rerank.inputs).

    No prefix space is added (as in GPT-2 / Llama-3), so ``decode(encode(s)) == s`` for any
    text, including non-ASCII and mojibake. No special tokens are added by ``__call__``, so
    the reranker's inputs (``rerank.inputs``: the tokenizer's own special tokens) carry no
    BOS in mini, as Pythia's in the paper. BPE training has no randomness, so
    the same texts give the same tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL["pad_token"], SPECIAL["bos_token"], SPECIAL["eos_token"], SPECIAL["unk_token"]],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512, padding_side="right", **SPECIAL)


def iter_corpus_texts(corpus_jsonl: str | Path) -> Iterator[str]:
    """The passage texts of a pyserini JSONL corpus (``{"id": ..., "contents": ...}`` per line).

    A ``title`` field, when present and non-empty, is prepended to ``contents``. Blank lines
    are skipped; a line without ``contents`` is an error naming the file and line.
    """
    for lineno, doc in json_lines(corpus_jsonl):
        if "contents" not in doc:
            raise InputError("not a pyserini JSONL document: no 'contents'", file=corpus_jsonl, line=lineno)
        title = doc.get("title") or ""
        yield f"{title} {doc['contents']}" if title else doc["contents"]


def build_tokenizer(corpus_jsonl: str | Path, out_dir: str | Path, vocab_size: int = DEFAULT_SIZES["vocab_size"]) -> dict:
    """Train the byte-level BPE tokenizer on the corpus and save it to ``out_dir`` (atomically).

    Deterministic: the same corpus gives a byte-identical ``tokenizer.json`` (BPE training
    has no random component, so there is no seed). Returns a small summary dict.
    """
    t0 = time.perf_counter()
    texts = list(iter_corpus_texts(corpus_jsonl))
    if not texts:
        raise ValueError(f"{corpus_jsonl}: empty corpus, cannot train a tokenizer")
    log.info("tokenizer: training byte-level BPE (vocab %d) on %d passages from %s", vocab_size, len(texts), corpus_jsonl)
    tok = train_tokenizer(texts, vocab_size=vocab_size)
    with atomic_path(out_dir, is_dir=True) as tmp:
        tok.save_pretrained(str(tmp))
        _usual_modes(Path(tmp))
        digest = sha256_file(Path(tmp) / "tokenizer.json")
    summary = {
        "vocab_size": len(tok),
        "requested_vocab_size": vocab_size,
        "passages": len(texts),
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": tok.bos_token_id,
        "tokenizer_json_sha256": digest,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    log.info("tokenizer: %d tokens -> %s (tokenizer.json sha256 %s, %.1f s)",
             len(tok), out_dir, digest[:12], summary["seconds"])
    return summary


# --------------------------------------------------------------------------- models


def tiny_config(family: str, tokenizer, hidden: int = 64, layers: int = 2, heads: int = 4,
                intermediate: int = 128, max_positions: int = 256):
    """A small config of the family's real transformers class."""
    _check_family(family)
    from transformers import GPTNeoXConfig, LlamaConfig, MistralConfig

    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not divisible by {heads} attention heads")
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    if family == "llama":
        return LlamaConfig(num_key_value_heads=heads, **common)
    if family == "mistral":
        return MistralConfig(num_key_value_heads=max(1, heads // 2), sliding_window=max_positions, **common)
    # pythia
    return GPTNeoXConfig(rotary_pct=0.25, use_parallel_residual=True, **common)


def init_model(family: str, tokenizer, seed: int = 0, **sizes):
    """A randomly initialised causal LM of ``family`` (seeded)."""
    _check_family(family)
    import torch
    from transformers import AutoModelForCausalLM

    config = tiny_config(family, tokenizer, **sizes)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def pack_chunks(tokenizer, texts: Iterable[str], seq_len: int):
    """Token stream ``<s> text </s> <s> text </s> ...`` cut into ``seq_len`` chunks (a LongTensor)."""
    import torch

    texts = list(texts)
    stream: list[int] = []
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for i in range(0, len(texts), 1024):
        for ids in tokenizer(texts[i:i + 1024], add_special_tokens=False)["input_ids"]:
            stream.append(bos)
            stream.extend(ids)
            stream.append(eos)
    n = len(stream) // seq_len
    if n == 0:
        raise ValueError(f"corpus too small: {len(stream)} tokens, fewer than one chunk of {seq_len}")
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len), len(stream)


def _lm_loss(model, chunks, batch_size: int) -> float:
    """Mean next-token loss of ``model`` over ``chunks`` (eval mode, no grad)."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(chunks), batch_size):
            b = chunks[i:i + batch_size]
            out = model(input_ids=b, labels=b)
            n = b.numel() - b.shape[0]  # predicted positions
            total += out.loss.item() * n
            count += n
    model.train(was_training)
    return total / count


def _usual_modes(directory: Path) -> None:
    """Give the files the usual umask-based mode (safetensors writes owner-only files)."""
    umask = os.umask(0)
    os.umask(umask)
    for f in directory.iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~umask)


def build_base(family: str, tokenizer_dir: str | Path, corpus_jsonl: str | Path, out_dir: str | Path, *,
               hidden: int = DEFAULT_SIZES["hidden"], layers: int = DEFAULT_SIZES["layers"],
               heads: int = DEFAULT_SIZES["heads"], intermediate: int = DEFAULT_SIZES["intermediate"],
               max_positions: int = DEFAULT_SIZES["max_positions"],
               warmup_steps: int = DEFAULT_SIZES["warmup_steps"], seq_len: int = DEFAULT_SIZES["seq_len"],
               batch_size: int = DEFAULT_SIZES["batch_size"], lr: float = DEFAULT_SIZES["lr"],
               seed: int = DEFAULT_SIZES["seed"], log_every: int = 50, eval_chunks: int = 64) -> dict:
    """Build one mini "pretrained" base: random init + a short causal-LM warm-up on the corpus.

    The corpus's token stream is packed into ``seq_len`` chunks; a few (at most
    ``eval_chunks``, about 5%) are held out to measure the LM loss before, during and after
    the warm-up (when the corpus is too small to spare them, the loss is measured on
    training chunks and ``warmup.json`` says so). AdamW with a linear warm-up of the
    learning rate over the first 10% of steps, then cosine decay to 10% of ``lr``; gradient
    norm clipped at 1. Training batches walk seeded permutations of the training chunks.

    ``out_dir`` receives the model (``save_pretrained``, safetensors), the tokenizer files
    of ``tokenizer_dir`` (copied byte for byte) and ``warmup.json``; it appears only if the
    whole build succeeds. Returns the ``warmup.json`` dict plus ``seconds`` (the build time,
    which the file does not hold: same inputs, same bytes; it goes to the run sidecar's
    ``base`` section, :mod:`irrepro.sidecar`).
    """
    _check_family(family)
    if seq_len > max_positions:
        raise ValueError(f"seq_len {seq_len} exceeds max_positions {max_positions}")
    if warmup_steps < 0 or batch_size < 1:
        raise ValueError(f"need warmup_steps >= 0 and batch_size >= 1 (got {warmup_steps}, {batch_size})")
    import torch
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    texts = list(iter_corpus_texts(corpus_jsonl))
    chunks, n_tokens = pack_chunks(tokenizer, texts, seq_len)
    n_eval = min(eval_chunks, len(chunks) // 20)
    if n_eval >= 1:
        perm = torch.randperm(len(chunks), generator=torch.Generator().manual_seed(seed + 1))
        held, train = chunks[perm[:n_eval]], chunks[perm[n_eval:]]
        eval_split = "heldout"
    else:
        train = chunks
        held = chunks[: min(eval_chunks, len(chunks))]
        eval_split = "train"
    log.info("%s: %d passages, %d tokens -> %d chunks of %d (%d for training, %d %s for loss)",
             family, len(texts), n_tokens, len(chunks), seq_len, len(train), len(held), eval_split)

    sizes = dict(hidden=hidden, layers=layers, heads=heads, intermediate=intermediate, max_positions=max_positions)
    model = init_model(family, tokenizer, seed=seed, **sizes)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s: %s with %d parameters (%s)", family, type(model).__name__, n_params, sizes)

    init_loss = _lm_loss(model, held, batch_size)
    curve = [{"step": 0, "eval_loss": round(init_loss, 4)}]
    log.info("%s: step 0/%d eval loss %.4f", family, warmup_steps, init_loss)

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    ramp = max(1, warmup_steps // 10)

    def lr_at(step: int) -> float:  # step is 1-based
        if step <= ramp:
            return lr * step / ramp
        frac = (step - ramp) / max(1, warmup_steps - ramp)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=gen)
    pos, epochs = 0, 0
    model.train()
    running, running_n = 0.0, 0
    for step in range(1, warmup_steps + 1):
        if pos + batch_size > len(order):
            order = torch.randperm(len(train), generator=gen)
            pos, epochs = 0, epochs + 1
        idx = order[pos:pos + batch_size]
        pos += len(idx)
        batch = train[idx]
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += loss.item()
        running_n += 1
        if step % log_every == 0 or step == warmup_steps:
            ev = _lm_loss(model, held, batch_size)
            curve.append({"step": step, "train_loss": round(running / running_n, 4), "eval_loss": round(ev, 4)})
            log.info("%s: step %d/%d train loss %.4f eval loss %.4f lr %.2e (%.1f s)", family, step,
                     warmup_steps, running / running_n, ev, lr_at(step), time.perf_counter() - t0)
            running, running_n = 0.0, 0
    model.eval()
    final_loss = curve[-1]["eval_loss"] if warmup_steps else init_loss

    summary = {
        "family": family,
        "model_class": type(model).__name__,
        "parameters": n_params,
        "sizes": sizes,
        "vocab_size": len(tokenizer),
        "warmup": {"steps": warmup_steps, "seq_len": seq_len, "batch_size": batch_size, "lr": lr, "seed": seed,
                   "schedule": "linear ramp 10% then cosine to 0.1*lr", "optimizer": "AdamW(0.9, 0.95, wd 0.01)",
                   "epochs_completed": epochs},
        "corpus": {"passages": len(texts), "tokens": n_tokens, "chunks": len(chunks), "train_chunks": len(train)},
        "eval_split": eval_split,
        "eval_chunks": len(held),
        "initial_loss": round(init_loss, 4),
        "final_loss": round(final_loss, 4),
        "curve": curve,
    }
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp = Path(tmp)
        model.save_pretrained(str(tmp), safe_serialization=True)
        for f in sorted(Path(tokenizer_dir).iterdir()):
            if f.is_file():
                shutil.copyfile(f, tmp / f.name)
        (tmp / "warmup.json").write_text(json.dumps(summary, indent=2) + "\n")
        _usual_modes(tmp)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    from . import sidecar

    sidecar.record("base", {"family": family, "seconds": summary["seconds"], "out": str(out_dir)})
    log.info("%s: LM loss %.4f -> %.4f in %d steps; saved %s (%.1f s)", family, init_loss, final_loss,
             warmup_steps, out_dir, summary["seconds"])
    return summary
