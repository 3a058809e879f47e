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
knows is an error. The workflow passes each domain's training items (the syntod_items
stage's ``train.jsonl``, :mod:`irrepro.syntod.items`) as the seed file, never the test seed
catalogs (the download stage's :data:`SEED_SOURCES`, the fallback of ``--raw``).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Mapping, Sequence

from ..vocab import METHODS

log = logging.getLogger("irrepro.syntod.stages")


def params_section(P: Mapping, dotted: str, keys: Sequence[str] = ()) -> Mapping:
    """``P`` at the dotted path (``"syntod.base"``: ``P["syntod"]["base"]``), checked to be a
    mapping holding ``keys``; else a ValueError naming the section or the keys it lacks."""
    section = P
    for name in dotted.split("."):
        section = section.get(name) if isinstance(section, Mapping) else None
    if not isinstance(section, Mapping):
        raise ValueError(f"params: section {dotted} is missing")
    missing = [k for k in keys if k not in section]
    if missing:
        raise ValueError(f"params: {dotted} lacks {', '.join(missing)}")
    return section


def finetune_tod_stage(P: dict, base: str, train: str, out: str) -> dict:
    """LoRA SFT of the TOD model on ``train`` (SynTOD text JSONL) with the knobs of
    ``P["syntod"]["finetune"]`` (:class:`irrepro.lora.config.TodTraining`; ``loss_on``
    optional). Checkpoints accumulate in ``<out>.partial`` (kept across crashes, so a rerun
    resumes) and the finished directory is moved onto ``out``, as for the reranker
    (:func:`irrepro.lora.run.train_in_work_dir`)."""
    from ..lora.config import TodTraining
    from ..lora.run import train_in_work_dir
    from ..study1.bases import resolve_base
    from .tod import finetune_tod

    settings = TodTraining.from_params((P.get("syntod") or {}).get("finetune"), "syntod.finetune")
    summary = train_in_work_dir(out, lambda work: finetune_tod(
        resolve_base(base), train, work, token=os.environ.get("HF_TOKEN") or None, **settings.kwargs()))
    log.info("finetune_tod: %d steps -> %s", summary["steps"], out)
    return summary


# ----------------------------------------------------------------------------- generation
# (params section ``syntod``: see the module docstring)

SEED_SOURCES = {"cooking": "syntod_recipe_seed", "ecommerce": "syntod_ecommerce_catalog"}
SYNTOD_KEYS = ("n_conversations", "heldout_fraction", "seed", "llm", "cache_dir")


def syntod_params(P: dict) -> dict:
    """``P["syntod"]``, checked for the keys the generation stages need."""
    return params_section(P, "syntod", SYNTOD_KEYS)


def llm_spec(spec: dict) -> dict:
    """The keys of a params llm spec that its backend kind takes (see llm.select_spec)."""
    from .llm import select_spec

    return select_spec(spec, "params: syntod.llm")


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


GENERATION_CIRCUMSTANCES = ("resumed", "generated", "backend_calls")  # in the run sidecar, not stats.json


def generate_stage(P: dict, domain: str, method: str, walks: str | None, seeds: str, out_dir: str) -> dict:
    """Conversations of ``domain`` by ``method`` (graph: one per walk in ``walks``; naive:
    ``n_conversations`` one-prompt conversations) -> ``out_dir``: conversations.jsonl
    (structured), conversations.txt.jsonl (SynTOD text), train.jsonl (text, for fine-tuning),
    heldout.jsonl (structured) and stats.json.

    One run per directory (issue 12): the run works in ``<out_dir>.partial`` and replaces
    ``out_dir`` only when finished, so an interrupted run never leaves new conversations beside
    an older run's splits and stats. An interrupted run is resumed only when its walks, seeds,
    graph, prompts, backend and settings are the same (content fingerprints); otherwise the
    work directory is started afresh, with a warning."""
    import json

    from ..fingerprint import path_fingerprint, settings_fingerprint
    from ..rundir import prepare_work_dir, publish_work_dir, work_dir
    from ..utils import atomic_path
    from .format import read_jsonl, summarize, write_jsonl
    from .generate import PROMPTS_PATH, generate_conversations, generate_naive, split_train_heldout
    from .graph import load_graph, load_items, read_walks
    from .llm import make_backend

    S = syntod_params(P)
    if method not in METHODS:
        raise ValueError(f"generate_stage: method must be graph or naive, got {method!r}")
    if method == "graph" and not walks:
        raise ValueError("generate_stage: method graph needs the walks file (--walks)")
    graph = load_graph(domain)
    items = load_items(graph, seeds)
    walk_list = read_walks(walks) if method == "graph" else None
    backend = make_backend(llm_spec(S["llm"]), S["cache_dir"])
    out = Path(out_dir)
    work = work_dir(out)
    prints = {"domain": domain, "method": method, "walks": path_fingerprint(walks) if walks else None,
              "seeds": path_fingerprint(seeds), "graph": path_fingerprint(graph.source),
              "prompts": path_fingerprint(PROMPTS_PATH), "backend": settings_fingerprint(backend.describe()),
              "settings": settings_fingerprint({k: S[k] for k in ("n_conversations", "heldout_fraction", "seed")})}
    prepare_work_dir(work, prints, f"syntod-generate {out}")
    structured, text = work / "conversations.jsonl", work / "conversations.txt.jsonl"
    if method == "graph":
        stats = generate_conversations(walk_list, graph, items, backend, structured, out_text=text)
    else:
        stats = generate_naive(int(S["n_conversations"]), domain, graph, items, backend, structured, int(S["seed"]),
                               out_text=text)
    convs = read_jsonl(structured)
    train, held = split_train_heldout(convs, float(S["heldout_fraction"]), int(S["seed"]))
    write_jsonl(train, work / "train.jsonl", "text")
    write_jsonl(held, work / "heldout.jsonl", "structured")
    stats.update(structured=str(out / structured.name), text=str(out / text.name))  # where they end up
    stats.update(split={"train": len(train), "heldout": len(held), "heldout_fraction": S["heldout_fraction"],
                        "seed": S["seed"]}, summary=summarize(convs))
    # how this invocation got there (resumed records, reply-cache hits) is a circumstance, not a
    # result: it goes to the run sidecar, so a rerun served from the cache writes the same stats.json
    from .. import sidecar

    circumstances = {k: stats[k] for k in GENERATION_CIRCUMSTANCES if k in stats}
    sidecar.record("generate", circumstances)
    with atomic_path(work / "stats.json") as tmp:
        tmp.write_text(json.dumps({k: v for k, v in stats.items() if k not in circumstances}, indent=2,
                                  default=str) + "\n")
    if stats["conversations"] == 0:  # nothing to publish: the previous output stays (the caller reports)
        return stats
    publish_work_dir(work, out)
    log.info("generate_stage %s/%s: %d conversations (%d train, %d held out), %d failed -> %s", domain, method,
             len(convs), len(train), len(held), stats["failed"], out)
    return stats


# ----------------------------------------------------------------------------- TOD base model
# (params section ``syntod.base``: family, id (tiny | hub id), revision, max_positions,
# warmup_steps, and optionally any other ``tiny`` size key, e.g. seq_len, which then
# overrides ``tiny`` for this base only)

BASE_KEYS = ("family", "id", "revision", "max_positions", "warmup_steps")
BASE_MARKERS = ("### ASSISTANT:", "### HUMAN:", "### RESULTS:", "### RECIPE:", "### SUGGESTIONS:")
# Copies of each domain's vocabulary document in the base corpus: enough for the BPE merges
# to make every turn marker 3 tokens and every word of an intent or slot name one token
# (measured: 5 copies already do), while the catalogs stay most of the text (10 copies:
# about 19% of the corpus tokens; the counts are in the base's corpus.json).
VOCAB_COPIES = 10
DURATIONS = (1, 2, 3, 5, 10, 15, 20, 30, 45, 60)


def _catalog_text(item) -> str:
    """One seed as plain text. Recipes: title, tags, ingredients, steps; products: title,
    category, brand, features, attributes (the catalog fields, nothing from conversations)."""
    from .graph import Recipe

    if isinstance(item, Recipe):
        tags = item.raw.get("tags") or []
        lines = [item.title, "tags: " + ", ".join(map(str, tags)) if tags else "",
                 "ingredients: " + "; ".join(i for i in item.ingredients if i)]
        lines += [f"{n}: {t}" for n, t in enumerate(item.steps, 1)]
    else:
        raw = item.raw
        features = raw.get("feature") or []
        lines = [item.title, f"category: {item.category}" if item.category else "",
                 f"brand: {raw['brand']}" if raw.get("brand") else ""]
        lines += [" ".join(str(f).split()) for f in (features if isinstance(features, list) else [features])]
        lines += [f"{k}: {', '.join(map(str, v if isinstance(v, list) else [v]))}" for k, v in item.attributes.items()]
    return "\n".join(x for x in lines if x)


def _short_title(item, words: int = 6) -> str:
    return " ".join(item.title.split()[:words]).lower()


def _example_value(typ: str, items: list, rng) -> object:
    """A JSON value of slot type ``typ`` (workflow/schemas/syntod_graph.schema.yaml) made
    from seeded catalog items: the annotation skeletons of the base corpus."""
    item = rng.choice(items)
    if typ == "free_text":
        return _short_title(item)
    if typ == "selection":
        return rng.randint(1, 3)
    if typ == "duration":
        return f"{rng.choice(DURATIONS)} minutes"
    if typ == "id_list":
        return sorted(rng.sample(range(1, 4), rng.randint(1, 3)))
    if typ == "name_list":
        return [other.title for other in rng.sample(items, 2)]
    if typ == "attributes":
        attrs = [(k, str(v[0])) for k, v in sorted((getattr(item, "attributes", None) or {}).items())
                 if isinstance(v, list) and v]
        return [{k: v} for k, v in rng.sample(attrs, min(2, len(attrs)))]
    if typ == "address":
        places = [str(x) for x in item.raw.get("location") or []]
        return rng.choice(places) if places else "United States"
    raise ValueError(f"unknown slot type {typ!r}")


def _vocabulary_text(graph, items: list, copy: int, seed: int) -> str:
    """One vocabulary document of ``graph`` in SynTOD shape: the header, then every intent's
    annotation skeleton ``### HUMAN: ## {"intent": ..., <slots>}`` (seeded order and slot
    values) and every system node annotation after ``### ASSISTANT:``, between turn markers.
    No utterances: only the graph's names, the catalog and the format."""
    import json
    import random

    from .format import header_for

    rng = random.Random(f"{seed}:{graph.domain}:{copy}")
    turns = [f"### HUMAN: ## {json.dumps({'intent': name, **{s: _example_value(t, items, rng) for s, t in spec['slots'].items()}})}"
             for name, spec in graph.intents.items()]
    for node in graph.nodes.values():
        ann = node.annotation
        if ann:
            head = {"intent": ann["intent"]} if ann.get("intent") else {}
            slots = {s: _example_value(t, items, rng) for s, t in (ann.get("slots") or {}).items()}
            turns.append(f"### ASSISTANT: ## {json.dumps({**head, **slots})}")
    rng.shuffle(turns)
    markers = [m for m in BASE_MARKERS if m != "### HUMAN:"]
    body = " ".join(f"{t} {rng.choice(markers)}" for t in turns)
    return f"{header_for(graph.domain, graph.header_intents)}### ASSISTANT: {body}"


def base_corpus(raw: str | os.PathLike, seed: int = 0, copies: int = VOCAB_COPIES,
                catalogs: dict | None = None) -> list[dict]:
    """The mini TOD base's corpus as pyserini documents ``{"id", "contents"}``: every item of
    both domains' catalogs (``catalogs[domain]``, the training items of the syntod_items stage;
    a domain not given: its seed catalog, :data:`SEED_SOURCES` under ``raw``) and ``copies``
    vocabulary documents per domain (:func:`_vocabulary_text`). Never a test conversation and
    never a generated one (the base must not favour either generation method)."""
    from ..datasets import source_path
    from .graph import load_graph, load_items

    docs = []
    for domain in sorted(SEED_SOURCES):
        graph = load_graph(domain)
        items = load_items(graph, (catalogs or {}).get(domain) or source_path(raw, SEED_SOURCES[domain]))
        docs += [{"id": f"{domain}:item:{it.id}", "contents": _catalog_text(it)} for it in items]
        docs += [{"id": f"{domain}:vocabulary:{k}", "contents": _vocabulary_text(graph, items, k, seed)}
                 for k in range(copies)]
    return docs


def base_params(P: dict) -> dict:
    """``P["syntod"]["base"]``, checked."""
    return params_section(P, "syntod.base", BASE_KEYS)


def base_stage(P: dict, raw: str, out: str, catalogs: dict | None = None) -> dict:
    """The TOD base model -> ``out`` (atomically). paper (``syntod.base.id`` a hub id): a
    ``BASE.json`` pointer to the pinned snapshot (:func:`irrepro.study1.bases.fetch_hub_base`).
    mini (``tiny``): a byte-level BPE tokenizer trained on :func:`base_corpus` and a tiny
    model of ``syntod.base.family`` with the ``tiny`` sizes, but ``syntod.base.max_positions``
    positions and ``syntod.base.warmup_steps`` causal-LM warm-up steps on that corpus (any
    other ``tiny`` key given in ``syntod.base``, e.g. ``seq_len``, overrides ``tiny`` too); the
    directory also holds the corpus (``corpus.jsonl``) and its composition (``corpus.json``).
    The catalogs are ``catalogs[domain]`` where given, else each domain's training items of the
    item split (:func:`irrepro.syntod.items.split_domain`, the syntod_items stage's train.jsonl,
    recomputed here so the base does not depend on which domains the grid runs), so no test
    item reaches the base. Returns the warm-up summary (paper: the pinned id and revision)."""
    import json
    import tempfile

    from ..study1.bases import build_tiny_base, fetch_hub_base
    from ..tiny import DEFAULT_SIZES, FAMILIES
    from ..utils import atomic_path

    B = base_params(P)
    if B["id"] != "tiny":
        return fetch_hub_base(B["id"], B["revision"], out)
    if B["family"] not in FAMILIES:
        raise ValueError(f"params: syntod.base.family must be one of {list(FAMILIES)}, got {B['family']!r}")
    sizes = {**P["tiny"], **{k: B[k] for k in DEFAULT_SIZES if B.get(k) is not None}}
    seed = int(sizes.get("seed", 0))
    with atomic_path(out, is_dir=True) as tmp, tempfile.TemporaryDirectory(prefix=".corpus-", dir=tmp.parent) as work:
        sources = {d: str((catalogs or {}).get(d) or SEED_SOURCES[d]) for d in sorted(SEED_SOURCES)}
        if catalogs is None:
            from .items import split_domain, write_records

            catalogs = {}
            for domain in sorted(SEED_SOURCES):
                sources[domain] = f"training items of the item split of {SEED_SOURCES[domain]}"
                catalogs[domain] = Path(work) / f"{domain}-train.jsonl"
                write_records(split_domain(P, domain, raw)[0], catalogs[domain])
        docs = base_corpus(raw, seed, catalogs=catalogs)
        corpus = Path(work) / "corpus.jsonl"
        corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
        summary = build_tiny_base(B["family"], corpus, tmp, sizes)
        shutil.copyfile(corpus, tmp / "corpus.jsonl")
        tok_config = tmp / "tokenizer_config.json"  # the tokenizer's length limit = the model's positions
        tok_config.write_text(json.dumps({**json.loads(tok_config.read_text()),
                                          "model_max_length": int(sizes["max_positions"])}, indent=2) + "\n")
        kinds = [d["id"].split(":")[:2] for d in docs]
        composition = {f"{dom}:{kind}": kinds.count([dom, kind]) for dom, kind in sorted(set(map(tuple, kinds)))}
        chars = {k: sum(len(d["contents"]) for d in docs if d["id"].startswith(k + ":")) for k in composition}
        (tmp / "corpus.json").write_text(json.dumps(
            {"documents": composition, "characters": chars, "vocabulary_copies": VOCAB_COPIES, "seed": seed,
             "sources": sources},
            indent=1) + "\n")
    log.info("base_stage: tiny %s, %d positions, %d warm-up steps on %d documents (%s) -> %s", B["family"],
             sizes["max_positions"], sizes["warmup_steps"], len(docs), composition, out)
    return summary
