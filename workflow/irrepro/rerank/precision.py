"""Precision rules for LoRA training and scoring on half-precision base checkpoints.

Why: transformers 5 loads a checkpoint in its stored dtype (``EleutherAI/pythia-6.9b`` is
stored fp16, Llama-3.1 / Mistral bf16). peft (0.21, ``autocast_adapter_dtype=True``) upcasts
the LoRA A/B matrices to fp32 but NOT the ``modules_to_save`` copy of the ``score`` head,
which then keeps the base dtype: AdamW on an fp16 head gives NaN at step 1 (and Trainer's
``logging_nan_inf_filter`` logs it as a plausible loss), on a bf16 head ~16% of the updates
round away. The rule here is mixed precision as in DeepSpeed bf16 with fp32 master weights:

* the frozen base may stay bf16/fp16 (:func:`base_dtype` decides);
* every trainable parameter is fp32 (:func:`fp32_trainables`);
* the head runs in fp32 whatever the input dtype or autocast (:func:`fp32_head`), in
  training and scoring, with unchanged parameter names, so adapters stay standard peft;
* a non-finite loss, gradient, gradient norm or trainable weight stops training with an
  error naming the run, the optimiser step and the tensor (:class:`NonFiniteGuard`).

torch is imported at module level: import this module lazily (inside functions).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

log = logging.getLogger("irrepro")

__all__ = ["BASE_DTYPES", "base_dtype", "Fp32Linear", "fp32_head", "fp32_trainables", "NonFiniteError",
           "NonFiniteGuard", "check_finite_scores"]

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


class Fp32Linear(torch.nn.Linear):
    """An ``nn.Linear`` that computes in fp32 (input and weights cast to fp32, autocast off).

    Same parameters (``weight``, ``bias``) as ``nn.Linear``, so state-dict keys do not change.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self.weight.float(), bias)


def fp32_head(module: torch.nn.Module) -> torch.nn.Module:
    """Make the ``nn.Linear`` ``module`` an :class:`Fp32Linear` with fp32 weights, in place.

    Apply it to the base model's head BEFORE peft wraps it (``get_peft_model`` /
    ``PeftModel.from_pretrained``): the ``modules_to_save`` copy is a deep copy of it, so it
    is fp32 from the start and an adapter's fp32 head loads without rounding.
    """
    if not isinstance(module, torch.nn.Linear):
        raise TypeError(f"the head must be an nn.Linear to run in fp32, got {type(module).__name__}")
    module.__class__ = Fp32Linear  # a subclass without new state: only forward changes
    return module.float()


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


def check_finite_scores(scores, keys=None) -> None:
    """Raise :class:`NonFiniteError` naming the first pair (``keys[i]``, else its index)
    whose score is NaN or infinite. ``scores``: a numpy array."""
    import numpy as np

    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        i = int(bad[0])
        key = keys[i] if keys is not None else None
        if isinstance(key, tuple) and len(key) == 2:
            what = f"query {str(key[0])[:80]!r}, doc {str(key[1])[:80]!r}"
        else:
            what = str(key)[:160] if key is not None else f"pair #{i}"
        raise NonFiniteError(f"non-finite score {scores[i]} for {what} ({bad.size} of {len(scores)} scores non-finite)")
