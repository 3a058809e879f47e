"""Training groups and LoRA fine-tuning of one config."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ..datasets import get, source_path
from .bases import resolve_base
from ..rundir import publish_work_dir

log = logging.getLogger("irrepro.study1")


def build_train_groups(P: dict, raw: str, runs: str, corpus: str, out: str) -> int:
    from ..rerank.data import build_groups_from_qrels, load_tevatron_groups, write_groups
    from ..rerank.evaluate import load_passages
    from ..trec import read_qrels, read_run, read_topics

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
    from ..rerank.train import finetune as _finetune

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
        base_dtype=F["base_dtype"],
        head_labels=F["head_labels"],
        seed=F["seed"],
        threads=F["threads"],
        token=os.environ.get("HF_TOKEN") or None,
        # optional TensorBoard events: a log beside the job's log, never inside the output
        report_to=F.get("report_to", "none"),
        logging_dir=Path("logs") / P["profile"] / "tensorboard" / out.name,
    )
    from ..launch import is_main_process

    if is_main_process():  # in a multi-process launch only rank 0 publishes the directory
        publish_work_dir(work, out)
    return summary
