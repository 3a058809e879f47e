"""Response relevance judging (0 irrelevant, 1 worse than the reference, 2 as good or better).

:func:`judge_relevance` asks a backend (the same LLM backends as generation, prompt
``judge`` in ``resources/syntod/prompts.yaml``) for ``{"score": 0|1|2}`` per (context,
reference response, candidate response); a reply without a valid score is re-asked a
bounded number of times, then left as None and counted.

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

import csv
import json
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from .llm import Backend, LLMError, chat_json

log = logging.getLogger("irrepro.syntod.judge")

LABELS = (0, 1, 2)
_TOKEN = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    "a an and are as at be but by can do for from has have i if in is it its me my of on or so that the this to "
    "was we what will with you your i'm it's".split())
ID_KEYS = ("conversation_id", "conversation", "id")
TURN_KEYS = ("turn", "turn_index")


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
        return json.dumps({"score": self.score(meta.get("context", ""), meta.get("reference", ""),
                                               meta.get("candidate", ""))})

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
    from .llm import SPEC_KEYS, make_backend

    kind = spec.get("kind")
    if kind not in ("heuristic", "openai", "transformers"):
        raise ValueError(f"judge spec: kind must be heuristic | openai | transformers, got {kind!r}")
    heuristic = {"good", "related", "context", "min_tokens"}
    unknown = sorted(set(spec) - {"kind"} - heuristic - set().union(*SPEC_KEYS.values()))
    if unknown:
        raise ValueError(f"judge spec: unknown key(s) {unknown}")
    if kind == "heuristic":
        return HeuristicJudge(**{k: v for k, v in spec.items() if k in heuristic})
    allowed = SPEC_KEYS["common"] | SPEC_KEYS[kind]
    return make_backend({k: v for k, v in spec.items() if k in allowed}, cache_dir)


def judge_relevance(backend: Backend, items: Sequence[tuple[str, str, str]], *, prompts=None,
                    max_repairs: int = 2) -> list[int | None]:
    """A 0/1/2 score per (context, reference, candidate); None where no valid score came back."""
    from .generate import load_prompts

    prompts = prompts or load_prompts()
    scores: list[int | None] = []
    failed = 0
    for n, (context, reference, candidate) in enumerate(items, 1):
        fields = {"context": context, "reference": reference, "candidate": candidate}
        messages = [{"role": "system", "content": prompts.render("judge_system", fields)},
                    {"role": "user", "content": prompts.render("judge", fields)}]
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
    log.info("judge %s: %d items, scores %s, %d without a score", backend.name, len(scores),
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
    rows: list[tuple[str, dict]] = []
    with open(path, encoding="utf-8", newline="") as fh:
        if path.suffix in (".jsonl", ".json"):
            for no, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{no}: not JSON: {exc}") from None
                    if not isinstance(rec, dict):
                        raise ValueError(f"{path}:{no}: expected a JSON object")
                    rows.append((f"{path}:{no}", rec))
        else:
            reader = csv.DictReader(fh, delimiter="\t")
            for no, rec in enumerate(reader, 2):
                rows.append((f"{path}:{no}", rec))
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
