"""Stage ``evaluate_tod``: teacher-forced evaluation of one SynTOD TOD model."""

from __future__ import annotations

from ..commands import In, Opt, Out
from ..vocab import DOMAINS, METHODS

HELP = ("teacher-forced intent/slot and response evaluation of one SynTOD TOD model on the published and "
        "held-out test conversations")
ARGS = (
    Opt("--domain", required=True, choices=DOMAINS),
    Opt("--method", "the generator the model was trained on", required=True, choices=METHODS),
    In("--base", "base model directory"),
    In("--adapter", "LoRA adapter directory (or a finetune-tod output with final/)"),
    In("--raw", "raw data directory (published test conversations)"),
    In("--heldout", "held-out conversations (structured JSONL of the generation stage)"),
    Out("--out", "result JSON (tidy rows, judge and generator named)"),
    Out("--predictions", "per-turn predictions JSONL"),
    In("--items", "the domain's syntod_items directory: also score each published set on its conversations "
                  "whose items are all unseen (<name>_unseen)", required=False),
)
PARAMS = ("profile", "syntod")


def run(a, P) -> int:
    from ..syntod.evaluation import evaluate_stage

    evaluate_stage(P, a.domain, a.method, a.base, a.adapter, a.raw, a.heldout, a.out, a.predictions, a.items)
    return 0
