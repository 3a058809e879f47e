"""The authors' published adapters, evaluated like our own checkpoints.

The paper's authors published their LoRA rerankers as Hugging Face repos of the user
``AtharvaNijasureUMass`` (``finegrained_checkpoint_experiment_*``; params ``published.adapters``
lists them with their family and base model). Two stages:

* :func:`pin_published` (``irrepro published-fetch``): per repo, the revision (params
  ``revision``, or the repo's ``main`` *at first fetch*) and the base model's commit, and the
  adapter folders the repo holds at that commit (the root and every ``checkpoint-<step>``),
  found by downloading only their ``adapter_config.json`` files. Written to a pin file
  (``PUBLISHED.json``, like a base directory's ``BASE.json``): a rerun of the evaluation
  reuses it and so scores exactly the same weights.
* :func:`evaluate_published` (``irrepro published-eval``): every pinned adapter folder
  reranks the first stage on the schedule of our own checkpoints
  (:func:`irrepro.study1.reranking.schedule`: every checkpoint on ``rerank.checkpoint_datasets``,
  the final one, i.e. the root adapter if there is one, else the highest step, also on
  ``rerank.final_datasets``) with the same scoring parameters, through
  :func:`irrepro.rerank.evaluate.evaluate_checkpoints` (uploads with an empty
  ``adapter_model.safetensors`` and 2-row heads are handled by :mod:`irrepro.rerank.hub`).

Output table (TSV, one row per adapter folder x dataset x metric)::

    repo  name  family  rank  targets  checkpoint  step  dataset  metric  value

``checkpoint`` is the folder (``checkpoint-50``, or ``root`` for the repo's top level, whose
``step`` is empty: the upload does not say). An empty list (the mini profile: no network)
gives a pin file without adapters and a table with the header only, without loading anything.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

from ..utils import atomic_path
from ..errors import read_json_file

log = logging.getLogger("irrepro.study1")

PIN_FILE = "PUBLISHED.json"
COLUMNS = ("repo", "name", "family", "rank", "targets", "checkpoint", "step", "dataset", "metric", "value")
ROOT = "root"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def _hub_kwargs(revision: str | None, patterns: list[str]) -> dict:
    return dict(revision=revision, allow_patterns=patterns, token=os.environ.get("HF_TOKEN") or False,
                cache_dir=os.environ.get("HF_HUB_CACHE") or None)


def _short_name(repo: str) -> str:
    return repo.split("/", 1)[1].removeprefix("finegrained_checkpoint_experiment_")


def adapter_folders(snapshot: Path) -> list[dict]:
    """The adapter folders of a snapshot: ``root`` (if ``adapter_config.json`` is at the top)
    and every ``checkpoint-<step>`` holding one, by step. Other folders are logged and skipped."""
    found = []
    if (snapshot / "adapter_config.json").is_file():
        found.append({"checkpoint": ROOT, "step": None})
    for cfg in sorted(snapshot.glob("*/adapter_config.json")):
        m = _CKPT.match(cfg.parent.name)
        if m:
            found.append({"checkpoint": cfg.parent.name, "step": int(m.group(1))})
        else:
            log.warning("%s: folder %s holds an adapter but is not checkpoint-<step>; not evaluated", snapshot, cfg.parent.name)
    return sorted(found, key=lambda f: (f["step"] is None, f["step"] or 0))


def pin_published(entries: list[Mapping], out_json: str | os.PathLike) -> dict:
    """Pin every entry of params ``published.adapters`` (see the module docstring) -> ``out_json``."""
    pinned = []
    if entries:
        from huggingface_hub import snapshot_download

    for i, e in enumerate(entries):
        where = f"published.adapters[{i}] ({e['repo']})"
        snap = Path(snapshot_download(e["repo"], **_hub_kwargs(e.get("revision"), ["adapter_config.json",
                                                                                   "*/adapter_config.json"])))
        folders = adapter_folders(snap)
        if not folders:
            raise FileNotFoundError(f"{where}: no adapter_config.json at the top or in checkpoint-<step>/ at {snap.name}")
        config = json.loads((snap / (folders[-1]["checkpoint"] if folders[-1]["step"] is not None else "")
                             / "adapter_config.json").read_text(encoding="utf-8"))
        base_snap = Path(snapshot_download(e["base"], **_hub_kwargs(e.get("base_revision"), ["config.json"])))
        if config.get("base_model_name_or_path") not in (None, e["base"]):
            log.warning("%s: adapter_config.json names base %r; evaluating on params' base %r",
                        where, config["base_model_name_or_path"], e["base"])
        targets = config.get("target_modules")
        pinned.append({
            "repo": e["repo"], "name": _short_name(e["repo"]), "family": e["family"], "revision": snap.name,
            "base": e["base"], "base_revision": base_snap.name, "rank": config.get("r"),
            "targets": ",".join(sorted(targets)) if isinstance(targets, list) else targets,
            "folders": folders,
        })
        log.info("%s: pinned %s@%s (%d adapter folders), base %s@%s", where, e["repo"], snap.name, len(folders),
                 e["base"], base_snap.name)
    doc = {"adapters": pinned}
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc


def _final(folders: list[dict]) -> dict:
    """The upload's final adapter: the root one (the trainer's last save) if any, else the highest step."""
    root = [f for f in folders if f["step"] is None]
    return root[0] if root else max(folders, key=lambda f: f["step"])


def evaluate_published(P: dict, pins: str | os.PathLike, raw: str, runs: str, corpus: str,
                       out_runs: str | os.PathLike, out_tsv: str | os.PathLike) -> list[dict]:
    """Rerank and score every pinned adapter folder (see the module docstring); write
    ``out_runs/<name>/<checkpoint>/<dataset>/step-<n>.trec`` and ``out_tsv``; return the rows."""
    doc = read_json_file(pins)
    rows: list[dict] = []
    with atomic_path(out_runs, is_dir=True) as tmp_runs:
        for pin in doc["adapters"]:
            rows += _evaluate_repo(P, pin, raw, runs, corpus, Path(tmp_runs) / pin["name"])
        # a list of the runs keeps the directory non-empty: DVC does not restore an empty
        # directory output on pull (mini evaluates no adapter), and Snakemake would rerun it
        written = sorted(p.relative_to(tmp_runs).as_posix() for p in Path(tmp_runs).rglob("*.trec"))
        (Path(tmp_runs) / "RUNS.txt").write_text("".join(f"{w}\n" for w in written))
    write_table(rows, out_tsv)
    return rows


def _evaluate_repo(P: dict, pin: Mapping, raw: str, runs: str, corpus: str, out: Path) -> list[dict]:
    from huggingface_hub import snapshot_download

    from ..rerank.evaluate import evaluate_checkpoints
    from .reranking import eval_datasets

    R, F = P["rerank"], P["finetune"]
    base = snapshot_download(pin["base"], revision=pin["base_revision"], token=os.environ.get("HF_TOKEN") or False,
                             cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    final = _final(pin["folders"])
    rows = []
    for folder in pin["folders"]:
        # the curve datasets for every folder, the final-only ones for the final folder
        names = list(R["checkpoint_datasets"]) + (list(R["final_datasets"]) if folder is final else [])
        if not names:
            continue
        sub = "" if folder["step"] is None else f":{folder['checkpoint']}"
        spec = f"hf:{pin['repo']}@{pin['revision']}{sub}"
        got = evaluate_checkpoints(
            base, [(pin["name"], folder["step"] or 0, spec)], eval_datasets(P, raw, runs, names), corpus,
            R["depth"], P["evaluate"]["metrics"], out / folder["checkpoint"], None, R["batch_size"],
            qmax=F["query_max_len"], pmax=F["passage_max_len"], dtype=R["dtype"],
        )
        for r in got:
            rows.append({"repo": pin["repo"], "name": pin["name"], "family": pin["family"], "rank": pin["rank"],
                         "targets": pin["targets"], "checkpoint": folder["checkpoint"],
                         "step": "" if folder["step"] is None else folder["step"], "dataset": r["dataset"],
                         "metric": r["metric"], "value": r["value"]})
    return rows


def write_table(rows: list[Mapping[str, Any]], out_tsv: str | os.PathLike) -> None:
    with atomic_path(out_tsv) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            w.writerow(COLUMNS)
            for r in rows:
                w.writerow([f"{r[c]:.6f}" if c == "value" else r[c] for c in COLUMNS])


def read_table(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [dict(r, value=float(r["value"])) for r in csv.DictReader(fh, delimiter="\t")]


def final_markdown(rows: list[Mapping], profile: str) -> str:
    """Report section: each published repo's final adapter, one column per dataset x metric."""
    out = ["## The authors' published adapters", ""]
    if not rows:
        return "\n".join(out + [f"None evaluated in the {profile} profile (params `published.adapters` is empty)."]) + "\n"
    out.append("Evaluated exactly like this run's own checkpoints (same first stage, depth, input format and "
               "metrics; every published checkpoint in `published_checkpoints.tsv`). Final adapter of each repo "
               "(the root adapter, else the highest checkpoint):")
    out.append("")
    finals = {}
    for r in rows:
        finals.setdefault(r["repo"], []).append(r)
    cols = sorted({(r["dataset"], r["metric"]) for r in rows})
    out += ["| repo | family | rank | targets | checkpoint | " + " | ".join(f"{d} {m}" for d, m in cols) + " |",
            "|---|---|---|---|---|" + "---|" * len(cols)]
    for repo, these in finals.items():
        by_ckpt = {}
        for r in these:
            by_ckpt.setdefault(r["checkpoint"], {})[(r["dataset"], r["metric"])] = r["value"]
        final = ROOT if ROOT in by_ckpt else max(by_ckpt, key=lambda c: int(c.split("-")[1]))
        # datasets scored only with the final adapter and the curve datasets at that adapter
        vals = by_ckpt[final]
        r0 = these[0]
        out.append(f"| {repo} | {r0['family']} | {r0['rank']} | {r0['targets']} | {final} | "
                   + " | ".join(f"{vals[c]:.4f}" if c in vals else "-" for c in cols) + " |")
    return "\n".join(out) + "\n"
