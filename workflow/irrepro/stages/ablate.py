"""Stage ``ablate``: rerank with LoRA switched off per layer / band / projection (one config)."""

from __future__ import annotations

from ..commands import Out
from ._shared import RERANK_CONFIG_ARGS

HELP = "rerank with LoRA switched off per layer/band/projection (one config)"
ARGS = (*RERANK_CONFIG_ARGS, Out("--out", "directory of <dataset>/<variant>.trec runs + variants.json"))
PARAMS = ("profile", "ablate", "rerank", "finetune")


def run(a, P) -> int:
    from ..study1.ablation import ablate_config

    ablate_config(P, a.config, a.base, a.adapters, a.raw, a.runs, a.corpus, a.out)
    return 0
