"""The reranker: a sequence-classification LLM (one logit) with a LoRA adapter.

``load_reranker`` builds exactly what the recipe table asks for:
``AutoModelForSequenceClassification(num_labels=1)`` (score of the last non-pad token),
LoRA on the family's module set from :mod:`irrepro.rerank.targets`, and the classification
head ``score`` trained in full as a *module to save*, so that every saved adapter
(``adapter_config.json`` + ``adapter_model.safetensors``) carries the head and is usable
on its own with the base model. The head is called ``score`` in all three families
(``LlamaForSequenceClassification``, ``MistralForSequenceClassification``,
``GPTNeoXForSequenceClassification``); a model without a ``score`` module is an error.

Pad token: the shared rule of :func:`irrepro.lora.model.load_tokenizer` (its own pad, else
unk, else eos, else a "pad" special token, else a new ``<pad>``), written into the model's
config (:func:`irrepro.lora.model.fit_pad_token`); the score is read at the last token that is
not ``config.pad_token_id``.

Difference from the authors (registry row ``study1-llama3-score-position``): for Llama 3
they pad with 128001 but leave ``config.pad_token_id = 0`` (token ``!``), so the model
reads the score at the *last padded position* of the batch (a pad token), not at the last
real token; we write the tokenizer's pad id into the config, so the score is read at the
last real token for every family.

A Hugging Face token is taken only from the ``token`` argument or ``$HF_TOKEN``
(:func:`irrepro.lora.model.hf_token`), never from a stored login, and is never logged.
"""

from __future__ import annotations

import logging
import os

from ..lora.model import (add_lora, enable_checkpointing, fit_pad_token, hf_token, load_tokenizer, parameter_counts,
                          resolve_dtype)
from . import targets as T

log = logging.getLogger("irrepro")

HEAD = "score"

__all__ = ["load_reranker", "HEAD"]


def load_reranker(
    base_dir_or_id: str | os.PathLike,
    rank: int,
    targets: str,
    alpha: float = 64,
    dropout: float = 0.1,
    dtype=None,
    gradient_checkpointing: bool = False,
    token: str | None = None,
    head_labels: int = 1,
):
    """``(peft_model, tokenizer)``: the base model as a classifier with ``head_labels``
    logits (1: RankLLaMA; 2: the authors' training build, see :mod:`irrepro.rerank.train`)
    with a fresh, trainable LoRA adapter of ``rank`` on ``targets`` (mha | mlp | all) plus
    the ``score`` head as a module to save. Raises
    :class:`~irrepro.rerank.targets.UnknownArchitecture` for a model type outside the target
    table and ``ValueError`` if a target module or the head is missing.

    Precision (:mod:`irrepro.rerank.precision`): the frozen base is loaded in ``dtype``
    (``None``: the checkpoint's dtype); every trainable parameter (LoRA A/B and the head's
    ``modules_to_save`` copy) is fp32 and the head computes in fp32.
    """
    from peft import TaskType
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .precision import fp32_head

    if int(head_labels) not in (1, 2):
        raise ValueError(f"head_labels must be 1 or 2, got {head_labels!r}")
    if int(rank) < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    src = str(base_dir_or_id)
    tok_arg = hf_token(token)

    config = AutoConfig.from_pretrained(src, token=tok_arg)
    family = T.family_of(config.model_type)  # unknown architecture -> clear error, before loading weights
    names = T.target_modules(family, targets)

    tokenizer = load_tokenizer(src, tok_arg)

    model = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=int(head_labels), dtype=resolve_dtype(dtype), token=tok_arg
    )
    fit_pad_token(model, tokenizer)
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    text_config.pad_token_id = tokenizer.pad_token_id
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False  # no generation; avoids a cache during training

    head = getattr(model, HEAD, None)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no {HEAD!r} head module; cannot save it with the adapter")
    # fp32 head before peft copies it into modules_to_save: the copy inherits fp32 and its forward
    fp32_head(head)
    T.check_modules_exist(model, names)
    if gradient_checkpointing:
        enable_checkpointing(model)

    peft_model = add_lora(model, TaskType.SEQ_CLS, rank, alpha, dropout, names, modules_to_save=[HEAD])
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    if not any(f".{HEAD}." in n for n in trainable) or not any("lora_" in n for n in trainable):
        raise RuntimeError(f"peft did not make the LoRA weights and the {HEAD!r} head trainable: {trainable[:8]}")
    n_train, n_all = parameter_counts(peft_model)
    log.info("reranker %s (%s, base %s, %d-logit head): LoRA r=%d alpha=%s dropout=%s on %s; trainable %d / %d "
             "parameters (fp32)", src, family, model.dtype, head_labels, rank, alpha, dropout, names, n_train, n_all)
    return peft_model, tokenizer
