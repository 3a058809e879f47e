"""The researcher's commands: ``irrepro rerank`` and ``irrepro eval`` (no workflow stage calls them).

Kept out of :mod:`irrepro.cli` (one sub-command per stage) so the stage commands stay a
one-to-one image of the rules; :func:`add_user_commands` registers both on the main parser.
Defaults come from ``params.yaml`` (the profile's ``rerank.*``, ``finetune.*_max_len``,
``evaluate.metrics``, ``rerank.p_adjust``), so with no flags a user reranks and scores exactly
as the pipeline does.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable

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


def add_user_commands(sub, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``rerank`` and ``eval`` on the sub-parsers ``sub`` (``common`` adds --profile etc.)."""
    p = sub.add_parser(
        "rerank", help="rerank your own first stage (TREC run + topics, or candidates JSONL) with a base model and "
                       "a LoRA adapter; writes a TREC run",
        description="Rerank any first stage with the pipeline's scoring code. Defaults (depth, batch size, "
                    "truncation, dtype) are params.yaml's, so the pipeline's own inputs give the pipeline's run.")
    common(p)
    p.add_argument("--base", required=True, help="base model: a directory, a base stage output (BASE.json) or a "
                                                 "hub model id")
    p.add_argument("--adapter", required=True, help="peft adapter directory, a finetune output directory (its final "
                                                    "checkpoint), or hf:<repo>@<commit>[:subfolder]")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", help="first-stage TREC run (6 columns); needs --topics")
    g.add_argument("--candidates", help='candidates JSONL: {"qid", "query", "docid", "score"?, "text"?, "title"?} '
                                        "per line")
    p.add_argument("--topics", help="topics TSV (qid<TAB>query)")
    p.add_argument("--corpus", help="passages: JSONL (pyserini {id, contents} or Tevatron {docid, text}), TSV "
                                    "(docid<TAB>text or docid<TAB>title<TAB>text) or a pyserini index directory")
    p.add_argument("--out", required=True, help="output TREC run")
    p.add_argument("--depth", type=int, help="rerank each query's top-N (default: params rerank.depth)")
    p.add_argument("--batch-size", type=int, help="default: params rerank.batch_size")
    p.add_argument("--qmax", type=int, help="query token budget (default: params finetune.query_max_len)")
    p.add_argument("--pmax", type=int, help="passage token budget (default: params finetune.passage_max_len)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="default: params rerank.dtype")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--tag", default="irrepro-rerank", help="run tag (column 6; default: %(default)s)")
    p.set_defaults(func=cmd_rerank)

    p = sub.add_parser(
        "eval", help="ranx metrics of any TREC runs against any qrels (+ paired tests with corrected p-values)",
        description="Score runs with the pipeline's ranx settings: judged queries define the query set, nDCG on "
                    "graded gains, binary metrics at --rel-level (TREC DL: 2). Two or more runs are also compared "
                    "pairwise, with p-values adjusted over all pairs per metric.")
    common(p)
    p.add_argument("--qrels", required=True, help="TREC qrels (qid iter docid grade)")
    p.add_argument("--run", required=True, action="append", metavar="[NAME=]RUN",
                   help="a TREC run (repeatable); named by its file name unless NAME= is given")
    p.add_argument("--metrics", nargs="+", help="e.g. ndcg@10 mrr@10 map recall@100 (default: params evaluate.metrics)")
    p.add_argument("--rel-level", type=int, default=1,
                   help="lowest grade counted relevant by binary metrics (default: %(default)s; TREC DL: 2)")
    p.add_argument("--stat-test", choices=["student", "fisher"], default="student",
                   help="paired t-test or Fisher randomisation test (default: %(default)s)")
    p.add_argument("--correction", choices=["bh", "by", "holm", "none"],
                   help="multiple-comparison correction (default: params rerank.p_adjust)")
    p.add_argument("--max-p", type=float, default=0.05, help="significance threshold on adjusted p (default: %(default)s)")
    p.add_argument("--out-json", help="write the scores (and the comparison) as JSON")
    p.add_argument("--per-query", action="store_true", help="include per-query values in --out-json")
    p.add_argument("--out-md", help="write the printed markdown tables to this file")
    p.add_argument("--latex", help="write the comparison as a LaTeX table (ranx's to_latex)")
    p.set_defaults(func=cmd_eval)
