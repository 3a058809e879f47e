"""Stage ``ablate_collect``: metrics of every ablation run, deltas vs full / head-only."""

from __future__ import annotations

from ..commands import In, Out
from ._shared import FIRST_STAGE_ARGS

HELP = "ranx metrics of every ablation run, deltas vs full / head-only"
ARGS = (
    *FIRST_STAGE_ARGS,
    In("--ablate-runs", "directory of <config>/ ablation runs"),
    Out("--out-tsv"),
    Out("--out-json"),
)
PARAMS = ("profile", "ablate", "finetune", "evaluate")


def run(a, P) -> int:
    from ..study1.ablation import ablate_collect

    ablate_collect(P, a.raw, a.runs, a.ablate_runs, a.out_tsv, a.out_json)
    return 0
