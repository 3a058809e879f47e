"""Fast pointwise scoring of (query, passage) pairs with a sequence-classification reranker.

The path (what :func:`score_pairs` does, in order):

1. **Tokenise once.** :func:`encode_pairs` gives exactly :func:`irrepro.rerank.inputs.encode_pair`'s
   ids for every pair (the authors' one-string input with the passage's title, truncated
   jointly to ``qmax + pmax``, no EOS: the training collator's rows), in batched tokenizer
   calls.
2. **Sort by length** (longest first, stable), so each batch holds sequences of similar length
   and the first batch is the largest (an out-of-memory error shows up at once, not at the end).
3. **Right padding as in training**: each batch is padded to its own longest sequence rounded
   up to a multiple of 16 (:data:`irrepro.rerank.inputs.PAD_MULTIPLE`) with the tokenizer's
   pad id; the attention mask marks the real tokens. The model's score is read at the last
   non-pad token (transformers' ``*ForSequenceClassification`` does this from
   ``config.pad_token_id``), which is the last real token because no row ends with the pad
   id (checked when encoding, see :mod:`irrepro.rerank.inputs`).
4. **Inference**: ``torch.inference_mode()``, model in eval mode (LoRA dropout off), autocast
   bf16 on CUDA when supported (fp16 otherwise), fp32 on CPU unless a dtype is asked for.
5. **One transfer**: per-batch scores stay on the device; they are concatenated and copied to
   the host once at the end (no per-batch ``.item()``/``.cpu()`` synchronisation), then put
   back in input order.

:func:`rerank` applies this to a first-stage run: each query's top-``depth`` candidates are
scored (all queries in one :func:`score_pairs` call, so batches mix queries) and returned as a
new run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np

from ..progress import progress
from ..trec import ranked
from .inputs import PAD_MULTIPLE, encode_texts, format_pair, max_length, pad_rows, passage_parts

log = logging.getLogger("irrepro.rerank.score")

__all__ = [
    "encode_pairs",
    "score_encoded",
    "score_pairs",
    "candidates",
    "rerank",
    "resolve_dtype",
]

Run = dict[str, dict[str, float]]

_DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


# ----------------------------------------------------------------------------- tokenisation
def encode_pairs(tokenizer, pairs: Sequence[tuple[str, Any]], qmax: int = 32, pmax: int = 164) -> list[list[int]]:
    """Token ids of every pair, identical to :func:`irrepro.rerank.inputs.encode_pair` per pair.

    A pair is ``(query, passage)`` with the passage as plain text or as ``{"text", "title"}``
    (:func:`irrepro.rerank.inputs.passage_parts`); the strings are tokenised in batched
    tokenizer calls, each truncated jointly to ``qmax + pmax`` tokens.
    """
    if not pairs:
        return []
    texts = []
    for query, passage in pairs:
        text, title = passage_parts(passage)
        texts.append(format_pair(query, text, title))
    return encode_texts(tokenizer, texts, max_length(qmax, pmax))


# ----------------------------------------------------------------------------- dtype / device
def _model_device(model):
    import torch

    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def resolve_dtype(dtype: Any, device) -> Any:
    """The autocast dtype for ``dtype`` on ``device`` (``None`` = no autocast, plain fp32/model dtype).

    ``"auto"``: bf16 on CUDA when the GPU supports it, else fp16; nothing (fp32) on CPU.
    Explicit: ``"float32"``/``"fp32"`` (no autocast), ``"bfloat16"``/``"bf16"``,
    ``"float16"``/``"fp16"``, or a ``torch.dtype``; ``None`` = no autocast.
    """
    import torch

    device = torch.device(device)
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        return None if dtype == torch.float32 else dtype
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be a string, a torch.dtype or None, got {dtype!r}")
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    name = _DTYPE_NAMES.get(dtype.lower())
    if name is None:
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'")
    return None if name == "float32" else getattr(torch, name)


def _autocast(device, dtype):
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def _pad_token_id(model, tokenizer=None) -> int:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    pad = getattr(cfg, "pad_token_id", None)
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        if pad is not None and pad != tokenizer.pad_token_id:
            raise ValueError(
                f"model.config.pad_token_id={pad} differs from the tokenizer's pad id {tokenizer.pad_token_id}: "
                "the score would be read at the wrong position; set model.config.pad_token_id"
            )
        pad = tokenizer.pad_token_id if pad is None else pad
    if pad is None:
        raise ValueError(
            "no pad token id: set tokenizer.pad_token (irrepro.rerank.model.load_tokenizer) and "
            "model.config.pad_token_id; the score is read at the last non-pad token, which needs a pad id "
            "to find it in padded batches"
        )
    return int(pad)


# ----------------------------------------------------------------------------- scoring
def length_batches(lengths: np.ndarray, batch_size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Longest-first stable order of the sequences and its split into batches of ``batch_size``."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return order, [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(encoded: Sequence[Sequence[int]], idx: np.ndarray, pad_id: int, width: int | None = None,
              multiple: int | None = PAD_MULTIPLE):
    """Right-padded ``(input_ids, attention_mask)`` int64 numpy arrays for sequences ``idx``.

    ``width`` defaults to the batch's longest sequence rounded up to ``multiple`` (the
    training collator's padding, :func:`irrepro.rerank.inputs.pad_rows`).
    """
    return pad_rows([encoded[i] for i in idx], pad_id, multiple=multiple, width=width)


def score_encoded(
    model,
    encoded: Sequence[Sequence[int]],
    pad_token_id: int,
    batch_size: int = 64,
    dtype: Any = "auto",
    pad_to: int | None = None,
    keys: Sequence[Any] | None = None,
    desc: str = "scoring",
) -> np.ndarray:
    """Scores (float32 numpy array, input order) of pre-tokenised sequences.

    The score is logit 0 of the head (``num_labels=1``: the only one; a 2-logit head of the
    authors' training build: the logit their loss trains as "relevant", and the one
    Tevatron's rerank driver reads). A NaN/inf score raises
    :class:`~irrepro.rerank.precision.NonFiniteError` naming ``keys[i]`` (e.g. the
    ``(qid, docid)``), or the pair's index without ``keys``.

    Each batch is padded to its longest sequence rounded up to a multiple of 16, as in
    training; ``pad_to`` pads every batch to a fixed width instead (only for benchmarking
    the cost of static padding). Progress (pairs scored) is shown as ``desc``
    (:func:`irrepro.progress.progress`).
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(encoded)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    if any(len(e) == 0 for e in encoded):
        raise ValueError("an encoded sequence is empty")
    device = _model_device(model)
    amp = resolve_dtype(dtype, device)
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=n)
    order, batches = length_batches(lengths, batch_size)
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.inference_mode(), _autocast(device, amp), progress(desc=desc, total=n, unit="pairs") as bar:
            for idx in batches:
                ids, mask = pad_batch(encoded, idx, pad_token_id, width=pad_to)
                ids_t = torch.from_numpy(ids).to(device, non_blocking=True)
                mask_t = torch.from_numpy(mask).to(device, non_blocking=True)
                logits = model(input_ids=ids_t, attention_mask=mask_t).logits
                if logits.ndim != 2 or logits.shape[1] not in (1, 2):
                    raise ValueError(f"expected logits of shape (batch, 1) or (batch, 2), got {tuple(logits.shape)}")
                outs.append(logits[:, 0])
                bar.update(len(idx))
        # one device->host transfer for the whole set
        sorted_scores = torch.cat(outs).float().cpu().numpy()
    finally:
        if was_training:
            model.train()
    scores = np.empty(n, dtype=np.float32)
    scores[order] = sorted_scores
    from .precision import check_finite_scores

    check_finite_scores(scores, keys)
    return scores


def score_pairs(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 64,
    qmax: int = 32,
    pmax: int = 164,
    dtype: Any = "auto",
) -> np.ndarray:
    """Scores of ``(query, passage)`` pairs as a float32 numpy array, in input order.

    Tokenises all pairs once (:func:`encode_pairs`, the RankLLaMA format), sorts by length,
    batches with dynamic right padding and runs the model under ``torch.inference_mode()``
    (see the module docstring). ``dtype``: ``"auto"`` (bf16/fp16 autocast on CUDA, fp32 on
    CPU), ``"float32"``, ``"bfloat16"``, ``"float16"``.
    """
    pad = _pad_token_id(model, tokenizer)
    t0 = time.perf_counter()
    encoded = encode_pairs(tokenizer, pairs, qmax=qmax, pmax=pmax)
    t1 = time.perf_counter()
    scores = score_encoded(model, encoded, pad, batch_size=batch_size, dtype=dtype, keys=pairs)
    t2 = time.perf_counter()
    if pairs:
        log.debug(
            "scored %d pairs: tokenise %.2fs, model %.2fs (%.0f pairs/s)",
            len(pairs), t1 - t0, t2 - t1, len(pairs) / max(t2 - t0, 1e-9),
        )
    return scores


# ----------------------------------------------------------------------------- reranking
def candidates(
    run: Mapping[str, Mapping[str, float]],
    topics: Mapping[str, str],
    passages: Mapping[str, Any],
    depth: int,
) -> tuple[list[tuple[str, str]], list[tuple[str, Any]]]:
    """``(keys, pairs)``: each query's first-stage top-``depth`` as ``(qid, docid)`` keys and
    ``(query, passage)`` pairs, queries in sorted-qid order, documents in first-stage order
    (score descending, ties by docid descending, as trec_eval ranks them). A passage is
    whatever ``passages`` holds for the docid: its text, or ``{"text", "title"}``."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    missing_q = [q for q in run if q not in topics]
    if missing_q:
        raise KeyError(f"{len(missing_q)} run queries have no topic text, e.g. {sorted(missing_q)[:5]}")
    keys: list[tuple[str, str]] = []
    pairs: list[tuple[str, str]] = []
    missing_d: list[str] = []
    for qid in sorted(run):
        query = topics[qid]
        for docid, _ in ranked(run[qid])[:depth]:
            text = passages.get(docid) if hasattr(passages, "get") else passages[docid]
            if text is None:
                missing_d.append(docid)
                continue
            keys.append((qid, docid))
            pairs.append((query, text))
    if missing_d:
        raise KeyError(f"{len(missing_d)} candidate passages have no text, e.g. {missing_d[:5]}")
    return keys, pairs


def to_run(keys: Sequence[tuple[str, str]], scores: Sequence[float]) -> Run:
    """``{qid: {docid: score}}`` from parallel keys and scores (python floats)."""
    if len(keys) != len(scores):
        raise ValueError(f"{len(keys)} keys but {len(scores)} scores")
    out: Run = {}
    for (qid, docid), s in zip(keys, np.asarray(scores, dtype=np.float64).tolist()):
        out.setdefault(qid, {})[docid] = s
    return out


def rerank(
    model,
    tokenizer,
    run: Mapping[str, Mapping[str, float]],
    topics: Mapping[str, str],
    passages: Mapping[str, Any],
    depth: int,
    **kw,
) -> Run:
    """Rerank each query's first-stage top-``depth``: ``{qid: {docid: reranker score}}``.

    Only the top-``depth`` documents are returned (documents below the cut are dropped).
    ``kw`` goes to :func:`score_pairs` (``batch_size``, ``qmax``, ``pmax``, ``dtype``).
    """
    keys, pairs = candidates(run, topics, passages, depth)
    return to_run(keys, score_pairs(model, tokenizer, pairs, **kw))
