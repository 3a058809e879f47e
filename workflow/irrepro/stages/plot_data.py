"""Stage ``plot_data``: tidy plot files for ``dvc plots`` and the headline summary.json."""

from __future__ import annotations

from pathlib import Path

from ..commands import In, Out

HELP = ("tidy plot files for dvc plots (learning curves, training loss, ablation deltas, SynTOD confusion) and "
        "the headline summary.json")
ARGS = (
    In("--checkpoints", "rerank_checkpoints.tsv (collect)"),
    In("--lora", "models/<p>/lora (train_summary.json of every config)"),
    In("--ablation", "ablation.tsv (ablate-collect)"),
    In("--syntod-results", "results/<p>/syntod (*.predictions.jsonl)"),
    In("--bm25"),
    In("--rerank"),
    In("--syntod", "metrics/syntod.json"),
    Out("--out-dir"),
    Out("--summary"),
)
PARAMS = ("profile", "finetune", "syntod.domains", "syntod.methods", "figures.metric", "ablate.metric", "rerank")


def run(a, P) -> int:
    from ..plotdata import write_all

    lora = [Path(a.lora) / f"{f}-r{r}-{t}" for f in P["finetune"]["families"] for r in P["finetune"]["ranks"]
            for t in P["finetune"]["targets"]]
    syn = [Path(a.syntod_results) / f"{d}-{m}.predictions.jsonl" for d in P["syntod"]["domains"]
           for m in P["syntod"]["methods"]]
    write_all(P, a.out_dir, a.summary, checkpoints_tsv=a.checkpoints, lora_dirs=lora, ablation_tsv=a.ablation,
              syntod_predictions=syn, bm25_json=a.bm25, rerank_json=a.rerank, syntod_json=a.syntod)
    return 0
