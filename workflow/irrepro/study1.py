"""Study 1 stage drivers: base models, training groups, fine-tuning, checkpoint evaluation.

Each function is what one CLI command (one Snakemake rule / DVC stage) does: read the
resolved params, find the inputs, call the library modules (``irrepro.tiny``,
``irrepro.rerank.*``), write the outputs atomically.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from .datasets import get, source_path
from .utils import atomic_path

log = logging.getLogger("irrepro.study1")

BASE_POINTER = "BASE.json"  # paper: the hub model a base directory stands for


def config_name(family: str, rank: int, targets: str) -> str:
    return f"{family}-r{rank}-{targets}"


def grid(P: dict) -> list[tuple[str, int, str]]:
    F = P["finetune"]
    return [(f, r, t) for f in F["families"] for r in F["ranks"] for t in F["targets"]]


# ------------------------------------------------------------------------------- bases
def build_base(P: dict, family: str, corpus: str, out: str) -> dict:
    """mini (`tiny`): tokenizer + tiny model trained on the corpus. paper: fetch the hub model."""
    spec = P["models"][family]
    if spec["id"] == "tiny":
        from . import tiny

        T = P["tiny"]
        work = Path(out).parent / f".{Path(out).name}.tokenizer"
        shutil.rmtree(work, ignore_errors=True)
        try:
            tiny.build_tokenizer(corpus, work, vocab_size=T["vocab_size"])
            sizes = {k: v for k, v in T.items() if k != "vocab_size"}
            return tiny.build_base(family, work, corpus, out, **sizes)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    from huggingface_hub import snapshot_download

    # Download once into the HF cache (token from the environment only); record what was used.
    path = snapshot_download(spec["id"], revision=spec["revision"], token=os.environ.get("HF_TOKEN") or None)
    commit = Path(path).name
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / BASE_POINTER).write_text(json.dumps({"id": spec["id"], "revision": commit}, indent=1) + "\n")
    log.info("base %s: %s@%s (in the Hugging Face cache)", family, spec["id"], commit)
    return {"id": spec["id"], "revision": commit}


def resolve_base(base_dir: str | os.PathLike) -> str:
    """What ``from_pretrained`` should load for a base directory written by :func:`build_base`."""
    pointer = Path(base_dir) / BASE_POINTER
    if pointer.exists():
        from huggingface_hub import snapshot_download

        ref = json.loads(pointer.read_text())
        return snapshot_download(ref["id"], revision=ref["revision"], token=os.environ.get("HF_TOKEN") or None)
    return str(base_dir)


# ------------------------------------------------------------------------ training data
def load_passages(corpus: str | os.PathLike, wanted: set[str] | None = None) -> dict[str, str]:
    from .rerank.evaluate import load_passages as _load

    return _load(corpus, wanted)


def build_train_groups(P: dict, raw: str, runs: str, corpus: str, out: str) -> int:
    from .rerank.data import build_groups_from_qrels, load_tevatron_groups, write_groups
    from .trec import read_qrels, read_run, read_topics

    D = P["train_data"]
    if D["source"] == "tevatron":
        records = load_tevatron_groups(source_path(raw, "tevatron_msmarco_aug_train"))
    else:
        ds = get(D["source"])
        topics = read_topics(source_path(raw, ds.topics))
        qrels = read_qrels(source_path(raw, ds.qrels))
        run = read_run(Path(runs) / f"{ds.name}.trec")
        wanted = {d for docs in run.values() for d in docs} | {d for docs in qrels.values() for d in docs}
        passages = load_passages(corpus, wanted)
        topics = {q: t for q, t in topics.items() if q in qrels}
        records = build_groups_from_qrels(
            topics, qrels, run, passages, D["n_negatives"], D["min_grade"], D["seed"]
        )
    n = write_groups(records, out)
    log.info("training groups: %d queries -> %s", n, out)
    return n


# --------------------------------------------------------------------------- finetune
def finetune(P: dict, family: str, rank: int, targets: str, base: str, groups: str, out: str) -> dict:
    """Train one config. Checkpoints accumulate in ``<out>.partial`` (kept across crashes,
    so a rerun resumes from the newest complete one) and the finished directory is moved
    onto ``out`` at the end: runners that delete a job's outputs before rerunning it
    (Snakemake) never delete the checkpoints a resume needs."""
    from .rerank.train import finetune as _finetune

    F = P["finetune"]
    out = Path(out)
    work = out.with_name(out.name + ".partial")
    summary = _finetune(
        resolve_base(base),
        groups,
        work,
        rank=rank,
        targets=targets,
        alpha=F["lora_alpha"],
        dropout=F["lora_dropout"],
        lr=F["lr"],
        epochs=F["epochs"],
        max_steps=F["max_steps"],
        queries_per_device=F["queries_per_device"],
        grad_accum=F["grad_accum"],
        group_size=F["group_size"],
        qmax=F["query_max_len"],
        pmax=F["passage_max_len"],
        save_steps=F["save_steps"],
        warmup_ratio=F["warmup_ratio"],
        bf16=F["bf16"],
        gradient_checkpointing=F["gradient_checkpointing"],
        seed=F["seed"],
        threads=F["threads"],
        token=os.environ.get("HF_TOKEN") or None,
    )
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    return summary


# ----------------------------------------------------------------- checkpoint evaluation
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(adapter_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    found = sorted(
        (int(m.group(1)), p) for p in Path(adapter_dir).iterdir() if (m := _CKPT.match(p.name)) and p.is_dir()
    )
    if not found:
        raise FileNotFoundError(f"{adapter_dir}: no checkpoint-<step> directories")
    return found


def eval_datasets(P: dict, raw: str, runs: str) -> dict[str, dict]:
    return {
        name: {
            "topics": source_path(raw, get(name).topics),
            "qrels": source_path(raw, get(name).qrels),
            "run": Path(runs) / f"{name}.trec",
            "rel_level": P["evaluate"]["rel_level"][name],
        }
        for name in P["rerank"]["datasets"]
    }


def rerank_config(P: dict, config: str, base: str, adapters: str, raw: str, runs: str, corpus: str,
                  out_runs: str) -> None:
    """Rerank the first-stage runs with every checkpoint of one config (base loaded once).

    Writes ``out_runs/<dataset>/step-<step>.trec``. Metrics are computed for all configs
    at once by :func:`collect` (one process pays ranx's numba start-up, not 36)."""
    from .rerank.evaluate import evaluate_checkpoints

    R, F = P["rerank"], P["finetune"]
    ckpts = [(config, step, path) for step, path in checkpoints(adapters)]
    log.info("%s: %d checkpoints (steps %s)", config, len(ckpts), [s for _, s, _ in ckpts])
    with atomic_path(out_runs, is_dir=True) as tmp:
        if Path(out_runs).exists():  # keep finished runs: evaluate_checkpoints reuses them
            shutil.copytree(out_runs, tmp, dirs_exist_ok=True)
        evaluate_checkpoints(
            resolve_base(base),
            ckpts,
            eval_datasets(P, raw, runs),
            corpus,
            R["depth"],
            None,
            tmp,
            None,
            R["batch_size"],
            qmax=F["query_max_len"],
            pmax=F["passage_max_len"],
            dtype=R["dtype"],
        )


# ------------------------------------------------------------------------------ collect
def collect(P: dict, raw: str, bm25_runs: str, rerank_runs: str,
            out_tsv: str, out_json: str, out_md: str) -> list[dict]:
    """Evaluate every checkpoint run of every config with ranx: one tidy table
    (config x step x dataset x metric), the final checkpoints' metrics (DVC metrics, next to
    BM25 in the report) and paired significance tests of the final checkpoints vs BM25."""
    from .evaluate import evaluate_run
    from .rerank.evaluate import TSV_COLUMNS, compare_to_bm25
    from .trec import read_qrels, read_run

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
    runs = {cfg: {ds: Path(rerank_runs) / cfg / ds / f"step-{step}.trec" for ds in datasets} for cfg, step in final.items()}
    compare_to_bm25(datasets, runs, P["evaluate"]["metrics"], out_md=out_md, depth=R["depth"],
                    stat_test=R["stat_test"], max_p=R["max_p"])
    return rows
