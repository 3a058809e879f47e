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

import dataclasses
import functools
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .. import sidecar
from ..lora.config import LoraRecipe
from ..lora.run import finished_summary, run_label, start_run, train_and_publish
from ..lora.trainer import lazy_classes, lora_arguments, report_to_arg

log = logging.getLogger("irrepro")

__all__ = ["finetune", "RerankRecipe", "LCETrainer", "EpochToDataset"]


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


# the Trainer classes without importing transformers at module import
__getattr__ = lazy_classes(__name__, _trainer_classes, ("LCETrainer", "EpochToDataset"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RerankRecipe(LoraRecipe):
    """The settings of :func:`finetune` (params ``finetune``: :class:`irrepro.lora.config.RerankTraining`):
    the shared LoRA knobs (:class:`~irrepro.lora.config.LoraRecipe`) and the reranker's."""

    alpha: float = 64
    lr: float = 1e-4
    warmup_ratio: float = 0.1
    queries_per_device: int = 16  # groups (one query each) per device and micro-batch
    group_size: int = 16  # passages per group: the positive and group_size - 1 negatives
    qmax: int = 32  # query tokens
    pmax: int = 164  # passage tokens
    base_dtype: str = "auto"
    head_labels: int = 1
    report_to: str = "none"


def finetune(base: str | os.PathLike, groups_path: str | os.PathLike, out_dir: str | os.PathLike,
             recipe: RerankRecipe | None = None, *, callbacks: Sequence[Any] | None = None, token: str | None = None,
             label: str | None = None, logging_dir: str | os.PathLike | None = None, **knobs: Any) -> dict:
    """Fine-tune ``base`` with LoRA on the groups in ``groups_path`` into ``out_dir`` with the
    settings ``recipe`` (a :class:`RerankRecipe`), or its fields given as keywords (``knobs``:
    ``rank`` and ``targets`` required; with a ``recipe``, they replace its fields).

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
    r = RerankRecipe.from_arguments(recipe, knobs)
    out = Path(out_dir)
    config = {
        "base": sidecar.portable_path(base), "groups": str(groups_path), "rank": int(r.rank), "targets": r.targets,
        "alpha": r.alpha, "dropout": r.dropout, "lr": r.lr, "epochs": r.epochs, "max_steps": r.max_steps,
        "queries_per_device": r.queries_per_device, "grad_accum": r.grad_accum, "group_size": r.group_size,
        "qmax": r.qmax, "pmax": r.pmax, "save_steps": r.save_steps, "warmup_ratio": r.warmup_ratio, "bf16": bool(r.bf16),
        "gradient_checkpointing": bool(r.gradient_checkpointing), "seed": r.seed, "base_dtype": r.base_dtype,
        "head_labels": int(r.head_labels),
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

    if r.threads:
        torch.set_num_threads(int(r.threads))
    run = start_run(out, config)

    records = read_groups(groups_path)
    if not records:
        raise ValueError(f"{groups_path}: no training groups")
    set_seed(r.seed)  # the fresh score head and LoRA A matrices are drawn from the global RNG
    # frozen base in base_dtype, trainables fp32; bf16 adds Trainer autocast (mixed precision)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_reranker(base, r.rank, r.targets, alpha=r.alpha, dropout=r.dropout,
                                     dtype=resolve_base_dtype(r.base_dtype, device), head_labels=r.head_labels,
                                     gradient_checkpointing=r.gradient_checkpointing, token=token)
    dataset = GroupDataset(records)
    collator = GroupCollator(tokenizer, r.group_size, qmax=r.qmax, pmax=r.pmax, seed=r.seed)

    args = lora_arguments(
        out, batch_size=r.queries_per_device, grad_accum=r.grad_accum, lr=r.lr, epochs=r.epochs,
        max_steps=r.max_steps, warmup_ratio=r.warmup_ratio, lr_scheduler="linear", bf16=r.bf16,
        logging_steps=r.logging_steps, save_steps=r.save_steps, seed=r.seed, label_names=[],
        report_to=report_to_arg(r.report_to, logging_dir), disable_tqdm=not sys.stderr.isatty(),
    )
    LCETrainer, EpochToDataset = _trainer_classes()
    trainer = LCETrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[EpochToDataset(dataset), KeepResumeStateInNewest(), *(callbacks or [])],
        group_size=r.group_size,
        head_labels=int(r.head_labels),
        guard_label=f"finetune {label}",
    )
    return train_and_publish(trainer, run, extra={"n_queries": len(records), "base_dtype_loaded": str(model.dtype)})
