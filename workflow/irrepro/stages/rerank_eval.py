"""Stage ``rerank_eval``: rerank the first stage with every checkpoint of one config."""

from __future__ import annotations

from ..commands import Out
from ._shared import RERANK_CONFIG_ARGS

HELP = ("rerank the first stage with the checkpoints of one config: every checkpoint on "
        "rerank.checkpoint_datasets, the final one on rerank.final_datasets")
ARGS = (*RERANK_CONFIG_ARGS, Out("--out", "directory of <dataset>/step-<step>.trec runs"))
PARAMS = ("profile", "rerank", "finetune.query_max_len", "finetune.passage_max_len")


def run(a, P) -> int:
    from ..study1.reranking import rerank_config

    rerank_config(P, a.config, a.base, a.adapters, a.raw, a.runs, a.corpus, a.out)
    return 0
