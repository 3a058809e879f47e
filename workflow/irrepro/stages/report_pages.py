"""Stage ``report_pages``: HTML pages for the Snakemake report."""

from __future__ import annotations

import logging
from pathlib import Path

from ..commands import In, Out

log = logging.getLogger("irrepro")

HELP = "HTML pages for the Snakemake report (markdown results, provenance)"
ARGS = (In("--report"), In("--significance"), In("--syntod"), Out("--out-dir"))
PARAMS = ("profile",)


def run(a, P) -> int:
    from ..reportpages import markdown_page, provenance_page

    out = Path(a.out_dir)
    for src, name, title in ((a.report, "reproduction.html", "Reproduction report"),
                             (a.significance, "significance.html", "Significance of the final checkpoints vs BM25"),
                             (a.syntod, "syntod_comparison.html", "SynTOD: graph-guided vs naive")):
        markdown_page(src, out / name, title)
    n = provenance_page(P["profile"], out / "provenance.html")
    log.info("report pages -> %s (provenance of %d jobs)", out, n)
    return 0
