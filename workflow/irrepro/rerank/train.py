"""LoRA fine-tuning of a reranker with Localized Contrastive Estimation (Tevatron style).

The driver is a plain Hugging Face ``Trainer`` (so ``torchrun`` / ``accelerate launch`` /
DeepSpeed work unchanged); only ``compute_loss`` is ours: the ``B*G`` logits are reshaped
to ``[B, G]`` (positive first) and trained with cross-entropy towards index 0.

Output directory layout (``out_dir``)::

    finetune_config.json      the arguments that shape the result (checked on resume)
    checkpoint-{step}/        every ``save_steps`` optimiser steps, written by Trainer:
        adapter_config.json, adapter_model.safetensors   (a standard peft adapter: LoRA
                                                          weights + the ``score`` head)
        tokenizer files, training_args.bin, README.md
        optimizer.pt, scheduler.pt, rng_state.pth (rng_state_{rank}.pth under DDP)
        trainer_state.json    (written last by Trainer)
    final/                    the adapter after the last step (+ tokenizer)
    train_summary.json        written LAST: the completion marker

Resume: a checkpoint is *complete* when ``trainer_state.json`` parses and names the same
global step as the directory, and the adapter (config + weights), optimizer, scheduler and
RNG state files are all present. ``finetune`` resumes from the newest complete checkpoint
(``trainer.train(resume_from_checkpoint=...)``) after deleting incomplete checkpoint
directories newer than it (a run killed while saving); with ``train_summary.json``
present it returns the summary without training.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..utils import atomic_path

log = logging.getLogger("irrepro")

__all__ = ["finetune", "resume_point", "publish_run", "list_checkpoints", "is_complete_checkpoint",
           "latest_complete_checkpoint", "LCETrainer", "SUMMARY_NAME", "FINAL_NAME"]

SUMMARY_NAME = "train_summary.json"
FINAL_NAME = "final"
CONFIG_NAME = "finetune_config.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


# ---------------------------------------------------------------------------- checkpoints


def list_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(step, path)]`` of ``checkpoint-{step}`` directories, by step."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Whether Trainer finished writing this checkpoint (see the module docstring)."""
    p = Path(path)
    m = _CKPT_RE.match(p.name)
    try:
        state = json.loads((p / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    if m and state.get("global_step") != int(m.group(1)):
        return False
    has = lambda pattern: any(f.stat().st_size > 0 for f in p.glob(pattern))  # noqa: E731
    return (
        has("adapter_config.json")
        and has("adapter_model.safetensors")
        and (has("optimizer.pt") or has("optimizer.bin") or has("rank*-optimizer.pt"))
        and has("scheduler.pt")
        and has("rng_state*.pth")
    )


def latest_complete_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    complete = [p for _, p in list_checkpoints(out_dir) if is_complete_checkpoint(p)]
    return complete[-1] if complete else None


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# ---------------------------------------------------------------------------- trainer


@functools.lru_cache(maxsize=None)
def _trainer_classes():
    import torch
    import torch.nn.functional as F
    from transformers import Trainer, TrainerCallback

    class LCETrainer(Trainer):
        """``Trainer`` whose loss is Localized Contrastive Estimation over groups of ``group_size``."""

        # our loss is a per-batch mean: Trainer divides it by the gradient-accumulation steps
        loss_is_scaled_for_ga = False

        def __init__(self, *args, group_size: int, **kwargs):
            super().__init__(*args, **kwargs)
            self.group_size = group_size
            self.model_accepts_loss_kwargs = False  # older transformers: same effect as the flag above

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            logits = outputs.logits.float().view(-1, self.group_size)
            target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
            loss = F.cross_entropy(logits, target)
            return (loss, outputs) if return_outputs else loss

    class EpochToDataset(TrainerCallback):
        """Tell the dataset which epoch starts (the collator's sampling depends on it)."""

        def __init__(self, dataset):
            self.dataset = dataset

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.dataset.set_epoch(math.floor((state.epoch or 0.0) + 1e-6))

    return LCETrainer, EpochToDataset


def __getattr__(name):  # LCETrainer without importing transformers at module import
    if name == "LCETrainer":
        return _trainer_classes()[0]
    raise AttributeError(name)


def _training_arguments(**kw):
    """``TrainingArguments`` across transformers versions (warmup ratio, checkpointing names)."""
    import dataclasses

    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    ratio = kw.pop("warmup_ratio")
    if "warmup_ratio" in fields:
        kw["warmup_ratio"] = ratio
    else:  # transformers >= 5: warmup_steps < 1 is a ratio
        if not 0 <= ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {ratio}")
        kw["warmup_steps"] = float(ratio)
    # the model's activation checkpointing is set up by load_reranker; keep Trainer out of it
    if "activation_checkpointing" in fields:
        kw["activation_checkpointing"] = False
    else:
        kw["gradient_checkpointing"] = False
    return TrainingArguments(**kw)


def resume_point(out: Path) -> tuple[Path | None, int]:
    """``(checkpoint, step)`` to resume ``out``'s run from (``(None, 0)``: start afresh).

    Incomplete checkpoint directories newer than the newest complete one (a run killed
    while saving) are deleted; older incomplete ones are only reported.
    """
    resume = latest_complete_checkpoint(out)
    resume_step = int(_CKPT_RE.match(resume.name).group(1)) if resume else 0
    for step, path in list_checkpoints(out):
        if step > resume_step and not is_complete_checkpoint(path):
            if _is_main_process():
                log.warning("finetune: removing incomplete checkpoint %s", path)
                shutil.rmtree(path, ignore_errors=True)
        elif step < resume_step and not is_complete_checkpoint(path):
            log.warning("finetune: %s is incomplete (kept; training resumes after it)", path)
    if resume:
        log.info("finetune: resuming from %s", resume)
    return resume, resume_step


def publish_run(trainer, result, out: Path, *, t0: float, train_time: float, resume: Path | None,
                resume_step: int, config: dict, extra: dict) -> dict:
    """After ``trainer.train``: save the final adapter to ``out/final`` and write the summary
    (``extra`` adds run-specific entries) to ``out/train_summary.json`` last. Returns it."""
    import torch
    import transformers

    # final adapter: every rank joins save_model (sharded setups gather), rank 0 publishes
    tmp_final = out / f".{FINAL_NAME}.tmp"
    if trainer.is_world_process_zero() and tmp_final.exists():
        shutil.rmtree(tmp_final)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp_final))
    trainer.accelerator.wait_for_everyone()

    state = trainer.state
    losses = [
        {k: e[k] for k in ("step", "loss", "learning_rate", "grad_norm", "epoch") if k in e}
        for e in state.log_history if "loss" in e
    ]
    steps_run = state.global_step - resume_step
    summary = {
        "steps": state.global_step,
        "epochs": state.epoch,
        "losses": losses,
        "train_loss": result.training_loss,
        "wall_time_s": round(time.time() - t0, 3),
        "train_time_s": round(train_time, 3),
        "sec_per_step": round(train_time / steps_run, 4) if steps_run > 0 else None,
        "resumed_from": resume.name if resume else None,
        "resumed_from_step": resume_step,
        "checkpoints": [p.name for _, p in list_checkpoints(out)],
        "final": FINAL_NAME,
        **extra,
        "world_size": trainer.args.world_size,
        "config": config,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": __import__("peft").__version__},
    }
    if trainer.is_world_process_zero():
        final = out / FINAL_NAME
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp_final, final)
        with atomic_path(out / SUMMARY_NAME) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
        log.info("finetune: %d steps (%s/step), final adapter %s", state.global_step, summary["sec_per_step"], final)
    trainer.accelerator.wait_for_everyone()
    return summary


# ---------------------------------------------------------------------------- driver


def _check_same(out: Path, old: dict, config: dict) -> None:
    diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
    if diff:
        raise ValueError(
            f"{out} holds a fine-tuning run with other settings {diff} (old, new); "
            "delete the directory to start over"
        )


def _check_config(out: Path, config: dict) -> None:
    path = out / CONFIG_NAME
    if path.exists():
        _check_same(out, json.loads(path.read_text()), config)
    elif _is_main_process():
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def finetune(
    base: str | os.PathLike,
    groups_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    rank: int,
    targets: str,
    alpha: float = 64,
    dropout: float = 0.1,
    lr: float = 1e-4,
    epochs: float = 1,
    max_steps: int = -1,
    queries_per_device: int = 16,
    grad_accum: int = 4,
    group_size: int = 16,
    qmax: int = 32,
    pmax: int = 164,
    save_steps: int = 50,
    warmup_ratio: float = 0.1,
    bf16: bool = False,
    gradient_checkpointing: bool = False,
    seed: int = 42,
    threads: int | None = None,
    logging_steps: int = 1,
    callbacks: Sequence[Any] | None = None,
    token: str | None = None,
) -> dict:
    """Fine-tune ``base`` with LoRA on the groups in ``groups_path`` into ``out_dir``.

    ``max_steps`` > 0 overrides ``epochs`` (Trainer semantics); ``bf16`` is mixed precision
    (weights stay fp32, as in Tevatron's driver). An ``out_dir`` holding a run with other
    settings (``finetune_config.json`` / the summary's ``config``; paths compared as given)
    is an error. ``callbacks`` are extra ``TrainerCallback`` objects. Returns the summary dict also written to
    ``out_dir/train_summary.json``: ``steps``, ``losses`` (one entry per logging step:
    step, loss, learning_rate, grad_norm, epoch), ``wall_time_s`` and ``sec_per_step`` of
    this invocation, ``resumed_from``/``resumed_from_step``, ``checkpoints``, ``config``.
    """
    out = Path(out_dir)
    summary_path = out / SUMMARY_NAME
    config = {
        "base": str(base), "groups": str(groups_path), "rank": int(rank), "targets": targets, "alpha": alpha,
        "dropout": dropout, "lr": lr, "epochs": epochs, "max_steps": max_steps,
        "queries_per_device": queries_per_device, "grad_accum": grad_accum, "group_size": group_size,
        "qmax": qmax, "pmax": pmax, "save_steps": save_steps, "warmup_ratio": warmup_ratio, "bf16": bool(bf16),
        "gradient_checkpointing": bool(gradient_checkpointing), "seed": seed,
    }
    if summary_path.exists():
        done = json.loads(summary_path.read_text())
        _check_same(out, done.get("config", {}), config)
        log.info("finetune: %s exists; nothing to do", summary_path)
        return done

    import torch
    from transformers import set_seed

    from .data import GroupCollator, GroupDataset, read_groups
    from .model import load_reranker

    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, config)

    resume, resume_step = resume_point(out)

    records = read_groups(groups_path)
    if not records:
        raise ValueError(f"{groups_path}: no training groups")
    set_seed(seed)  # the fresh score head and LoRA A matrices are drawn from the global RNG
    # fp32 weights; bf16 means mixed precision (Trainer autocast), as in Tevatron's driver
    model, tokenizer = load_reranker(base, rank, targets, alpha=alpha, dropout=dropout, dtype=None,
                                     gradient_checkpointing=gradient_checkpointing, token=token)
    dataset = GroupDataset(records)
    collator = GroupCollator(tokenizer, group_size, qmax=qmax, pmax=pmax, seed=seed)

    args = _training_arguments(
        output_dir=str(out),
        per_device_train_batch_size=queries_per_device,
        gradient_accumulation_steps=grad_accum,
        learning_rate=lr,
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps and max_steps > 0 else -1,
        warmup_ratio=warmup_ratio,
        lr_scheduler_type="linear",
        optim="adamw_torch",
        weight_decay=0.0,
        bf16=bool(bf16),
        logging_strategy="steps",
        logging_steps=logging_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=None,
        report_to="none",
        remove_unused_columns=False,
        label_names=[],
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        disable_tqdm=not sys.stderr.isatty(),
        # without an accelerator, a torchrun/accelerate multi-process launch must be told it is
        # CPU data parallelism (gloo); otherwise every process would train alone
        use_cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1,
    )
    LCETrainer, EpochToDataset = _trainer_classes()
    trainer = LCETrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[EpochToDataset(dataset), *(callbacks or [])],
        group_size=group_size,
    )
    t_train = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_time = time.time() - t_train

    return publish_run(trainer, result, out, t0=t0, train_time=train_time, resume=resume, resume_step=resume_step,
                       config=config, extra={"n_queries": len(records)})
