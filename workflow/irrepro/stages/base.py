"""Stage ``base``: one family's base model, built (mini) or fetched and pinned (paper)."""

from __future__ import annotations

from ..commands import In, Opt, Out
from ..vocab import FAMILIES

HELP = "build (mini) or fetch (paper) one family's base model"
ARGS = (Opt("--family", required=True, choices=FAMILIES),
        In("--corpus", "corpus JSONL (the mini tokenizer and warm-up text)"), Out("--out"))
PARAMS = ("profile", "models", "tiny")


def run(a, P) -> int:
    from ..study1.bases import build_base

    build_base(P, a.family, a.corpus, a.out)
    return 0
