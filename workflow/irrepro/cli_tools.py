"""Sub-commands for researchers' tools (issue 14, part B): plot data for DVC, the report pages
for ``make report``, and ``push`` to the Hugging Face Hub. :func:`add_parsers` is called by
:func:`irrepro.cli.build_parser`; each command has the ``(args, params) -> exit code`` shape
of the other stage commands."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("irrepro")


def cmd_plot_data(a, P) -> int:
    from .plotdata import write_all

    lora = [Path(a.lora) / f"{f}-r{r}-{t}" for f in P["finetune"]["families"] for r in P["finetune"]["ranks"]
            for t in P["finetune"]["targets"]]
    syn = [Path(a.syntod_results) / f"{d}-{m}.predictions.jsonl" for d in P["syntod"]["domains"]
           for m in P["syntod"]["methods"]]
    write_all(P, a.out_dir, a.summary, checkpoints_tsv=a.checkpoints, lora_dirs=lora, ablation_tsv=a.ablation,
              syntod_predictions=syn, bm25_json=a.bm25, rerank_json=a.rerank, syntod_json=a.syntod)
    return 0


def cmd_report_pages(a, P) -> int:
    from .reportpages import markdown_page, provenance_page

    out = Path(a.out_dir)
    for src, name, title in ((a.report, "reproduction.html", "Reproduction report"),
                             (a.significance, "significance.html", "Significance of the final checkpoints vs BM25"),
                             (a.syntod, "syntod_comparison.html", "SynTOD: graph-guided vs naive")):
        markdown_page(src, out / name, title)
    n = provenance_page(P["profile"], out / "provenance.html")
    log.info("report pages -> %s (provenance of %d jobs)", out, n)
    return 0


def cmd_push(a, P) -> int:
    from .push import describe, plan, push

    uploads = plan(P, a.namespace, a.prefix, adapters=not a.no_adapters, syntod=not a.no_syntod)
    print(describe(uploads))
    if a.dry_run:
        print(f"dry run: nothing uploaded ({len(uploads)} repos planned)")
        return 0
    for spec in push(uploads, private=not a.public, endpoint=a.endpoint):
        print(spec)
    return 0


def add_parsers(sub, common) -> None:
    """Register the commands on the ``sub`` parsers (``common`` adds --profile/--params/--log)."""
    p = sub.add_parser("plot-data", help="tidy plot files for dvc plots (learning curves, training loss, ablation "
                                         "deltas, SynTOD confusion) and the headline summary.json")
    common(p)
    p.add_argument("--checkpoints", required=True, help="rerank_checkpoints.tsv (collect)")
    p.add_argument("--lora", required=True, help="models/<p>/lora (train_summary.json of every config)")
    p.add_argument("--ablation", required=True, help="ablation.tsv (ablate-collect)")
    p.add_argument("--syntod-results", required=True, help="results/<p>/syntod (*.predictions.jsonl)")
    p.add_argument("--bm25", required=True)
    p.add_argument("--rerank", required=True)
    p.add_argument("--syntod", required=True, help="metrics/syntod.json")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--summary", required=True)
    p.set_defaults(func=cmd_plot_data)

    p = sub.add_parser("report-pages", help="HTML pages for the Snakemake report (markdown results, provenance)")
    common(p)
    p.add_argument("--report", required=True)
    p.add_argument("--significance", required=True)
    p.add_argument("--syntod", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_report_pages)

    p = sub.add_parser("push", help="upload the adapters (final + every checkpoint) and the generated SynTOD data "
                                    "to the Hugging Face Hub (token: HF_TOKEN only); prints hf: specs")
    common(p)
    p.add_argument("--namespace", required=True, help="Hub user or organisation")
    p.add_argument("--prefix", default="irrepro", help="repo name prefix (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the upload plan; no token, no network")
    p.add_argument("--public", action="store_true", help="create public repos (default: private)")
    p.add_argument("--endpoint", help="Hub API endpoint (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument("--no-adapters", action="store_true")
    p.add_argument("--no-syntod", action="store_true")
    p.set_defaults(func=cmd_push)


