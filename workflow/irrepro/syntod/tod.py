"""The SynTOD TOD model: LoRA causal-LM fine-tuning on whole conversations, and
teacher-forced inference on the gold history.

Training (:func:`finetune_tod`) follows the original SynTOD recipe: one string per
conversation (``{"text": ...}`` per line of the training JSONL), ``<bos> text <eos>``,
cut to ``max_len`` tokens, next-token loss, LoRA on the family's module set from
:mod:`irrepro.rerank.targets` (the original: QLoRA r=64, alpha=16, dropout 0.1, all linear
layers but lm_head, lr 2e-4, constant schedule -- transformers' ``constant`` ignores the
script's warmup_ratio 0.03 --, gradient norm clipped at 0.3, length-grouped batches; all are
params here, see :func:`finetune_tod`; 4-bit NF4 quantisation and paged AdamW are not used:
a registered deviation, ``syntod-qlora-4bit``).

Which tokens carry loss (``loss_on``):

* ``"all"`` (the default): every token of the conversation and the closing eos. This is
  what the original did: its ``qlora.py --dataset_format oasst1`` trains on the whole
  ``text`` as the target (empty source), so the model also learns to write the user turns
  and grounding blocks; we keep that for fidelity.
* ``"annotations_and_responses"``: only the user turns' ``## {...}`` annotations and the
  assistant responses (with their own annotation), each together with the ``###`` that
  opens the next turn (so the model learns where to stop), and the eos. Header, user
  utterances and ``### RESULTS/SUGGESTIONS/RECIPE`` blocks are context only. Tokens are
  assigned by character offsets: a token is trained when its span overlaps a trained
  character range (needs a fast tokenizer).

Labels are -100 on padding and on the bos token in both modes.

Output directory layout and crash-resume are the shared LoRA harness's, as for the reranker
(:mod:`irrepro.lora.run`: ``finetune_config.json`` checked on resume, ``checkpoint-{step}/``,
``final/``, ``train_summary.json`` written last; resume from the newest complete checkpoint,
whose optimizer/scheduler state is the only one kept, :mod:`irrepro.lora.checkpoints`); so are
the pad token, dtype, checkpointing and precision rules (:mod:`irrepro.lora.model`,
:mod:`irrepro.lora.precision`).

Inference (:class:`TODModel`, :func:`teacher_forced`): greedy completion of gold-history
prompts, e.g. ``... ### HUMAN: <utterance> ## `` (the model writes the intent/slot JSON)
or ``... ### ASSISTANT: `` (the model writes the response). The evaluation's intent
prompts end ``## {"intent": "`` (:data:`INTENT_PREFIX`, as the original's
``inference_script.py``), so the model writes the intent name and the rest of the JSON.
The prompt's trailing whitespace is moved into the completion: BPE tokenizers attach a
space to the following word (``" {"``), so a prompt ending in a lone space token is a
sequence never seen in training; the completion is returned without that whitespace, i.e.
it starts right after ``## ``. New tokens are decoded together with the prompt's last
tokens (:func:`decode_completion`), so a SentencePiece tokenizer does not drop the
completion's leading space. Completions are cut at the first stop marker (intents: ``###``
only, as the original; an annotation runs until it closes, however long).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..jsonl import input_error, json_lines
from ..lora.config import LoraRecipe
from ..lora.model import (add_lora, enable_checkpointing, fit_pad_token, hf_token, load_tokenizer, parameter_counts,
                          resolve_dtype)
from ..progress import progress

log = logging.getLogger("irrepro.syntod.tod")

__all__ = ["finetune_tod", "TodRecipe", "teacher_forced", "parse_prediction", "TODModel", "read_conversations",
           "encode_conversation", "trained_spans", "load_tod_model", "LOSS_ON", "DEFAULT_LOSS_ON",
           "INTENT_STOP", "RESPONSE_STOP", "INTENT_PREFIX", "decode_completion"]

LOSS_ON = ("all", "annotations_and_responses")
# transformers scheduler names we allow (algoprog/SynTOD@bb856e4 src/fine-tuning/fine-tune.sh: constant)
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
DEFAULT_LOSS_ON = "all"
# The original teacher-forces the start of the annotation and stops at "###" only
# (algoprog/SynTOD@1536f6c src/inference/inference_script.py:14,29: stop=["###"], prompt + '## {"intent": "').
INTENT_PREFIX = '{"intent": "'
INTENT_STOP = ("###",)
# responses may span lines; they end at the next turn marker or at their own annotation
RESPONSE_STOP = ("###", "## {")

_MARKER = re.compile(r"### ([A-Z][A-Z_]*):")
_ANNOTATION = re.compile(r"(?:(?<=\s)|^)## (?=\{)")  # a turn's annotation: the last match in it


# ---------------------------------------------------------------------------- data


def read_conversations(path: str | os.PathLike) -> list[str]:
    """The ``text`` of every line of a SynTOD text JSONL (blank lines skipped); a line that
    is not a JSON object with a non-empty string ``text`` is an :class:`~irrepro.errors.InputError`
    naming file and line (:func:`irrepro.jsonl.json_lines`)."""
    texts = []
    for lineno, rec in json_lines(path, objects=False):
        text = rec.get("text") if isinstance(rec, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise input_error(path, lineno, "expected an object with a non-empty string 'text'")
        texts.append(text)
    if not texts:
        raise input_error(path, 0, "no conversations")
    return texts


def trained_spans(text: str) -> list[tuple[int, int]]:
    """Character ranges ``[start, end)`` trained under ``loss_on="annotations_and_responses"``:
    each human turn's annotation (from its ``## ``) and each assistant turn's body (after
    ``### ASSISTANT:``), each extended over the ``###`` of the next marker when there is one."""
    marks = list(_MARKER.finditer(text))
    spans = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() + 3 if i + 1 < len(marks) else len(text)
        body_end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        if m.group(1) == "ASSISTANT":
            spans.append((m.end(), end))
        elif m.group(1) == "HUMAN":
            hits = list(_ANNOTATION.finditer(text, m.end(), body_end))
            if hits:
                spans.append((hits[-1].start(), end))
    return spans


def encode_conversation(tokenizer, text: str, max_len: int, loss_on: str = DEFAULT_LOSS_ON) -> tuple[list[int], list[int], bool]:
    """``(input_ids, labels, truncated)`` for one conversation: ``<bos> text <eos>`` cut to
    ``max_len`` tokens; labels are the input ids where loss is taken, else -100 (see the
    module docstring for ``loss_on``)."""
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {list(LOSS_ON)}, got {loss_on!r}")
    need_offsets = loss_on == "annotations_and_responses"
    if need_offsets and not getattr(tokenizer, "is_fast", False):
        raise ValueError("loss_on='annotations_and_responses' needs a fast tokenizer (character offsets)")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=need_offsets)
    ids = list(enc["input_ids"])
    if need_offsets:
        spans = trained_spans(text)
        keep = [any(a < e and b > s for s, e in spans) for a, b in enc["offset_mapping"]]
    else:
        keep = [True] * len(ids)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    input_ids = ([bos] if bos is not None else []) + ids + ([eos] if eos is not None else [])
    labels = ([-100] if bos is not None else []) + [t if k else -100 for t, k in zip(ids, keep)] \
        + ([eos] if eos is not None else [])
    truncated = len(input_ids) > max_len
    return input_ids[:max_len], labels[:max_len], truncated


class _Collator:
    """Right-pads a batch of encoded conversations; labels are -100 on padding."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), n), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = torch.tensor(b["input_ids"])
            labels[i, :k] = torch.tensor(b["labels"])
            mask[i, :k] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# ---------------------------------------------------------------------------- model


def _load_base_lm(src: str, dtype, tok_arg):
    """``(causal LM, tokenizer)`` with the shared pad-token rule
    (:func:`irrepro.lora.model.load_tokenizer`); the embeddings grow only if a new pad token
    does not fit them."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(src, tok_arg)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=resolve_dtype(dtype), token=tok_arg)
    fit_pad_token(model, tokenizer)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_tod_model(base: str | os.PathLike, rank: int, targets: str, alpha: float = 16, dropout: float = 0.1,
                   dtype=None, gradient_checkpointing: bool = False, token: str | None = None):
    """``(peft_model, tokenizer)``: the base causal LM with a fresh trainable LoRA adapter
    of ``rank`` on ``targets`` (mha | mlp | all, per family). Unknown architectures and
    missing target modules are errors (see :mod:`irrepro.rerank.targets`)."""
    from peft import TaskType
    from transformers import AutoConfig

    from ..rerank import targets as T

    if int(rank) < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    src, tok_arg = str(base), hf_token(token)
    family = T.family_of(AutoConfig.from_pretrained(src, token=tok_arg).model_type)
    names = T.target_modules(family, targets)
    model, tokenizer = _load_base_lm(src, dtype, tok_arg)
    T.check_modules_exist(model, names)
    model.config.use_cache = False  # training: no generation cache
    if gradient_checkpointing:
        enable_checkpointing(model)
    peft_model = add_lora(model, TaskType.CAUSAL_LM, rank, alpha, dropout, names)  # trainables fp32
    n_train, n_all = parameter_counts(peft_model)
    log.info("TOD model %s (%s): LoRA r=%d alpha=%s dropout=%s on %s; trainable %d / %d parameters",
             src, family, rank, alpha, dropout, names, n_train, n_all)
    return peft_model, tokenizer


# ---------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True, kw_only=True)
class TodRecipe(LoraRecipe):
    """The settings of :func:`finetune_tod` (params ``syntod.finetune``: :class:`irrepro.lora.config.TodTraining`):
    the shared LoRA knobs (:class:`~irrepro.lora.config.LoraRecipe`) and the causal LM's."""

    alpha: float = 16
    lr: float = 2e-4
    warmup_ratio: float = 0.03
    batch_size: int = 4  # conversations per device and micro-batch
    max_len: int = 2048  # tokens per conversation (cut beyond)
    lr_scheduler: str = "constant_with_warmup"  # one of LR_SCHEDULERS
    max_grad_norm: float = 0.3
    group_by_length: bool = False
    loss_on: str = DEFAULT_LOSS_ON  # one of LOSS_ON (module docstring)


def finetune_tod(base: str | os.PathLike, train_jsonl: str | os.PathLike, out_dir: str | os.PathLike,
                 recipe: TodRecipe | None = None, *, callbacks: Sequence[Any] | None = None, token: str | None = None,
                 **knobs: Any) -> dict:
    """Causal-LM SFT of ``base`` with LoRA on the conversations of ``train_jsonl`` into ``out_dir``
    with the settings ``recipe`` (a :class:`TodRecipe`), or its fields given as keywords
    (``knobs``: ``rank`` and ``targets`` required; with a ``recipe``, they replace its fields).

    ``max_steps`` > 0 overrides ``epochs``; ``bf16`` is mixed precision. Learning rate by
    ``lr_scheduler`` (:data:`LR_SCHEDULERS`; the release: ``constant``, no warm-up), with a
    linear warm-up over ``warmup_ratio`` of the steps where the schedule has one (``constant``
    has none: a ratio > 0 is an error, not silently ignored as by transformers); gradient norm
    clipped at ``max_grad_norm`` (the release: 0.3); ``group_by_length`` batches conversations
    of similar token length together (the release's qlora.py default, grouped there by
    characters). A finished ``out_dir`` returns its summary without training;
    one holding a run with other settings is an error; otherwise training resumes from the
    newest complete checkpoint. Returns the summary written to
    ``out_dir/train_summary.json`` (``losses`` per logging step, ``steps``, ``checkpoints``,
    ``n_conversations``, ``n_truncated``, ``tokens_trained``, ``config``) plus the timings and
    ``resumed_from``, which go to the run sidecar instead (:func:`irrepro.lora.run.publish_run`).
    """
    from ..lora.run import finished_summary, start_run, train_and_publish
    from ..lora.trainer import length_grouping, lora_arguments
    from ..sidecar import portable_path

    r = TodRecipe.from_arguments(recipe, knobs)
    if r.loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {list(LOSS_ON)}, got {r.loss_on!r}")
    if r.lr_scheduler not in LR_SCHEDULERS:
        raise ValueError(f"lr_scheduler must be one of {list(LR_SCHEDULERS)}, got {r.lr_scheduler!r}")
    if r.lr_scheduler == "constant" and r.warmup_ratio:
        raise ValueError(f"lr_scheduler constant has no warm-up; warmup_ratio must be 0, got {r.warmup_ratio} "
                         "(use constant_with_warmup)")
    if not r.max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0, got {r.max_grad_norm}")
    out = Path(out_dir)
    config = {
        "base": portable_path(base), "train": str(train_jsonl), "rank": int(r.rank), "targets": r.targets,
        "alpha": r.alpha, "dropout": r.dropout, "lr": r.lr, "epochs": r.epochs, "max_steps": r.max_steps,
        "batch_size": r.batch_size, "grad_accum": r.grad_accum, "max_len": r.max_len, "save_steps": r.save_steps,
        "warmup_ratio": r.warmup_ratio, "bf16": bool(r.bf16), "gradient_checkpointing": bool(r.gradient_checkpointing),
        "seed": r.seed, "loss_on": r.loss_on, "lr_scheduler": r.lr_scheduler, "max_grad_norm": r.max_grad_norm,
        "group_by_length": bool(r.group_by_length),
    }
    done = finished_summary(out, config, "finetune_tod")
    if done is not None:
        return done

    import torch
    from transformers import set_seed

    from ..lora.trainer import GuardedTrainer, KeepResumeStateInNewest

    if r.threads:
        torch.set_num_threads(int(r.threads))
    t0 = time.time()
    texts = read_conversations(train_jsonl)
    run = start_run(out, config, t0)

    set_seed(r.seed)  # the LoRA A matrices are drawn from the global RNG
    model, tokenizer = load_tod_model(base, r.rank, r.targets, alpha=r.alpha, dropout=r.dropout, dtype=None,
                                      gradient_checkpointing=r.gradient_checkpointing, token=token)
    max_len = r.max_len
    n_pos = getattr(model.config, "max_position_embeddings", None)
    if n_pos and max_len > n_pos:
        log.warning("finetune_tod: max_len %d exceeds the base's %d positions", max_len, n_pos)
    dataset, n_truncated, n_trained = [], 0, 0
    for text in texts:
        ids, labels, truncated = encode_conversation(tokenizer, text, max_len, r.loss_on)
        n_truncated += truncated
        n_trained += sum(lab != -100 for lab in labels)
        dataset.append({"input_ids": ids, "labels": labels})
    log.info("finetune_tod: %d conversations from %s, %d truncated to %d tokens; %d tokens trained (loss_on=%s)",
             len(texts), train_jsonl, n_truncated, max_len, n_trained, r.loss_on)
    if n_trained == 0:
        raise ValueError(f"{train_jsonl}: no token carries loss (loss_on={r.loss_on}, max_len={max_len})")

    args = lora_arguments(
        out, batch_size=r.batch_size, grad_accum=r.grad_accum, lr=r.lr, epochs=r.epochs, max_steps=r.max_steps,
        warmup_ratio=r.warmup_ratio, lr_scheduler=r.lr_scheduler, bf16=r.bf16, logging_steps=r.logging_steps,
        save_steps=r.save_steps, seed=r.seed, label_names=["labels"],
        max_grad_norm=r.max_grad_norm, **length_grouping(r.group_by_length),
    )
    trainer = GuardedTrainer(model=model, args=args, train_dataset=dataset,
                             data_collator=_Collator(tokenizer.pad_token_id), processing_class=tokenizer,
                             callbacks=[KeepResumeStateInNewest(), *(callbacks or [])], guard_label=f"finetune_tod {out.name}")
    return train_and_publish(trainer, run, extra={"n_conversations": len(texts), "n_truncated": n_truncated,
                                                  "tokens_trained": n_trained})


# ---------------------------------------------------------------------------- inference


def _prompt_of(example) -> str:
    return example if isinstance(example, str) else example[0]


def _cut(text: str, stop: Iterable[str]) -> str:
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[:min(cuts)] if cuts else text).rstrip()


_DECODE_CONTEXT = 4  # prompt tokens decoded with the completion (see decode_completion)


def decode_completion(tokenizer, prompt_ids: Sequence[int], new_ids: Sequence[int], stop: Sequence[str] = INTENT_STOP,
                      healed: str = "") -> str:
    """The text of generated tokens ``new_ids`` after ``prompt_ids``: cut at the first eos /
    pad token, decoded after the prompt's last tokens (a SentencePiece tokenizer drops the
    leading space of a sequence decoded alone), without the ``healed`` whitespace the prompt
    lost (module docstring), cut at the first ``stop`` marker and right-stripped. This is
    the whole text path of :meth:`TODModel.complete` after generation."""
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    new = list(new_ids)
    new = new[:next((j for j, t in enumerate(new) if t in stops), len(new))]
    ctx = [t for t in list(prompt_ids)[-_DECODE_CONTEXT:] if t not in stops and t != tokenizer.bos_token_id]
    head = tokenizer.decode(ctx, skip_special_tokens=True)
    both = tokenizer.decode(ctx + new, skip_special_tokens=True)
    text = both[len(head):] if both.startswith(head) else tokenizer.decode(new, skip_special_tokens=True)
    if healed and text.startswith(healed):
        text = text[len(healed):]
    return _cut(text.lstrip() if healed else text, stop)


class TODModel:
    """A base causal LM (loaded once) with an optional trained adapter merged into its weights,
    for greedy teacher-forced completion of many prompts."""

    def __init__(self, base: str | os.PathLike, adapter: str | os.PathLike | None = None, *, dtype=None,
                 token: str | None = None, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.model, self.tokenizer = _load_base_lm(str(base), dtype, hf_token(token))
        if adapter is not None:
            from peft import PeftModel

            # merged into the weights: the original serves a full model to vLLM (LLM(args.model), no LoRA
            # request: algoprog/SynTOD src/inference/inference_script.py:13); one matmul per projection
            # instead of W x + B(A x) also decodes faster
            self.model = PeftModel.from_pretrained(self.model, str(adapter)).merge_and_unload()
        self.model.eval()
        self.tokenizer.padding_side = "left"
        cfg = self.model.config
        self.max_positions = getattr(cfg, "max_position_embeddings", None)
        log.info("TOD model %s%s loaded", base, f" + adapter {adapter}" if adapter else "")

    def complete(self, examples: Sequence, *, max_new_tokens: int = 64, batch_size: int = 8,
                 stop: Sequence[str] = INTENT_STOP, max_len: int | None = None) -> list[str]:
        """Greedy completion of each prompt (a string, or a ``(prompt, target)`` pair), cut at
        the first ``stop`` marker, without the prompt's trailing whitespace (module docstring);
        a sequence also ends at eos / pad, or after ``max_new_tokens``.
        Prompts longer than ``max_len - max_new_tokens`` tokens (``max_len``: the model's
        maximum positions by default) keep bos and their last tokens."""
        import torch

        tok = self.tokenizer
        max_len = max_len or self.max_positions
        budget = max_len - max_new_tokens if max_len else None
        if budget is not None and budget < 2:
            raise ValueError(f"max_len {max_len} leaves no room for a prompt with max_new_tokens {max_new_tokens}")
        encoded, healed, n_cut = [], [], 0
        for ex in examples:
            prompt = _prompt_of(ex)
            head = prompt.rstrip()
            healed.append(prompt[len(head):])
            bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
            ids = list(tok(head, add_special_tokens=False)["input_ids"])
            if budget is not None and len(bos) + len(ids) > budget:
                ids = ids[len(ids) - (budget - len(bos)):]
                n_cut += 1
            encoded.append(bos + ids)
        if n_cut:
            log.warning("teacher_forced: %d of %d prompts cut to their last %d tokens", n_cut, len(encoded), budget)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # less padding per batch
        out: list[str | None] = [None] * len(encoded)
        t0 = time.time()
        bar = progress(desc="TOD completions", total=len(order), unit="prompts")
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            n = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), n), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), n), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding
                ids[row, n - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, n - len(encoded[i]):] = 1
            with torch.no_grad():
                gen = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                          do_sample=False, num_beams=1, stop_strings=list(stop) or None,
                                          tokenizer=tok, pad_token_id=tok.pad_token_id)
            for row, i in enumerate(idx):
                out[i] = decode_completion(tok, encoded[i], gen[row, n:].tolist(), stop, healed[i])
            bar.update(len(idx))
        bar.close()
        log.info("teacher_forced: %d completions in %.1f s", len(out), time.time() - t0)
        return out


def teacher_forced(base: str | os.PathLike, adapter: str | os.PathLike | None, examples: Sequence, *,
                   max_new_tokens: int = 64, batch_size: int = 8, stop: Sequence[str] = INTENT_STOP,
                   max_len: int | None = None, dtype=None, token: str | None = None,
                   threads: int | None = None) -> list[str]:
    """Greedy completions of ``examples`` by ``base`` + ``adapter`` (see :meth:`TODModel.complete`).
    For intent/slot prompts (ending ``## `` or ``## {"intent": "``) pass the default ``stop``; for responses
    :data:`RESPONSE_STOP`. Use :class:`TODModel` directly to reuse one loaded model."""
    model = TODModel(base, adapter, dtype=dtype, token=token, threads=threads)
    return model.complete(examples, max_new_tokens=max_new_tokens, batch_size=batch_size, stop=stop, max_len=max_len)


def parse_prediction(text: str) -> tuple[str | None, dict, bool]:
    """``(intent, slots, ok)`` from a completion: the first JSON object in ``text`` (text
    around it is ignored, e.g. a leading ``## `` or trailing tokens); ``ok`` only when it is
    an object whose ``intent`` is a string. Otherwise ``(None, {}, False)``."""
    start = text.find("{") if isinstance(text, str) else -1
    if start < 0:
        return None, {}, False
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return None, {}, False
    if not isinstance(value, dict) or not isinstance(value.get("intent"), str):
        return None, {}, False
    return value["intent"], {k: v for k, v in value.items() if k != "intent"}, True
