"""Stage ``syntod_walks``: SynTOD walks whose result pages are BM25 over the domain's catalog."""

from __future__ import annotations

from ..commands import In, Opt, Out
from ..vocab import DOMAINS
from ._shared import seeds_file

HELP = "SynTOD walks whose result pages are BM25 over the catalog (params syntod)"
ARGS = (
    Opt("--domain", required=True, choices=DOMAINS),
    In("--seeds", "recipe seeds or product catalog JSONL (default: the file under --raw)", required=False),
    In("--raw", "the download stage's directory (holds the seed files)", required=False),
    Out("--out", "walks JSONL"),
    Out("--stats", "walk statistics JSON (DVC metrics)"),
    Out("--index-dir", "keep the catalog BM25 index here (default: a temporary directory)", required=False),
)
PARAMS = ("syntod",)


def run(a, P) -> int:
    from ..syntod.stages import walks_stage

    walks_stage(P, a.domain, seeds_file(a), a.out, a.stats, a.index_dir)
    return 0
