"""Ablation stages: sweep the variants of one config's adapter; score every variant run with ranx.

Split like reranking/collect: :func:`ablate_config` (one job per config) loads the base and
the adapter once and writes TREC runs; :func:`ablate_collect` evaluates every run of every
ablated config in one process, because ranx's numba start-up is slow.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

from ..utils import atomic_path
from . import config_name

log = logging.getLogger("irrepro.study1")

VARIANTS_FILE = "variants.json"
TSV_COLUMNS = ("config", "family", "rank", "targets", "step", "dataset", "variant", "kind", "layers",
               "projections", "metric", "value", "delta_full", "delta_head_only")
JSON_VARIANTS = ("full", "head_only", "mha", "mlp")  # the small DVC metrics file


def ablate_datasets(P: dict, raw: str, runs: str) -> dict[str, dict]:
    """``{dataset: {"topics", "qrels", "run", "rel_level"}}`` for P["ablate"]["datasets"]."""
    from .reranking import eval_datasets

    return eval_datasets(P, raw, runs, P["ablate"]["datasets"])


def pick_checkpoint(adapters: str, checkpoint: str | int) -> tuple[int, str]:
    """``(step, adapter)`` to ablate: the highest ``checkpoint-<step>`` (``final``) or that step;
    a published adapter ``hf:...`` is step 0."""
    from .reranking import checkpoints

    if str(adapters).startswith("hf:"):
        return 0, str(adapters)
    found = checkpoints(adapters)
    if checkpoint == "final":
        step, path = found[-1]
        return step, str(path)
    by_step = dict(found)
    if checkpoint not in by_step:
        raise FileNotFoundError(
            f"{Path(adapters) / f'checkpoint-{checkpoint}'}: no such checkpoint (ablate.checkpoint={checkpoint}; "
            f"saved steps: {sorted(by_step)})"
        )
    return int(checkpoint), str(by_step[checkpoint])


def ablate_config(P: dict, config: str, base: str, adapters: str, raw: str, runs: str, corpus: str,
                  out: str) -> dict:
    """Rerank the ablate datasets' top-``depth`` BM25 candidates with every variant of one config.

    ``adapters``: a finetune output directory (its ``checkpoint-<step>`` adapters; the one
    chosen by ``ablate.checkpoint``) or ``hf:<repo>@<commit>[:subfolder]``. Writes ``out/``
    atomically: ``{dataset}/{variant}.trec`` (+ ``.meta.json``) and ``variants.json``
    ``{"config", "step", "adapter", "family", "variants": [...]}``; finished runs of a
    previous attempt in ``out/`` are reused when their fingerprints match.
    """
    from ..rerank.ablate import sweep
    from .bases import resolve_base

    A, R, F = P["ablate"], P["rerank"], P["finetune"]
    step, adapter = pick_checkpoint(adapters, A["checkpoint"])
    log.info("%s: ablating step %d (%s)", config, step, adapter)
    with atomic_path(out, is_dir=True) as tmp:
        if Path(out).exists():  # keep finished runs: sweep reuses them
            shutil.copytree(out, tmp, dirs_exist_ok=True)
        info = sweep(
            resolve_base(base), adapter, ablate_datasets(P, raw, runs), corpus, A["depth"], tmp,
            band_size=A["band_size"], cells=A["cells"], batch_size=R["batch_size"],
            qmax=F["query_max_len"], pmax=F["passage_max_len"], dtype=R["dtype"], label=config,
        )
        record = {"config": config, "step": step, "adapter": info["adapter"], "family": info["family"],
                  "variants": info["variants"]}
        (tmp / VARIANTS_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


# ----------------------------------------------------------------------------- collect
def _read_variants(path: Path, config: str, family: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (run `irrepro ablate --config {config}` first)")
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    missing = [k for k in ("config", "step", "family", "variants") if k not in rec]
    if missing:
        raise KeyError(f"{path}: missing key(s) {missing}")
    if rec["config"] != config or rec["family"] != family:
        raise ValueError(f"{path}: written for config {rec['config']!r} ({rec['family']}), "
                         f"expected {config!r} ({family})")
    names = {v["name"] for v in rec["variants"]}
    for needed in ("full", "head_only"):
        if needed not in names:
            raise ValueError(f"{path}: no {needed!r} variant (deltas are taken against it)")
    return rec


def _fmt(values) -> str:
    return ",".join(map(str, values)) or "-"


def ablate_collect(P: dict, raw: str, bm25_runs: str, ablate_runs: str, out_tsv: str, out_json: str) -> list[dict]:
    """Evaluate every variant run of every ablated config with ranx; one tidy TSV + a small metrics JSON.

    Rows: config x dataset x variant x metric (all of ``evaluate.metrics``), with the change
    against the full adapter and against the head-only model (same config, dataset,
    metric), plus a ``bm25`` row set (kind ``first_stage``: the candidates' first-stage
    order, cut at ``ablate.depth``) for reference. A variant that is ``same_as`` another is
    evaluated once. The JSON holds ``{config: {dataset: {variant: value}}}`` for
    ``ablate.metric`` and the variants full, head_only, mha, mlp (those the config has).
    """
    from ..evaluate import evaluate_run
    from ..trec import ranked, read_qrels, read_run

    t_start = time.perf_counter()
    A = P["ablate"]
    metrics = P["evaluate"]["metrics"]  # params validation: ablate.metric is one of them
    datasets = ablate_datasets(P, raw, bm25_runs)
    qrels = {name: read_qrels(d["qrels"]) for name, d in datasets.items()}
    first_stage = {}
    for name, d in datasets.items():
        cut = {q: dict(ranked(docs)[: A["depth"]]) for q, docs in read_run(d["run"]).items()}
        first_stage[name] = evaluate_run(qrels[name], cut, metrics, d["rel_level"])[0]

    rows: list[dict] = []
    n_runs = n_configs = 0
    for family in A["families"]:
        for rank in A["ranks"]:
            for targets in A["targets"]:
                config = config_name(family, rank, targets)
                folder = Path(ablate_runs) / config
                if not folder.is_dir():
                    raise FileNotFoundError(f"{folder}: missing (run `irrepro ablate --config {config}` first)")
                rec = _read_variants(folder / VARIANTS_FILE, config, family)
                n_configs += 1
                for name, d in datasets.items():
                    values: dict[str, dict[str, float]] = {}
                    for v in rec["variants"]:
                        if v["same_as"] is not None:
                            values[v["name"]] = values[v["same_as"]]
                            continue
                        run_path = folder / name / f"{v['name']}.trec"
                        if not run_path.is_file():
                            raise FileNotFoundError(f"{run_path}: missing (listed in {folder / VARIANTS_FILE})")
                        values[v["name"]] = evaluate_run(qrels[name], read_run(run_path), metrics, d["rel_level"])[0]
                        n_runs += 1
                    entries = [(v["name"], v["kind"], v["layers"], v["projections"]) for v in rec["variants"]]
                    entries.append(("bm25", "first_stage", [], []))
                    values["bm25"] = first_stage[name]
                    for variant, kind, layers, projections in entries:
                        for m in metrics:
                            value = values[variant][m]
                            rows.append(dict(
                                config=config, family=family, rank=rank, targets=targets, step=rec["step"],
                                dataset=name, variant=variant, kind=kind, layers=_fmt(layers),
                                projections=_fmt(projections), metric=m, value=value,
                                delta_full=value - values["full"][m], delta_head_only=value - values["head_only"][m],
                            ))
    with atomic_path(out_tsv) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write("\t".join(TSV_COLUMNS) + "\n")
            for r in rows:
                if not all(math.isfinite(r[k]) for k in ("value", "delta_full", "delta_head_only")):
                    raise ValueError(f"non-finite metric value in {r}")
                fh.write("\t".join(f"{r[c]:.6f}" if isinstance(r[c], float) else str(r[c]) for c in TSV_COLUMNS) + "\n")
    metrics_json: dict = {}
    for r in rows:
        if r["metric"] == A["metric"] and r["variant"] in JSON_VARIANTS:
            metrics_json.setdefault(r["config"], {}).setdefault(r["dataset"], {})[r["variant"]] = round(r["value"], 4)
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(metrics_json, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    log.info("ablate-collect: evaluated %d runs of %d configs (%d rows) in %.1fs -> %s",
             n_runs, n_configs, len(rows), time.perf_counter() - t_start, out_tsv)
    return rows
