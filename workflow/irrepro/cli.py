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
    from .study1.training import finetune

    F = P["finetune"]
    code = relaunch(a.argv, F["launcher"], F["nproc_per_node"])  # multi-GPU: torchrun / accelerate
    if code is not None:
        return code
    finetune(P, a.family, a.rank, a.targets, a.base, a.groups, a.out)
    return 0


def cmd_rerank_eval(a, P) -> int:
    from .study1.reranking import rerank_config

    rerank_config(P, a.config, a.base, a.adapters, a.raw, a.runs, a.corpus, a.out)
    return 0


def cmd_collect(a, P) -> int:
    from .study1.collect import collect

    collect(P, a.raw, a.runs, a.rerank_runs, a.out_tsv, a.out_json, a.out_md)
    return 0


def cmd_dvc_commit(a, P) -> int:
    from .dvcsync import commit

    return commit(P["profile"])


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

    p = sub.add_parser("finetune", help="LoRA fine-tune one (family, rank, targets) config")
    _common(p)
    p.add_argument("--family", required=True, choices=["llama", "mistral", "pythia"])
    p.add_argument("--rank", required=True, type=int)
    p.add_argument("--targets", required=True, choices=["mha", "mlp", "all"])
    p.add_argument("--base", required=True)
    p.add_argument("--groups", required=True)
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
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("dvc-commit", help="record finished Snakemake outputs in dvc.lock")
    _common(p)
    p.set_defaults(func=cmd_dvc_commit)
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
