"""SynTOD evaluation: a fine-tuned TOD model on published and held-out conversations.

Per test set (a list of conversations) the model is teacher-forced on the gold history:

* every human turn whose gold annotation has a string intent: the prompt ends
  ``## {"intent": "`` (teacher-forced as in the original's inference script) and the model
  writes the rest of the annotation until ``###`` (``max_new_tokens_intent``: a budget, not
  a cut that a correct annotation should ever hit). The predicted annotation is the forced
  prefix plus the completion. Two scorers (``syntod.eval.scorers``):

  - ``strict`` (the project's): :func:`irrepro.syntod.metrics.tod_scores` under the
    original intent fold (acknowledgements into begin/next); a completion without a JSON
    object with a string intent counts as wrong (intent None, no slots) and lowers
    ``json_valid_rate``;
  - ``original``: the release's semantics, :mod:`irrepro.syntod.metrics_original`
    (nearest-intent snapping with all-MiniLM-L6-v2, dropped intents, per-conversation macro
    P/R, slots over the gold slots as bags of the TOD tokenizer's tokens); conversations
    whose gold text exceeds ``original_max_tokens`` tokens are skipped and counted;
* assistant turns (not the opening greeting, which answers nobody; at most
  ``responses_per_conversation`` per conversation, a seeded sample by conversation id, all
  when None): the prompt ends ``### ASSISTANT:`` and the model writes the response
  (``max_new_tokens_response``). A judge scores each response 0/1/2 against the gold
  response (``syntod.judge.prompt``: ``original``, the release's prompt with the whole gold
  history, or ``project``, the last :data:`JUDGE_CONTEXT_TURNS` turns as context; see
  :mod:`irrepro.syntod.judge`).

Generation (:func:`evaluate_model`) and scoring (:func:`tasks_for`, :func:`records_for`,
:func:`judge_records`, :func:`score_records`) are separate, so the scoring path can be fed
any completions (the tests feed the gold targets: an oracle must score 1.0).

Outputs are tidy rows ``{test_set, scorer, metric, value, n}`` (``strict``: :data:`METRICS`,
``n`` = scored user turns for intent/slot/JSON metrics, judged responses for relevance,
conversations for ``conversations``; ``original``: :data:`ORIGINAL_METRICS`, ``n`` = the
turns that scorer kept) and per-turn prediction records for a JSONL file. :func:`evaluate_stage`
and :func:`collect_stage` are the drivers of ``irrepro evaluate-tod`` / ``syntod-collect``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..utils import atomic_path
from ..vocab import METHODS
from .format import Conversation, system_turn_examples, user_turn_examples
from .judge import original_history
from .metrics import ORIGINAL_INTENT_FOLD, relevance_agreement, tod_scores
from .tod import INTENT_PREFIX
from ..errors import InputError, read_json_file

log = logging.getLogger("irrepro.syntod.evaluation")

# domain -> the published test sets (name in the reports, sources.yaml entry)
PUBLISHED = {
    "cooking": {"published_gemini": "syntod_recipe_test_gemini", "published_llama": "syntod_recipe_test_llama"},
    "ecommerce": {"published_gemini": "syntod_ecommerce_test_gemini", "published_llama": "syntod_ecommerce_test_llama"},
}
HELDOUT = "heldout"
EVAL_KEYS = ("max_conversations", "max_new_tokens_intent", "max_new_tokens_response", "batch_size", "max_len",
             "responses_per_conversation", "scorers", "original_max_tokens")
SCORERS = ("strict", "original")
METRICS = ("conversations", "intent_acc", "intent_macro_f1", "intent_micro_f1", "slot_p", "slot_r", "slot_f1",
           "json_valid_rate", "relevance_mean", "relevance_0", "relevance_1", "relevance_2", "relevance_unscored")
AGREEMENT_METRICS = {"spearman": "judge_human_spearman", "kendall_tau": "judge_human_kendall_tau",
                     "cohen_kappa": "judge_human_kappa", "exact_agreement": "judge_human_exact"}
ORIGINAL_METRICS = ("conversations", "conversations_skipped", "intent_acc", "intent_acc_conv", "intent_macro_p",
                    "intent_macro_r", "intent_macro_f1", "intent_micro_f1", "slot_macro_p", "slot_macro_r",
                    "slot_macro_f1", "slot_micro_p", "slot_micro_r", "slot_micro_f1")
HEADLINE = {"strict": ("intent_acc", "intent_macro_f1", "slot_f1", "relevance_mean"),
            "original": ("intent_acc", "intent_macro_f1", "slot_macro_f1", "slot_micro_f1")}
TSV_COLUMNS = ("domain", "method", "test_set", "scorer", "metric", "value", "n")
JUDGE_CONTEXT_TURNS = 6
JUDGE_CONTEXT_CHARS = 4000
HEURISTIC_KEYS = ("good", "related", "context")


# ---------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """One teacher-forced completion: ``kind`` "intent" (``gold`` = the annotation dict) or
    "response" (``gold`` = the reference text, ``context`` = what the judge sees);
    ``target`` = the gold completion text (what a perfect model writes after ``prompt``);
    ``forced`` = the end of ``prompt`` that belongs to the answer (intent tasks:
    :data:`~irrepro.syntod.tod.INTENT_PREFIX`), so the answer is ``forced + completion``;
    ``history`` = the whole gold history in the original judge's form (response tasks);
    ``turn`` = index in ``conversation.turns``."""

    test_set: str
    conversation: str
    turn: int
    kind: str
    prompt: str
    target: str
    gold: Any
    context: str = ""
    forced: str = ""
    history: str = ""


def conversation_key(conv: Conversation, index: int) -> str:
    """The conversation's id, or ``#<index>`` when it has none."""
    return str(conv.id) if conv.id is not None else f"#{index}"


def subsample(convs: Sequence[Conversation], k: int | None, seed: int) -> list[Conversation]:
    """The ``k`` conversations with the smallest sha256(``seed:id``), in their file order
    (all when ``k`` is None or not smaller than the set): the same ids for every model."""
    if k is None or k >= len(convs):
        return list(convs)
    if k < 0:
        raise ValueError(f"max_conversations must be >= 0 or None, got {k}")
    keys = [conversation_key(c, i) for i, c in enumerate(convs)]
    ranked = sorted(range(len(convs)), key=lambda i: hashlib.sha256(f"{seed}:{keys[i]}".encode()).hexdigest())
    keep = set(ranked[:k])
    return [c for i, c in enumerate(convs) if i in keep]


def judge_context(conv: Conversation, turn: int, n_turns: int = JUDGE_CONTEXT_TURNS) -> str:
    """The last ``n_turns`` turns before ``turn`` as ``ROLE: text`` lines (annotations left
    out, grounding blocks kept), cut to the last :data:`JUDGE_CONTEXT_CHARS` characters."""
    lines = [f"{t.role.upper()}: {t.text}" for t in conv.turns[max(0, turn - n_turns):turn]]
    return "\n".join(lines)[-JUDGE_CONTEXT_CHARS:]


def tasks_for(test_set: str, convs: Sequence[Conversation], responses_per_conversation: int | None = None,
              seed: int = 0) -> list[Task]:
    """The intent tasks (every human turn with a readable gold intent) and response tasks
    (assistant turns after the first human turn with a non-empty gold text; a seeded sample
    of ``responses_per_conversation`` per conversation, all when None) of ``convs``."""
    tasks, skipped = [], 0
    for ci, conv in enumerate(convs):
        key = conversation_key(conv, ci)
        human = [i for i, t in enumerate(conv.turns) if t.role == "human" and t.raw_annotation is not None]
        for i, ex in zip(human, user_turn_examples(conv), strict=True):
            t = conv.turns[i]
            if not isinstance(t.intent, str):
                skipped += 1
                continue
            # every published and generated annotation starts with the prefix (json.dumps order);
            # one that does not keeps its whole text as target, so an oracle would fail visibly
            target = ex.target[len(INTENT_PREFIX):] if ex.target.startswith(INTENT_PREFIX) else ex.target
            tasks.append(Task(test_set, key, i, "intent", ex.prompt + INTENT_PREFIX, target, t.annotation,
                              forced=INTENT_PREFIX))
        first_human = next((i for i, t in enumerate(conv.turns) if t.role == "human"), len(conv.turns))
        assistant = [i for i, t in enumerate(conv.turns) if t.role == "assistant"]
        chosen = [(i, ex) for i, ex in zip(assistant, system_turn_examples(conv), strict=True)
                  if i > first_human and ex.target.strip()]
        if responses_per_conversation is not None and len(chosen) > responses_per_conversation:
            picked = set(random.Random(f"{seed}:{key}").sample(range(len(chosen)), responses_per_conversation))
            chosen = [c for j, c in enumerate(chosen) if j in picked]
        tasks += [Task(test_set, key, i, "response", ex.prompt, ex.target, ex.target, judge_context(conv, i),
                       history=original_history(conv.turns[:i])) for i, ex in chosen]
    if skipped:
        log.warning("%s: %d human turns without a readable gold intent left out", test_set, skipped)
    return tasks


# ---------------------------------------------------------------------------- scoring


def _parse_completion(text: str) -> tuple[dict | None, bool]:
    """The predicted annotation (``{"intent": ..., <slots>}``) and whether it was valid."""
    from .tod import parse_prediction

    intent, slots, ok = parse_prediction(text)
    return ({"intent": intent, **slots} if ok else None), ok


def records_for(tasks: Sequence[Task], completions: Sequence[str]) -> list[dict]:
    """One prediction record per task: test_set, conversation, turn, kind, gold, predicted
    (the answer: the task's forced prefix + the completion text), parsed (intent tasks: the
    strictly parsed annotation or None), ok
    (intent: valid JSON with a string intent; response: non-empty), relevance (None until
    judged)."""
    if len(tasks) != len(completions):
        raise ValueError(f"records_for: {len(tasks)} tasks but {len(completions)} completions")
    out = []
    for t, text in zip(tasks, completions):
        rec = {"test_set": t.test_set, "conversation": t.conversation, "turn": t.turn, "kind": t.kind,
               "gold": t.gold, "predicted": t.forced + text}
        if t.kind == "intent":
            rec["parsed"], rec["ok"] = _parse_completion(rec["predicted"])
        else:
            rec["ok"] = bool(text.strip())
        rec["relevance"] = None
        out.append(rec)
    return out


def judge_records(records: list[dict], tasks: Sequence[Task], judge, prompt: str = "project") -> list[dict]:
    """Set ``relevance`` (0/1/2, None if the judge gave no valid score) on the response
    records, judged by :func:`irrepro.syntod.judge.judge_relevance` with ``judge`` (a
    backend) and the ``prompt`` style (original | project)."""
    from .judge import judge_relevance

    idx = [i for i, r in enumerate(records) if r["kind"] == "response"]
    items = [(tasks[i].context, tasks[i].gold, records[i]["predicted"], tasks[i].history) for i in idx]
    scores = judge_relevance(judge, items, style=prompt)
    for i, s in zip(idx, scores):
        records[i]["relevance"] = s
    return records


def score_records(test_set: str, records: Sequence[dict], n_conversations: int,
                  fold: Mapping[str, str] | None = ORIGINAL_INTENT_FOLD) -> list[dict]:
    """The tidy rows (:data:`METRICS`) of one test set's prediction records."""
    intents = [r for r in records if r["kind"] == "intent"]
    responses = [r for r in records if r["kind"] == "response"]
    scores = tod_scores([r["gold"] for r in intents], [r["parsed"] for r in intents], fold=dict(fold or {}))
    n_int = len(intents)
    judged = [r["relevance"] for r in responses if r["relevance"] is not None]
    dist = Counter(judged)
    n_rel = len(judged)

    def row(metric, value, n):
        return {"test_set": test_set, "scorer": "strict", "metric": metric,
                "value": None if value is None else float(value), "n": n}

    rows = [row("conversations", n_conversations, n_conversations),
            row("intent_acc", scores["intent"]["accuracy"], n_int),
            row("intent_macro_f1", scores["intent"]["macro_f1"], n_int),
            row("intent_micro_f1", scores["intent"]["micro_f1"], n_int),
            row("slot_p", scores["slots"]["precision"], n_int),
            row("slot_r", scores["slots"]["recall"], n_int),
            row("slot_f1", scores["slots"]["f1"], n_int),
            row("json_valid_rate", sum(r["ok"] for r in intents) / n_int if n_int else None, n_int),
            row("relevance_mean", sum(judged) / n_rel if n_rel else None, n_rel)]
    rows += [row(f"relevance_{k}", dist[k] / n_rel if n_rel else None, n_rel) for k in (0, 1, 2)]
    rows.append(row("relevance_unscored", len(responses) - n_rel, len(responses)))
    return rows


def oracle_completions(tasks: Sequence[Task], tokenizer, max_new_tokens_intent: int,
                       max_new_tokens_response: int) -> list[str]:
    """What a perfect model's generation comes back as through our text path: per task its
    gold target followed by `` ### `` (the next turn marker a model would go on to write),
    tokenized by ``tokenizer``, cut to the kind's ``max_new_tokens``, decoded after the
    prompt's tokens and cut at the kind's stop markers
    (:func:`irrepro.syntod.tod.decode_completion`). Scored, these measure what the budget,
    the decoding and the parsing lose before any model is involved."""
    from .tod import INTENT_STOP, RESPONSE_STOP, decode_completion

    out = []
    for t in tasks:
        intent = t.kind == "intent"
        budget = max_new_tokens_intent if intent else max_new_tokens_response
        head = t.prompt.rstrip()
        prompt_ids = tokenizer(head[-200:], add_special_tokens=False)["input_ids"]  # only its last tokens matter
        new_ids = tokenizer(t.prompt[len(head):] + t.target + " ### ", add_special_tokens=False)["input_ids"][:budget]
        out.append(decode_completion(tokenizer, prompt_ids, new_ids, INTENT_STOP if intent else RESPONSE_STOP,
                                     t.prompt[len(head):]))
    return out


def agreement_rows(test_set: str, records: Sequence[dict], human: Mapping[tuple[str, int], int]) -> list[dict]:
    """Judge-vs-human agreement rows (:data:`AGREEMENT_METRICS`) over this test set's judged
    responses that have a human label; none when no response is labelled."""
    pairs = [(r["relevance"], human[(r["conversation"], r["turn"])]) for r in records
             if r["kind"] == "response" and (r["conversation"], r["turn"]) in human]
    if not pairs:
        return []
    agree = relevance_agreement([p[0] for p in pairs], [p[1] for p in pairs])
    return [{"test_set": test_set, "scorer": "strict", "metric": name, "value": agree[key], "n": agree["n"]}
            for key, name in AGREEMENT_METRICS.items()]


def original_rows(test_set: str, records: Sequence[dict], snap, encode,
                  lengths: Mapping[str, int] | None = None, max_tokens: int | None = None) -> list[dict]:
    """The ``original`` scorer's rows (:data:`ORIGINAL_METRICS`) of one test set's intent
    records (grouped by conversation, in order): ``snap`` maps a label to the domain's
    nearest intent, ``encode`` tokenizes text slots (BOS included), ``lengths`` gives each
    conversation's gold text tokens for the ``max_tokens`` skip (see
    :mod:`irrepro.syntod.metrics_original`)."""
    from .metrics_original import original_scores

    by_conv: dict[str, list] = {}
    for r in records:
        if r["kind"] == "intent":
            by_conv.setdefault(r["conversation"], []).append((r["gold"], r["predicted"]))
    keys = list(by_conv)
    lens = None if lengths is None else [lengths[k] for k in keys]
    sc = original_scores([by_conv[k] for k in keys], snap, encode, lens, max_tokens)
    it, sl = sc["intent"], sc["slots"]
    values = {"conversations": (sc["conversations"], sc["conversations"]),
              "conversations_skipped": (sc["skipped"], sc["skipped"] + sc["conversations"]),
              "intent_acc": (it["micro_intent_accuracy"], it["n"]),
              "intent_acc_conv": (it["macro_intent_accuracy"], it["n"]),
              "intent_macro_p": (it["macro_intent_precision"], it["n"]),
              "intent_macro_r": (it["macro_intent_recall"], it["n"]),
              "intent_macro_f1": (it["macro_intent_f1"], it["n"]),
              "intent_micro_f1": (it["micro_intent_f1"], it["n"])}
    for agg in ("macro", "micro"):
        for short, name in (("p", "precision"), ("r", "recall"), ("f1", "f1")):
            values[f"slot_{agg}_{short}"] = (sl[f"{agg}_slot_{name}"], sl["n"])
    return [{"test_set": test_set, "scorer": "original", "metric": m,
             "value": None if values[m][0] is None else float(values[m][0]), "n": values[m][1]}
            for m in ORIGINAL_METRICS]


def original_scorer(domain: str, tokenizer, embedder=None):
    """``(snap, encode)`` of the original scorer for ``domain``: nearest-intent snapping over
    the release's intent list of the domain with all-MiniLM-L6-v2 (or ``embedder``), and the
    TOD tokenizer with BOS for text slots."""
    from .metrics_original import DOMAIN_INTENTS, IntentSnapper, bos_encoder, minilm_embedder

    if domain not in DOMAIN_INTENTS:
        raise ValueError(f"original scorer: unknown domain {domain!r}; expected one of {sorted(DOMAIN_INTENTS)}")
    return IntentSnapper(DOMAIN_INTENTS[domain], embedder or minilm_embedder()), bos_encoder(tokenizer)


def gold_lengths(convs: Sequence[Conversation], encode) -> dict[str, int]:
    """Tokens of each conversation's whole gold text (``encode``, BOS included), by key."""
    from .format import render

    return {conversation_key(c, i): len(encode(render(c))) for i, c in enumerate(convs)}


# ---------------------------------------------------------------------------- the model


def evaluate_model(base: str | os.PathLike, adapter: str | os.PathLike | None,
                   test_sets: Mapping[str, Sequence[Conversation]], *, judge, max_conversations: int | None = None,
                   max_new_tokens_intent: int = 64, max_new_tokens_response: int = 96, batch_size: int = 8,
                   max_len: int | None = None, seed: int = 0, responses_per_conversation: int | None = None,
                   threads: int | None = None, scorers: Sequence[str] = ("strict",), domain: str | None = None,
                   original_max_tokens: int | None = None, embedder=None,
                   judge_prompt: str = "project") -> tuple[list[dict], list[dict]]:
    """``(rows, predictions)`` of ``base`` + ``adapter`` (loaded once) on every test set; see
    the module docstring. ``judge`` is a backend for :func:`judge_records` (e.g. a
    :class:`~irrepro.syntod.judge.HeuristicJudge`). ``max_len`` (prompt + completion tokens;
    longer prompts keep their end) is capped at the model's maximum positions. ``scorers``:
    a subset of :data:`SCORERS`; ``original`` needs ``domain`` (its intent list) and loads
    all-MiniLM-L6-v2 (or uses ``embedder``, texts -> vectors)."""
    from .tod import INTENT_STOP, RESPONSE_STOP, TODModel

    unknown = sorted(set(scorers) - set(SCORERS))
    if unknown or not scorers:
        raise ValueError(f"scorers must be a non-empty subset of {list(SCORERS)}, got {list(scorers)}")
    model = TODModel(base, adapter, threads=threads)
    original = original_scorer(domain, model.tokenizer, embedder) if "original" in scorers else None
    if max_len and model.max_positions and max_len > model.max_positions:
        # positions beyond the model's range give garbage (or index errors), not a longer context
        log.warning("max_len %d exceeds the model's %d positions: using %d", max_len, model.max_positions,
                    model.max_positions)
        max_len = model.max_positions
    rows, predictions = [], []
    memo: dict[tuple[str, str], str] = {}  # (kind, prompt) -> completion, shared by the sets
    for name, convs in test_sets.items():
        picked = subsample(convs, max_conversations, seed)
        tasks = tasks_for(name, picked, responses_per_conversation, seed)
        n_int = sum(t.kind == "intent" for t in tasks)
        log.info("%s: %d of %d conversations, %d user turns, %d responses", name, len(picked), len(convs),
                 n_int, len(tasks) - n_int)
        completions: list[str] = [""] * len(tasks)
        for kind, max_new, stop in (("intent", max_new_tokens_intent, INTENT_STOP),
                                    ("response", max_new_tokens_response, RESPONSE_STOP)):
            idx = [i for i, t in enumerate(tasks) if t.kind == kind]
            # a prompt already completed for another set (a subset such as <name>_unseen, whose
            # conversations keep their ids) is not generated again: greedy decoding, same text
            todo = list({tasks[i].prompt: i for i in idx if (kind, tasks[i].prompt) not in memo}.values())
            done = model.complete([tasks[i].prompt for i in todo], max_new_tokens=max_new, batch_size=batch_size,
                                  stop=stop, max_len=max_len)
            memo.update(((kind, tasks[i].prompt), text) for i, text in zip(todo, done))
            for i in idx:
                completions[i] = memo[(kind, tasks[i].prompt)]
        records = judge_records(records_for(tasks, completions), tasks, judge, judge_prompt)
        part = score_records(name, records, len(picked)) if "strict" in scorers else []
        if original is not None:
            lengths = gold_lengths(picked, original[1])
            part += original_rows(name, records, *original, lengths, original_max_tokens)
        rows += part
        predictions += records
        log.info("%s: %s", name, ", ".join(f"{r['scorer']} {r['metric']}={r['value']:.4f}" for r in part
                                            if r["metric"] in HEADLINE[r["scorer"]] and r["value"] is not None))
    return rows, predictions


# ---------------------------------------------------------------------------- labels for reports


def generator_info(spec: Mapping | None) -> dict:
    """``{kind, model, label}`` of the generation backend spec (params ``syntod.llm``)."""
    spec = dict(spec or {})
    kind, model = spec.get("kind"), spec.get("model") or spec.get("model_dir")
    labels = {"offline": "offline template simulator (deterministic templates, no LLM)",
              "openai": f"OpenAI-compatible chat model {model}", "transformers": f"local transformers model {model}"}
    return {"kind": kind, "model": model, "label": labels.get(kind, f"unknown generator {kind!r}")}


def judge_label(info: Mapping) -> str:
    """A one-line name of the judge for report headers; the heuristic is named as not an LLM."""
    if info.get("kind") == "heuristic":
        return (f"heuristic token-overlap judge (NOT an LLM; thresholds good={info.get('good')}, "
                f"related={info.get('related')}, context={info.get('context')})")
    prompt = f" ({info['prompt']} prompt)" if info.get("prompt") else ""
    return f"LLM judge: {info.get('kind')} model {info.get('model')}{prompt}"


def judge_spec(spec: Mapping) -> dict:
    """The keys of a params judge spec its kind takes (a spec may carry every kind's keys)."""
    from .llm import SPEC_KEYS

    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise ValueError(f"params: syntod.judge must be a mapping with a kind, got {spec!r:.100}")
    if spec["kind"] == "heuristic":
        allowed = {"kind", *HEURISTIC_KEYS}
    else:
        allowed = SPEC_KEYS["common"] | SPEC_KEYS.get(spec["kind"], set())
    return {k: v for k, v in spec.items() if k in allowed and v is not None}


# ---------------------------------------------------------------------------- stage drivers


def _eval_params(P: Mapping) -> tuple[dict, dict]:
    from .stages import params_section

    S = params_section(P, "syntod")
    E = params_section(P, "syntod.eval", EVAL_KEYS)
    if "judge" not in S:
        raise ValueError("params: syntod.judge is missing")
    return dict(S), dict(E)


def resolve_adapter(adapter: str | os.PathLike | None) -> str | None:
    """An adapter directory, or a ``finetune_tod`` output directory (its ``final/``)."""
    if adapter is None:
        return None
    final = Path(adapter) / "final"
    return str(final if (final / "adapter_config.json").exists() else adapter)


def load_test_sets(domain: str, raw: str | os.PathLike, heldout: str | os.PathLike | None) -> dict[str, list]:
    """``{published_gemini, published_llama, heldout}`` conversations of ``domain``."""
    from ..datasets import source_path
    from .format import read_jsonl

    if domain not in PUBLISHED:
        raise ValueError(f"unknown SynTOD domain {domain!r}; expected one of {sorted(PUBLISHED)}")
    sets = {name: read_jsonl(source_path(raw, src)) for name, src in PUBLISHED[domain].items()}
    if heldout is not None:
        sets[HELDOUT] = read_jsonl(heldout)
    return sets


def _write_jsonl(records: Sequence[dict], path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def evaluate_stage(P: Mapping, domain: str, method: str, base: str, adapter: str | None, raw: str,
                   heldout: str | None, out_json: str, out_predictions: str, items: str | None = None) -> dict:
    """Evaluate one fine-tuned TOD model (``domain`` x ``method``) on the two published test
    sets of the domain and our held-out conversations (with ``items``, the syntod_items
    directory of the domain, each published set also as ``<name>_unseen``: its conversations
    whose items are all unseen in training, :func:`irrepro.syntod.items.unseen_test_sets` by
    ``syntod.item_split.items_of``), with the knobs of ``syntod.eval`` and
    the judge of ``syntod.judge`` (cached in ``syntod.cache_dir``); agreement with human
    labels when ``syntod.human_labels`` names a file. Writes ``out_json`` and the per-turn
    ``out_predictions`` JSONL atomically; returns the JSON document."""
    from ..study1.bases import resolve_base
    from .judge import load_human_labels, make_judge

    S, E = _eval_params(P)
    if method not in METHODS:
        raise ValueError(f"evaluate-tod: method must be one of {list(METHODS)}, got {method!r}")
    if heldout is not None and not Path(heldout).is_file():
        raise InputError("held-out conversations not found", file=heldout, hint="run syntod-generate first")
    if adapter is not None:  # named before the base model and the test sets are loaded
        from ..checks import check_adapter_dir

        check_adapter_dir(Path(adapter) / "final" if (Path(adapter) / "final").is_dir() else adapter)
    from ..checks import check_model_dir

    check_model_dir(base, "TOD base model")
    scorers = list(E["scorers"])
    if not scorers or set(scorers) - set(SCORERS):
        raise ValueError(f"params: syntod.eval.scorers must be a non-empty subset of {list(SCORERS)}, got {scorers}")
    test_sets = load_test_sets(domain, raw, heldout)
    if items is not None:
        from .items import item_split_params, unseen_test_sets

        test_sets = unseen_test_sets(test_sets, domain, items, item_split_params(P)["items_of"])
    judge = make_judge(judge_spec(S["judge"]), S.get("cache_dir"))
    judge_prompt = S["judge"].get("prompt", "project")
    if judge_prompt not in ("original", "project"):
        raise ValueError(f"params: syntod.judge.prompt must be original or project, got {judge_prompt!r}")
    judge_info = {**judge.describe(), "prompt": judge_prompt}
    seed = int(E.get("seed", S.get("seed", 0)))
    rows, predictions = evaluate_model(
        resolve_base(base), resolve_adapter(adapter), test_sets, judge=judge,
        max_conversations=E["max_conversations"], max_new_tokens_intent=int(E["max_new_tokens_intent"]),
        max_new_tokens_response=int(E["max_new_tokens_response"]), batch_size=int(E["batch_size"]),
        max_len=E["max_len"], seed=seed, responses_per_conversation=E["responses_per_conversation"],
        threads=E.get("threads"), scorers=scorers, domain=domain, original_max_tokens=E["original_max_tokens"],
        judge_prompt=judge_prompt)
    human_path = S.get("human_labels")
    if human_path:
        human = load_human_labels(human_path)
        for name in test_sets:
            rows += agreement_rows(name, [r for r in predictions if r["test_set"] == name], human)
    doc = {"domain": domain, "method": method,
           "generator": generator_info(S.get("llm")),
           "judge": {**judge_info, "label": judge_label(judge_info)},
           "model": {"base": str(base), "adapter": None if adapter is None else str(adapter)},
           "eval": {**E, "seed": seed}, "human_labels": human_path or None,
           "item_split": None if items is None else {**item_split_params(P), "items": str(items)}, "rows": rows}
    _write_jsonl(predictions, out_predictions)
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    log.info("evaluate-tod %s/%s: %d rows, %d predictions -> %s", domain, method, len(rows), len(predictions),
             out_json)
    return doc


def _read_result(path: str | os.PathLike) -> dict:
    try:
        doc = read_json_file(path)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the evaluation result: {exc}") from None
    for key, typ in (("domain", str), ("method", str), ("judge", dict), ("rows", list)):
        if not isinstance(doc.get(key) if isinstance(doc, dict) else None, typ):
            raise ValueError(f"{path}: key {key!r} missing or not a {typ.__name__}")
    for i, row in enumerate(doc["rows"]):
        missing = [k for k in ("test_set", "scorer", "metric", "value", "n") if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(f"{path}: rows[{i}] lacks {missing}")
    return doc


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _markdown(docs: list[dict], profile: str | None) -> str:
    generators = sorted({d.get("generator", {}).get("label") or "unknown generator" for d in docs})
    judges = sorted({d["judge"].get("label") or judge_label(d["judge"]) for d in docs})
    lines = [f"# SynTOD evaluation: graph vs naive ({profile or 'unknown'} profile)", "",
             f"Conversations generated by: {'; '.join(generators)}.  ",
             f"Response relevance judged by: {'; '.join(judges)}.", ""]
    if profile == "mini":
        lines += ["mini profile: a tiny TOD model fine-tuned for a few steps on CPU; the numbers check the "
                  "pipeline, they are not comparable with the paper's.", ""]
    lines += ["Each model is fine-tuned on its method's conversations; `heldout` is that method's own held-out "
              "split (so the two `heldout` columns are different conversations). n = scored user turns "
              "(intent, slots) or judged responses (relevance).", "",
              "Subsets: `published_<llm>` = all conversations of that published test set; "
              "`published_<llm>_unseen` = only those whose catalog items (syntod.item_split.items_of) are all "
              "absent from the training catalog the generator used.", "",
              "Scorers: `strict` = the project's (a completion must hold a JSON object with a string intent; "
              "intent accuracy / macro F1 over turns; slot P/R/F1 pooled over gold and predicted slots; the "
              "relevance judge is listed here); `original` = the SynTOD release's evaluation "
              "(out-of-list intents snapped to the nearest intent by all-MiniLM-L6-v2, a missing intent "
              "snapped too; safety intents dropped; macro F1 from per-conversation P/R; slot F1 over the gold "
              "slots only, `slot_macro_f1` averaged per intent, `slot_micro_f1` over turns).", ""]
    values = {(d["domain"], d["method"], r["test_set"], r["scorer"], r["metric"]): (r["value"], r["n"])
              for d in docs for r in d["rows"]}
    for domain in sorted({d["domain"] for d in docs}):
        methods = [m for m in METHODS if any(d["domain"] == domain and d["method"] == m for d in docs)]
        methods += sorted({d["method"] for d in docs if d["domain"] == domain} - set(methods))
        sets = list(dict.fromkeys(r["test_set"] for d in docs if d["domain"] == domain for r in d["rows"]))
        lines += [f"## {domain}", "", "| test set | scorer | metric | " + " | ".join(methods)
                  + (" | graph - naive |" if {"graph", "naive"} <= set(methods) else " |"),
                  "|---|---|---|" + "---:|" * (len(methods) + ({"graph", "naive"} <= set(methods)))]
        for ts in sets:
            for scorer, metric in ((sc, m) for sc in SCORERS for m in HEADLINE[sc]):
                cells = [values.get((domain, m, ts, scorer, metric)) for m in methods]
                if not any(cells):
                    continue
                text = [f"{_fmt(c[0])} (n={c[1]})" if c else "-" for c in cells]
                if {"graph", "naive"} <= set(methods):
                    g = values.get((domain, "graph", ts, scorer, metric))
                    n = values.get((domain, "naive", ts, scorer, metric))
                    ok = g and n and g[0] is not None and n[0] is not None
                    text.append(f"{g[0] - n[0]:+.4f}" if ok else "-")
                lines.append(f"| {ts} | {scorer} | {metric} | " + " | ".join(text) + " |")
        lines.append("")
    return "\n".join(lines)


def collect_stage(P: Mapping, results: Sequence[str | os.PathLike], out_tsv: str, out_json: str,
                  out_md: str) -> dict:
    """Merge evaluation results into a tidy TSV (:data:`TSV_COLUMNS`), DVC metrics
    ``{domain: {method: {test_set: {scorer: {metric: value}}}}}`` (:data:`HEADLINE` of each
    scorer, 4 dp) and a markdown graph-vs-naive table naming the generator and judge.
    Returns the metrics."""
    docs = [_read_result(p) for p in results]
    seen: dict[tuple[str, str], str] = {}
    for path, d in zip(results, docs):
        key = (d["domain"], d["method"])
        if key in seen:
            raise ValueError(f"{path}: {key[0]}/{key[1]} already given by {seen[key]}")
        seen[key] = str(path)
    metrics: dict = {}
    with atomic_path(out_tsv) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(TSV_COLUMNS)
        for d in docs:
            for r in d["rows"]:
                w.writerow([d["domain"], d["method"], r["test_set"], r["scorer"], r["metric"],
                            "" if r["value"] is None else repr(float(r["value"])), r["n"]])
                if r["metric"] in HEADLINE.get(r["scorer"], ()):
                    metrics.setdefault(d["domain"], {}).setdefault(d["method"], {}).setdefault(
                        r["test_set"], {}).setdefault(r["scorer"], {})[r["metric"]] = \
                        None if r["value"] is None else round(float(r["value"]), 4)
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    with atomic_path(out_md) as tmp:
        tmp.write_text(_markdown(docs, P.get("profile")))
    log.info("syntod-collect: %d results, %d rows -> %s, %s, %s", len(docs), sum(len(d["rows"]) for d in docs),
             out_tsv, out_json, out_md)
    return metrics
