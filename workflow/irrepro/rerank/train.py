"""LoRA fine-tuning of a reranker with Localized Contrastive Estimation (Tevatron style).

The driver is a plain Hugging Face ``Trainer`` (so ``torchrun`` / ``accelerate launch`` /
DeepSpeed work unchanged); only ``compute_loss`` is ours: the ``B*G`` logits are reshaped
to ``[B, G]`` (positive first) and trained with cross-entropy towards index 0. With
``head_labels=2`` (the authors' training build, which loads the classifier without
``num_labels``: AtharvaNijasure/multi_stage_retrieval@cf514c3 train_pythia.py:96-99, loss
at :67-70) the ``[B*G, 2]`` logits are viewed as ``[B, 2G]`` and index 0 (the positive's
first logit) is the target; scoring then reads logit 0, as Tevatron's rerank driver does
(texttron/tevatron@1351202 src/tevatron/reranker/driver/rerank.py:84).

Precision (:mod:`irrepro.lora.precision`, :mod:`irrepro.rerank.precision`): the frozen base
is loaded in ``base_dtype`` (``auto``: the checkpoint's dtype on CUDA, fp32 on CPU), every
trainable parameter is fp32, the head computes in fp32, ``bf16`` adds Trainer's autocast. A non-finite loss, gradient,
gradient norm or trainable weight stops the run with :class:`~irrepro.lora.precision.NonFiniteError`
naming the config (``label``), the optimiser step and the tensor; Trainer's
``logging_nan_inf_filter`` is off, so the log never shows a made-up loss.

Run directory, resume and publishing are the shared LoRA harness's
(:mod:`irrepro.lora.run`: ``finetune_config.json`` checked on resume, ``checkpoint-{step}/``
(:mod:`irrepro.lora.checkpoints`; the resume state kept in the newest only), ``final/``,
``train_summary.json`` written last; a finished directory returns its summary without
training). Every saved adapter carries the LoRA weights and the ``score`` head.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .. import sidecar
from ..lora.run import finished_summary, run_label, start_run, train_and_publish
from ..lora.trainer import lora_arguments, report_to_arg

log = logging.getLogger("irrepro")

__all__ = ["finetune", "LCETrainer", "EpochToDataset"]


@functools.lru_cache(maxsize=None)
def _trainer_classes():
    import torch
    import torch.nn.functional as F
    from transformers import TrainerCallback

    from ..lora.trainer import GuardedTrainer

    class LCETrainer(GuardedTrainer):
        """``Trainer`` whose loss is Localized Contrastive Estimation over groups of ``group_size``
        (``head_labels`` logits per passage, all of a group in one softmax, target index 0),
        stopping on non-finite values (:class:`~irrepro.lora.precision.NonFiniteGuard`)."""

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

    class EpochToDataset(TrainerCallback):
        """Tell the dataset which epoch starts (the collator's sampling depends on it)."""

        def __init__(self, dataset):
            self.dataset = dataset

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.dataset.set_epoch(math.floor((state.epoch or 0.0) + 1e-6))

    return LCETrainer, EpochToDataset


def __getattr__(name):  # the Trainer classes without importing transformers at module import
    if name == "LCETrainer":
        return _trainer_classes()[0]
    if name == "EpochToDataset":
        return _trainer_classes()[1]
    raise AttributeError(name)


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
    config = {
        "base": sidecar.portable_path(base), "groups": str(groups_path), "rank": int(rank), "targets": targets, "alpha": alpha,
        "dropout": dropout, "lr": lr, "epochs": epochs, "max_steps": max_steps,
        "queries_per_device": queries_per_device, "grad_accum": grad_accum, "group_size": group_size,
        "qmax": qmax, "pmax": pmax, "save_steps": save_steps, "warmup_ratio": warmup_ratio, "bf16": bool(bf16),
        "gradient_checkpointing": bool(gradient_checkpointing), "seed": seed, "base_dtype": base_dtype,
        "head_labels": int(head_labels),
    }
    label = label or run_label(out)
    done = finished_summary(out, config, "finetune")
    if done is not None:
        return done

    import torch
    from transformers import set_seed

    from ..lora.precision import base_dtype as resolve_base_dtype
    from ..lora.trainer import KeepResumeStateInNewest
    from .data import GroupCollator, GroupDataset, read_groups
    from .model import load_reranker

    if threads:
        torch.set_num_threads(int(threads))
    run = start_run(out, config)

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

    args = lora_arguments(
        out, batch_size=queries_per_device, grad_accum=grad_accum, lr=lr, epochs=epochs, max_steps=max_steps,
        warmup_ratio=warmup_ratio, lr_scheduler="linear", bf16=bf16, logging_steps=logging_steps,
        save_steps=save_steps, seed=seed, label_names=[], report_to=report_to_arg(report_to, logging_dir),
        disable_tqdm=not sys.stderr.isatty(),
    )
    LCETrainer, EpochToDataset = _trainer_classes()
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
    return train_and_publish(trainer, run, extra={"n_queries": len(records), "base_dtype_loaded": str(model.dtype)})
