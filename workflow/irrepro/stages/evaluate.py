"""Stage ``evaluate``: ranx metrics of the BM25 and the published first-stage runs."""

from __future__ import annotations

from pathlib import Path

from ..commands import In, Out

HELP = "ranx metrics of the BM25 and published runs"
ARGS = (In("--raw"), In("--runs"), Out("--out", "metrics JSON"), Out("--perquery", "per-query TSV"))
PARAMS = ("datasets", "evaluate")


def run(a, P) -> int:
    from ..datasets import get, source_path
    from ..evaluate import evaluate_to_files

    runs, qrels = {}, {}
    for name in P["datasets"]:
        ds = get(name)
        qrels[name] = source_path(a.raw, ds.qrels)
        runs.setdefault("bm25", {})[name] = Path(a.runs) / f"{name}.trec"
        if ds.published_run:
            runs.setdefault("bm25-published-rankllm", {})[name] = source_path(a.raw, ds.published_run)
    E = P["evaluate"]
    evaluate_to_files(runs, qrels, metrics=E["metrics"], rel_levels=E["rel_level"], out_json=a.out,
                      out_perquery_tsv=a.perquery, min_judged_fraction=E["min_judged_fraction"])
    return 0
