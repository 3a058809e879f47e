"""Study 2 stage drivers: params in, files out (one function per ``irrepro`` sub-command).

The generation stages (:func:`walks_stage`, :func:`generate_stage`) read the params section
``syntod`` (per-profile values resolved by irrepro.params)::

    syntod:
      domains: [cooking, ecommerce]
      methods: [graph, naive]
      n_conversations: {mini: 60, paper: 5000}   # walks per domain = graph conversations = naive ones
      heldout_fraction: 0.2                      # by conversation id (generate.split_train_heldout)
      seed: 0                                    # walks, naive topics and the split
      llm: {kind: {mini: offline, paper: openai}, model: ..., api_key_env: OPENAI_API_KEY,
            base_url_env: OPENAI_BASE_URL, timeout_s: 60, max_retries: 5, backoff_base_s: 1,
            backoff_max_s: 30, temperature: 0.7, max_tokens: 512, seed: 0}
      cache_dir: .cache/llm                      # on-disk reply cache (a rerun makes no calls)
      judge: {kind: {mini: heuristic, paper: openai}, ...}   # judge.make_judge
      bm25: {k1: 0.9, b: 0.4}                    # optional (catalog result pages); the defaults

The llm / judge specs may carry keys of every backend kind; only those of the chosen kind
are passed on (so one params file serves offline, openai and transformers); a key no kind
knows is an error. The seed files are the download stage's :data:`SEED_SOURCES`
(``datasets.source_path(raw, SEED_SOURCES[domain])``).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("irrepro.syntod.stages")

FINETUNE_KEYS = ("rank", "targets", "lora_alpha", "lora_dropout", "lr", "epochs", "max_steps", "batch_size",
                 "grad_accum", "max_len", "save_steps", "warmup_ratio", "bf16", "gradient_checkpointing", "seed",
                 "threads")


def finetune_tod_stage(P: dict, base: str, train: str, out: str) -> dict:
    """LoRA SFT of the TOD model on ``train`` (SynTOD text JSONL) with the knobs of
    ``P["syntod"]["finetune"]`` (plus an optional ``loss_on``). Checkpoints accumulate in
    ``<out>.partial`` (kept across crashes, so a rerun resumes) and the finished directory
    is moved onto ``out``, as for the reranker (:func:`irrepro.study1.training.finetune`)."""
    from ..launch import is_main_process
    from ..study1.bases import resolve_base
    from .tod import DEFAULT_LOSS_ON, finetune_tod

    F = (P.get("syntod") or {}).get("finetune")
    if not isinstance(F, dict):
        raise ValueError("params: section syntod.finetune is missing")
    missing = [k for k in FINETUNE_KEYS if k not in F]
    if missing:
        raise ValueError(f"params: syntod.finetune lacks {', '.join(missing)}")
    out = Path(out)
    work = out.with_name(out.name + ".partial")
    summary = finetune_tod(
        resolve_base(base),
        train,
        work,
        rank=F["rank"],
        targets=F["targets"],
        alpha=F["lora_alpha"],
        dropout=F["lora_dropout"],
        lr=F["lr"],
        epochs=F["epochs"],
        max_steps=F["max_steps"],
        batch_size=F["batch_size"],
        grad_accum=F["grad_accum"],
        max_len=F["max_len"],
        save_steps=F["save_steps"],
        warmup_ratio=F["warmup_ratio"],
        bf16=F["bf16"],
        gradient_checkpointing=F["gradient_checkpointing"],
        seed=F["seed"],
        threads=F["threads"],
        loss_on=F.get("loss_on", DEFAULT_LOSS_ON),
        token=os.environ.get("HF_TOKEN") or None,
    )
    if is_main_process():  # in a multi-process launch only rank 0 publishes the directory
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
        log.info("finetune_tod: %d steps -> %s", summary["steps"], out)
    return summary


# ----------------------------------------------------------------------------- generation
# (params section ``syntod``: see the module docstring)

SEED_SOURCES = {"cooking": "syntod_recipe_seed", "ecommerce": "syntod_ecommerce_catalog"}
SYNTOD_KEYS = ("n_conversations", "heldout_fraction", "seed", "llm", "cache_dir")


def syntod_params(P: dict) -> dict:
    """``P["syntod"]``, checked for the keys the generation stages need."""
    S = P.get("syntod")
    if not isinstance(S, dict):
        raise ValueError("params: section syntod is missing")
    missing = [k for k in SYNTOD_KEYS if k not in S]
    if missing:
        raise ValueError(f"params: syntod lacks {', '.join(missing)}")
    return S


def llm_spec(spec: dict) -> dict:
    """The keys of a params llm spec that its backend kind takes (see llm.make_backend)."""
    from .llm import SPEC_KEYS

    if not isinstance(spec, dict) or spec.get("kind") not in SPEC_KEYS or spec.get("kind") == "common":
        raise ValueError(f"params: syntod.llm.kind must be openai | transformers | offline, got {spec!r:.100}")
    unknown = sorted(set(spec) - set().union(*SPEC_KEYS.values()))
    if unknown:
        raise ValueError(f"params: syntod.llm: unknown key(s) {unknown}")
    allowed = SPEC_KEYS["common"] | SPEC_KEYS[spec["kind"]]
    return {k: v for k, v in spec.items() if k in allowed and v is not None}


def walks_stage(P: dict, domain: str, seeds: str, out_walks: str, out_stats: str, index_dir: str | None = None) -> dict:
    """``n_conversations`` walks of ``domain`` whose result pages come from BM25 over the
    catalog (``seeds``), with walk statistics (+ pager counts) as DVC metrics. The catalog
    index goes to ``index_dir`` (reused when up to date) or a temporary directory."""
    import json
    import tempfile

    from ..utils import atomic_path
    from .generate import BM25_B, BM25_K1, BM25Pager, build_catalog_index
    from .graph import load_graph, load_items, sample_walks, walk_stats, write_walks

    S = syntod_params(P)
    bm = S.get("bm25") or {}
    k1, b = float(bm.get("k1", BM25_K1)), float(bm.get("b", BM25_B))
    graph = load_graph(domain)
    items = load_items(graph, seeds)
    Path(out_walks).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".catalog-{domain}-", dir=Path(out_walks).parent) as tmp:
        index = build_catalog_index(items, index_dir or tmp)
        pager = BM25Pager(items, index, k1, b)
        walks = sample_walks(graph, int(S["n_conversations"]), int(S["seed"]), items, pager)
    write_walks(walks, out_walks)
    stats = {**walk_stats(walks), "pager": {"kind": "bm25", "k1": k1, "b": b, **pager.stats()}}
    with atomic_path(out_stats) as tmp_stats:
        tmp_stats.write_text(json.dumps(stats, indent=2) + "\n")
    log.info("walks_stage %s: %d walks -> %s (pager %s)", domain, len(walks), out_walks, pager.stats())
    return stats


def generate_stage(P: dict, domain: str, method: str, walks: str | None, seeds: str, out_dir: str) -> dict:
    """Conversations of ``domain`` by ``method`` (graph: one per walk in ``walks``; naive:
    ``n_conversations`` one-prompt conversations) -> ``out_dir``: conversations.jsonl
    (structured), conversations.txt.jsonl (SynTOD text), train.jsonl (text, for fine-tuning),
    heldout.jsonl (structured) and stats.json. Resumes an interrupted run in ``out_dir``."""
    import json

    from ..utils import atomic_path
    from .format import read_jsonl, summarize, write_jsonl
    from .generate import generate_conversations, generate_naive, split_train_heldout
    from .graph import load_graph, load_items, read_walks
    from .llm import make_backend

    S = syntod_params(P)
    if method not in ("graph", "naive"):
        raise ValueError(f"generate_stage: method must be graph or naive, got {method!r}")
    graph = load_graph(domain)
    items = load_items(graph, seeds)
    backend = make_backend(llm_spec(S["llm"]), S["cache_dir"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    structured, text = out / "conversations.jsonl", out / "conversations.txt.jsonl"
    if method == "graph":
        if not walks:
            raise ValueError("generate_stage: method graph needs the walks file")
        stats = generate_conversations(read_walks(walks), graph, items, backend, structured, out_text=text)
    else:
        stats = generate_naive(int(S["n_conversations"]), domain, graph, items, backend, structured, int(S["seed"]),
                               out_text=text)
    convs = read_jsonl(structured)
    train, held = split_train_heldout(convs, float(S["heldout_fraction"]), int(S["seed"]))
    write_jsonl(train, out / "train.jsonl", "text")
    write_jsonl(held, out / "heldout.jsonl", "structured")
    stats.update(split={"train": len(train), "heldout": len(held), "heldout_fraction": S["heldout_fraction"],
                        "seed": S["seed"]}, summary=summarize(convs))
    with atomic_path(out / "stats.json") as tmp:
        tmp.write_text(json.dumps(stats, indent=2, default=str) + "\n")
    log.info("generate_stage %s/%s: %d conversations (%d train, %d held out), %d failed -> %s", domain, method,
             len(convs), len(train), len(held), stats["failed"], out)
    return stats
