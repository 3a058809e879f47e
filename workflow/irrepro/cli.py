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

import shtab

from . import __version__, provenance, sidecar
from .cli_tools import add_parsers as add_tool_parsers
from .cli_user import START_HERE, add_user_commands
from .errors import FailureError, InputError, run_command
from .params import DEFAULT_PARAMS, load_params
from .progress import progress_logging
from .utils import setup_logging

log = logging.getLogger("irrepro")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=["mini", "paper", "rehearsal"], help="override params.yaml's profile")
    p.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: %(default)s)")
    p.add_argument("--log", help="also write the log to this file (the rule's log under logs/)")
    p.add_argument("--debug", action="store_true", help="also print an error's traceback (it is always in --log)")


def cmd_download(a, P) -> int:
    from .download import download_profile
    from .params import route

    D = P["data"]
    paths = download_profile(route(P["profile"]), a.out, D["mirrors"], D["allow_network"], timeout=D["timeout_s"],
                             sources_path=D.get("sources"))
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
        # Titles (and the text) of the titled Tevatron corpus ride along for the reranker, so
        # scoring reads passages as training saw them (Tevatron/msmarco-passage-aug has titles).
        n = bm25.write_corpus_from_msmarco_tsv(str(source_path(a.raw, "msmarco_collection")), a.out,
                                               titles_path=str(source_path(a.raw, "tevatron_msmarco_corpus")))
    log.info("corpus: %d passages -> %s", n, a.out)
    return 0


def cmd_index(a, P) -> int:
    from . import bm25
    from .checks import check_corpus_jsonl

    check_corpus_jsonl(a.corpus)  # a broken line or a duplicate id named before the JVM starts
    bm25.build_index(a.corpus, a.out, threads=P["bm25"]["threads"])
    return 0


def cmd_bm25(a, P) -> int:
    from . import bm25
    from .datasets import get, source_path
    from .trec import read_qrels, read_topics, write_run

    B = P["bm25"]
    index = a.index
    from .params import route

    if route(P["profile"]) == "paper" and B["prebuilt_index"]:
        index = bm25.prebuilt_index_path(B["prebuilt_index"])
    elif not (Path(index) / "segments.gen").exists() and not any(Path(index).glob("segments_*")):
        raise InputError("not a Lucene index (no segments file)", file=index, hint="run the index stage first")
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
        min_judged_fraction=P["evaluate"]["min_judged_fraction"],
    )
    return 0


def cmd_report(a, P) -> int:
    from .deviations import load_deviations
    from .report import build_report, count_fails, load_metrics, load_references, write_report

    from .params import route

    metrics = load_metrics(a.metrics)
    refs = load_references()
    # the rehearsal is checked against the paper's references (its route), under a banner
    text = build_report(metrics, refs, route(P["profile"]), deviations=load_deviations(params=P))
    if P["profile"] == "rehearsal":
        from .rehearsal.check import BANNER

        text = BANNER + "\n\n" + text.replace("# Reproduction report (profile: paper)",
                                                 "# Reproduction report (profile: rehearsal = the paper route, sizes "
                                                 "shrunk; checked against the paper's references)", 1)
    if a.checkpoints:
        from .study1.collect import curves_markdown

        text += "\n" + curves_markdown(a.checkpoints)
    if a.published:
        from .study1.published import final_markdown, read_table

        text += "\n" + final_markdown(read_table(a.published), P["profile"])
    write_report(text, a.out)
    log.info("report written to %s", a.out)
    fails = count_fails(metrics, refs, route(P["profile"]))
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
    from .launch import in_distributed_child, relaunch

    need = ("family", "rank", "targets", "groups") if a.task == "rerank" else ("train",)
    missing = [f"--{k}" for k in need if getattr(a, k) is None]
    if missing:
        raise InputError(f"finetune --task {a.task} needs {' '.join(missing)}", key=missing[0])
    if in_distributed_child():  # the launcher's parent holds the lock and prepared the work directory
        return _finetune_run(a, P)
    from .locking import output_lock
    from .study1.finetune_inputs import prepare_finetune

    prepared = prepare_finetune(P, a)  # inputs checked (fast) before the lock and any model loading
    with output_lock(a.out, "finetune"):
        prepared()
        F = P["finetune"]
        code = relaunch(a.argv, F["launcher"], F["nproc_per_node"])  # multi-GPU: torchrun / accelerate
        return code if code is not None else _finetune_run(a, P)


def _finetune_run(a, P) -> int:
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


def cmd_published_fetch(a, P) -> int:
    from .study1.published import pin_published

    doc = pin_published(P["published"]["adapters"], a.out)
    log.info("published adapters: %d repo(s) pinned -> %s", len(doc["adapters"]), a.out)
    return 0


def cmd_published_eval(a, P) -> int:
    from .study1.published import evaluate_published

    rows = evaluate_published(P, a.pins, a.raw, a.runs, a.corpus, a.out_runs, a.out_tsv)
    log.info("published adapters: %d metric rows -> %s", len(rows), a.out_tsv)
    return 0


def cmd_collect(a, P) -> int:
    from .study1.collect import collect

    collect(P, a.raw, a.runs, a.rerank_runs, a.out_tsv, a.out_json, a.out_md, a.out_plot, a.out_tex)
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

    from .syntod.graph import load_graph, load_items, sample_walks, walk_stats, write_walks
    from .utils import atomic_path

    graph = load_graph(a.graph or a.domain)
    walks = sample_walks(graph, a.n, a.seed, load_items(graph, a.seeds))
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
        raise InputError("give --raw (the download stage's directory) or --seeds", key="--raw")
    from .datasets import source_path
    from .syntod.stages import SEED_SOURCES

    return str(source_path(a.raw, SEED_SOURCES[a.domain]))


def cmd_syntod_gen_walks(a, P) -> int:
    from .syntod.stages import walks_stage

    walks_stage(P, a.domain, _seeds(a), a.out, a.stats, a.index_dir)
    return 0


def cmd_syntod_generate(a, P) -> int:
    from .locking import output_lock
    from .syntod.stages import generate_stage

    seeds = _seeds(a)
    with output_lock(a.out_dir, "syntod-generate"):
        stats = generate_stage(P, a.domain, a.method, a.walks, seeds, a.out_dir)
    if stats["conversations"] == 0:
        raise FailureError("no conversation was generated (see the warnings above)", file=a.out_dir)
    return 0


def _key_path(text: str) -> tuple[str, str]:
    key, sep, path = text.partition("=")
    if not sep or not key.isidentifier() or not path:
        raise argparse.ArgumentTypeError(f"expected KEY=PATH (KEY a Python identifier), got {text!r}")
    return key, path


def cmd_figure(a, P) -> int:
    from .figures import run_notebook

    inputs = dict(a.input)
    if len(inputs) != len(a.input):
        raise InputError(f"duplicate keys in {[k for k, _ in a.input]}", key="--input")
    # Only params.yaml's figures section, the profile and the paths: never environment values.
    parameters = dict(P["figures"], profile=P["profile"], inputs=inputs, out_dir=a.out_dir, name=a.name)
    run_notebook(a.notebook, a.out_notebook, parameters, kernel_name=a.kernel)
    return 0


def cmd_syntod_llm_check(a, P) -> int:
    """One prompt through a SynTOD LLM backend: checks an endpoint / model before a long generation."""
    import json

    from .syntod.llm import chat_json, make_backend

    spec = {"kind": a.kind, "model": a.model, "api_key_env": a.api_key_env, "base_url_env": a.base_url_env,
            "model_dir": a.model_dir, "max_tokens": a.max_tokens, "timeout_s": a.timeout, "max_retries": a.max_retries}
    keep = {"openai": {"api_key_env", "base_url_env", "timeout_s", "max_retries"}, "transformers": {"model_dir"}}
    spec = {k: v for k, v in spec.items()
            if v is not None and (k in ("kind", "model", "max_tokens") or k in keep.get(a.kind, ()))}
    backend = make_backend(spec, a.cache_dir)
    messages = [{"role": "user", "content": a.prompt}]
    meta = {"task": "system_turn", "state": "start", "domain": "recipes"}
    reply = chat_json(backend, messages, meta=meta) if a.json else backend.chat(messages, meta=meta)
    print(json.dumps({"backend": backend.describe(), "reply": reply}, indent=1, ensure_ascii=False))
    return 0


def cmd_syntod_base(a, P) -> int:
    from .syntod.stages import base_stage

    base_stage(P, a.raw, a.out, dict(a.catalog or []) or None)
    return 0


def cmd_syntod_evaluate(a, P) -> int:
    from .syntod.evaluation import evaluate_stage

    evaluate_stage(P, a.domain, a.method, a.base, a.adapter, a.raw, a.heldout, a.out, a.predictions, a.items)
    return 0


def cmd_syntod_items(a, P) -> int:
    from .syntod.items import items_stage

    items_stage(P, a.domain, a.raw, a.out_dir, a.metrics)
    return 0


def cmd_syntod_collect(a, P) -> int:
    from .syntod.evaluation import collect_stage

    results = a.results
    if a.results_dir:  # the (domain, method) results the params ask for, each must exist
        S = P["syntod"]
        results = [str(Path(a.results_dir) / f"{d}-{m}.json") for d in S["domains"] for m in S["methods"]]
        missing = [r for r in results if not Path(r).is_file()]
        if missing:
            raise InputError(f"{len(missing)} of {len(results)} results missing: {', '.join(Path(m).name for m in missing)}",
                             file=a.results_dir, hint="run syntod-evaluate first")
    collect_stage(P, results, a.out_tsv, a.out_json, a.out_md)
    return 0


def cmd_check_params(a, P) -> int:
    """Every profile: estimated job time per rule (irrepro plan) within workflow/runtimes.yaml."""
    from .params import PROFILES
    from .plan import PlanError, check_runtimes

    for profile in PROFILES:
        try:
            check_runtimes(load_params(a.params, profile))
        except PlanError as exc:
            raise InputError(str(exc)) from exc
    log.info("params ok for %s (schema, cross-key rules, runtimes)", list(PROFILES))
    return 0


def cmd_plan(a, P) -> int:
    from .plan import PlanError, build_plan, calibration, measured_facts, render

    try:
        text = render(build_plan(P, measured_facts(P, a.root)), a.format, calibration(P, a.root))
    except PlanError as exc:
        raise InputError(str(exc)) from exc
    sys.stdout.write(text)
    return 0


def cmd_rehearsal_fixtures(a, P) -> int:
    import json

    from .download import mirror_dirs
    from .rehearsal.hubcache import build_hub_cache
    from .rehearsal.upstream import (OVERLAY_SOURCES, build_upstream_mirror, find_mirror, mirror_passages,
                                     write_overlaid_sources)

    mirror = find_mirror([a.mirror] if a.mirror else mirror_dirs(P["data"]["mirrors"]))
    overlay = build_upstream_mirror(a.mirror_out, mirror)
    sources = write_overlaid_sources(overlay, Path(a.mirror_out) / OVERLAY_SOURCES)
    models = build_hub_cache(a.hub_cache, texts=mirror_passages(mirror).values())
    summary = {"mirror": str(mirror), "sources": str(sources), "overlay": overlay,
               "models": {k: {"revision": v["revision"], "dtype": v["dtype"], "shards": len(v["shards"])}
                          for k, v in models.items()}}
    sys.stdout.write(json.dumps(summary, indent=1) + "\n")
    return 0


def cmd_verify(a, P) -> int:
    """Recompute stages of a published run and judge every output (irrepro.verify)."""
    from .verify import VerifyError, findings_json, render, verify

    try:
        findings = verify(P, a.root, stages=a.stages, lock=a.lock, pull=a.pull, remote=a.remote,
                          bytes_mode=a.bytes, keep=a.keep)
    except VerifyError as exc:
        log.error("verify: %s", exc)
        return 2
    sys.stdout.write(render(findings))
    if a.out:
        Path(a.out).write_text(findings_json(findings), encoding="utf-8")
    return 1 if any(f.failed for f in findings) else 0


def cmd_llm_serve(a, P) -> int:
    from .rehearsal.llmserve import serve

    serve(a.port, a.fail_every, a.key_env, a.url_file, a.stats)
    return 0


def cmd_rehearsal_check(a, P) -> int:
    from .rehearsal.check import run_checks
    from .utils import atomic_path

    results, md = run_checks(P, ".", a.snakemake_log, a.factor)
    if a.report:
        with atomic_path(a.report) as tmp:
            base = Path(a.report).read_text(encoding="utf-8") if Path(a.report).is_file() else ""
            cut = base.find("## Rehearsal checks")
            tmp.write_text((base[:cut] if cut >= 0 else base).rstrip("\n") + "\n\n" + md)
    sys.stdout.write(md)
    failed = {k: v for k, v in results.items() if v}
    for name, problems in failed.items():
        for msg in problems:
            log.error("rehearsal check %s FAILED: %s", name, msg)
    if failed:
        log.error("rehearsal: %d check(s) failed: %s", len(failed), ", ".join(failed))
        return 1
    log.info("rehearsal: every check passed (%s)", ", ".join(results))
    return 0


def cmd_dvc_commit(a, P) -> int:
    from .dvcsync import commit

    return commit(P["profile"])


def cmd_dvc_pull(a, P) -> int:
    from .dvcremote import PullError, dvc_pull

    try:
        dvc_pull(a.remote, a.targets, a.jobs)
    except PullError as exc:
        raise FailureError(str(exc)) from exc
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="irrepro", description=__doc__, epilog=START_HERE,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"irrepro {__version__}")
    shtab.add_argument_to(ap, ["--print-completion"], help="print a shell completion script for the given shell")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-params", help="validate params.yaml for every profile (schema, cross-key rules, "
                                          "estimated job times within the rules' runtimes)")
    _common(p)
    p.set_defaults(func=cmd_check_params)

    p = sub.add_parser("plan", help="cost plan of a profile: jobs, steps, checkpoints, pairs, tokens, GPU-hours, "
                                    "disk, LLM calls per stage")
    _common(p)
    p.add_argument("--format", choices=["md", "json", "tsv"], default="md", help="output format (default: %(default)s)")
    p.add_argument("--root", default=".", help="project root whose finished outputs calibrate the plan")
    p.set_defaults(func=cmd_plan)

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
    p.add_argument("--published", help="table of the authors' published adapters (published-eval; adds a section)")
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

    p = sub.add_parser("rerank-eval", help="rerank the first stage with the checkpoints of one config: every "
                       "checkpoint on rerank.checkpoint_datasets, the final one on rerank.final_datasets")
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

    p = sub.add_parser("published-fetch", help="pin the authors' published adapters (revision, base, adapter folders)")
    _common(p)
    p.add_argument("--out", required=True, help="pin file (JSON)")
    p.set_defaults(func=cmd_published_fetch)

    p = sub.add_parser("published-eval", help="rerank and score every pinned published adapter folder")
    _common(p)
    p.add_argument("--pins", required=True, help="pin file from published-fetch")
    p.add_argument("--raw", required=True)
    p.add_argument("--runs", required=True, help="first-stage runs directory")
    p.add_argument("--corpus", required=True)
    p.add_argument("--out-runs", required=True, help="directory of <name>/<checkpoint>/<dataset>/step-<n>.trec runs")
    p.add_argument("--out-tsv", required=True)
    p.set_defaults(func=cmd_published_eval)

    p = sub.add_parser("collect", help="ranx metrics of every checkpoint run, final metrics, significance vs BM25")
    _common(p)
    p.add_argument("--raw", required=True)
    p.add_argument("--runs", required=True, help="first-stage runs directory")
    p.add_argument("--rerank-runs", required=True, help="directory of <config>/ rerank runs")
    p.add_argument("--out-tsv", required=True)
    p.add_argument("--out-json", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-plot", help="CSV of the final metrics per config and dataset (dvc plots)")
    p.add_argument("--out-tex", help="the significance tables as LaTeX (ranx's to_latex)")
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
    p.add_argument("--catalog", action="append", type=_key_path, metavar="DOMAIN=PATH",
                   help="a domain's item catalog for the corpus (repeatable; the syntod_items stage's train.jsonl); "
                        "a domain not given uses its seed catalog under --raw")
    p.set_defaults(func=cmd_syntod_base)

    p = sub.add_parser("syntod-items", help="the SynTOD items the generator may use (train.jsonl) and the held-out "
                                            "test items (test.jsonl) of one domain (params syntod.item_split, "
                                            "syntod.train_catalog)")
    _common(p)
    p.add_argument("--domain", required=True, choices=["cooking", "ecommerce"])
    p.add_argument("--raw", required=True, help="raw data directory (seed catalogs, published test conversations)")
    p.add_argument("--out-dir", required=True, help="directory for train.jsonl and test.jsonl")
    p.add_argument("--metrics", required=True, help="split counts JSON (DVC metrics), incl. unseen test conversations")
    p.set_defaults(func=cmd_syntod_items)

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
    p.add_argument("--items", help="the domain's syntod_items directory: also score each published set on its "
                                   "conversations whose items are all unseen (<name>_unseen)")
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

    p = sub.add_parser("rehearsal-fixtures", help="tiny hub-cache models of the paper's repos and small upstream-"
                                                  "format data files (+ their checksum overlay) for a rehearsal")
    _common(p)
    p.add_argument("--hub-cache", required=True, help="Hugging Face hub cache directory to write (HF_HUB_CACHE)")
    p.add_argument("--mirror-out", required=True, help="mirror directory for the fixture files and "
                                                       "sources.rehearsal.yaml")
    p.add_argument("--mirror", help="the real data mirror to build from (default: params data.mirrors, "
                                    "$IRREPRO_DATA_MIRROR)")
    p.set_defaults(func=cmd_rehearsal_fixtures)

    p = sub.add_parser("verify", help="recompute stages of a published run (dvc.lock + pulled artifacts) and compare "
                                      "every output: identical bytes, or metrics within params verify.tolerance")
    _common(p)
    p.add_argument("--stages", nargs="+", help="dvc.lock stage names, in order (default: params verify.stages)")
    p.add_argument("--lock", help="the published dvc.lock (default: the project's)")
    p.add_argument("--pull", action="store_true", help="dvc pull --with-deps the stages first")
    p.add_argument("-r", "--remote", help="DVC remote for --pull (default: core.remote)")
    p.add_argument("--bytes", action="store_true",
                   help="same-hardware check: any differing byte fails (verify.nondeterministic excepted)")
    p.add_argument("--keep", action="store_true", help="keep the recomputed outputs and dvc.lock (default: restore)")
    p.add_argument("--out", help="also write the findings as JSON here")
    p.add_argument("--root", default=".", help="project directory (default: the current one)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("llm-serve", help="OpenAI-compatible chat server on 127.0.0.1 answering with the template "
                                         "simulator / heuristic judge, with injected 429/5xx (the rehearsal's LLM)")
    _common(p)
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--fail-every", type=int, default=0, help="refuse every N-th request (429 and 503 alternately)")
    p.add_argument("--key-env", help="require this environment variable's value as the bearer key")
    p.add_argument("--url-file", help="write the base URL here once listening")
    p.add_argument("--stats", help="JSON file of request counts, rewritten after every request")
    p.set_defaults(func=cmd_llm_serve)

    p = sub.add_parser("rehearsal-check", help="the rehearsal's checks: fp32 trainables, finite numbers, titles, "
                                               "train/test split, plan vs measured job times")
    _common(p)
    p.add_argument("--snakemake-log", help="the Snakemake log of the run (per-job wall times)")
    p.add_argument("--factor", type=float, default=10.0, help="allowed measured/plan ratio, either way")
    p.add_argument("--report", help="append the checks' section to this report")
    p.set_defaults(func=cmd_rehearsal_check)

    p = sub.add_parser("dvc-commit", help="record finished Snakemake outputs in dvc.lock")
    _common(p)
    p.set_defaults(func=cmd_dvc_commit)

    p = sub.add_parser("dvc-pull", help="dvc pull, then date the outputs so Snakemake sees them up to date")
    _common(p)
    p.add_argument("-r", "--remote", help="DVC remote name (default: the core.remote of .dvc/config)")
    p.add_argument("-j", "--jobs", type=int, help="parallel transfers (dvc pull -j)")
    p.add_argument("targets", nargs="*", help="stages or outputs to pull (default: all)")
    p.set_defaults(func=cmd_dvc_pull)
    # plot-data, report-pages, push (irrepro.cli_tools)
    add_tool_parsers(sub, _common)
    # rerank, eval: the researcher's commands (irrepro.cli_user)
    add_user_commands(sub, _common)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    a.argv = argv
    setup_logging(a.log)
    # One error path (irrepro.errors): every failure of every command is one line on stderr and
    # in --log, exit 2 for bad input and 1 for a failure; the traceback only in --log / --debug.
    return run_command(a.command, _run, a, debug=getattr(a, "debug", False))


def _run(a) -> int:
    P = load_params(a.params, a.profile)
    log.info("irrepro %s (profile %s)", a.command, P["profile"])
    # timings, host and dates of this job go to its run sidecar beside the log, never into its outputs
    sidecar.start(a.command, a.argv, a.log)
    # git commit, package / Lucene / Java versions, hardware and seeds: the same sidecar (irrepro.provenance)
    provenance.record(P)
    code = 1
    try:
        with progress_logging():  # on a terminal, log lines go above the progress bars (irrepro.progress)
            code = a.func(a, P)
        return code
    finally:
        sidecar.finish(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    sys.exit(main())
