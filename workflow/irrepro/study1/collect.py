"""Scoring every checkpoint run with ranx; final metrics, significance, learning curves."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..utils import atomic_path
from . import config_name, grid
from .reranking import eval_datasets

log = logging.getLogger("irrepro.study1")

def collect(P: dict, raw: str, bm25_runs: str, rerank_runs: str,
            out_tsv: str, out_json: str, out_md: str, out_plot: str | None = None) -> list[dict]:
    """Evaluate every checkpoint run of every config with ranx: one tidy table
    (config x step x dataset x metric), the final checkpoints' metrics (DVC metrics, next to
    BM25 in the report), paired significance tests of the final checkpoints vs BM25 and, if
    ``out_plot`` is given, a CSV of the final metrics for ``dvc plots`` (one row per config and
    dataset)."""
    from ..evaluate import evaluate_run
    from ..rerank.evaluate import TSV_COLUMNS, compare_to_bm25
    from ..trec import read_qrels, read_run

    R = P["rerank"]
    datasets = eval_datasets(P, raw, bm25_runs)
    qrels = {name: read_qrels(d["qrels"]) for name, d in datasets.items()}
    rows, final = [], {}
    for cfg in (config_name(*c) for c in grid(P)):
        for name, d in datasets.items():
            folder = Path(rerank_runs) / cfg / name
            steps = sorted(int(p.stem.split("-")[1]) for p in folder.glob("step-*.trec")) if folder.is_dir() else []
            if not steps:
                raise FileNotFoundError(f"{folder}: no step-<n>.trec runs (run rerank-eval for {cfg} first)")
            final[cfg] = steps[-1]
            for step in steps:
                agg, _ = evaluate_run(qrels[name], read_run(folder / f"step-{step}.trec"),
                                      P["evaluate"]["metrics"], d["rel_level"])
                rows += [dict(config=cfg, step=step, dataset=name, metric=m, value=v) for m, v in agg.items()]
    log.info("evaluated %d runs of %d configs", len(rows) // len(P["evaluate"]["metrics"]), len(final))
    with atomic_path(out_tsv) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\t".join(TSV_COLUMNS) + "\n")
            fh.writelines(f"{r['config']}\t{r['step']}\t{r['dataset']}\t{r['metric']}\t{r['value']:.6f}\n" for r in rows)
    metrics: dict = {}
    for r in rows:
        if r["step"] == final[r["config"]]:
            metrics.setdefault(f"rerank-{r['config']}", {}).setdefault(r["dataset"], {})[r["metric"]] = round(r["value"], 4)
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    if out_plot is not None:
        write_final_plot(metrics, P["evaluate"]["metrics"], out_plot)
    runs = {cfg: {ds: Path(rerank_runs) / cfg / ds / f"step-{step}.trec" for ds in datasets} for cfg, step in final.items()}
    compare_to_bm25(datasets, runs, P["evaluate"]["metrics"], out_md=out_md, depth=R["depth"],
                    stat_test=R["stat_test"], max_p=R["max_p"])
    return rows


def write_final_plot(metrics: dict, names: list[str], out_csv: str) -> None:
    """``run,<metric>...`` rows (run = ``<config> <dataset>``) from the final-metrics dict."""
    import csv

    with atomic_path(out_csv) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["run", *names])
            for key in sorted(metrics):
                for ds, vals in sorted(metrics[key].items()):
                    w.writerow([f"{key.removeprefix('rerank-')} {ds}", *(vals[m] for m in names)])


def curves_markdown(checkpoints_tsv: str, metric: str = "ndcg@10") -> str:
    """Learning curves for the report: ``metric`` per checkpoint step, one row per config."""
    import csv

    with open(checkpoints_tsv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["metric"] == metric]
    out = []
    for ds in sorted({r["dataset"] for r in rows}):
        sel = [r for r in rows if r["dataset"] == ds]
        steps = sorted({int(r["step"]) for r in sel})
        table = {(r["config"], int(r["step"])): float(r["value"]) for r in sel}
        configs = list(dict.fromkeys(r["config"] for r in sel))
        out += [f"## Learning curves: {metric} on {ds} per checkpoint step", "",
                "| config | " + " | ".join(f"step {s}" for s in steps) + " |",
                "|---|" + "---|" * len(steps)]
        out += [f"| {c} | " + " | ".join(f"{table[(c, s)]:.4f}" if (c, s) in table else "-" for s in steps) + " |"
                for c in configs]
        out.append("")
    return "\n".join(out)
