"""Reranking the first stage with the checkpoints of one config.

The schedule (params ``rerank``): every saved checkpoint on ``checkpoint_datasets`` (the
learning curves), the final checkpoint (the highest step) only on ``final_datasets`` (large
sets such as dev-small, where every checkpoint would cost ~100x the curves)."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from ..datasets import get, source_path
from ..utils import atomic_path
from .bases import resolve_base
from ..checks import check_adapter_dir, check_model_dir
from ..errors import InputError

log = logging.getLogger("irrepro.study1")

_CKPT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(adapter_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(step, path)]`` of the ``checkpoint-<step>`` adapters to score, by step.

    Every such directory must hold a complete adapter: one written by our training
    (``trainer_state.json`` present) must pass :func:`irrepro.lora.checkpoints.is_complete_adapter`,
    which older checkpoints whose optimizer/scheduler state was pruned do (they are scored like
    the newest); a directory without ``trainer_state.json`` (an adapter saved by other code)
    needs the adapter config and weights. Anything else is an error naming the directory:
    a curve point silently missing, or another checkpoint silently taken as the final one,
    would be worse. Nothing is ever deleted here."""
    from ..lora.checkpoints import is_complete_adapter

    found, broken = [], []
    if not Path(adapter_dir).is_dir():
        raise InputError("adapter directory not found", file=adapter_dir, hint="run finetune first")
    for p in Path(adapter_dir).iterdir():
        if (m := _CKPT.match(p.name)) and p.is_dir():
            ok = is_complete_adapter(p) if (p / "trainer_state.json").exists() else _has_adapter_files(p)
            (found if ok else broken).append((int(m.group(1)), p))
    if broken:
        raise FileNotFoundError(
            f"{', '.join(str(p) for _, p in sorted(broken))}: not a complete adapter (needs adapter_config.json, "
            "non-empty adapter weights and, if trainer_state.json is present, its global_step equal to the "
            "directory's step); delete it or rerun finetune")
    if not found:
        raise FileNotFoundError(f"{adapter_dir}: no checkpoint-<step> adapter directories")
    return sorted(found)


def _has_adapter_files(p: Path) -> bool:
    nonempty = lambda name: (p / name).is_file() and (p / name).stat().st_size > 0  # noqa: E731
    return nonempty("adapter_config.json") and (nonempty("adapter_model.safetensors") or nonempty("adapter_model.bin"))


def reranked_datasets(P: dict) -> list[str]:
    """Every dataset the reranking stage scores: the curve datasets, then the final-only ones."""
    return list(P["rerank"]["checkpoint_datasets"]) + list(P["rerank"]["final_datasets"])


def schedule(P: dict, steps: list[int]) -> dict[str, list[int]]:
    """``{dataset: [steps reranked]}``: all ``steps`` on the curve datasets, ``max(steps)`` on the
    final-only datasets."""
    R = P["rerank"]
    return {**{d: sorted(steps) for d in R["checkpoint_datasets"]}, **{d: [max(steps)] for d in R["final_datasets"]}}


def eval_datasets(P: dict, raw: str, runs: str, names: list[str] | None = None) -> dict[str, dict]:
    """``{dataset: {"topics", "qrels", "run", "rel_level"}}`` for ``names`` (default: :func:`reranked_datasets`)."""
    return {
        name: {
            "topics": source_path(raw, get(name).topics),
            "qrels": source_path(raw, get(name).qrels),
            "run": Path(runs) / f"{name}.trec",
            "rel_level": P["evaluate"]["rel_level"][name],
        }
        for name in (reranked_datasets(P) if names is None else names)
    }


def rerank_config(P: dict, config: str, base: str, adapters: str, raw: str, runs: str, corpus: str,
                  out_runs: str) -> None:
    """Rerank the first-stage runs with the checkpoints of one config (base loaded once), on
    the schedule of :func:`schedule`.

    ``adapters`` is a finetune output directory (its ``checkpoint-<step>`` adapters) or a
    published adapter ``hf:<repo>@<commit>[:subfolder]`` (written as step 0, its only and
    final step). Writes ``out_runs/<dataset>/step-<step>.trec``: every step for the curve
    datasets, the final step only for the final-only datasets. Runs of an earlier invocation
    that are still on the schedule (and were made the same way) are reused; others are dropped.
    Metrics are computed for all configs at once by :func:`collect` (one process pays ranx's
    numba start-up, not 36)."""
    from ..rerank.evaluate import evaluate_checkpoints

    R, F = P["rerank"], P["finetune"]
    if str(adapters).startswith("hf:"):  # a published adapter at a pinned revision
        ckpts = [(config, 0, adapters)]
    else:
        ckpts = [(config, step, path) for step, path in checkpoints(adapters)]
    for _, _, path in ckpts:  # a truncated weights file or config, named before the first checkpoint is scored
        if not str(path).startswith("hf:"):
            check_adapter_dir(path)
    check_model_dir(base)
    plan = schedule(P, [s for _, s, _ in ckpts])
    datasets = eval_datasets(P, raw, runs)
    for name, steps in plan.items():
        datasets[name]["steps"] = steps
        log.info("%s on %s: %d checkpoint(s) (steps %s)", config, name, len(steps), steps)
    with atomic_path(out_runs, is_dir=True) as tmp:
        _keep_scheduled_runs(Path(out_runs), Path(tmp), plan)
        evaluate_checkpoints(
            resolve_base(base),
            ckpts,
            datasets,
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


def _keep_scheduled_runs(old: Path, new: Path, plan: dict[str, list[int]]) -> None:
    """Copy the runs (and resume sidecars) of a previous output that are on ``plan`` into ``new``:
    ``evaluate_checkpoints`` reuses them; runs off the schedule (a dataset moved to the
    final-only list, a dataset dropped) must not reach ``collect``."""
    if not old.is_dir():
        return
    for name, steps in plan.items():
        for step in steps:
            for suffix in (".trec", ".meta.json"):
                src = old / name / f"step-{step}{suffix}"
                if src.is_file():
                    (new / name).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, new / name / src.name)
