"""The user's commands (no workflow rule calls them): ``rerank`` and ``eval`` of any run,
the cost ``plan``, ``check-params``, ``verify`` of a published run and ``push`` to the Hub.

Kept apart from the stages (:mod:`irrepro.stages`, one per rule) so the stage commands stay a
one-to-one image of the rules. ``rerank`` and ``eval`` take their defaults from
``params.yaml`` (the profile's ``rerank.*``, ``finetune.*_max_len``, ``evaluate.metrics``,
``rerank.p_adjust``), so with no flags a user reranks and scores exactly as the pipeline does.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from .commands import Command, In, Opt, Out
from .errors import InputError

log = logging.getLogger("irrepro")

START_HERE = """\
start here (the five commands most users need):
  make run                        set up .venv and run the mini study end to end
  make test                       run the test suite
  irrepro plan --profile paper    jobs, GPU-hours, disk and LLM calls of the paper run
  irrepro rerank --base B --adapter A --topics T --run R --corpus C --out OUT.trec
                                  rerank your own TREC run with a trained or published adapter
  irrepro eval --qrels Q --run OUT.trec [--run OTHER.trec ...] --rel-level 2
                                  ranx metrics (+ corrected significance tests) of any runs
Shell completion: eval "$(irrepro --print-completion bash)"  (or zsh / tcsh).
"""


def cmd_rerank(a, P) -> int:
    """Errors (file:line for bad input) go through the CLI's one error path (irrepro.errors)."""
    from .userrerank import rerank_any

    R, F = P["rerank"], P["finetune"]
    rerank_any(a.base, a.adapter, a.out, run=a.run, topics=a.topics, candidates=a.candidates, corpus=a.corpus,
               depth=a.depth if a.depth is not None else R["depth"],
               batch_size=a.batch_size if a.batch_size is not None else R["batch_size"],
               qmax=a.qmax if a.qmax is not None else F["query_max_len"],
               pmax=a.pmax if a.pmax is not None else F["passage_max_len"],
               dtype=a.dtype or R["dtype"], tag=a.tag, device=a.device)
    return 0


def cmd_eval(a, P) -> int:
    from .evaluate import comparison_table
    from .significance import comparison_latex
    from .userrerank import evaluate_any, run_names, scores_table
    from .utils import atomic_path

    metrics = a.metrics or list(P["evaluate"]["metrics"])
    if a.latex and len(a.run) < 2:
        raise ValueError("--latex needs two or more --run to compare")
    res = evaluate_any(run_names(a.run), a.qrels, metrics, a.rel_level, stat_test=a.stat_test,
                       correction=a.correction or P["rerank"]["p_adjust"], max_p=a.max_p)

    text = scores_table(res)
    if res["comparison"] is not None:
        text += "\n" + comparison_table(res["comparison"])
    sys.stdout.write(text)
    if a.out_json:
        doc = {k: v for k, v in res.items() if k != "per_query" or a.per_query}
        with atomic_path(a.out_json) as tmp:
            tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    if a.out_md:
        with atomic_path(a.out_md) as tmp:
            tmp.write_text(text, encoding="utf-8")
    if a.latex:
        with atomic_path(a.latex) as tmp:
            tmp.write_text(comparison_latex(res["comparison"]), encoding="utf-8")
        log.info("eval: LaTeX table -> %s", a.latex)
    return 0


def cmd_check_params(a, P) -> int:
    """Every profile: estimated job time per rule (irrepro plan) within workflow/resources.yaml."""
    from .params import PROFILES, load_params
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


def cmd_push(a, P) -> int:
    from .push import describe, plan, push

    uploads = plan(P, a.namespace, a.prefix, adapters=not a.no_adapters, syntod=not a.no_syntod)
    print(describe(uploads))
    if a.dry_run:
        print(f"dry run: nothing uploaded ({len(uploads)} repos planned)")
        return 0
    for spec in push(uploads, private=not a.public, endpoint=a.endpoint):
        print(spec)
    return 0


USER_COMMANDS = (
    Command("check-params", "validate params.yaml for every profile (schema, cross-key rules, estimated job times "
                            "within the rules' runtimes)", (), cmd_check_params, params=("plan",)),
    Command("plan", "cost plan of a profile: jobs, steps, checkpoints, pairs, tokens, GPU-hours, disk, LLM calls "
                    "per stage", (
        Opt("--format", "output format (default: %(default)s)", choices=["md", "json", "tsv"], default="md"),
        In("--root", "project root whose finished outputs calibrate the plan", required=False, default="."),
    ), cmd_plan, params=("plan",)),
    Command("rerank", "rerank your own first stage (TREC run + topics, or candidates JSONL) with a base model and a "
                      "LoRA adapter; writes a TREC run", (
        In("--base", "base model: a directory, a base stage output (BASE.json) or a hub model id"),
        In("--adapter", "peft adapter directory, a finetune output directory (its final checkpoint), or "
                        "hf:<repo>@<commit>[:subfolder]"),
        In("--run", "first-stage TREC run (6 columns); needs --topics", group="first-stage"),
        In("--candidates", 'candidates JSONL: {"qid", "query", "docid", "score"?, "text"?, "title"?} per line',
           group="first-stage"),
        In("--topics", "topics TSV (qid<TAB>query)", required=False),
        In("--corpus", "passages: JSONL (pyserini {id, contents} or Tevatron {docid, text}), TSV (docid<TAB>text "
                       "or docid<TAB>title<TAB>text) or a pyserini index directory", required=False),
        Out("--out", "output TREC run"),
        Opt("--depth", "rerank each query's top-N (default: params rerank.depth)", type=int),
        Opt("--batch-size", "default: params rerank.batch_size", type=int),
        Opt("--qmax", "query token budget (default: params finetune.query_max_len)", type=int),
        Opt("--pmax", "passage token budget (default: params finetune.passage_max_len)", type=int),
        Opt("--dtype", "default: params rerank.dtype", choices=["auto", "float32", "bfloat16", "float16"]),
        Opt("--device", "cpu, cuda, cuda:1, ... (default: cuda if available)"),
        Opt("--tag", "run tag (column 6; default: %(default)s)", default="irrepro-rerank"),
    ), cmd_rerank, params=("rerank", "finetune.query_max_len", "finetune.passage_max_len"),
        description="Rerank any first stage with the pipeline's scoring code. Defaults (depth, batch size, "
                    "truncation, dtype) are params.yaml's, so the pipeline's own inputs give the pipeline's run."),
    Command("eval", "ranx metrics of any TREC runs against any qrels (+ paired tests with corrected p-values)", (
        In("--qrels", "TREC qrels (qid iter docid grade)"),
        In("--run", "a TREC run (repeatable); named by its file name unless NAME= is given", action="append",
           metavar="[NAME=]RUN"),
        Opt("--metrics", "e.g. ndcg@10 mrr@10 map recall@100 (default: params evaluate.metrics)", nargs="+"),
        Opt("--rel-level", "lowest grade counted relevant by binary metrics (default: %(default)s; TREC DL: 2)",
            type=int, default=1),
        Opt("--stat-test", "paired t-test or Fisher randomisation test (default: %(default)s)",
            choices=["student", "fisher"], default="student"),
        Opt("--correction", "multiple-comparison correction (default: params rerank.p_adjust)",
            choices=["bh", "by", "holm", "none"]),
        Opt("--max-p", "significance threshold on adjusted p (default: %(default)s)", type=float, default=0.05),
        Out("--out-json", "write the scores (and the comparison) as JSON", required=False),
        Opt("--per-query", "include per-query values in --out-json", action="store_true"),
        Out("--out-md", "write the printed markdown tables to this file", required=False),
        Out("--latex", "write the comparison as a LaTeX table (ranx's to_latex)", required=False),
    ), cmd_eval, params=("evaluate.metrics", "rerank.p_adjust"),
        description="Score runs with the pipeline's ranx settings: judged queries define the query set, nDCG on "
                    "graded gains, binary metrics at --rel-level (TREC DL: 2). Two or more runs are also compared "
                    "pairwise, with p-values adjusted over all pairs per metric."),
    Command("verify", "recompute stages of a published run (dvc.lock + pulled artifacts) and compare every output: "
                      "identical bytes, or metrics within params verify.tolerance", (
        Opt("--stages", "dvc.lock stage names, in order (default: params verify.stages)", nargs="+"),
        In("--lock", "the published dvc.lock (default: the project's)", required=False),
        Opt("--pull", "dvc pull --with-deps the stages first", action="store_true"),
        Opt("--remote", "DVC remote for --pull (default: core.remote)", alias="-r"),
        Opt("--bytes", "same-hardware check: any differing byte fails (verify.nondeterministic excepted)",
            action="store_true"),
        Opt("--keep", "keep the recomputed outputs and dvc.lock (default: restore)", action="store_true"),
        Out("--out", "also write the findings as JSON here", required=False),
        Opt("--root", "project directory (default: the current one)", default="."),
    ), cmd_verify, params=("verify",)),
    Command("push", "upload the adapters (final + every checkpoint) and the generated SynTOD data to the Hugging "
                    "Face Hub (token: HF_TOKEN only); prints hf: specs", (
        Opt("--namespace", "Hub user or organisation", required=True),
        Opt("--prefix", "repo name prefix (default: %(default)s)", default="irrepro"),
        Opt("--dry-run", "print the upload plan; no token, no network", action="store_true"),
        Opt("--public", "create public repos (default: private)", action="store_true"),
        Opt("--endpoint", "Hub API endpoint (default: HF_ENDPOINT or huggingface.co)"),
        Opt("--no-adapters", action="store_true"),
        Opt("--no-syntod", action="store_true"),
    ), cmd_push, params=("profile", "finetune", "syntod")),
)
