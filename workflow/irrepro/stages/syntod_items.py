"""Stage ``syntod_items``: one domain's SynTOD items for generation and the held-out test items."""

from __future__ import annotations

from ..commands import In, Opt, Out
from ..vocab import DOMAINS

HELP = ("the SynTOD items the generator may use (train.jsonl) and the held-out test items (test.jsonl) of one "
        "domain (params syntod.item_split, syntod.train_catalog)")
ARGS = (
    Opt("--domain", required=True, choices=DOMAINS),
    In("--raw", "raw data directory (seed catalogs, published test conversations)"),
    Out("--out-dir", "directory for train.jsonl and test.jsonl"),
    Out("--metrics", "split counts JSON (DVC metrics), incl. unseen test conversations"),
)
PARAMS = ("syntod.item_split", "syntod.train_catalog")


def run(a, P) -> int:
    from ..syntod.items import items_stage

    items_stage(P, a.domain, a.raw, a.out_dir, a.metrics)
    return 0
