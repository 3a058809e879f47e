#!/usr/bin/env python
"""Benchmark the ablation sweep: model loaded once and LoRA toggled in memory vs reloading per variant.

On the real DL19 BM25 candidates (top-``--depth`` per query, 43 queries), times

* ``in-memory`` -- :func:`irrepro.rerank.ablate.sweep`: base loaded once, adapter attached
  once, candidates tokenised once, every distinct variant scored with its LoRA layers
  switched off in memory, runs written (what the ``ablate`` stage does);
* ``reload``    -- for every distinct variant: load the base from disk, attach the adapter from
  disk (the same verified :class:`~irrepro.rerank.evaluate.AdapterSwitcher`), tokenise the
  candidates, switch that variant's LoRA layers off, score, write the run -- what one job
  (or one loop iteration) per variant would do, *without* the 5-7 s of Python/torch
  start-up a separate process would add.

Both write runs; they are checked to hold the same scores before the table is printed.

    .venv/bin/python benchmarks/bench_ablate.py --threads 1

By default a tiny random base (the mini profile's sizes: hidden 64, 2 layers, BPE tokenizer
trained on the passages) and a LoRA adapter (rank 8, all projections, random non-zero B and
head) are built in a temporary directory; ``--base DIR --adapter DIR`` use saved ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "bm25-top100" / "retrieve_results_dl19.json"


def load_candidates(path: Path):
    """``(topics, run, passages)`` of a rank_llm retrieve_results JSON."""
    data = json.loads(path.read_text(encoding="utf-8"))
    topics, run, passages = {}, {}, {}
    for entry in data:
        for hit in entry["hits"]:
            qid = str(hit["qid"])
            topics[qid] = entry["query"]
            run.setdefault(qid, {})[hit["docid"]] = float(hit["score"])
            passages[hit["docid"]] = hit["content"]
    return topics, run, passages


def build_tiny(texts, out: Path, family: str, vocab: int, hidden: int, layers: int) -> Path:
    from irrepro.tiny import init_model, train_tokenizer

    tok = train_tokenizer(texts, vocab_size=vocab)
    init_model(family, tok, seed=0, hidden=hidden, layers=layers, heads=4, intermediate=hidden * 2).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_adapter(base: Path, out: Path, family: str, rank: int, targets: str) -> Path:
    """A real peft adapter (random non-zero B matrices and score head), as training would save it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from irrepro.rerank.targets import target_modules

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    pm = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=rank, lora_alpha=64,
                                          target_modules=target_modules(family, targets), modules_to_save=["score"]))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.normal_(0, 0.2)
    pm.save_pretrained(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="rank_llm retrieve_results JSON")
    ap.add_argument("--base", type=Path, help="saved base model dir (default: build a tiny one)")
    ap.add_argument("--adapter", type=Path, help="saved LoRA adapter dir for --base (default: build one)")
    ap.add_argument("--family", default="llama", choices=["llama", "mistral", "pythia"])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--targets", default="all", choices=["mha", "mlp", "all"])
    ap.add_argument("--depth", type=int, default=20, help="candidates per query (mini: 20)")
    ap.add_argument("--band-size", type=int, default=2)
    ap.add_argument("--no-cells", action="store_true", help="leave out the (layer, projection) cells")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args(argv)
    if (args.base is None) != (args.adapter is None):
        ap.error("--base and --adapter go together")

    import logging

    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    from irrepro.rerank import ablate as AB
    from irrepro.rerank.evaluate import AdapterSwitcher, load_base
    from irrepro.rerank.score import _pad_token_id, candidates, encode_pairs, score_encoded, to_run
    from irrepro.rerank.targets import family_of
    from irrepro.trec import read_run, write_run

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    topics, run, passages = load_candidates(args.data)
    cells = not args.no_cells
    with tempfile.TemporaryDirectory(prefix="bench-ablate-") as tmp:
        tmp = Path(tmp)
        if args.base is None:
            texts = sorted(set(topics.values())) + sorted(set(passages.values()))
            base = build_tiny(texts, tmp / "base", args.family, args.vocab, args.hidden, args.layers)
            adapter = build_adapter(base, tmp / "adapter", args.family, args.rank, args.targets)
        else:
            base, adapter = args.base, args.adapter
        datasets = {"dl19": {"topics": topics, "run": run}}

        t0, c0 = time.perf_counter(), time.process_time()
        info = AB.sweep(base, adapter, datasets, passages, args.depth, tmp / "in-memory", band_size=args.band_size,
                        cells=cells, batch_size=args.batch_size, resume=False)
        t_memory, c_memory = time.perf_counter() - t0, time.process_time() - c0

        # the same distinct variants, each from a fresh load of base + adapter
        keys, pairs = candidates(run, topics, passages, args.depth)
        t0, c0 = time.perf_counter(), time.process_time()
        load_s, variants = 0.0, None
        for v in [v for v in info["variants"] if v["same_as"] is None]:
            t1 = time.perf_counter()
            model, tok = load_base(base)
            switcher = AdapterSwitcher(model)
            pm = switcher.attach(adapter)
            load_s += time.perf_counter() - t1
            if variants is None:
                cfg = model.config.get_text_config()
                family = family_of(cfg.model_type)
                variants = {x.name: x for x in AB.enumerate_variants(
                    AB.lora_sites(pm, family), family, cfg.num_hidden_layers, args.band_size, cells)}
            encoded = encode_pairs(tok, pairs)
            with AB.lora_disabled(pm, variants[v["name"]].off):
                scores = score_encoded(pm, encoded, _pad_token_id(pm, tok), batch_size=args.batch_size)
            write_run(to_run(keys, scores), tmp / "reload" / f"{v['name']}.trec", tag=v["name"])
            del pm, model, switcher
        t_reload, c_reload = time.perf_counter() - t0, time.process_time() - c0

        distinct = [v["name"] for v in info["variants"] if v["same_as"] is None]
        for name in distinct:  # both ways give the same runs
            a, b = read_run(tmp / "in-memory" / "dl19" / f"{name}.trec"), read_run(tmp / "reload" / f"{name}.trec")
            assert a.keys() == b.keys(), name
            diff = max(abs(a[q][d] - b[q][d]) for q in a for d in a[q])
            assert np.isfinite(diff) and diff < 1e-4, (name, diff)
        n_params = sum(p.numel() for p in load_base(base)[0].parameters())

    n_pairs = len(keys) * len(distinct)
    print(f"data: {args.data.name}, top-{args.depth}: {len(keys)} pairs, {len(run)} queries")
    print(f"model: {base if args.base else f'tiny {args.family} hidden={args.hidden} layers={args.layers}'} "
          f"({n_params / 1e6:.2f}M params) + LoRA r{args.rank} {args.targets}; batch {args.batch_size}, "
          f"torch threads {args.threads}")
    print(f"variants: {len(info['variants'])} ({len(distinct)} distinct, band size {args.band_size}, "
          f"cells {'on' if cells else 'off'}); pairs scored per way: {n_pairs}")
    print(f"{'way':12s} {'wall s':>8s} {'cpu s':>8s} {'pairs/s':>8s}")
    print(f"{'in-memory':12s} {t_memory:8.2f} {c_memory:8.2f} {n_pairs / t_memory:8.0f}")
    print(f"{'reload':12s} {t_reload:8.2f} {c_reload:8.2f} {n_pairs / t_reload:8.0f}"
          f"   (wall loading base+adapter: {load_s:.2f}s)")
    print(f"speed-up: {t_reload / t_memory:.2f}x wall, {c_reload / c_memory:.2f}x cpu "
          "(reload excludes per-process start-up, ~5-7 s per job)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
