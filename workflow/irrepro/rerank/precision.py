"""The reranker's precision rules on top of the shared ones (:mod:`irrepro.lora.precision`:
frozen base in ``base_dtype``, trainables fp32, the non-finite guard).

* the ``score`` head runs in fp32 whatever the input dtype or autocast (:func:`fp32_head`),
  in training and scoring, with unchanged parameter names, so adapters stay standard peft
  (peft does not upcast the head's ``modules_to_save`` copy: an fp16 head gives NaN at step
  1 under AdamW, a bf16 head rounds ~16% of the updates away);
* a non-finite score stops scoring (:func:`check_finite_scores`).

torch is imported at module level: import this module lazily (inside functions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..lora.precision import NonFiniteError

__all__ = ["Fp32Linear", "fp32_head", "check_finite_scores"]


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
