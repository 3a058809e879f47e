"""Stage ``finetune_tod``: LoRA fine-tuning of the SynTOD task-oriented dialogue model."""

from __future__ import annotations

from ..commands import In, Out
from ._shared import launched_training

HELP = "LoRA fine-tune the SynTOD TOD model on one generated training set (knobs: params syntod.finetune)"
ARGS = (In("--base"), In("--train", "SynTOD text JSONL, {\"text\": ...} per line"), Out("--out"))
PARAMS = ("syntod.finetune", "finetune.launcher", "finetune.nproc_per_node")


def run(a, P) -> int:
    def train():
        from ..syntod.stages import finetune_tod_stage

        finetune_tod_stage(P, a.base, a.train, a.out)

    return launched_training(a, P, "tod", train)
