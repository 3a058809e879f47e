"""Stage ``published_eval``: rerank and score with every pinned published adapter folder."""

from __future__ import annotations

import logging

from ..commands import In, Out
from ._shared import FIRST_STAGE_ARGS

log = logging.getLogger("irrepro")

HELP = "rerank and score every pinned published adapter folder"
ARGS = (
    In("--pins", "pin file from published-fetch"),
    *FIRST_STAGE_ARGS,
    In("--corpus"),
    Out("--out-runs", "directory of <name>/<checkpoint>/<dataset>/step-<n>.trec runs"),
    Out("--out-tsv"),
)
PARAMS = ("profile", "published", "rerank", "finetune", "evaluate")


def run(a, P) -> int:
    from ..study1.published import evaluate_published

    rows = evaluate_published(P, a.pins, a.raw, a.runs, a.corpus, a.out_runs, a.out_tsv)
    log.info("published adapters: %d metric rows -> %s", len(rows), a.out_tsv)
    return 0
