"""Scoring every checkpoint run with ranx; final metrics, significance, learning curves."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..utils import atomic_path
from . import config_name, grid
from .reranking import eval_datasets
from ..checks import JUDGED_KEY, judged_coverage
from ..errors import InputError

log = logging.getLogger("irrepro.study1")

def collect(P: dict, raw: str, bm25_runs: str, rerank_runs: str,
            out_tsv: str, out_json: str, out_md: str, out_plot: str | None = None,
            out_tex: str | None = None) -> list[dict]:
    """Evaluate every checkpoint run of every config with ranx: one tidy table
    (config x step x dataset x metric), the final checkpoints' metrics (DVC metrics, next to
    BM25 in the report; each dataset also carries the judged queries its run answers,
    ``judged_queries: {found, expected}``), paired significance tests of the final checkpoints vs BM25 and each
    other (p-values adjusted by ``rerank.p_adjust`` over all pairs per dataset and metric; the
    tables as markdown ``out_md`` and, if given, LaTeX ``out_tex``) and, if ``out_plot`` is
    given, a CSV of the final metrics for ``dvc plots`` (one row per config and dataset).

    The runs follow :func:`irrepro.study1.reranking.schedule`: a config's final step is its
    highest step on the curve datasets (``rerank.checkpoint_datasets``); a final-only dataset
    (``rerank.final_datasets``) must have exactly one run, at that step, and appears in the
    table at that step only, and in the final metrics and significance tests like the others."""
    from ..evaluate import evaluate_run
    from ..rerank.evaluate import TSV_COLUMNS, compare_to_bm25
    from ..trec import read_qrels, read_run

    R = P["rerank"]
    datasets = eval_datasets(P, raw, bm25_runs)
    qrels = {name: read_qrels(d["qrels"]) for name, d in datasets.items()}
    rows, final, coverage = [], {}, {}
    for cfg in (config_name(*c) for c in grid(P)):
        steps = {name: _run_steps(Path(rerank_runs) / cfg / name, cfg) for name in datasets}
        final[cfg] = max(max(steps[name]) for name in R["checkpoint_datasets"])
        F = P["finetune"]
        if F["max_steps"] and F["max_steps"] > 0:  # Trainer saves every save_steps and at max_steps: each has its run
            expected = sorted(set(range(F["save_steps"], F["max_steps"] + 1, F["save_steps"])) | {F["max_steps"]})
            for name in R["checkpoint_datasets"]:
                lost = [s for s in expected if s not in steps[name]]
                if lost:
                    raise InputError(f"run(s) missing for checkpoint step(s) {lost} (finetune.max_steps "
                                     f"{F['max_steps']}, save_steps {F['save_steps']})",
                                     file=Path(rerank_runs) / cfg / name / f"step-{lost[-1]}.trec",
                                     hint=f"rerun finetune / rerank-eval for {cfg}")
        for name in R["checkpoint_datasets"]:  # every checkpoint is reranked on every curve dataset
            lost = [s for s in sorted({s for n in R["checkpoint_datasets"] for s in steps[n]}) if s not in steps[name]]
            if lost:
                raise InputError(f"run missing for step(s) {lost} (the other curve datasets have them)",
                                 file=Path(rerank_runs) / cfg / name / f"step-{lost[-1]}.trec",
                                 hint=f"rerun rerank-eval for {cfg}")
        for name in R["final_datasets"]:
            if steps[name] != [final[cfg]]:
                raise ValueError(
                    f"{Path(rerank_runs) / cfg / name}: runs at steps {steps[name]}, expected only the final step "
                    f"{final[cfg]} (rerank.final_datasets); rerun rerank-eval for {cfg}")
        for name, d in datasets.items():
            for step in steps[name]:
                path = Path(rerank_runs) / cfg / name / f"step-{step}.trec"
                run = read_run(path)
                coverage[cfg, step, name] = judged_coverage(run, qrels[name], path, P["evaluate"]["min_judged_fraction"])
                agg, _ = evaluate_run(qrels[name], run, P["evaluate"]["metrics"], d["rel_level"])
                rows += [dict(config=cfg, step=step, dataset=name, metric=m, value=v) for m, v in agg.items()]
    log.info("evaluated %d runs of %d configs", len(rows) // len(P["evaluate"]["metrics"]), len(final))
    with atomic_path(out_tsv) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\t".join(TSV_COLUMNS) + "\n")
            fh.writelines(f"{r['config']}\t{r['step']}\t{r['dataset']}\t{r['metric']}\t{r['value']:.6f}\n" for r in rows)
    metrics: dict = {}
    for r in rows:
        if r["step"] == final[r["config"]]:
            by_metric = metrics.setdefault(f"rerank-{r['config']}", {}).setdefault(r["dataset"], {})
            by_metric[r["metric"]] = round(r["value"], 4)
            by_metric[JUDGED_KEY] = coverage[r["config"], r["step"], r["dataset"]]  # the flag beside the metrics
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    if out_plot is not None:
        write_final_plot(metrics, P["evaluate"]["metrics"], out_plot)
    runs = {cfg: {ds: Path(rerank_runs) / cfg / ds / f"step-{step}.trec" for ds in datasets} for cfg, step in final.items()}
    compare_to_bm25(datasets, runs, P["evaluate"]["metrics"], out_md=out_md, depth=R["depth"],
                    stat_test=R["stat_test"], max_p=R["max_p"], correction=R["p_adjust"], out_tex=out_tex)
    return rows


def _run_steps(folder: Path, cfg: str) -> list[int]:
    """The steps of the ``step-<n>.trec`` runs in ``folder``, sorted; none is an error."""
    steps = sorted(int(p.name[len("step-"):-len(".trec")]) for p in folder.glob("step-*.trec")) if folder.is_dir() else []
    if not steps:
        raise FileNotFoundError(f"{folder}: no step-<n>.trec runs (run rerank-eval for {cfg} first)")
    return steps


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
        final_only = len(sel) == len(configs)  # one step per config: a rerank.final_datasets set
        title = (f"## Final checkpoint only: {metric} on {ds}" if final_only
                 else f"## Learning curves: {metric} on {ds} per checkpoint step")
        out += [title, "",
                "| config | " + " | ".join(f"step {s}" for s in steps) + " |",
                "|---|" + "---|" * len(steps)]
        out += [f"| {c} | " + " | ".join(f"{table[(c, s)]:.4f}" if (c, s) in table else "-" for s in steps) + " |"
                for c in configs]
        out.append("")
    return "\n".join(out)
