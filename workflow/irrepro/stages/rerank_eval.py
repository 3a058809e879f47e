"""Stage ``rerank_eval``: rerank the first stage with every checkpoint of one config."""

from __future__ import annotations

from ..commands import In, Opt, Out

HELP = ("rerank the first stage with the checkpoints of one config: every checkpoint on "
        "rerank.checkpoint_datasets, the final one on rerank.final_datasets")
ARGS = (
    Opt("--config", "config name, e.g. llama-r8-mha", required=True),
    In("--base"),
    In("--adapters", "directory of checkpoint-<step> adapters, or hf:<repo>@<commit>[:subfolder]"),
    In("--raw"),
    In("--runs", "first-stage runs directory"),
    In("--corpus"),
    Out("--out", "directory of <dataset>/step-<step>.trec runs"),
)
PARAMS = ("profile", "rerank", "finetune.query_max_len", "finetune.passage_max_len")


def run(a, P) -> int:
    from ..study1.reranking import rerank_config

    rerank_config(P, a.config, a.base, a.adapters, a.raw, a.runs, a.corpus, a.out)
    return 0
