"""Curves as data: the tidy files behind ``dvc plots`` and the small headline metrics file.

The figure notebooks draw PNG/PDF; DVC can only overlay revisions (``dvc plots diff``) of
*data*. This module writes, under ``results/<profile>/plots/``:

* ``learning_curves.csv``: one row per (config, dataset, step): ``config, family, series,
  dataset, panel, step`` and one column per evaluation metric (from
  ``rerank_checkpoints.tsv``; final-only datasets have one point and are left out).
* ``train_loss.csv``: ``config, family, series, panel, step, loss`` from every config's
  ``train_summary.json`` (the Trainer's logged losses).
* ``ablation_deltas.csv``: ``variant`` (``<config> <variant>``) and ``delta_full`` of the
  ablation metric on the first ablation dataset, for the per-layer, band, projection, MHA, MLP
  and head-only variants (the layer x projection cells are the heatmap's).
* ``syntod_confusion/<domain>-<method>.csv``: ``actual, predicted`` per scored user turn
  (intent tasks of every test set; an unparsable answer is ``(invalid)``).

``series`` is the part of the config name after the family (``r8-mha``) and ``panel`` the
facet (``<family>`` or ``<dataset> <family>``), so the ``lines_by_config`` DVC template
(``.dvc/plots/lines_by_config.json``) draws one panel per family with one line per
rank/module set, and dashes revisions apart in ``dvc plots diff``.

``summary.json`` holds a handful of headline numbers (BM25 and the best reranker per curve
dataset, mean final metric per family, SynTOD intent accuracy per domain and method) so that
``dvc exp show`` fits a screen. Rows are written in a fixed order and numbers rounded, so
reruns are byte-identical.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .jsonl import json_lines
from .utils import atomic_path

log = logging.getLogger("irrepro")

INVALID = "(invalid)"
ABLATION_KINDS = ("layer", "band", "proj", "group", "head_only")  # group: all MHA / all MLP


def _split_config(config: str) -> tuple[str, str]:
    family, _, rest = config.partition("-")
    return family, rest


def _write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> int:
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
            for r in rows:
                w.writerow(r)
                n += 1
    return n


def _read_tsv(path: str | Path) -> list[dict]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: missing (run the stage that writes it first)")
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def learning_curves(checkpoints_tsv: str | Path, out_csv: str | Path) -> int:
    """Write ``learning_curves.csv`` (see module doc); returns the number of rows."""
    rows = _read_tsv(checkpoints_tsv)
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    table: dict[tuple[str, str, int], dict] = {}
    for r in rows:
        table.setdefault((r["config"], r["dataset"], int(r["step"])), {})[r["metric"]] = r["value"]
    steps_per = {}
    for cfg, ds, step in table:
        steps_per.setdefault((cfg, ds), set()).add(step)
    out = []
    for (cfg, ds, step), vals in sorted(table.items()):
        if len(steps_per[(cfg, ds)]) < 2:  # a final-only dataset: no curve
            continue
        family, series = _split_config(cfg)
        out.append([cfg, family, series, ds, f"{ds} {family}", step, *(vals.get(m, "") for m in metrics)])
    return _write_csv(out_csv, ["config", "family", "series", "dataset", "panel", "step", *metrics], out)


def train_loss(lora_dirs: Sequence[str | Path], out_csv: str | Path) -> int:
    """Write ``train_loss.csv`` from each ``<dir>/train_summary.json`` (the dir's name is the
    config); returns the number of rows. A missing summary is an error naming the file."""
    out = []
    for d in sorted(map(Path, lora_dirs)):
        summary = d / "train_summary.json"
        if not summary.is_file():
            raise FileNotFoundError(f"{summary}: missing (run finetune for {d.name} first)")
        losses = json.loads(summary.read_text()).get("losses")
        if not isinstance(losses, list):
            raise ValueError(f"{summary}: no 'losses' list")
        family, series = _split_config(d.name)
        for e in losses:
            out.append([d.name, family, series, family, int(e["step"]), f"{float(e['loss']):.6f}"])
    return _write_csv(out_csv, ["config", "family", "series", "panel", "step", "loss"], out)


def ablation_deltas(ablation_tsv: str | Path, metric: str, out_csv: str | Path) -> int:
    """Write ``ablation_deltas.csv`` (see module doc); returns the number of rows."""
    rows = [r for r in _read_tsv(ablation_tsv) if r["metric"] == metric and r["kind"] in ABLATION_KINDS]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    rows = [r for r in rows if datasets and r["dataset"] == datasets[0]]
    out = [[f"{r['config']} {r['variant']}", r["config"], r["kind"], f"{float(r['delta_full']):.6f}"]
           for r in rows]
    return _write_csv(out_csv, ["variant", "config", "kind", "delta_full"], out)


def _intent(annotation) -> str:
    if isinstance(annotation, Mapping) and isinstance(annotation.get("intent"), str):
        return annotation["intent"]
    return INVALID


def syntod_confusion(predictions: Sequence[str | Path], out_dir: str | Path) -> int:
    """Write one ``<domain>-<method>.csv`` (``actual, predicted``) per predictions file
    ``<domain>-<method>.predictions.jsonl``; returns the total number of rows."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        total = 0
        for path in sorted(map(Path, predictions)):
            name = path.name.removesuffix(".predictions.jsonl")
            pairs = []
            for _, rec in json_lines(path):
                if rec.get("kind") == "intent":
                    pairs.append([_intent(rec.get("gold")), _intent(rec.get("parsed"))])
            total += _write_csv(tmp / f"{name}.csv", ["actual", "predicted"], pairs)
    return total


def _load_json(path: str | Path | None) -> dict:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: missing (run the stage that writes it first)")
    return json.loads(p.read_text())


def summary(P: Mapping, bm25_json=None, rerank_json=None, syntod_json=None) -> dict:
    """The headline numbers (see module doc), 4 dp, keys in a fixed order."""
    metric = P["figures"]["metric"]
    datasets = list(P["rerank"]["checkpoint_datasets"]) + list(P["rerank"]["final_datasets"])
    out: dict = {}
    bm25 = _load_json(bm25_json).get("bm25", {})
    rerank = {k.removeprefix("rerank-"): v for k, v in _load_json(rerank_json).items()}
    for ds in datasets:
        if metric in bm25.get(ds, {}):
            out[f"bm25.{ds}.{metric}"] = round(bm25[ds][metric], 4)
        scored = {cfg: v[ds][metric] for cfg, v in rerank.items() if metric in v.get(ds, {})}
        if scored:
            best = max(sorted(scored), key=lambda c: scored[c])
            out[f"rerank_best.{ds}.{metric}"] = round(scored[best], 4)
            out[f"rerank_best.{ds}.config"] = best
    first = datasets[0] if datasets else None
    for family in P["finetune"]["families"]:
        vals = [v[first][metric] for cfg, v in sorted(rerank.items())
                if cfg.startswith(f"{family}-") and metric in v.get(first, {})]
        if vals:
            out[f"rerank_mean.{family}.{first}.{metric}"] = round(sum(vals) / len(vals), 4)
    syn = _load_json(syntod_json)
    for domain in sorted(syn):
        for method in sorted(syn[domain]):
            for test_set in sorted(syn[domain][method]):
                value = syn[domain][method][test_set].get("strict", {}).get("intent_acc")
                if value is not None and test_set == "heldout":
                    out[f"syntod.{domain}.{method}.intent_acc"] = round(value, 4)
    return out


def write_all(P: Mapping, out_dir: str | Path, summary_json: str | Path, *, checkpoints_tsv, lora_dirs,
              ablation_tsv, syntod_predictions, bm25_json, rerank_json, syntod_json) -> dict:
    """Every file of the module doc; returns ``{file: rows}`` for the log."""
    out_dir = Path(out_dir)
    counts = {
        "learning_curves.csv": learning_curves(checkpoints_tsv, out_dir / "learning_curves.csv"),
        "train_loss.csv": train_loss(lora_dirs, out_dir / "train_loss.csv"),
        "ablation_deltas.csv": ablation_deltas(ablation_tsv, P["ablate"]["metric"], out_dir / "ablation_deltas.csv"),
        "syntod_confusion": syntod_confusion(syntod_predictions, out_dir / "syntod_confusion"),
    }
    doc = summary(P, bm25_json, rerank_json, syntod_json)
    with atomic_path(summary_json) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    log.info("plot data: %s; summary: %d numbers -> %s", counts, len(doc), summary_json)
    return counts
