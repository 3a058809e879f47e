"""Stage ``syntod_generate``: SynTOD conversations from walks (graph) or one prompt each (naive)."""

from __future__ import annotations

from ..commands import In, Opt, Out
from ..errors import FailureError
from ..vocab import DOMAINS, METHODS
from ._shared import seeds_file

HELP = "SynTOD conversations from walks (graph) or one prompt each (naive)"
ARGS = (
    Opt("--domain", required=True, choices=DOMAINS),
    Opt("--method", required=True, choices=METHODS),
    In("--walks", "walks JSONL (method graph)", required=False),
    In("--seeds", "recipe seeds or product catalog JSONL (default: the file under --raw)", required=False),
    In("--raw", "the download stage's directory (holds the seed files)", required=False),
    Out("--out-dir", "conversations(.txt).jsonl, train.jsonl, heldout.jsonl, stats.json"),
)
PARAMS = ("syntod",)


def run(a, P) -> int:
    from ..syntod.stages import generate_stage

    stats = generate_stage(P, a.domain, a.method, a.walks, seeds_file(a), a.out_dir)
    if stats["conversations"] == 0:
        raise FailureError("no conversation was generated (see the warnings above)", file=a.out_dir)
    return 0
