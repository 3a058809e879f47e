"""Stage ``collect``: metrics of every checkpoint run, final metrics, significance vs BM25."""

from __future__ import annotations

from ..commands import In, Out
from ._shared import FIRST_STAGE_ARGS

HELP = "ranx metrics of every checkpoint run, final metrics, significance vs BM25"
ARGS = (
    *FIRST_STAGE_ARGS,
    In("--rerank-runs", "directory of <config>/ rerank runs"),
    Out("--out-tsv"),
    Out("--out-json"),
    Out("--out-md"),
    Out("--out-plot", "CSV of the final metrics per config and dataset (dvc plots)", required=False),
    Out("--out-tex", "the significance tables as LaTeX (ranx's to_latex)", required=False),
)
PARAMS = ("profile", "datasets", "finetune", "rerank", "evaluate")


def run(a, P) -> int:
    from ..study1.collect import collect

    collect(P, a.raw, a.runs, a.rerank_runs, a.out_tsv, a.out_json, a.out_md, a.out_plot, a.out_tex)
    return 0
