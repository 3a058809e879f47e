"""Stage ``ablate``: rerank with LoRA switched off per layer / band / projection (one config)."""

from __future__ import annotations

from ..commands import In, Opt, Out

HELP = "rerank with LoRA switched off per layer/band/projection (one config)"
ARGS = (
    Opt("--config", "config name, e.g. llama-r8-mha", required=True),
    In("--base"),
    In("--adapters", "directory of checkpoint-<step> adapters, or hf:<repo>@<commit>[:subfolder]"),
    In("--raw"),
    In("--runs", "first-stage runs directory"),
    In("--corpus"),
    Out("--out", "directory of <dataset>/<variant>.trec runs + variants.json"),
)
PARAMS = ("profile", "ablate", "rerank", "finetune")


def run(a, P) -> int:
    from ..study1.ablation import ablate_config

    ablate_config(P, a.config, a.base, a.adapters, a.raw, a.runs, a.corpus, a.out)
    return 0
