"""Command-line entry point: one sub-command per workflow stage.

Every Snakemake rule and every DVC stage calls exactly one of these commands, with the
same arguments, so both runners execute identical code. Each command validates
params.yaml first (so a DVC run fails as early and as clearly as a Snakemake run).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .params import DEFAULT_PARAMS, ParamsError, load_params
from .utils import setup_logging

log = logging.getLogger("irrepro")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=["mini", "paper"], help="override params.yaml's profile")
    p.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: %(default)s)")
    p.add_argument("--log", help="also write the log to this file (the rule's log under logs/)")


def cmd_download(a, P) -> int:
    from .download import download_profile

    D = P["data"]
    paths = download_profile(P["profile"], a.out, D["mirrors"], D["allow_network"], timeout=D["timeout_s"])
    log.info("download: %d files in %s", len(paths), a.out)
    return 0


def cmd_corpus(a, P) -> int:
    from . import bm25
    from .datasets import source_path

    if P["bm25"]["corpus"] == "rankllm-top100":
        # The mini sub-collection: every passage in the DL19+DL20 BM25 top-100 lists.
        jsons = [source_path(a.raw, f"{d}_bm25_top100") for d in ("dl19", "dl20")]
        n = bm25.write_corpus_from_rankllm([str(j) for j in jsons], a.out)
    else:
        n = bm25.write_corpus_from_msmarco_tsv(str(source_path(a.raw, "msmarco_collection")), a.out)
    log.info("corpus: %d passages -> %s", n, a.out)
    return 0


def cmd_index(a, P) -> int:
    from . import bm25

    bm25.build_index(a.corpus, a.out, threads=P["bm25"]["threads"])
    return 0


def cmd_bm25(a, P) -> int:
    from . import bm25
    from .datasets import get, source_path
    from .trec import read_qrels, read_topics, write_run

    B = P["bm25"]
    index = a.index
    if P["profile"] == "paper" and B["prebuilt_index"]:
        index = bm25.prebuilt_index_path(B["prebuilt_index"])
    out = Path(a.out)
    from .utils import atomic_path

    with atomic_path(out, is_dir=True) as tmp:
        for name in P["datasets"]:
            ds = get(name)
            topics = read_topics(source_path(a.raw, ds.topics))
            judged = read_qrels(source_path(a.raw, ds.qrels))
            topics = {q: t for q, t in topics.items() if q in judged}
            log.info("bm25 %s: %d judged topics, k=%d k1=%s b=%s", name, len(topics), B["topk"], B["k1"], B["b"])
            run = bm25.search(index, topics, k=B["topk"], k1=B["k1"], b=B["b"], threads=B["threads"])
            write_run(run, tmp / f"{name}.trec", tag=f"bm25-k1_{B['k1']}-b_{B['b']}")
    return 0


def cmd_evaluate(a, P) -> int:
    from .datasets import get, source_path
    from .evaluate import evaluate_to_files

    runs, qrels = {}, {}
    for name in P["datasets"]:
        ds = get(name)
        qrels[name] = source_path(a.raw, ds.qrels)
        runs.setdefault("bm25", {})[name] = Path(a.runs) / f"{name}.trec"
        if ds.published_run:
            runs.setdefault("bm25-published-rankllm", {})[name] = source_path(a.raw, ds.published_run)
    evaluate_to_files(
        runs,
        qrels,
        metrics=P["evaluate"]["metrics"],
        rel_levels=P["evaluate"]["rel_level"],
        out_json=a.out,
        out_perquery_tsv=a.perquery,
    )
    return 0


def cmd_report(a, P) -> int:
    from .report import build_report, count_fails, load_metrics, load_references, write_report

    metrics = load_metrics(a.metrics)
    refs = load_references()
    text = build_report(metrics, refs, P["profile"])
    if a.checkpoints:
        from .study1.collect import curves_markdown

        text += "\n" + curves_markdown(a.checkpoints)
    write_report(text, a.out)
    log.info("report written to %s", a.out)
    fails = count_fails(metrics, refs, P["profile"])
    if fails and P["evaluate"]["on_fail"] == "fail":
        log.error("%d reference number(s) not reproduced; see %s", fails, a.out)
        return 1
    return 0


def cmd_base(a, P) -> int:
    from .study1.bases import build_base

    build_base(P, a.family, a.corpus, a.out)
    return 0


def cmd_train_groups(a, P) -> int:
    from .study1.training import build_train_groups

    build_train_groups(P, a.raw, a.runs, a.corpus, a.out)
    return 0


def cmd_finetune(a, P) -> int:
    from .launch import relaunch

    need = ("family", "rank", "targets", "groups") if a.task == "rerank" else ("train",)
    missing = [f"--{k}" for k in need if getattr(a, k) is None]
    if missing:
        log.error("finetune --task %s needs %s", a.task, " ".join(missing))
        return 2
    F = P["finetune"]
    code = relaunch(a.argv, F["launcher"], F["nproc_per_node"])  # multi-GPU: torchrun / accelerate
    if code is not None:
        return code
    if a.task == "tod":
        from .syntod.stages import finetune_tod_stage

        finetune_tod_stage(P, a.base, a.train, a.out)
        return 0
    from .study1.training import finetune

    finetune(P, a.family, a.rank, a.targets, a.base, a.groups, a.out)
    return 0


def cmd_rerank_eval(a, P) -> int:
    from .study1.reranking import rerank_config

    rerank_config(P, a.config, a.base, a.adapters, a.raw, a.runs, a.corpus, a.out)
    return 0


def cmd_collect(a, P) -> int:
    from .study1.collect import collect

    collect(P, a.raw, a.runs, a.rerank_runs, a.out_tsv, a.out_json, a.out_md, a.out_plot)
    return 0


def cmd_ablate(a, P) -> int:
    from .study1.ablation import ablate_config

    ablate_config(P, a.config, a.base, a.adapters, a.raw, a.runs, a.corpus, a.out)
    return 0


def cmd_ablate_collect(a, P) -> int:
    from .study1.ablation import ablate_collect

    ablate_collect(P, a.raw, a.runs, a.ablate_runs, a.out_tsv, a.out_json)
    return 0


def cmd_syntod_check(a, P) -> int:
    import json

    from .syntod.format import check_file
    from .utils import atomic_path

    report = {Path(f).name: check_file(f, strict=a.strict) for f in a.inputs}
    with atomic_path(a.out) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    bad = sum(r["round_trip_mismatches"] for r in report.values())
    log.info("syntod-check: %d files, %d conversations, %d round-trip mismatches -> %s",
             len(report), sum(r["conversations"] for r in report.values()), bad, a.out)
    return 1 if bad else 0


def cmd_syntod_walks(a, P) -> int:
    import json

    from .syntod.graph import GraphError, SeedError, load_graph, load_items, sample_walks, walk_stats, write_walks
    from .utils import atomic_path

    try:
        graph = load_graph(a.graph or a.domain)
        walks = sample_walks(graph, a.n, a.seed, load_items(graph, a.seeds))
    except (GraphError, SeedError) as exc:
        log.error("%s", exc)
        return 2
    write_walks(walks, a.out)
    if a.stats:
        with atomic_path(a.stats) as tmp:
            tmp.write_text(json.dumps(walk_stats(walks), indent=2) + "\n")
    log.info("syntod-walks: %d %s walks (seed %d) -> %s", len(walks), graph.domain, a.seed, a.out)
    return 0


def _seeds(a) -> str:
    """The domain's seed file: --seeds, or where the download stage put it under --raw."""
    if a.seeds:
        return a.seeds
    if not a.raw:
        raise SystemExit(f"irrepro {a.command}: give --raw (the download stage's directory) or --seeds")
    from .datasets import source_path
    from .syntod.stages import SEED_SOURCES

    return str(source_path(a.raw, SEED_SOURCES[a.domain]))


def cmd_syntod_gen_walks(a, P) -> int:
    from .syntod.graph import GraphError, SeedError
    from .syntod.stages import walks_stage

    try:
        walks_stage(P, a.domain, _seeds(a), a.out, a.stats, a.index_dir)
    except (GraphError, SeedError, ValueError) as exc:
        log.error("syntod-gen-walks: %s", exc)
        return 2
    return 0


def cmd_syntod_generate(a, P) -> int:
    from .syntod.graph import GraphError, SeedError
    from .syntod.llm import LLMError
    from .syntod.stages import generate_stage

    try:
        stats = generate_stage(P, a.domain, a.method, a.walks, _seeds(a), a.out_dir)
    except (GraphError, SeedError, LLMError, ValueError) as exc:
        log.error("syntod-generate: %s", exc)
        return 2
    return 1 if stats["conversations"] == 0 else 0


def _key_path(text: str) -> tuple[str, str]:
    key, sep, path = text.partition("=")
    if not sep or not key.isidentifier() or not path:
        raise argparse.ArgumentTypeError(f"expected KEY=PATH (KEY a Python identifier), got {text!r}")
    return key, path


def cmd_figure(a, P) -> int:
    from .figures import run_notebook

    inputs = dict(a.input)
    if len(inputs) != len(a.input):
        raise SystemExit(f"irrepro figure: duplicate --input keys in {[k for k, _ in a.input]}")
    # Only params.yaml's figures section, the profile and the paths: never environment values.
    parameters = dict(P["figures"], profile=P["profile"], inputs=inputs, out_dir=a.out_dir, name=a.name)
    run_notebook(a.notebook, a.out_notebook, parameters, kernel_name=a.kernel)
    return 0


def cmd_syntod_llm_check(a, P) -> int:
    """One prompt through a SynTOD LLM backend: checks an endpoint / model before a long generation."""
    import json

    from .syntod.llm import LLMError, chat_json, make_backend

    spec = {"kind": a.kind, "model": a.model, "api_key_env": a.api_key_env, "base_url_env": a.base_url_env,
            "model_dir": a.model_dir, "max_tokens": a.max_tokens, "timeout_s": a.timeout, "max_retries": a.max_retries}
    keep = {"openai": {"api_key_env", "base_url_env", "timeout_s", "max_retries"}, "transformers": {"model_dir"}}
    spec = {k: v for k, v in spec.items()
            if v is not None and (k in ("kind", "model", "max_tokens") or k in keep.get(a.kind, ()))}
    try:
        backend = make_backend(spec, a.cache_dir)
        messages = [{"role": "user", "content": a.prompt}]
        meta = {"task": "system_turn", "state": "start", "domain": "recipes"}
        reply = chat_json(backend, messages, meta=meta) if a.json else backend.chat(messages, meta=meta)
    except (LLMError, ValueError, OSError) as exc:
        log.error("syntod-llm-check: %s", exc)
        return 1
    print(json.dumps({"backend": backend.describe(), "reply": reply}, indent=1, ensure_ascii=False))
    return 0


def cmd_syntod_base(a, P) -> int:
    from .syntod.graph import GraphError, SeedError
    from .syntod.stages import base_stage

    try:
        base_stage(P, a.raw, a.out)
    except (GraphError, SeedError, ValueError, FileNotFoundError) as exc:
        log.error("syntod-base: %s", exc)
        return 2
    return 0


def cmd_syntod_evaluate(a, P) -> int:
    from .syntod.evaluation import evaluate_stage

    evaluate_stage(P, a.domain, a.method, a.base, a.adapter, a.raw, a.heldout, a.out, a.predictions)
    return 0


def cmd_syntod_collect(a, P) -> int:
    from .syntod.evaluation import collect_stage

    results = a.results
    if a.results_dir:  # the (domain, method) results the params ask for, each must exist
        S = P["syntod"]
        results = [str(Path(a.results_dir) / f"{d}-{m}.json") for d in S["domains"] for m in S["methods"]]
        missing = [r for r in results if not Path(r).is_file()]
        if missing:
            log.error("syntod-collect: missing results %s (run syntod-evaluate first)", missing)
            return 2
    collect_stage(P, results, a.out_tsv, a.out_json, a.out_md)
    return 0


def cmd_dvc_commit(a, P) -> int:
    from .dvcsync import commit

    return commit(P["profile"])


def cmd_dvc_pull(a, P) -> int:
    from .dvcremote import PullError, dvc_pull

    try:
        dvc_pull(a.remote, a.targets, a.jobs)
    except PullError as exc:
        log.error("%s", exc)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="irrepro", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-params", help="validate params.yaml for every profile")
    _common(p)
    p.set_defaults(func=lambda a, P: 0)

    p = sub.add_parser("download", help="fetch and checksum the profile's raw files")
    _common(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("corpus", help="write the profile's passage corpus as JSONL")
    _common(p)
    p.add_argument("--raw", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("index", help="build the pyserini Lucene index")
    _common(p)
    p.add_argument("--corpus", required=True, help="JSONL corpus file")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("bm25", help="BM25 top-k for every dataset of the profile (TREC runs)")
    _common(p)
    p.add_argument("--index", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--out", required=True, help="directory of <dataset>.trec runs")
    p.set_defaults(func=cmd_bm25)

    p = sub.add_parser("evaluate", help="ranx metrics of the BM25 and published runs")
    _common(p)
    p.add_argument("--raw", required=True)
    p.add_argument("--runs", required=True)
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--perquery", required=True, help="per-query TSV")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="reproduction report: measured vs reference, OK/FAIL")
    _common(p)
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--checkpoints", help="tidy checkpoint table from collect (adds learning curves)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("base", help="build (mini) or fetch (paper) one family's base model")
    _common(p)
    p.add_argument("--family", required=True, choices=["llama", "mistral", "pythia"])
    p.add_argument("--corpus", required=True, help="corpus JSONL (the mini tokenizer and warm-up text)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_base)

    p = sub.add_parser("train-groups", help="reranker training groups (1 positive + hard negatives)")
    _common(p)
    p.add_argument("--raw", required=True)
    p.add_argument("--runs", required=True, help="directory of first-stage <dataset>.trec runs")
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_train_groups)

    p = sub.add_parser("finetune", help="LoRA fine-tune one (family, rank, targets) reranker config, "
                                            "or the SynTOD TOD model (--task tod)")
    _common(p)
    p.add_argument("--task", choices=["rerank", "tod"], default="rerank",
                   help="rerank (default): --family --rank --targets --groups; tod: --train, knobs from "
                        "params syntod.finetune")
    p.add_argument("--family", choices=["llama", "mistral", "pythia"])
    p.add_argument("--rank", type=int)
    p.add_argument("--targets", choices=["mha", "mlp", "all"])
    p.add_argument("--base", required=True)
    p.add_argument("--groups", help="reranker training groups (--task rerank)")
    p.add_argument("--train", help="SynTOD text JSONL, {\"text\": ...} per line (--task tod)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("rerank-eval", help="rerank the first stage with every checkpoint of one config")
    _common(p)
    p.add_argument("--config", required=True, help="config name, e.g. llama-r8-mha")
    p.add_argument("--base", required=True)
    p.add_argument("--adapters", required=True,
                   help="directory of checkpoint-<step> adapters, or hf:<repo>@<commit>[:subfolder]")
    p.add_argument("--raw", required=True)
    p.add_argument("--runs", required=True, help="first-stage runs directory")
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True, help="directory of <dataset>/step-<step>.trec runs")
    p.set_defaults(func=cmd_rerank_eval)

    p = sub.add_parser("collect", help="ranx metrics of every checkpoint run, final metrics, significance vs BM25")
    _common(p)
    p.add_argument("--raw", required=True)
    p.add_argument("--runs", required=True, help="first-stage runs directory")
    p.add_argument("--rerank-runs", required=True, help="directory of <config>/ rerank runs")
    p.add_argument("--out-tsv", required=True)
    p.add_argument("--out-json", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-plot", help="CSV of the final metrics per config and dataset (dvc plots)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("ablate", help="rerank with LoRA switched off per layer/band/projection (one config)")
    _common(p)
    p.add_argument("--config", required=True, help="config name, e.g. llama-r8-mha")
    p.add_argument("--base", required=True)
    p.add_argument("--adapters", required=True,
                   help="directory of checkpoint-<step> adapters, or hf:<repo>@<commit>[:subfolder]")
    p.add_argument("--raw", required=True)
    p.add_argument("--runs", required=True, help="first-stage runs directory")
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True, help="directory of <dataset>/<variant>.trec runs + variants.json")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("ablate-collect", help="ranx metrics of every ablation run, deltas vs full / head-only")
    _common(p)
    p.add_argument("--raw", required=True)
    p.add_argument("--runs", required=True, help="first-stage runs directory")
    p.add_argument("--ablate-runs", required=True, help="directory of <config>/ ablation runs")
    p.add_argument("--out-tsv", required=True)
    p.add_argument("--out-json", required=True)
    p.set_defaults(func=cmd_ablate_collect)

    p = sub.add_parser("syntod-check", help="read SynTOD conversation JSONL files, check the round trip, write counts")
    _common(p)
    p.add_argument("--inputs", nargs="+", required=True, help="published {text} or structured conversation JSONL files")
    p.add_argument("--strict", action="store_true", help="fail on the first irregular conversation")
    p.add_argument("--out", required=True, help="summary JSON (per file)")
    p.set_defaults(func=cmd_syntod_check)

    p = sub.add_parser("syntod-walks", help="sample constrained random walks on a SynTOD state transition graph")
    _common(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--domain", choices=["cooking", "ecommerce"], help="a shipped graph (resources/syntod/<domain>.yaml)")
    g.add_argument("--graph", help="path of a graph YAML file")
    p.add_argument("--seeds", required=True, help="recipe seeds or product catalog JSONL (matching the graph's items)")
    p.add_argument("--n", required=True, type=int, help="number of walks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="walks JSONL")
    p.add_argument("--stats", help="walk statistics JSON (DVC metrics)")
    p.set_defaults(func=cmd_syntod_walks)

    p = sub.add_parser("syntod-gen-walks", help="SynTOD walks whose result pages are BM25 over the catalog (params syntod)")
    _common(p)
    p.add_argument("--domain", required=True, choices=["cooking", "ecommerce"])
    p.add_argument("--seeds", help="recipe seeds or product catalog JSONL (default: the file under --raw)")
    p.add_argument("--raw", help="the download stage's directory (holds the seed files)")
    p.add_argument("--out", required=True, help="walks JSONL")
    p.add_argument("--stats", required=True, help="walk statistics JSON (DVC metrics)")
    p.add_argument("--index-dir", help="keep the catalog BM25 index here (default: a temporary directory)")
    p.set_defaults(func=cmd_syntod_gen_walks)

    p = sub.add_parser("syntod-generate", help="SynTOD conversations from walks (graph) or one prompt each (naive)")
    _common(p)
    p.add_argument("--domain", required=True, choices=["cooking", "ecommerce"])
    p.add_argument("--method", required=True, choices=["graph", "naive"])
    p.add_argument("--walks", help="walks JSONL (method graph)")
    p.add_argument("--seeds", help="recipe seeds or product catalog JSONL (default: the file under --raw)")
    p.add_argument("--raw", help="the download stage's directory (holds the seed files)")
    p.add_argument("--out-dir", required=True, help="conversations(.txt).jsonl, train.jsonl, heldout.jsonl, stats.json")
    p.set_defaults(func=cmd_syntod_generate)

    p = sub.add_parser("figure", help="execute one figure notebook with papermill (kernel irrepro)")
    _common(p)
    p.add_argument("--name", required=True, help="figure name: the output files are <out-dir>/<name>.<format>")
    p.add_argument("--notebook", required=True, help="notebooks/<name>.ipynb")
    p.add_argument("--input", required=True, action="append", type=_key_path, metavar="KEY=PATH",
                   help="an input of the notebook (repeatable), e.g. checkpoints=results/mini/rerank_checkpoints.tsv")
    p.add_argument("--out-dir", required=True, help="figure directory, e.g. results/<profile>/figures")
    p.add_argument("--out-notebook", required=True, help="executed notebook, written only on success")
    p.add_argument("--kernel", default="irrepro", help="Jupyter kernel name (default: %(default)s)")
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser("syntod-llm-check", help="send one prompt through a SynTOD LLM backend and print the reply")
    _common(p)
    p.add_argument("--kind", choices=["openai", "transformers", "offline"], default="offline")
    p.add_argument("--model", help="model name (openai: required)")
    p.add_argument("--model-dir", help="transformers: local model directory")
    p.add_argument("--api-key-env", help="NAME of the environment variable holding the key (default OPENAI_API_KEY)")
    p.add_argument("--base-url-env", help="NAME of the environment variable holding the base URL (default OPENAI_BASE_URL)")
    p.add_argument("--timeout", type=float, help="openai: seconds per request")
    p.add_argument("--max-retries", type=int, help="openai: retries on 429/5xx/timeouts")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--cache-dir", help="reply cache directory (default: no cache)")
    p.add_argument("--prompt", default='Greet a cooking assistant user in one sentence, as JSON {"text": ...}.')
    p.add_argument("--json", action="store_true", help="ask in JSON mode and parse/repair the reply")
    p.set_defaults(func=cmd_syntod_llm_check)

    p = sub.add_parser("syntod-base", help="the SynTOD TOD base model: tiny model + tokenizer trained on the seed "
                                           "catalogs and the graphs' vocabulary (mini), or the pinned hub model (paper)")
    _common(p)
    p.add_argument("--raw", required=True, help="raw data directory (the download stage's; SynTOD seed catalogs)")
    p.add_argument("--out", required=True, help="base model directory, e.g. models/<profile>/syntod_base")
    p.set_defaults(func=cmd_syntod_base)

    p = sub.add_parser("syntod-evaluate", help="teacher-forced intent/slot and response evaluation of one SynTOD "
                                               "TOD model on the published and held-out test conversations")
    _common(p)
    p.add_argument("--domain", required=True, choices=["cooking", "ecommerce"])
    p.add_argument("--method", required=True, choices=["graph", "naive"], help="the generator the model was trained on")
    p.add_argument("--base", required=True, help="base model directory")
    p.add_argument("--adapter", required=True, help="LoRA adapter directory (or a finetune output with final/)")
    p.add_argument("--raw", required=True, help="raw data directory (published test conversations)")
    p.add_argument("--heldout", required=True, help="held-out conversations (structured JSONL of the generation stage)")
    p.add_argument("--out", required=True, help="result JSON (tidy rows, judge and generator named)")
    p.add_argument("--predictions", required=True, help="per-turn predictions JSONL")
    p.set_defaults(func=cmd_syntod_evaluate)

    p = sub.add_parser("syntod-collect",
                       help="merge SynTOD evaluation results: tidy TSV, DVC metrics, graph vs naive table")
    _common(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--results", nargs="+", help="result JSON files of syntod-evaluate")
    g.add_argument("--results-dir", help="directory of <domain>-<method>.json results (params syntod: domains x methods)")
    p.add_argument("--out-tsv", required=True)
    p.add_argument("--out-json", required=True, help="DVC metrics JSON")
    p.add_argument("--out-md", required=True, help="markdown comparison table")
    p.set_defaults(func=cmd_syntod_collect)

    p = sub.add_parser("dvc-commit", help="record finished Snakemake outputs in dvc.lock")
    _common(p)
    p.set_defaults(func=cmd_dvc_commit)

    p = sub.add_parser("dvc-pull", help="dvc pull, then date the outputs so Snakemake sees them up to date")
    _common(p)
    p.add_argument("-r", "--remote", help="DVC remote name (default: the core.remote of .dvc/config)")
    p.add_argument("-j", "--jobs", type=int, help="parallel transfers (dvc pull -j)")
    p.add_argument("targets", nargs="*", help="stages or outputs to pull (default: all)")
    p.set_defaults(func=cmd_dvc_pull)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    a.argv = argv
    setup_logging(a.log)
    try:
        P = load_params(a.params, a.profile)
    except ParamsError as exc:
        log.error("%s", exc)
        return 2
    log.info("irrepro %s (profile %s)", a.command, P["profile"])
    return a.func(a, P)


if __name__ == "__main__":
    sys.exit(main())
