"""LoRA fine-tuning of a reranker with Localized Contrastive Estimation (Tevatron style).

The driver is a plain Hugging Face ``Trainer`` (so ``torchrun`` / ``accelerate launch`` /
DeepSpeed work unchanged); only ``compute_loss`` is ours: the ``B*G`` logits are reshaped
to ``[B, G]`` (positive first) and trained with cross-entropy towards index 0. With
``head_labels=2`` (the authors' training build, which loads the classifier without
``num_labels``: AtharvaNijasure/multi_stage_retrieval@cf514c3 train_pythia.py:96-99, loss
at :67-70) the ``[B*G, 2]`` logits are viewed as ``[B, 2G]`` and index 0 (the positive's
first logit) is the target; scoring then reads logit 0, as Tevatron's rerank driver does
(texttron/tevatron@1351202 src/tevatron/reranker/driver/rerank.py:84).

Precision (:mod:`irrepro.rerank.precision`): the frozen base is loaded in ``base_dtype``
(``auto``: the checkpoint's dtype on CUDA, fp32 on CPU), every trainable parameter is fp32,
the head computes in fp32, ``bf16`` adds Trainer's autocast. A non-finite loss, gradient,
gradient norm or trainable weight stops the run with :class:`~irrepro.rerank.precision.NonFiniteError`
naming the config (``label``), the optimiser step and the tensor; Trainer's
``logging_nan_inf_filter`` is off, so the log never shows a made-up loss.

Output directory layout (``out_dir``)::

    finetune_config.json      the arguments that shape the result (checked on resume)
    checkpoint-{step}/        every ``save_steps`` optimiser steps, written by Trainer:
        adapter_config.json, adapter_model.safetensors   (a standard peft adapter: LoRA
                                                          weights + the ``score`` head)
        tokenizer files, training_args.bin, README.md
        optimizer.pt, scheduler.pt, rng_state.pth (rng_state_{rank}.pth under DDP),
        scaler.pt             (the resume state: only in the NEWEST checkpoint, see below)
        trainer_state.json    (written last by Trainer)
    final/                    the adapter after the last step (+ tokenizer)
    train_summary.json        written LAST: the completion marker (results only: steps, losses,
                              config, versions; timings and resume details go to the job's run
                              sidecar, :mod:`irrepro.sidecar`)

Same inputs, same bytes: every file above is byte-identical when the run is repeated on the
same machine. peft writes ``target_modules`` / ``modules_to_save`` in set order (which changes
with Python's per-process string hashing) and the base's absolute hub-cache path;
:func:`canonical_adapter_config` sorts the lists and names a hub base by its id and revision
in every saved ``adapter_config.json`` (and the model card).

Resume: a checkpoint is a *complete adapter* (:func:`is_complete_adapter`, what evaluation
scores) when ``trainer_state.json`` parses and names the same global step as the directory
and the adapter (config + weights) is present; it is *complete* (:func:`is_complete_checkpoint`,
resumable) when in addition the optimizer, scheduler and RNG state files are present.
``finetune`` resumes from the newest complete checkpoint
(``trainer.train(resume_from_checkpoint=...)``) after deleting incomplete checkpoint
directories newer than it (a run killed while saving); with ``train_summary.json``
present it returns the summary without training.

Pruning (:class:`KeepResumeStateInNewest`): the optimizer state is twice the adapter's size,
and a resume only ever needs the newest complete checkpoint. Once a new checkpoint is
complete (Trainer's ``on_save``), the resume state (:data:`RESUME_STATE`) of every older
complete adapter is deleted; the adapter, head and ``trainer_state.json`` stay. At every
moment the newest complete checkpoint is intact, so a kill during pruning at worst leaves an
older checkpoint half-pruned: still a complete adapter, never a resume point, pruned again at
the next save.
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

from .. import sidecar
from ..cards import write_model_card
from ..utils import atomic_path

log = logging.getLogger("irrepro")

__all__ = ["finetune", "resume_point", "publish_run", "list_checkpoints", "is_complete_checkpoint",
           "is_complete_adapter", "latest_complete_checkpoint", "prune_resume_state", "KeepResumeStateInNewest",
           "LCETrainer", "SUMMARY_NAME", "FINAL_NAME", "RESUME_STATE"]

SUMMARY_NAME = "train_summary.json"
FINAL_NAME = "final"
CONFIG_NAME = "finetune_config.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
# what Trainer writes into a checkpoint only to resume from it (DDP: rng_state_{rank}.pth;
# DeepSpeed/FSDP-style sharded optimizers: rank*-optimizer.pt)
RESUME_STATE = ("optimizer.pt", "optimizer.bin", "rank*-optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")


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


def _has(p: Path, pattern: str) -> bool:
    return any(f.stat().st_size > 0 for f in p.glob(pattern))


def is_complete_adapter(path: str | os.PathLike) -> bool:
    """Whether this checkpoint holds a finished adapter: ``trainer_state.json`` (written last
    by Trainer) names the directory's step and the adapter config + weights are there. True
    for pruned older checkpoints too (see the module docstring)."""
    p = Path(path)
    m = _CKPT_RE.match(p.name)
    try:
        state = json.loads((p / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    if m and state.get("global_step") != int(m.group(1)):
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
    newest_step = int(_CKPT_RE.match(newest.name).group(1))
    deleted = []
    for step, path in list_checkpoints(out_dir):
        if step >= newest_step or not is_complete_adapter(path):
            continue
        for pattern in RESUME_STATE:
            for f in sorted(path.glob(pattern)):
                f.unlink(missing_ok=True)
                deleted.append(f)
    return deleted


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


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# ---------------------------------------------------------------------------- trainer


@functools.lru_cache(maxsize=None)
def _trainer_classes():
    import torch
    import torch.nn.functional as F
    from transformers import Trainer, TrainerCallback

    from .precision import NonFiniteGuard

    class LCETrainer(NonFiniteGuard, Trainer):
        """``Trainer`` whose loss is Localized Contrastive Estimation over groups of ``group_size``
        (``head_labels`` logits per passage, all of a group in one softmax, target index 0),
        stopping on non-finite values (:class:`~irrepro.rerank.precision.NonFiniteGuard`)."""

        # our loss is a per-batch mean: Trainer divides it by the gradient-accumulation steps
        loss_is_scaled_for_ga = False

        def __init__(self, *args, group_size: int, head_labels: int = 1, **kwargs):
            super().__init__(*args, **kwargs)
            self.group_size = group_size
            self.head_labels = head_labels
            self.model_accepts_loss_kwargs = False  # older transformers: same effect as the flag above

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            # [B*G, L] row-major -> [B, G*L]: index 0 is the positive's first logit
            logits = outputs.logits.float().view(-1, self.group_size * self.head_labels)
            target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
            loss = F.cross_entropy(logits, target)
            return (loss, outputs) if return_outputs else loss

    class KeepResumeStateInNewest(TrainerCallback):
        """After each checkpoint save, keep the optimizer/scheduler/RNG state only in the newest
        checkpoint (:func:`prune_resume_state`; the main process alone touches the files)."""

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                canonical_adapter_config(Path(args.output_dir) / f"checkpoint-{state.global_step}")
                deleted = prune_resume_state(args.output_dir)
                if deleted:
                    log.info("finetune: pruned the resume state of %d older checkpoint(s) (%d files)",
                             len({f.parent for f in deleted}), len(deleted))

    class EpochToDataset(TrainerCallback):
        """Tell the dataset which epoch starts (the collator's sampling depends on it)."""

        def __init__(self, dataset):
            self.dataset = dataset

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.dataset.set_epoch(math.floor((state.epoch or 0.0) + 1e-6))

    return LCETrainer, EpochToDataset, KeepResumeStateInNewest


def __getattr__(name):  # the Trainer classes without importing transformers at module import
    if name == "LCETrainer":
        return _trainer_classes()[0]
    if name == "KeepResumeStateInNewest":
        return _trainer_classes()[2]
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
    # a NaN/inf loss must reach the log and our guard, not be replaced by the running mean
    kw.setdefault("logging_nan_inf_filter", False)
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
            if is_complete_adapter(path):  # resume state pruned (KeepResumeStateInNewest): expected
                log.debug("finetune: %s holds the adapter only (resume state pruned)", path)
            else:
                log.warning("finetune: %s is incomplete (kept; training resumes after it)", path)
    if resume:
        log.info("finetune: resuming from %s", resume)
    return resume, resume_step


CIRCUMSTANCES = ("wall_time_s", "train_time_s", "sec_per_step", "resumed_from", "resumed_from_step")


def _report_to(value: str, logging_dir: str | os.PathLike | None) -> str:
    """``none`` or ``tensorboard`` (params finetune.report_to); the latter needs the package and
    a ``logging_dir`` outside the output (transformers 5 reads it from ``TENSORBOARD_LOGGING_DIR``
    and would otherwise write the events into ``output_dir``, i.e. into a DVC output)."""
    if value not in ("none", "tensorboard"):
        raise ValueError(f"finetune.report_to: {value!r} is not one of ['none', 'tensorboard']")
    if value == "tensorboard":
        import importlib.util

        if not (importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")):
            raise ValueError("finetune.report_to: tensorboard needs the tensorboard package "
                             "(pip install tensorboard), or set it back to none")
        if not logging_dir:
            raise ValueError("finetune.report_to: tensorboard needs a logging_dir (outside the output directory)")
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(logging_dir)
    return value


def publish_run(trainer, result, out: Path, *, t0: float, train_time: float, resume: Path | None,
                resume_step: int, config: dict, extra: dict) -> dict:
    """After ``trainer.train``: save the final adapter to ``out/final`` and write the summary
    (``extra`` adds run-specific entries) to ``out/train_summary.json`` last. The file holds
    results only; the circumstances of this invocation (:data:`CIRCUMSTANCES`: wall and training
    time, seconds per step, where it resumed) go to the run sidecar's ``train`` section. Returns
    both together (the summary dict plus those keys)."""
    import torch
    import transformers

    # final adapter: every rank joins save_model (sharded setups gather), rank 0 publishes
    tmp_final = out / f".{FINAL_NAME}.tmp"
    if trainer.is_world_process_zero() and tmp_final.exists():
        shutil.rmtree(tmp_final)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp_final))
    if trainer.is_world_process_zero():
        canonical_adapter_config(tmp_final)
    trainer.accelerator.wait_for_everyone()

    state = trainer.state
    losses = [
        {k: e[k] for k in ("step", "loss", "learning_rate", "grad_norm", "epoch") if k in e}
        for e in state.log_history if "loss" in e
    ]
    steps_run = state.global_step - resume_step
    circumstances = {
        "wall_time_s": round(time.time() - t0, 3),
        "train_time_s": round(train_time, 3),
        "sec_per_step": round(train_time / steps_run, 4) if steps_run > 0 else None,
        "resumed_from": resume.name if resume else None,
        "resumed_from_step": resume_step,
    }
    summary = {
        "steps": state.global_step,
        "epochs": state.epoch,
        "losses": losses,
        "train_loss": result.training_loss,
        "checkpoints": [p.name for _, p in list_checkpoints(out)],
        "final": FINAL_NAME,
        **extra,
        "world_size": trainer.args.world_size,
        "config": config,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": __import__("peft").__version__},
    }
    if trainer.is_world_process_zero():
        # a model card replaces peft's stub README (only run-independent values: no dates, timings)
        write_model_card(tmp_final, out.name.removesuffix(".partial"), summary)
        final = out / FINAL_NAME
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp_final, final)
        with atomic_path(out / SUMMARY_NAME) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
        sidecar.record("train", {**circumstances, "out": str(out)})
        log.info("finetune: %d steps (%s s/step), final adapter %s", state.global_step, circumstances["sec_per_step"], final)
    trainer.accelerator.wait_for_everyone()
    return {**summary, **circumstances}


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
    base_dtype: str = "auto",
    head_labels: int = 1,
    label: str | None = None,
    report_to: str = "none",
    logging_dir: str | os.PathLike | None = None,
) -> dict:
    """Fine-tune ``base`` with LoRA on the groups in ``groups_path`` into ``out_dir``.

    ``max_steps`` > 0 overrides ``epochs`` (Trainer semantics); ``bf16`` is mixed precision
    (Trainer autocast over the ``base_dtype`` base; trainables fp32, see the module
    docstring); ``head_labels`` 1 or 2 (module docstring). ``label`` names the run in
    errors (default: ``out_dir``'s name without ``.partial``). ``report_to`` ``tensorboard`` also
    writes the Trainer's TensorBoard events to ``logging_dir`` (a log, not an output). An ``out_dir`` holding a run with other
    settings (``finetune_config.json`` / the summary's ``config``; paths compared as given)
    is an error. ``callbacks`` are extra ``TrainerCallback`` objects. Returns the summary dict written to
    ``out_dir/train_summary.json`` (``steps``, ``losses``: one entry per logging step with
    step, loss, learning_rate, grad_norm, epoch; ``checkpoints``, ``config``, ``versions``) plus
    this invocation's circumstances, which the file does not hold (``wall_time_s``,
    ``sec_per_step``, ``resumed_from``/``resumed_from_step``; also in the run sidecar). The
    config names a hub base as ``hf:<repo>@<commit>``, a local one as given.
    """
    out = Path(out_dir)
    summary_path = out / SUMMARY_NAME
    config = {
        "base": sidecar.portable_path(base), "groups": str(groups_path), "rank": int(rank), "targets": targets, "alpha": alpha,
        "dropout": dropout, "lr": lr, "epochs": epochs, "max_steps": max_steps,
        "queries_per_device": queries_per_device, "grad_accum": grad_accum, "group_size": group_size,
        "qmax": qmax, "pmax": pmax, "save_steps": save_steps, "warmup_ratio": warmup_ratio, "bf16": bool(bf16),
        "gradient_checkpointing": bool(gradient_checkpointing), "seed": seed, "base_dtype": base_dtype,
        "head_labels": int(head_labels),
    }
    label = label or (out.name[: -len(".partial")] if out.name.endswith(".partial") else out.name)
    if summary_path.exists():
        done = json.loads(summary_path.read_text())
        _check_same(out, done.get("config", {}), config)
        log.info("finetune: %s exists; nothing to do", summary_path)
        return done

    import torch
    from transformers import set_seed

    from .data import GroupCollator, GroupDataset, read_groups
    from .model import load_reranker
    from .precision import base_dtype as resolve_base_dtype

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
    # frozen base in base_dtype, trainables fp32; bf16 adds Trainer autocast (mixed precision)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_reranker(base, rank, targets, alpha=alpha, dropout=dropout,
                                     dtype=resolve_base_dtype(base_dtype, device), head_labels=head_labels,
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
        report_to=_report_to(report_to, logging_dir),
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
    LCETrainer, EpochToDataset, KeepResumeStateInNewest = _trainer_classes()
    trainer = LCETrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[EpochToDataset(dataset), KeepResumeStateInNewest(), *(callbacks or [])],
        group_size=group_size,
        head_labels=int(head_labels),
        guard_label=f"finetune {label}",
    )
    t_train = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_time = time.time() - t_train

    return publish_run(trainer, result, out, t0=t0, train_time=train_time, resume=resume, resume_step=resume_step,
                       config=config, extra={"n_queries": len(records), "base_dtype_loaded": str(model.dtype)})
