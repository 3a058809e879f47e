"""Stage ``syntod_base``: the SynTOD TOD base model (tiny model + tokenizer, or the pinned hub model)."""

from __future__ import annotations

from ..commands import In, Opt, Out
from ._shared import key_path

HELP = ("the SynTOD TOD base model: tiny model + tokenizer trained on the seed catalogs and the graphs' "
        "vocabulary (mini), or the pinned hub model (paper)")
ARGS = (
    In("--raw", "raw data directory (the download stage's; SynTOD seed catalogs)"),
    Out("--out", "base model directory, e.g. models/<profile>/syntod_base"),
    Opt("--catalog", "a domain's item catalog for the corpus (repeatable; the syntod_items stage's train.jsonl); "
                     "a domain not given uses its seed catalog under --raw",
        action="append", type=key_path, metavar="DOMAIN=PATH"),
)
PARAMS = ("profile", "syntod", "tiny")


def run(a, P) -> int:
    from ..syntod.stages import base_stage

    base_stage(P, a.raw, a.out, dict(a.catalog or []) or None)
    return 0
