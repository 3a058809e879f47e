"""Stage ``train_groups``: the reranker's training groups (1 positive + hard negatives)."""

from __future__ import annotations

from ..commands import In, Out

HELP = "reranker training groups (1 positive + hard negatives)"
ARGS = (In("--raw"), In("--runs", "directory of first-stage <dataset>.trec runs"), In("--corpus"), Out("--out"))
PARAMS = ("profile", "train_data", "finetune.group_size")


def run(a, P) -> int:
    from ..study1.training import build_train_groups

    build_train_groups(P, a.raw, a.runs, a.corpus, a.out)
    return 0
