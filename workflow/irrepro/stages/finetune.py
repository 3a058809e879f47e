"""Stage ``finetune``: LoRA fine-tuning of one (family, rank, targets) reranker config."""

from __future__ import annotations

from ..commands import In, Opt, Out
from ..vocab import FAMILIES, TARGETS
from ._shared import launched_training

HELP = "LoRA fine-tune one (family, rank, targets) reranker config"
ARGS = (
    Opt("--family", required=True, choices=FAMILIES),
    Opt("--rank", required=True, type=int),
    Opt("--targets", required=True, choices=TARGETS),
    In("--base"),
    In("--groups", "reranker training groups"),
    Out("--out"),
)
PARAMS = ("profile", "finetune")


def run(a, P) -> int:
    def train():
        from ..study1.training import finetune

        finetune(P, a.family, a.rank, a.targets, a.base, a.groups, a.out)

    return launched_training(a, P, "rerank", train)
