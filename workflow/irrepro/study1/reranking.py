"""Reranking the first stage with every checkpoint of one config."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from ..datasets import get, source_path
from ..utils import atomic_path
from .bases import resolve_base

log = logging.getLogger("irrepro.study1")

_CKPT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(adapter_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    found = sorted(
        (int(m.group(1)), p) for p in Path(adapter_dir).iterdir() if (m := _CKPT.match(p.name)) and p.is_dir()
    )
    if not found:
        raise FileNotFoundError(f"{adapter_dir}: no checkpoint-<step> directories")
    return found


def eval_datasets(P: dict, raw: str, runs: str, names: list[str] | None = None) -> dict[str, dict]:
    """``{dataset: {"topics", "qrels", "run", "rel_level"}}`` for ``names`` (default: P["rerank"]["datasets"])."""
    return {
        name: {
            "topics": source_path(raw, get(name).topics),
            "qrels": source_path(raw, get(name).qrels),
            "run": Path(runs) / f"{name}.trec",
            "rel_level": P["evaluate"]["rel_level"][name],
        }
        for name in (P["rerank"]["datasets"] if names is None else names)
    }


def rerank_config(P: dict, config: str, base: str, adapters: str, raw: str, runs: str, corpus: str,
                  out_runs: str) -> None:
    """Rerank the first-stage runs with every checkpoint of one config (base loaded once).

    ``adapters`` is a finetune output directory (its ``checkpoint-<step>`` adapters) or a
    published adapter ``hf:<repo>@<commit>[:subfolder]`` (written as step 0).
    Writes ``out_runs/<dataset>/step-<step>.trec``. Metrics are computed for all configs
    at once by :func:`collect` (one process pays ranx's numba start-up, not 36)."""
    from ..rerank.evaluate import evaluate_checkpoints

    R, F = P["rerank"], P["finetune"]
    if str(adapters).startswith("hf:"):  # a published adapter at a pinned revision
        ckpts = [(config, 0, adapters)]
    else:
        ckpts = [(config, step, path) for step, path in checkpoints(adapters)]
    log.info("%s: %d checkpoints (steps %s)", config, len(ckpts), [s for _, s, _ in ckpts])
    with atomic_path(out_runs, is_dir=True) as tmp:
        if Path(out_runs).exists():  # keep finished runs: evaluate_checkpoints reuses them
            shutil.copytree(out_runs, tmp, dirs_exist_ok=True)
        evaluate_checkpoints(
            resolve_base(base),
            ckpts,
            eval_datasets(P, raw, runs),
            corpus,
            R["depth"],
            None,
            tmp,
            None,
            R["batch_size"],
            qmax=F["query_max_len"],
            pmax=F["passage_max_len"],
            dtype=R["dtype"],
        )
