"""The Hugging Face ``Trainer`` set-up shared by the LoRA trainers: training arguments across
transformers versions, the recipe both use, the checkpoint-pruning callback and a ``Trainer``
that stops on non-finite values.

The driver is a plain ``Trainer`` (so ``torchrun`` / ``accelerate launch`` / DeepSpeed work
unchanged). Trainer's ``logging_nan_inf_filter`` is off, so the log never shows a made-up
loss; the model's activation checkpointing is set up with the model
(:func:`irrepro.lora.model.enable_checkpointing`), never by Trainer.

transformers is imported lazily: the classes :data:`GuardedTrainer` and
:data:`KeepResumeStateInNewest` are built on first access.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from .checkpoints import canonical_adapter_config, prune_resume_state

log = logging.getLogger("irrepro")

__all__ = ["training_arguments", "lora_arguments", "report_to_arg", "length_grouping", "lazy_classes",
           "GuardedTrainer", "KeepResumeStateInNewest", "REPORT_TO"]

REPORT_TO = ("none", "tensorboard")


def training_arguments(**kw):
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
    # the model's activation checkpointing is set up with the model; keep Trainer out of it
    if "activation_checkpointing" in fields:
        kw["activation_checkpointing"] = False
    else:
        kw["gradient_checkpointing"] = False
    return TrainingArguments(**kw)


def lora_arguments(out: str | os.PathLike, *, batch_size: int, grad_accum: int, lr: float, epochs: float,
                   max_steps: int, warmup_ratio: float, lr_scheduler: str, bf16: bool, logging_steps: int,
                   save_steps: int, seed: int, label_names: list[str], report_to: str = "none",
                   disable_tqdm: bool = True, **extra):
    """The training arguments of both LoRA recipes: AdamW without weight decay, ``max_steps``
    > 0 overriding ``epochs``, a log entry every ``logging_steps`` and a checkpoint every
    ``save_steps`` optimiser steps (all kept: pruning is :data:`KeepResumeStateInNewest`'s
    job), seeded data order, no worker processes. ``extra``: further ``TrainingArguments``."""
    import torch

    return training_arguments(
        output_dir=str(out),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=lr,
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps and max_steps > 0 else -1,
        warmup_ratio=warmup_ratio,
        lr_scheduler_type=lr_scheduler,
        optim="adamw_torch",
        weight_decay=0.0,
        bf16=bool(bf16),
        logging_strategy="steps",
        logging_steps=logging_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=None,
        report_to=report_to,
        remove_unused_columns=False,
        label_names=label_names,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        disable_tqdm=disable_tqdm,
        # without an accelerator, a torchrun/accelerate multi-process launch must be told it is
        # CPU data parallelism (gloo); otherwise every process would train alone
        use_cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1,
        **extra,
    )


def report_to_arg(value: str, logging_dir: str | os.PathLike | None) -> str:
    """``none`` or ``tensorboard`` (params finetune.report_to); the latter needs the package and
    a ``logging_dir`` outside the output (transformers 5 reads it from ``TENSORBOARD_LOGGING_DIR``
    and would otherwise write the events into ``output_dir``, i.e. into a DVC output)."""
    if value not in REPORT_TO:
        raise ValueError(f"finetune.report_to: {value!r} is not one of {list(REPORT_TO)}")
    if value == "tensorboard":
        import importlib.util

        if not (importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")):
            raise ValueError("finetune.report_to: tensorboard needs the tensorboard package "
                             "(pip install tensorboard), or set it back to none")
        if not logging_dir:
            raise ValueError("finetune.report_to: tensorboard needs a logging_dir (outside the output directory)")
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(logging_dir)
    return value


def length_grouping(on: bool) -> dict:
    """TrainingArguments keys that switch length-grouped batches on (transformers < 5:
    ``group_by_length``; 5.x: ``train_sampling_strategy="group_by_length"``)."""
    import dataclasses

    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "group_by_length" in fields:
        return {"group_by_length": bool(on)}
    if "train_sampling_strategy" in fields:
        return {"train_sampling_strategy": "group_by_length"} if on else {}
    if on:
        raise ValueError("group_by_length: this transformers version has no length-grouped sampler")
    return {}


@functools.lru_cache(maxsize=None)
def _trainer_classes():
    from transformers import Trainer, TrainerCallback

    from .precision import NonFiniteGuard

    class GuardedTrainer(NonFiniteGuard, Trainer):
        """``Trainer`` that stops on a NaN/inf loss, gradient or weight
        (:class:`~irrepro.lora.precision.NonFiniteGuard`; ``guard_label`` names the run)."""

    class KeepResumeStateInNewest(TrainerCallback):
        """After each checkpoint save, make its adapter config canonical and keep the
        optimizer/scheduler/RNG state only in the newest checkpoint
        (:func:`~irrepro.lora.checkpoints.prune_resume_state`; the main process alone touches the files)."""

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                canonical_adapter_config(Path(args.output_dir) / f"checkpoint-{state.global_step}")
                deleted = prune_resume_state(args.output_dir)
                if deleted:
                    log.info("finetune: pruned the resume state of %d older checkpoint(s) (%d files)",
                             len({f.parent for f in deleted}), len(deleted))

    return GuardedTrainer, KeepResumeStateInNewest


def lazy_classes(module: str, build: Callable[[], tuple], names: Sequence[str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that serves ``names[i]`` as ``build()[i]``: classes
    that subclass transformers' are built on first access, so importing their module does not
    import transformers (``build`` should be cached, e.g. ``functools.lru_cache``)."""
    names = tuple(names)

    def module_getattr(name: str):
        if name in names:
            return build()[names.index(name)]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return module_getattr


# the Trainer classes without importing transformers at module import
__getattr__ = lazy_classes(__name__, _trainer_classes, ("GuardedTrainer", "KeepResumeStateInNewest"))
