"""TOD evaluation metrics: intents, slots and agreement of relevance judgements.

* Intents: accuracy, macro and micro F1 (sklearn) over the labels seen in gold and valid
  predictions; a missing prediction (None) counts as wrong for every label. The original
  SynTOD evaluation folds acknowledgements into the task intents (``ORIGINAL_INTENT_FOLD``,
  applied by :func:`tod_scores` unless told otherwise).
* Slots, by slot-type rules (``SLOT_RULES``; keys not listed are ruled by their value type):
  ``text`` (query, question, product_name, address, topic): token-level overlap of the
  lower-cased word tokens (multiset, as SQuAD F1); ``exact`` (selection): one item, equal
  after int normalisation; ``set`` (product_ids, list_of_products, selected_ids): set
  overlap of normalised items; ``pairs`` (attributes_list): set overlap of normalised
  ``key:value`` pairs, accepting the published forms ``{k: v}``, ``{"name"|"type": k,
  "value": v}`` and multi-key dicts; ``duration``: equal after normalising to seconds.
  Every (turn, slot) pair in gold or prediction contributes (true positives, predicted
  items, gold items); P/R/F1 are micro-averaged over turns (pooled counts), overall and
  per slot, plus the macro average over slot types and the mean per-instance F1 of the
  original script (which averaged per-slot scores).
* Relevance agreement (labels 0/1/2): Spearman's rho and Kendall's tau (scipy), Cohen's
  kappa (sklearn, optionally quadratic-weighted), exact agreement, with n; a statistic that
  is undefined (constant input) is reported as None.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from typing import Iterable, Sequence

from scipy.stats import kendalltau, spearmanr
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

log = logging.getLogger("irrepro.syntod.metrics")

ORIGINAL_INTENT_FOLD = {"acknowledge_task": "begin_task", "acknowledge_step": "next_step", "done_step": "next_step"}
SLOT_RULES = {
    "query": "text", "question": "text", "product_name": "text", "address": "text", "topic": "text",
    "selection": "exact", "product_ids": "set", "list_of_products": "set", "selected_ids": "set",
    "attributes_list": "pairs", "duration": "duration",
}
NO_INTENT = "<none>"
RELEVANCE_LABELS = (0, 1, 2)

_TOKEN = re.compile(r"\w+")
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "ninety": 90, "a": 1, "an": 1, "half": 0.5})
_UNITS = {"h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
          "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
          "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|[a-z]+)\s*(hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b")


def _norm(s: object) -> str:
    return " ".join(str(s).lower().split())


def tokens(value: object) -> list[str]:
    """Lower-cased word tokens of a free-text slot; lists are joined, dicts use their values
    (the published ``address`` is sometimes ``{"country": ...}``)."""
    if value is None:
        return []
    if isinstance(value, dict):
        value = " ".join(str(v) for v in value.values())
    elif isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    return _TOKEN.findall(str(value).lower())


def _item(x: object) -> str:
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, (int, float)) and float(x).is_integer():
        return str(int(x))
    if isinstance(x, str) and re.fullmatch(r"\s*\d+\s*", x):
        return str(int(x))
    if isinstance(x, (dict, list)):
        return json.dumps(x, sort_keys=True)
    return _norm(x)


def id_set(value: object) -> set[str]:
    """Normalised items of an id/name list (``"1"`` == ``1``; names lower-cased)."""
    if value is None:
        return set()
    if not isinstance(value, (list, tuple, set)):
        value = [value]
    return {_item(x) for x in value}


def attribute_pairs(value: object) -> set[str]:
    """Normalised ``key:value`` pairs of an ``attributes_list`` in any published form."""
    items = value if isinstance(value, list) else [value] if value is not None else []
    pairs = set()
    for it in items:
        if isinstance(it, dict):
            keys = set(it)
            if "value" in keys and len(keys) == 2 and keys & {"name", "type"}:
                it = {it.get("name", it.get("type")): it["value"]}
            for k, v in it.items():
                for x in v if isinstance(v, list) else [v]:
                    pairs.add(f"{_norm(k)}:{_norm(x)}")
        else:
            pairs.add(_norm(it))
    return pairs


def duration_seconds(value: object) -> float | None:
    """Seconds in a duration: numbers are seconds; ``"1 hour, 23 minutes and 45 seconds"``,
    ``"15 min"``, ``"half an hour"``, ``"h:mm:ss"``/``"m:ss"``; None if not understood."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    s = str(value).lower().strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    if re.fullmatch(r"\d+(:\d{1,2}){1,2}", s):
        total = 0.0
        for part in s.split(":"):
            total = total * 60 + int(part)
        return total
    if re.fullmatch(r"half an? hour", s):
        return 1800.0
    total, found = 0.0, False
    for num, unit in _DURATION_PART.findall(s):
        n = float(num) if num[0].isdigit() else _NUMBER_WORDS.get(num)
        if n is None:
            continue
        total += n * _UNITS[unit]
        found = True
    return total if found else None


def rule_for(slot: str, gold: object, pred: object) -> str:
    """The slot-type rule of ``slot``; unknown keys by value type (list -> set, int -> exact,
    dict/str -> text)."""
    if slot in SLOT_RULES:
        return SLOT_RULES[slot]
    sample = gold if gold is not None else pred
    if isinstance(sample, list):
        return "set"
    if isinstance(sample, (int, float)) and not isinstance(sample, bool):
        return "exact"
    return "text"


def slot_counts(slot: str, gold: object, pred: object) -> tuple[int, int, int]:
    """(true positives, predicted items, gold items) of one slot in one turn; None = absent."""
    rule = rule_for(slot, gold, pred)
    if rule == "text":
        g, p = Counter(tokens(gold)), Counter(tokens(pred))
        return sum((g & p).values()), sum(p.values()), sum(g.values())
    if rule in ("set", "pairs"):
        f = id_set if rule == "set" else attribute_pairs
        g, p = f(gold), f(pred)
        return len(g & p), len(p), len(g)
    if rule == "duration":
        g, p = duration_seconds(gold), duration_seconds(pred)
        if g is None and gold is not None:
            g = _norm(gold)
        if p is None and pred is not None:
            p = _norm(pred)
    else:
        g = None if gold is None else _item(gold)
        p = None if pred is None else _item(pred)
    return int(g is not None and g == p), int(p is not None), int(g is not None)


def prf(tp: float, n_pred: float, n_gold: float) -> dict:
    """Precision, recall, F1 from counts (0 where undefined)."""
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def slot_scores(gold: Sequence[dict | None], pred: Sequence[dict | None]) -> dict:
    """Slot P/R/F1 over aligned turns; each item is the turn's slot dict (without intent)
    or None. Returns overall micro scores with counts, per-slot scores, the macro average
    over slot types and the original script's mean per-instance F1."""
    if len(gold) != len(pred):
        raise ValueError(f"slot_scores: {len(gold)} gold turns but {len(pred)} predictions")
    per: dict[str, list[int]] = {}
    instance_f1 = []
    for g, p in zip(gold, pred):
        g = {k: v for k, v in (g or {}).items() if k != "intent" and v is not None}
        p = {k: v for k, v in (p or {}).items() if k != "intent" and v is not None}
        for slot in sorted(set(g) | set(p)):
            tp, n_p, n_g = slot_counts(slot, g.get(slot), p.get(slot))
            acc = per.setdefault(slot, [0, 0, 0, 0])
            acc[0] += tp
            acc[1] += n_p
            acc[2] += n_g
            acc[3] += 1
            instance_f1.append(prf(tp, n_p, n_g)["f1"])
    tp, n_p, n_g = (sum(v[i] for v in per.values()) for i in range(3))
    by_slot = {s: {**prf(*v[:3]), "tp": v[0], "n_pred": v[1], "n_gold": v[2], "instances": v[3]}
               for s, v in sorted(per.items())}
    return {
        **prf(tp, n_p, n_g), "tp": tp, "n_pred": n_p, "n_gold": n_g, "instances": len(instance_f1),
        "macro_f1": sum(v["f1"] for v in by_slot.values()) / len(by_slot) if by_slot else 0.0,
        "mean_instance_f1": sum(instance_f1) / len(instance_f1) if instance_f1 else 0.0,
        "per_slot": by_slot,
    }


def fold_intent(intent: str | None, fold: dict[str, str] | None) -> str | None:
    return (fold or {}).get(intent, intent) if intent is not None else None


def intent_scores(gold: Sequence[str], pred: Sequence[str | None]) -> dict:
    """Accuracy, macro F1 and micro F1 of predicted intents (None = no intent produced).
    Labels = the gold intents plus the valid predicted ones; ``<none>`` is not a label, so
    a missing prediction lowers recall but no label's precision."""
    if len(gold) != len(pred):
        raise ValueError(f"intent_scores: {len(gold)} gold intents but {len(pred)} predictions")
    if not gold:
        return {"n": 0, "accuracy": 0.0, "macro_f1": 0.0, "micro_f1": 0.0, "labels": [], "per_intent": {}}
    y_pred = [NO_INTENT if p is None else p for p in pred]
    labels = sorted(set(gold) | {p for p in pred if p is not None})
    per = f1_score(gold, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "n": len(gold),
        "accuracy": float(accuracy_score(gold, y_pred)),
        "macro_f1": float(f1_score(gold, y_pred, labels=labels, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(gold, y_pred, labels=labels, average="micro", zero_division=0)),
        "labels": labels,
        "per_intent": {lab: float(v) for lab, v in zip(labels, per)},
    }


def tod_scores(gold: Sequence[dict], pred: Sequence[dict | None],
               fold: dict[str, str] | None = ORIGINAL_INTENT_FOLD) -> dict:
    """Intent and slot scores of teacher-forced user-turn predictions: ``gold``/``pred`` are
    aligned annotation dicts (``{"intent": ..., <slots>}``; a prediction may be None)."""
    g_int = [fold_intent(g.get("intent"), fold) or NO_INTENT for g in gold]
    p_int = [fold_intent((p or {}).get("intent"), fold) if isinstance((p or {}).get("intent"), str) else None
             for p in pred]
    out = {"intent": intent_scores(g_int, p_int), "slots": slot_scores(gold, pred)}
    log.info("tod scores over %d turns: intent acc %.4f, macro F1 %.4f, slot F1 %.4f",
             len(gold), out["intent"]["accuracy"], out["intent"]["macro_f1"], out["slots"]["f1"])
    return out


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def relevance_agreement(judge: Iterable[int | None], human: Iterable[int | None], weights: str | None = None) -> dict:
    """Agreement of judge labels with human labels (0 irrelevant, 1 worse than reference,
    2 as good or better), over the pairs where both are given. ``weights``: None (plain
    Cohen's kappa), "linear" or "quadratic"."""
    pairs = [(j, h) for j, h in zip(judge, human, strict=True) if j is not None and h is not None]
    for j, h in pairs:
        if j not in RELEVANCE_LABELS or h not in RELEVANCE_LABELS:
            raise ValueError(f"relevance labels must be in {RELEVANCE_LABELS}, got judge={j!r} human={h!r}")
    n = len(pairs)
    out = {"n": n, "spearman": None, "spearman_p": None, "kendall_tau": None, "kendall_p": None,
           "cohen_kappa": None, "kappa_weights": weights or "none", "exact_agreement": None}
    if n == 0:
        return out
    j, h = [p[0] for p in pairs], [p[1] for p in pairs]
    out["exact_agreement"] = sum(a == b for a, b in pairs) / n
    if n >= 2 and len(set(j)) > 1 and len(set(h)) > 1:
        rho = spearmanr(j, h)
        tau = kendalltau(j, h)
        out.update(spearman=_finite(rho.statistic), spearman_p=_finite(rho.pvalue),
                   kendall_tau=_finite(tau.statistic), kendall_p=_finite(tau.pvalue))
    if len(set(j) | set(h)) > 1:  # one label throughout: chance agreement is 1, kappa undefined
        out["cohen_kappa"] = _finite(cohen_kappa_score(j, h, labels=list(RELEVANCE_LABELS), weights=weights))
    return out
