"""Training groups and LoRA fine-tuning of one config."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..datasets import get, source_path
from .bases import resolve_base

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
    """Train one config with the settings of params ``finetune``
    (:class:`irrepro.lora.config.RerankTraining`). Checkpoints accumulate in ``<out>.partial``
    (kept across crashes, so a rerun resumes from the newest complete one) and the finished
    directory is moved onto ``out`` at the end (:func:`irrepro.lora.run.train_in_work_dir`)."""
    from ..lora.config import RerankTraining
    from ..lora.run import train_in_work_dir
    from ..rerank.train import finetune as finetune_reranker

    settings = RerankTraining.from_params(P["finetune"], "finetune")
    # optional TensorBoard events: a log beside the job's log, never inside the output
    logging_dir = Path("logs") / P["profile"] / "tensorboard" / Path(out).name
    return train_in_work_dir(out, lambda work: finetune_reranker(
        resolve_base(base), groups, work, rank=rank, targets=targets, token=os.environ.get("HF_TOKEN") or None,
        logging_dir=logging_dir, **settings.kwargs()))
