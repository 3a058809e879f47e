"""Base model set-up shared by the LoRA models: Hugging Face token, tokenizer and pad token,
dtype, activation checkpointing, and the LoRA adapter with fp32 trainables.

Token (:func:`hf_token`): taken only from the ``token`` argument or ``$HF_TOKEN``, never from
a stored login, and never logged.

Pad token (:func:`load_tokenizer`, :func:`choose_pad`). The reranker reads its score at the
last token that is not ``config.pad_token_id`` and its input carries no appended EOS
(:mod:`irrepro.rerank.inputs`), so the pad id only has to differ from the last real token; the
TOD model masks padding out of the loss. The authors of Study 1
(AtharvaNijasure/multi_stage_retrieval@cf514c3 train_pythia.py:409) set
``tokenizer.pad_token_id = tokenizer.unk_token_id`` unconditionally; their collator falls
back to ``pad_token = eos_token`` when that leaves no pad (:216-217); ``RerankerModel.build``
sets ``config.pad_token_id = 0`` when the config has none (:100-101). Our rule:

1. the tokenizer's own pad token, if it has one (Tevatron's ``if tokenizer.pad_token_id is
   None`` in texttron/tevatron src/tevatron/reranker/driver/train.py; none of the three
   paper models has one; the mini tokenizer's ``<pad>``, which its model config names);
2. else its unk token (Mistral ``<unk>`` = 0, Pythia ``<|endoftext|>`` = 0: the authors'
   ids, and 0 is also their config pad id);
3. else its eos token (Llama 3 has no unk: ``<|end_of_text|>`` = 128001, the id the
   authors' collator pads with);
4. else an existing special token whose name contains "pad", else a new ``<pad>`` (the
   embedding matrix is resized only if the new id does not fit, :func:`fit_pad_token`; peft
   then stores the embeddings with every adapter, logged as a warning).

The resulting ``pad_token_id`` is written into ``model.config`` (:func:`fit_pad_token`). The
difference from the authors this makes for Llama 3 is registry row
``study1-llama3-score-position`` (see :mod:`irrepro.rerank.model`).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("irrepro")

__all__ = ["hf_token", "choose_pad", "load_tokenizer", "resolve_dtype", "fit_pad_token", "enable_checkpointing",
           "add_lora", "parameter_counts"]


def hf_token(token: str | None = None):
    """The token argument for ``from_pretrained``: ``token``, else ``$HF_TOKEN``, else False
    (False stops huggingface_hub from using a stored login)."""
    return token or os.environ.get("HF_TOKEN") or False


def choose_pad(tokenizer) -> tuple[str, bool]:
    """(pad token string, whether it is new to the tokenizer): its own pad, else unk, else
    eos, else an existing "pad" special token, else a new ``<pad>`` (module docstring)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token, False
    if tokenizer.unk_token_id is not None:
        return tokenizer.unk_token, False
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token, False
    vocab = tokenizer.get_vocab()
    specials = list(getattr(tokenizer, "all_special_tokens", [])) + [
        t.content if hasattr(t, "content") else str(t)
        for t in getattr(tokenizer, "added_tokens_decoder", {}).values()
    ]
    for tok in specials:
        if "pad" in tok.lower() and tok in vocab:
            return tok, False
    return "<pad>", True


def load_tokenizer(src, token=False):
    """The tokenizer of ``src`` with right padding and the pad token of :func:`choose_pad`;
    training and evaluation load it through here, so they agree on it."""
    from transformers import AutoTokenizer

    from ..checks import loading

    with loading(src, "tokenizer"):  # the tokenizers library's errors name no file
        tokenizer = AutoTokenizer.from_pretrained(str(src), token=token)
    tokenizer.padding_side = "right"
    pad, is_new = choose_pad(tokenizer)
    if is_new:
        tokenizer.add_special_tokens({"pad_token": pad})
    else:
        tokenizer.pad_token = pad
    return tokenizer


def resolve_dtype(dtype):
    """The ``dtype`` argument for ``from_pretrained``: a ``torch.dtype``, ``"auto"`` or None
    unchanged; a name (``"bfloat16"``, ``"float32"``, ``"bf16"``, ``"fp16"``, ``"fp32"``, ...)
    as its ``torch.dtype``; anything else is an error."""
    if dtype is None or not isinstance(dtype, str):
        return dtype
    if dtype == "auto":
        return "auto"
    import torch

    try:
        short = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
        resolved = short.get(dtype) or getattr(torch, dtype)
    except AttributeError:
        resolved = None
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'bfloat16', 'float32' or 'auto'")
    return resolved


def fit_pad_token(model, tokenizer) -> None:
    """Make ``tokenizer.pad_token_id`` usable by ``model``: grow the embedding matrix only if
    a new pad token does not fit it (peft then stores the embeddings with every adapter), and
    write the pad id into the model's config."""
    n_rows = model.get_input_embeddings().weight.shape[0]
    if tokenizer.pad_token_id >= n_rows:
        log.warning("added pad token %r does not fit the %d-row embedding matrix: resizing it (peft will then "
                    "store the embeddings with every adapter)", tokenizer.pad_token, n_rows)
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id


def enable_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing on ``model`` (before peft wraps it), with input
    gradients so checkpointed blocks under a frozen embedding still get them."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.enable_input_require_grads()


def add_lora(model, task_type: str, rank: int, alpha: float, dropout: float, target_modules: list[str],
             modules_to_save: list[str] | None = None):
    """``model`` wrapped by peft with a fresh, trainable LoRA adapter of ``rank`` on
    ``target_modules`` (``modules_to_save`` trained in full), every trainable parameter fp32
    (:func:`irrepro.lora.precision.fp32_trainables`; the frozen base keeps its dtype). The LoRA
    A matrices are drawn from torch's global RNG: seed it first."""
    from peft import LoraConfig, get_peft_model

    from .precision import fp32_trainables

    lora = LoraConfig(
        task_type=task_type,
        r=int(rank),
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save,
        bias="none",
    )
    peft_model = get_peft_model(model, lora)  # peft upcasts LoRA A/B to fp32 (autocast_adapter_dtype)
    fp32_trainables(peft_model)
    return peft_model


def parameter_counts(model) -> tuple[int, int]:
    """``(trainable, all)`` parameter counts of ``model``."""
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return n_train, sum(p.numel() for p in model.parameters())
