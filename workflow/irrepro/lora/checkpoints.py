"""Checkpoints of a LoRA run: listing, completeness, the resume point, pruning, portable configs.

Trainer writes ``checkpoint-{step}/`` every ``save_steps`` optimiser steps: the adapter
(``adapter_config.json``, ``adapter_model.safetensors``), tokenizer files,
``training_args.bin``, the resume state (:data:`RESUME_STATE`) and ``trainer_state.json``
last.

A checkpoint is a *complete adapter* (:func:`is_complete_adapter`, what evaluation scores)
when ``trainer_state.json`` parses and names the same global step as the directory and the
adapter (config + weights) is present; it is *complete* (:func:`is_complete_checkpoint`,
resumable) when in addition the optimizer, scheduler and RNG state files are present. A run
resumes from the newest complete checkpoint (:func:`resume_point`) after deleting incomplete
checkpoint directories newer than it (a run killed while saving).

Pruning (:func:`prune_resume_state`, run after every save by
:class:`irrepro.lora.trainer.KeepResumeStateInNewest`): the optimizer state is twice the
adapter's size, and a resume only ever needs the newest complete checkpoint. Once a new
checkpoint is complete, the resume state of every older complete adapter is deleted; the
adapter and ``trainer_state.json`` stay. At every moment the newest complete checkpoint is
intact, so a kill during pruning at worst leaves an older checkpoint half-pruned: still a
complete adapter, never a resume point, pruned again at the next save.

Same inputs, same bytes: peft writes ``target_modules`` / ``modules_to_save`` in set order
(which changes with Python's per-process string hashing) and the base's absolute hub-cache
path; :func:`canonical_adapter_config` sorts the lists and names a hub base by its id and
revision in every saved ``adapter_config.json`` (and the model card).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from .. import sidecar
from ..launch import is_main_process

log = logging.getLogger("irrepro")

__all__ = ["RESUME_STATE", "list_checkpoints", "checkpoint_step", "is_complete_adapter", "is_complete_checkpoint",
           "latest_complete_checkpoint", "prune_resume_state", "resume_point", "canonical_adapter_config"]

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# what Trainer writes into a checkpoint only to resume from it (DDP: rng_state_{rank}.pth;
# DeepSpeed/FSDP-style sharded optimizers: rank*-optimizer.pt)
RESUME_STATE = ("optimizer.pt", "optimizer.bin", "rank*-optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a ``checkpoint-{step}`` directory name (None: not such a name)."""
    m = CHECKPOINT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(step, path)]`` of ``checkpoint-{step}`` directories, by step."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        step = checkpoint_step(p)
        if step is not None and p.is_dir():
            found.append((step, p))
    return sorted(found)


def _has(p: Path, pattern: str) -> bool:
    return any(f.stat().st_size > 0 for f in p.glob(pattern))


def is_complete_adapter(path: str | os.PathLike) -> bool:
    """Whether this checkpoint holds a finished adapter: ``trainer_state.json`` (written last
    by Trainer) names the directory's step and the adapter config + weights are there. True
    for pruned older checkpoints too (see the module docstring)."""
    p = Path(path)
    step = checkpoint_step(p)
    try:
        state = json.loads((p / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    if step is not None and state.get("global_step") != step:
        return False
    return _has(p, "adapter_config.json") and _has(p, "adapter_model.safetensors")


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Whether training can resume from this checkpoint: a complete adapter with its optimizer,
    scheduler and RNG state (see the module docstring)."""
    p = Path(path)
    return (
        is_complete_adapter(p)
        and (_has(p, "optimizer.pt") or _has(p, "optimizer.bin") or _has(p, "rank*-optimizer.pt"))
        and _has(p, "scheduler.pt")
        and _has(p, "rng_state*.pth")
    )


def latest_complete_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint training can resume from (None: none)."""
    complete = [p for _, p in list_checkpoints(out_dir) if is_complete_checkpoint(p)]
    return complete[-1] if complete else None


def prune_resume_state(out_dir: str | os.PathLike) -> list[Path]:
    """Delete the resume state (:data:`RESUME_STATE`) of every complete adapter older than the
    newest complete checkpoint; return the deleted files. Nothing happens without a complete
    checkpoint, and incomplete directories are left alone (:func:`resume_point` handles them)."""
    newest = latest_complete_checkpoint(out_dir)
    if newest is None:
        return []
    newest_step = checkpoint_step(newest)
    deleted = []
    for step, path in list_checkpoints(out_dir):
        if step >= newest_step or not is_complete_adapter(path):
            continue
        for pattern in RESUME_STATE:
            for f in sorted(path.glob(pattern)):
                f.unlink(missing_ok=True)
                deleted.append(f)
    return deleted


def resume_point(out: Path) -> tuple[Path | None, int]:
    """``(checkpoint, step)`` to resume ``out``'s run from (``(None, 0)``: start afresh).

    Incomplete checkpoint directories newer than the newest complete one (a run killed
    while saving) are deleted; older incomplete ones are only reported.
    """
    resume = latest_complete_checkpoint(out)
    resume_step = checkpoint_step(resume) if resume else 0
    for step, path in list_checkpoints(out):
        if step > resume_step and not is_complete_checkpoint(path):
            if is_main_process():
                log.warning("finetune: removing incomplete checkpoint %s", path)
                shutil.rmtree(path, ignore_errors=True)
        elif step < resume_step and not is_complete_checkpoint(path):
            if is_complete_adapter(path):  # resume state pruned (KeepResumeStateInNewest): expected
                log.debug("finetune: %s holds the adapter only (resume state pruned)", path)
            else:
                log.warning("finetune: %s is incomplete (kept; training resumes after it)", path)
    if resume:
        log.info("finetune: resuming from %s", resume)
    return resume, resume_step


def canonical_adapter_config(adapter_dir: str | os.PathLike) -> None:
    """Rewrite ``adapter_dir/adapter_config.json`` so equal adapters give equal bytes: list
    values in sorted order (peft saves its sets in per-process hash order) and a hub-cache base
    path as the repo id with ``revision`` the snapshot's commit (loadable by ``AutoPeftModel``;
    the model card's mention follows). Same key order and indent as peft's own file."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        return
    cfg = json.loads(path.read_text(encoding="utf-8"))
    for key in ("target_modules", "modules_to_save"):
        if isinstance(cfg.get(key), list):
            cfg[key] = sorted(dict.fromkeys(cfg[key]))
    base = cfg.get("base_model_name_or_path")
    portable = sidecar.portable_path(base) if isinstance(base, str) else base
    if isinstance(portable, str) and portable.startswith("hf:") and "@" in portable:
        repo, _, commit = portable[3:].partition("@")
        cfg["base_model_name_or_path"], cfg["revision"] = repo.split(":")[0], commit.split(":")[0]
        card = Path(adapter_dir) / "README.md"
        if card.is_file():
            card.write_text(card.read_text(encoding="utf-8").replace(base, cfg["base_model_name_or_path"]), encoding="utf-8")
    elif isinstance(portable, str):
        cfg["base_model_name_or_path"] = portable
    text = json.dumps(cfg, indent=2, sort_keys=True)
    if text != path.read_text(encoding="utf-8"):
        path.write_text(text, encoding="utf-8")
