"""Study 1 stage drivers (LoRA rerankers): one module per stage family.

Each driver is what one CLI command (one Snakemake rule / DVC stage) does: read the
resolved params, find the inputs, call the library modules (``irrepro.tiny``,
``irrepro.rerank.*``), write the outputs atomically. The modules are split by stage so
that a rule's code dependencies are only the files its results depend on.
"""

from __future__ import annotations


def config_name(family: str, rank: int, targets: str) -> str:
    return f"{family}-r{rank}-{targets}"


def grid(P: dict) -> list[tuple[str, int, str]]:
    F = P["finetune"]
    return [(f, r, t) for f in F["families"] for r in F["ranks"] for t in F["targets"]]
