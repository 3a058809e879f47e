"""Response relevance judging (0 irrelevant, 1 worse than the reference, 2 as good or better).

:func:`judge_relevance` asks a backend (the same LLM backends as generation) for a score
per (context, reference response, candidate response[, history]) with the prompts of
``resources/syntod/judge_prompts.yaml`` (apart from the generation prompts, so editing them
reruns judging only), in one of two styles (``syntod.judge.prompt``):

* ``original`` (the paper's, ``evaluation_relevance.py`` of the SynTOD release): one user
  message with the whole gold history as ``user:`` / ``system:`` / ``retriever:`` /
  ``suggestions:`` lines, ``Response:`` / ``Groundtruth:`` and the question "How good is
  the response compared to the groundtruth? ... Return only the number."; the reply is read
  as the original reads it: 0 if it contains "0", else 1 if "1", else 2 if "2", else no
  score (None). No re-ask (the original retried failed requests only).
* ``project``: a system + user message asking for ``{"score": 0|1|2}`` given the last
  turns; a reply without a valid score is re-asked a bounded number of times, then left as
  None and counted.

:class:`HeuristicJudge` is the offline judge. It is a transparent heuristic, NOT an LLM, and
reports must say so. It compares *content tokens*: lower-cased word tokens (``[a-z0-9]+``)
without stop words, pure numbers and single characters, so punctuation, list numbers and
function words earn nothing (a completion "1." is not relevant because the context holds
"1"). With ``f_ref`` the token-overlap F1 of the candidate's content tokens against the
reference's and ``ctx`` the share of the candidate's distinct content tokens that occur in
the context::

    score = 2  if the candidate equals the reference (case and whitespace ignored)
    score = 0  if the candidate has fewer than min(min_tokens, n_ref) distinct content tokens
               (n_ref: the reference's distinct content tokens, at least 1)
    score = 2  if f_ref >= good
    score = 1  if f_ref >= related, or ctx >= context and at least min_tokens distinct content
               tokens of the candidate occur in the context
    score = 0  otherwise

Thresholds (parameters; defaults): good 0.5, related 0.15, context 0.3, min_tokens 2. So an
identical response scores 2; an empty response, junk such as "1." or "ok", a repeated single
word, and a response sharing no content word with either the reference or the context score
0. It can be called as a function or used as a backend by :func:`judge_relevance` (it
answers the ``{"task": "judge", ...}`` meta).

:func:`load_human_labels` reads human labels (TSV with a header, or JSONL) keyed by
(conversation id, turn index) for agreement (:func:`irrepro.syntod.metrics.relevance_agreement`).
"""

from __future__ import annotations

import string

import csv
import json
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from ..jsonl import json_lines
from ..yamlio import load_yaml

from .llm import BACKEND_KINDS, Backend, LLMError, all_spec_keys, chat_json, kind_keys, make_backend

log = logging.getLogger("irrepro.syntod.judge")

LABELS = (0, 1, 2)
_TOKEN = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    "a an and are as at be but by can do for from has have i if in is it its me my of on or so that the this to "
    "was we what will with you your i'm it's".split())
JUDGE_PROMPTS_PATH = Path(__file__).resolve().parent.parent / "resources" / "syntod" / "judge_prompts.yaml"
PROMPT_STYLES = {"original": {"user": {"history", "response", "groundtruth"}},
                 "project": {"system": {"context", "reference", "candidate"},
                             "user": {"context", "reference", "candidate"}}}
ORIGINAL_ROLES = {"human": "user", "assistant": "system", "results": "retriever", "suggestions": "suggestions"}
ID_KEYS = ("conversation_id", "conversation", "id")
TURN_KEYS = ("turn", "turn_index")
HEURISTIC_KEYS = ("good", "related", "context", "min_tokens")  # HeuristicJudge's thresholds
# a judge is the heuristic or an LLM backend (the offline simulator answers no judge request)
JUDGE_KINDS = ("heuristic", *(k for k in BACKEND_KINDS if k != "offline"))


def content_tokens(text: str) -> list[str]:
    """Lower-cased word tokens without stop words, pure numbers and single characters."""
    return [t for t in _TOKEN.findall(str(text).lower())
            if len(t) > 1 and not t.isdigit() and t not in STOPWORDS]


def overlap_f1(candidate: str, reference: str) -> float:
    """SQuAD-style token F1 (multiset overlap) of two texts' content tokens."""
    c, r = Counter(content_tokens(candidate)), Counter(content_tokens(reference))
    common = sum((c & r).values())
    if not common:
        return 0.0
    p, rec = common / sum(c.values()), common / sum(r.values())
    return 2 * p * rec / (p + rec)


def context_overlap(candidate: str, context: str) -> tuple[float, int]:
    """``(share, count)`` of the candidate's distinct content tokens that occur in the context."""
    c = set(content_tokens(candidate))
    if not c:
        return 0.0, 0
    shared = len(c & set(content_tokens(context)))
    return shared / len(c), shared


def _normalized(text: str) -> str:
    return " ".join(str(text).lower().split())


class HeuristicJudge(Backend):
    """The offline relevance judge: a token-overlap rule (module docstring), not an LLM."""

    name = "heuristic"
    uses_meta = True

    def __init__(self, good: float = 0.5, related: float = 0.15, context: float = 0.3, min_tokens: int = 2):
        super().__init__("token-overlap-judge-v2")
        if not 0 <= related <= good <= 1 or not 0 <= context <= 1:
            raise ValueError(f"HeuristicJudge: need 0 <= related <= good <= 1 and 0 <= context <= 1, "
                             f"got good={good}, related={related}, context={context}")
        if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 1:
            raise ValueError(f"HeuristicJudge: min_tokens must be an integer >= 1, got {min_tokens!r}")
        self.good, self.related, self.context, self.min_tokens = good, related, context, min_tokens

    def score(self, context: str, reference: str, candidate: str) -> int:
        if _normalized(candidate) and _normalized(candidate) == _normalized(reference):
            return 2
        need = min(self.min_tokens, max(1, len(set(content_tokens(reference)))))
        if len(set(content_tokens(candidate))) < need:
            return 0
        f_ref = overlap_f1(candidate, reference)
        if f_ref >= self.good:
            return 2
        share, shared = context_overlap(candidate, context)
        if f_ref >= self.related or (share >= self.context and shared >= self.min_tokens):
            return 1
        return 0

    __call__ = score

    def _chat(self, messages, *, temperature, max_tokens, seed, json_mode, meta) -> str:
        if (meta or {}).get("task") != "judge":
            raise ValueError("HeuristicJudge needs meta={'task': 'judge', 'context', 'reference', 'candidate'}")
        score = self.score(meta.get("context", ""), meta.get("reference", ""), meta.get("candidate", ""))
        # the original prompt asks for the bare number, the project prompt for JSON
        return str(score) if meta.get("style") == "original" else json.dumps({"score": score})

    def thresholds(self) -> dict:
        return {"good": self.good, "related": self.related, "context": self.context, "min_tokens": self.min_tokens}

    def cache_identity(self) -> dict:
        return {"backend": self.name, "model": self.model, "thresholds": self.thresholds()}

    def describe(self) -> dict:
        return {"kind": self.name, "model": self.model, **self.thresholds(),
                "note": "transparent token-overlap heuristic, not an LLM"}


def make_judge(spec: dict, cache_dir: str | os.PathLike | None = None) -> Backend:
    """``spec["kind"]``: heuristic (``good``, ``related``, ``context``, ``min_tokens``) or openai /
    transformers (an LLM backend spec for :func:`irrepro.syntod.llm.make_backend`). Keys that
    belong to the other kinds are dropped (one params spec serves both profiles); keys no
    kind knows are an error."""
    kind = spec.get("kind")
    if kind not in JUDGE_KINDS:
        raise ValueError(f"judge spec: kind must be {' | '.join(JUDGE_KINDS)}, got {kind!r}")
    unknown = sorted(set(spec) - {"kind", *HEURISTIC_KEYS} - all_spec_keys())
    if unknown:
        raise ValueError(f"judge spec: unknown key(s) {unknown}")
    if kind == "heuristic":
        return HeuristicJudge(**{k: v for k, v in spec.items() if k in HEURISTIC_KEYS})
    return make_backend({k: v for k, v in spec.items() if k in kind_keys(kind)}, cache_dir)


def load_judge_prompts(path: str | os.PathLike | None = None) -> dict[str, dict[str, str]]:
    """``{style: {role: template}}`` of ``judge_prompts.yaml`` (default: the packaged file),
    every style of :data:`PROMPT_STYLES` present and using only its fields; a problem is a
    ValueError naming the file and the key."""
    path = Path(path or JUDGE_PROMPTS_PATH)
    try:
        data = load_yaml(path)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read judge prompts: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of prompt styles")
    out = {}
    for style, roles in PROMPT_STYLES.items():
        section = data.get(style)
        if not isinstance(section, dict) or set(section) != set(roles):
            raise ValueError(f"{path}: {style}: expected a mapping with exactly {sorted(roles)}")
        for role, allowed in roles.items():
            text, where = section[role], f"{path}: {style}.{role}"
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: missing or empty template")
            try:
                used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
            except ValueError as exc:
                raise ValueError(f"{where}: not a str.format template ({exc}); literal braces are doubled") from None
            if used - allowed:
                raise ValueError(f"{where}: unknown field(s) {sorted(used - allowed)} (allowed: {sorted(allowed)})")
        out[style] = dict(section)
    return out


def original_history(turns: Iterable) -> str:
    """The original judge's history: one ``role: text`` line per human / assistant / results /
    suggestions turn (``user`` / ``system`` / ``retriever`` / ``suggestions``; RECIPE blocks
    left out, as the original), newlines as spaces; an assistant turn keeps its own
    ``## {...}`` annotation, a human turn does not (the original's turn split)."""
    lines = []
    for t in turns:
        role = ORIGINAL_ROLES.get(t.role)
        if role is None:
            continue
        text = t.text
        if t.role == "assistant" and t.raw_annotation is not None:
            text = f"{text}{t.ws[1]}## {t.raw_annotation}".strip()
        lines.append(f"{role}: {text.strip()}".replace("\n", " "))
    return "\n".join(lines)


def read_original_reply(reply: str | None) -> int | None:
    """The original's reading of a judge reply: 0 if "0" occurs in it, else 1, else 2, else None."""
    for label in LABELS:
        if reply is not None and str(label) in reply:
            return label
    return None


def _judge_original(backend: Backend, item: tuple, template: str) -> int | None:
    context, reference, candidate, history = item
    fields = {"history": history, "response": candidate.replace("\n", " "),
              "groundtruth": reference.replace("\n", " ")}
    meta = {"task": "judge", "style": "original", "context": context, "reference": reference, "candidate": candidate}
    reply = backend.chat([{"role": "user", "content": template.format(**fields)}], meta=meta)
    return read_original_reply(reply)


def judge_relevance(backend: Backend, items: Sequence[tuple], *, style: str = "project", prompts=None,
                    max_repairs: int = 2) -> list[int | None]:
    """A 0/1/2 score per item; None where no valid score came back. An item is (context,
    reference, candidate) or (context, reference, candidate, history); ``style`` "original"
    needs the history (:func:`original_history`), "project" uses the context. ``prompts``:
    :func:`load_judge_prompts` output (default: the packaged file)."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"judge prompt style must be one of {sorted(PROMPT_STYLES)}, got {style!r}")
    prompts = prompts or load_judge_prompts()
    tmpl = prompts[style]
    scores: list[int | None] = []
    failed = 0
    for n, item in enumerate(items, 1):
        context, reference, candidate = item[:3]
        if style == "original":
            if len(item) != 4:
                raise ValueError(f"judge item {n}: the original prompt needs (context, reference, candidate, history)")
            try:
                score = _judge_original(backend, item, tmpl["user"])
            except LLMError as exc:
                log.warning("judge: item %d: %s", n, backend.mask(str(exc))[:300])
                score = None
            failed += score is None
            scores.append(score)
            continue
        fields = {"context": context, "reference": reference, "candidate": candidate}
        messages = [{"role": "system", "content": tmpl["system"].format(**fields)},
                    {"role": "user", "content": tmpl["user"].format(**fields)}]
        meta = {"task": "judge", **fields}
        score = None
        for _ in range(max_repairs + 1):
            try:
                reply = chat_json(backend, messages, required_keys=["score"], max_repairs=max_repairs, meta=meta)
            except LLMError as exc:
                log.warning("judge: item %d: %s", n, backend.mask(str(exc))[:300])
                break
            value = reply["score"]
            if isinstance(value, str) and value.strip() in ("0", "1", "2"):
                value = int(value.strip())
            if isinstance(value, int) and not isinstance(value, bool) and value in LABELS:
                score = value
                break
            messages = messages + [
                {"role": "assistant", "content": json.dumps(reply)},
                {"role": "user", "content": f"The score must be 0, 1 or 2, got {value!r:.50}. "
                                            'Answer with only {"score": 0}, {"score": 1} or {"score": 2}.'}]
        if score is None:
            failed += 1
            log.warning("judge: item %d: no valid score after %d replies", n, max_repairs + 1)
        scores.append(score)
    dist = Counter(scores)
    log.info("judge %s (%s prompt): %d items, scores %s, %d without a score", backend.name, style, len(scores),
             {k: dist[k] for k in LABELS}, failed)
    return scores


def _field(rec: dict, keys: Iterable[str], where: str):
    for k in keys:
        if k in rec and rec[k] not in (None, ""):
            return rec[k]
    raise ValueError(f"{where}: missing {' / '.join(keys)}")


def _label(value, where: str) -> int:
    text = str(value).strip()
    if text not in ("0", "1", "2"):
        raise ValueError(f"{where}: label must be 0, 1 or 2, got {value!r}")
    return int(text)


def load_human_labels(path: str | os.PathLike) -> dict[tuple[str, int], int]:
    """Human relevance labels: ``{(conversation_id, turn_index): label}``. TSV with a header
    (``conversation_id``/``id``, ``turn``/``turn_index``, ``label``) or JSONL with the same
    keys. A bad row or a (conversation, turn) given twice raises ValueError naming file:line."""
    path = Path(path)
    if path.suffix in (".jsonl", ".json"):  # a bad line: InputError (a ValueError) naming file:line
        rows = [(f"{path}:{no}", rec) for no, rec in json_lines(path)]
    else:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = [(f"{path}:{no}", rec) for no, rec in enumerate(csv.DictReader(fh, delimiter="\t"), 2)]
    labels: dict[tuple[str, int], int] = {}
    for where, rec in rows:
        cid = str(_field(rec, ID_KEYS, where))
        turn_raw = _field(rec, TURN_KEYS, where)
        try:
            turn = int(str(turn_raw).strip())
        except ValueError:
            raise ValueError(f"{where}: turn must be an integer, got {turn_raw!r}") from None
        if (cid, turn) in labels:
            raise ValueError(f"{where}: ({cid}, turn {turn}) labelled twice")
        labels[(cid, turn)] = _label(_field(rec, ("label",), where), where)
    log.info("human labels: %d from %s", len(labels), path)
    return labels
