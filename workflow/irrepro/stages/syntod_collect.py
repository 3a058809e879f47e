"""Stage ``syntod_collect``: merge the SynTOD evaluation results."""

from __future__ import annotations

from pathlib import Path

from ..commands import In, Out
from ..errors import InputError

HELP = "merge SynTOD evaluation results: tidy TSV, DVC metrics, graph vs naive table"
ARGS = (
    In("--results", "result JSON files of evaluate-tod", group="results", nargs="+"),
    In("--results-dir", "directory of <domain>-<method>.json results (params syntod: domains x methods)",
       group="results"),
    Out("--out-tsv"),
    Out("--out-json", "DVC metrics JSON"),
    Out("--out-md", "markdown comparison table"),
)
PARAMS = ("profile", "syntod.domains", "syntod.methods")


def run(a, P) -> int:
    from ..syntod.evaluation import collect_stage

    results = a.results
    if a.results_dir:  # the (domain, method) results the params ask for, each must exist
        S = P["syntod"]
        results = [str(Path(a.results_dir) / f"{d}-{m}.json") for d in S["domains"] for m in S["methods"]]
        missing = [r for r in results if not Path(r).is_file()]
        if missing:
            raise InputError(f"{len(missing)} of {len(results)} results missing: "
                             f"{', '.join(Path(m).name for m in missing)}",
                             file=a.results_dir, hint="run evaluate-tod first")
    collect_stage(P, results, a.out_tsv, a.out_json, a.out_md)
    return 0
