#!/usr/bin/env python
"""Benchmark the reranker scoring path on the real DL19 BM25 top-100 candidates (4,300 pairs).

Prints pairs/s for

* ``ours``    -- :func:`irrepro.rerank.score.score_pairs` end to end: tokenisation (once per
                 distinct query/passage), length sorting, dynamic right padding, forward, one
                 device->host transfer, unsorting;
* ``(a)``     -- the same path, but every batch padded to the maximum sequence length
                 (``1 + qmax + pmax + 1`` = 198 tokens with bos/eos at the defaults), i.e. static
                 padding (tokenisation included, as in ``ours``);
* ``(b)``     -- the bare model forward on the same pre-tokenised, pre-padded, length-sorted
                 batches (tensors built before the clock starts: no tokenisation, sorting or
                 padding cost), i.e. the floor any scoring path can reach with this batching;

and the ratios ours/(b) (target >= 0.95, issue 13) and ours/(a) (target > 1). Also printed: the
tokenisation alone, and ``ours, pre-tokenised`` (:func:`~irrepro.rerank.score.score_encoded`:
sorting, padding, forward, one transfer, unsorting -- what
:func:`~irrepro.rerank.evaluate.evaluate_checkpoints` runs for every checkpoint, since it
tokenises each dataset once), which isolates the overhead of our path from the cost of
tokenising, and ``ours, tokenising in a thread``: the pairs in chunks of 16 batches, each chunk
tokenised in a background thread while the previous one is scored (the tokenizer releases the
GIL), i.e. what overlapping tokenisation with the forward would gain. All outputs are checked
to agree (same scores, same order) before any figure is printed. Times are wall clock (median
and best of ``--repeats``, methods interleaved) plus the process CPU time, which is less
sensitive to other jobs on a shared machine.

    .venv/bin/python benchmarks/bench_scoring.py --threads 1 --repeats 5

By default a tiny random Llama (hidden 64, 2 layers) with a BPE tokenizer trained on the
passages is built in a temporary directory (offline); ``--model DIR`` uses a saved model
directory instead (loaded as ``AutoModelForSequenceClassification``, ``num_labels=1``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "bm25-top100" / "retrieve_results_dl19.json"


def load_pairs(path: Path) -> list[tuple[str, str]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [(entry["query"], hit["content"]) for entry in data for hit in entry["hits"]]


def build_tiny(pairs, out: Path, family: str, vocab: int, hidden: int, layers: int) -> Path:
    from irrepro.tiny import init_model, train_tokenizer

    texts = sorted({q for q, _ in pairs}) + sorted({p for _, p in pairs})
    tok = train_tokenizer(texts, vocab_size=vocab)
    init_model(family, tok, seed=0, hidden=hidden, layers=layers, heads=4, intermediate=hidden * 2).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def load_model(model_dir: Path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the "score.weight newly initialised" load report
    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    if tok.pad_token_id is None:
        raise SystemExit(f"{model_dir}: tokenizer has no pad token (set one that is not eos)")
    model.config.pad_token_id = tok.pad_token_id
    return model.eval(), tok


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="rank_llm retrieve_results JSON")
    ap.add_argument("--model", type=Path, default=None, help="saved model dir (default: build a tiny llama)")
    ap.add_argument("--family", default="llama", choices=["llama", "mistral", "pythia"])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--qmax", type=int, default=32)
    ap.add_argument("--pmax", type=int, default=164)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from irrepro.rerank.score import _pad_token_id, encode_pairs, length_batches, pad_batch, score_encoded, score_pairs

    torch.set_num_threads(args.threads)
    pairs = load_pairs(args.data)
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        model_dir = args.model or build_tiny(pairs, Path(tmp), args.family, args.vocab, args.hidden, args.layers)
        model, tok = load_model(model_dir)
    pad = _pad_token_id(model, tok)
    bs, qmax, pmax = args.batch_size, args.qmax, args.pmax

    encoded = encode_pairs(tok, pairs, qmax=qmax, pmax=pmax)
    lengths = np.array([len(e) for e in encoded])
    max_len = 1 + qmax + pmax + 1  # bos + query + document + eos
    order, batches = length_batches(lengths, bs)
    pre = [tuple(torch.from_numpy(a) for a in pad_batch(encoded, idx, pad)) for idx in batches]

    def ours():
        return score_pairs(model, tok, pairs, batch_size=bs, qmax=qmax, pmax=pmax)

    def static():
        enc = encode_pairs(tok, pairs, qmax=qmax, pmax=pmax)
        return score_encoded(model, enc, pad, batch_size=bs, pad_to=max_len)

    def threaded(chunk=16 * bs):
        from concurrent.futures import ThreadPoolExecutor

        parts = [pairs[i : i + chunk] for i in range(0, len(pairs), chunk)]
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(encode_pairs, tok, parts[0], qmax, pmax)
            out = []
            for k in range(len(parts)):
                enc = pending.result()
                if k + 1 < len(parts):
                    pending = pool.submit(encode_pairs, tok, parts[k + 1], qmax, pmax)
                out.append(score_encoded(model, enc, pad, batch_size=bs))
        return np.concatenate(out)

    def bare():
        outs = []
        with torch.inference_mode():
            for ids, mask in pre:
                outs.append(model(input_ids=ids, attention_mask=mask).logits[:, 0])
        return torch.cat(outs).numpy()

    # warm-up (first-call allocations, lazy inits), then the agreement check
    s_ours, s_static, s_bare_sorted = ours(), static(), bare()
    s_bare = np.empty_like(s_ours)
    s_bare[order] = s_bare_sorted
    assert np.allclose(s_ours, s_bare, atol=1e-4), np.abs(s_ours - s_bare).max()
    assert np.allclose(s_ours, s_static, atol=1e-4), np.abs(s_ours - s_static).max()
    assert np.allclose(s_ours, threaded(), atol=1e-4)

    methods = {
        "ours": ours,
        "ours, pre-tokenised": lambda: score_encoded(model, encoded, pad, batch_size=bs),
        "ours, tok. in thread": threaded,
        "(a) static pad": static,
        "(b) bare forward": bare,
        "tokenisation only": lambda: encode_pairs(tok, pairs, qmax=qmax, pmax=pmax),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    for _ in range(args.repeats):  # interleaved, so that machine noise hits all methods alike
        for name, fn in methods.items():
            results[name].append(timed(fn))

    n = len(pairs)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"data: {args.data.name}: {n} pairs, {len(set(q for q, _ in pairs))} queries; "
          f"tokens per pair mean {lengths.mean():.1f}, max {lengths.max()} (static width {max_len})")
    print(f"model: {model_dir if args.model else f'tiny {args.family} hidden={args.hidden} layers={args.layers}'} "
          f"({n_params / 1e6:.2f}M params), batch {bs}, torch threads {args.threads}, repeats {args.repeats}")
    print(f"{'method':22s} {'wall median':>11s} {'wall best':>10s} {'pairs/s':>9s} {'cpu median':>11s}")
    rate, cpu = {}, {}
    for name, tc in results.items():
        walls, cpus = [t for t, _ in tc], [c for _, c in tc]
        med = statistics.median(walls)
        rate[name], cpu[name] = n / med, statistics.median(cpus)
        print(f"{name:22s} {med:10.3f}s {min(walls):9.3f}s {n / med:9.0f} {cpu[name]:10.3f}s")
    b, a = "(b) bare forward", "(a) static pad"
    print(f"ours/(b) = {rate['ours'] / rate[b]:.3f} wall, {cpu[b] / cpu['ours']:.3f} cpu  (target >= 0.95)")
    print(f"ours/(a) = {rate['ours'] / rate[a]:.3f} wall, {cpu[a] / cpu['ours']:.3f} cpu  (target > 1)")
    print(f"ours pre-tokenised/(b) = {rate['ours, pre-tokenised'] / rate[b]:.3f} wall, "
          f"{cpu[b] / cpu['ours, pre-tokenised']:.3f} cpu  (per-checkpoint path of evaluate_checkpoints)")
    print(f"ours tokenising in a thread/(b) = {rate['ours, tok. in thread'] / rate[b]:.3f} wall")
    print(f"tokenisation = {cpu['tokenisation only'] / cpu[b]:.1%} of the bare forward's cpu time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
