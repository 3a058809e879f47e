"""The reranker: a sequence-classification LLM (one logit) with a LoRA adapter.

``load_reranker`` builds exactly what the recipe table asks for:
``AutoModelForSequenceClassification(num_labels=1)`` (score of the last non-pad token),
LoRA on the family's module set from :mod:`irrepro.rerank.targets`, and the classification
head ``score`` trained in full as a *module to save*, so that every saved adapter
(``adapter_config.json`` + ``adapter_model.safetensors``) carries the head and is usable
on its own with the base model. The head is called ``score`` in all three families
(``LlamaForSequenceClassification``, ``MistralForSequenceClassification``,
``GPTNeoXForSequenceClassification``); a model without a ``score`` module is an error.

Pad token (:func:`load_tokenizer`). The score is read at the last token that is not
``config.pad_token_id``, and the input carries no appended EOS
(:mod:`irrepro.rerank.inputs`), so the pad id only has to differ from the last real token.
The authors (AtharvaNijasure/multi_stage_retrieval@cf514c3 train_pythia.py:409) set
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
   embedding matrix is resized only if the new id does not fit; peft then stores the
   embeddings with every adapter, logged as a warning).

Difference from the authors (registry row ``study1-llama3-score-position``): for Llama 3
they pad with 128001 but leave ``config.pad_token_id = 0`` (token ``!``), so the model
reads the score at the *last padded position* of the batch (a pad token), not at the last
real token; we write the tokenizer's pad id into the config, so the score is read at the
last real token for every family.

The resulting ``pad_token_id`` is written into ``model.config``.

A Hugging Face token is taken only from the ``token`` argument or ``$HF_TOKEN``, never from
a stored login, and is never logged.
"""

from __future__ import annotations

import logging
import os

from . import targets as T

log = logging.getLogger("irrepro")

HEAD = "score"

__all__ = ["load_reranker", "HEAD"]


def _choose_pad(tokenizer) -> tuple[str, bool]:
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
    """The tokenizer of ``src`` with right padding and the pad token of :func:`_choose_pad`;
    training and evaluation load it through here, so they agree on it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(src), token=token)
    tokenizer.padding_side = "right"
    pad, is_new = _choose_pad(tokenizer)
    if is_new:
        tokenizer.add_special_tokens({"pad_token": pad})
    else:
        tokenizer.pad_token = pad
    return tokenizer


def _resolve_dtype(dtype):
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


def _enable_checkpointing(model) -> None:
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.enable_input_require_grads()


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
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .precision import fp32_head, fp32_trainables

    if int(head_labels) not in (1, 2):
        raise ValueError(f"head_labels must be 1 or 2, got {head_labels!r}")
    if int(rank) < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    src = str(base_dir_or_id)
    # Only the argument or $HF_TOKEN; False stops huggingface_hub from using a stored login.
    tok_arg = token or os.environ.get("HF_TOKEN") or False

    config = AutoConfig.from_pretrained(src, token=tok_arg)
    family = T.family_of(config.model_type)  # unknown architecture -> clear error, before loading weights
    names = T.target_modules(family, targets)

    tokenizer = load_tokenizer(src, tok_arg)

    model = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=int(head_labels), dtype=_resolve_dtype(dtype), token=tok_arg
    )
    n_rows = model.get_input_embeddings().weight.shape[0]
    if tokenizer.pad_token_id >= n_rows:
        log.warning("added pad token %r does not fit the %d-row embedding matrix: resizing it (peft will then "
                    "store the embeddings with every adapter)", tokenizer.pad_token, n_rows)
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
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
        _enable_checkpointing(model)

    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=int(rank),
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=names,
        modules_to_save=[HEAD],
        bias="none",
    )
    peft_model = get_peft_model(model, lora)  # peft upcasts LoRA A/B to fp32 (autocast_adapter_dtype)
    fp32_trainables(peft_model)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    if not any(f".{HEAD}." in n for n in trainable) or not any("lora_" in n for n in trainable):
        raise RuntimeError(f"peft did not make the LoRA weights and the {HEAD!r} head trainable: {trainable[:8]}")
    n_train = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in peft_model.parameters())
    log.info("reranker %s (%s, base %s, %d-logit head): LoRA r=%d alpha=%s dropout=%s on %s; trainable %d / %d "
             "parameters (fp32)", src, family, model.dtype, head_labels, rank, alpha, dropout, names, n_train, n_all)
    return peft_model, tokenizer
