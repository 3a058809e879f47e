"""Precision rules for LoRA training on half-precision base checkpoints (reranker and TOD model).

Why: transformers 5 loads a checkpoint in its stored dtype (``EleutherAI/pythia-6.9b`` is
stored fp16, Llama-3.1 / Mistral bf16). peft (0.21, ``autocast_adapter_dtype=True``) upcasts
the LoRA A/B matrices to fp32 but NOT a ``modules_to_save`` copy (the reranker's ``score``
head), which then keeps the base dtype: AdamW on an fp16 head gives NaN at step 1 (and
Trainer's ``logging_nan_inf_filter`` logs it as a plausible loss), on a bf16 head ~16% of the
updates round away. The rule here is mixed precision as in DeepSpeed bf16 with fp32 master
weights:

* the frozen base may stay bf16/fp16 (:func:`base_dtype` decides);
* every trainable parameter is fp32 (:func:`fp32_trainables`);
* a non-finite loss, gradient, gradient norm or trainable weight stops training with an
  error naming the run, the optimiser step and the tensor (:class:`NonFiniteGuard`).

The reranker adds an fp32 head and a check of its scores (:mod:`irrepro.rerank.precision`).

torch is imported at module level: import this module lazily (inside functions).
"""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger("irrepro")

__all__ = ["BASE_DTYPES", "base_dtype", "fp32_trainables", "NonFiniteError", "NonFiniteGuard"]

BASE_DTYPES = ("auto", "float32", "bfloat16", "float16")


def base_dtype(choice: str, device) -> torch.dtype | str:
    """The ``dtype`` argument for ``from_pretrained`` of a frozen base (param ``base_dtype``).

    ``"auto"``: on CUDA the checkpoint's stored dtype (``"auto"``: bf16 for Llama-3.1 /
    Mistral, fp16 for Pythia, as the authors' DeepSpeed run loaded them); on CPU float32,
    because CPU half arithmetic is slow or emulated (measured here: an fp16 matmul ~90x
    slower than fp32; bf16 depends on the CPU's AVX512-BF16) and memory is not what limits a
    CPU run. An explicit ``"float32"``/``"bfloat16"``/``"float16"`` is used on any device.
    """
    if choice not in BASE_DTYPES:
        raise ValueError(f"base_dtype must be one of {list(BASE_DTYPES)}, got {choice!r}")
    if choice == "auto":
        return "auto" if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, choice)


def fp32_trainables(model: torch.nn.Module) -> int:
    """Cast every trainable parameter that is not fp32 to fp32, in place (the frozen base
    keeps its dtype); returns how many were cast. Call it after the adapter is added and
    before the optimiser is built."""
    n = 0
    for name, p in model.named_parameters():
        if p.requires_grad and p.dtype != torch.float32:
            if not p.is_floating_point():
                raise TypeError(f"trainable parameter {name} has non-float dtype {p.dtype}")
            p.data = p.data.float()
            n += 1
    if n:
        log.info("cast %d trainable parameter tensors to float32 (the frozen base keeps its dtype)", n)
    return n


# ---------------------------------------------------------------------------- non-finite guard


class NonFiniteError(FloatingPointError):
    """A loss, gradient, weight or score is NaN or infinite."""


def _clean(name: str) -> str:
    return name[len("module."):] if name.startswith("module.") else name  # DDP wrapper prefix


def _first_nonfinite(named):
    """Name of the first tensor in ``named`` ((name, tensor) pairs) with a NaN/inf, or None.
    One device sync for the all-finite case."""
    pairs = [(n, t) for n, t in named if t is not None]
    if not pairs:
        return None
    flags = torch.stack([torch.isfinite(t).all() for _, t in pairs])
    if bool(flags.all()):
        return None
    return next(_clean(n) for (n, _), ok in zip(pairs, flags.tolist()) if not ok)


class NonFiniteGuard:
    """``transformers.Trainer`` mixin (``class T(NonFiniteGuard, Trainer)``) that raises
    :class:`NonFiniteError` on a non-finite loss (per micro-batch), trainable gradient
    (after each backward, before clipping, so the message names the tensor that went bad),
    logged loss / gradient norm, or trainable weight after an optimiser step. ``guard_label``
    (e.g. ``"finetune llama-r8-all"``) starts every message; steps are optimiser steps
    counted from 1 as in the log."""

    def __init__(self, *args, guard_label: str = "finetune", **kwargs):
        super().__init__(*args, **kwargs)
        self.guard_label = guard_label
        from transformers import TrainerCallback

        guard = self

        class _WeightCheck(TrainerCallback):
            def on_optimizer_step(self, args, state, control, **kw):
                guard._check_weights(state.global_step + 1)

        self.add_callback(_WeightCheck())

    def _fail(self, what: str, step: int):
        raise NonFiniteError(f"{self.guard_label}: non-finite {what} at step {step}")

    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        step = self.state.global_step + 1
        if not bool(torch.isfinite(loss).all()):
            self._fail("loss", step)
        bad = _first_nonfinite((n, p.grad) for n, p in model.named_parameters() if p.requires_grad)
        if bad is not None:
            self._fail(f"gradient in {bad}", step)
        return loss

    def _check_weights(self, step: int):
        bad = _first_nonfinite((n, p) for n, p in self.model.named_parameters() if p.requires_grad)
        if bad is not None:
            raise NonFiniteError(f"{self.guard_label}: non-finite weight in {bad} after the optimiser update at step {step}")

    def log(self, logs, *args, **kwargs):
        for key, what in (("loss", "logged loss"), ("grad_norm", "gradient norm")):
            value = logs.get(key)
            if value is not None and not math.isfinite(float(value)):
                self._fail(f"{what} ({value})", self.state.global_step)
        return super().log(logs, *args, **kwargs)
