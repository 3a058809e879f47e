"""Training groups for the reranker (Tevatron's format and sampling).

Record format (one JSON object per line, the format of ``Tevatron/msmarco-passage-aug``)::

    {"query_id": "1185869", "query": "...",
     "positive_passages": [{"docid": "...", "title": "", "text": "..."}, ...],
     "negative_passages": [{"docid": "...", "title": "", "text": "..."}, ...]}

Choices (as Tevatron's ``TrainDataset`` makes them):

* **One record per query**, listing *all* its positives. Each time the query is drawn,
  one positive is used: ``positives[(h + epoch) % n_pos]`` with ``h`` a seeded hash of the
  query's position in the dataset, so successive epochs cycle through the positives.
  (:func:`build_groups_from_qrels` can also write one record per (query, positive) with
  ``split_positives=True``, for tiny topic sets where one record per query gives too few
  training groups.)
* **Negatives** at build time: documents of the first-stage (BM25) run for the query whose
  judged grade is at most ``max_negative_grade`` (default 0), i.e. judged non-relevant or
  unjudged. Judged positives (grade >= ``min_grade``) are never negatives, and neither are
  partially relevant documents (0 < grade < ``min_grade``, e.g. DL's grade 1 "related"):
  calling them negatives would teach the model noise. ``n_negatives`` of them are sampled
  seeded, without replacement (all of them when fewer exist).
* **Negatives per group** at training time (:class:`GroupCollator`): ``group_size - 1`` of
  the record's negatives, drawn without replacement from a seeded per-query permutation
  with an epoch offset (so later epochs see other negatives); with replacement only when
  the record has fewer than ``group_size - 1`` negatives.
* The group is ``[positive, negative_1, ..., negative_{G-1}]``: the positive is FIRST, the
  target of the Localized Contrastive Estimation loss is index 0.

Everything random here is a pure function of ``(seed, dataset index or query id, epoch)``,
never of a global RNG or of how many batches were drawn before, so a run resumed from a
checkpoint (which skips the batches already seen) sees exactly the groups an
uninterrupted run sees.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..jsonl import json_lines
from ..utils import atomic_path
from .inputs import PAD_MULTIPLE, clean_title, encode_texts, format_pair, max_length, pad_rows

log = logging.getLogger("irrepro")

__all__ = [
    "GroupFormatError",
    "build_groups_from_qrels",
    "write_groups",
    "read_groups",
    "load_tevatron_groups",
    "GroupDataset",
    "GroupCollator",
]


class GroupFormatError(ValueError):
    """A malformed training-group line; the message starts with ``{path}:{lineno}:``."""

    def __init__(self, path: str | os.PathLike, lineno: int, message: str):
        self.path = str(path)
        self.lineno = lineno
        super().__init__(f"{path}:{lineno}: {message}")


# ---------------------------------------------------------------------------- building


def _passage(docid: str, passages: Mapping[str, Any]) -> dict | None:
    """``{"docid", "title", "text"}`` for ``docid``; ``passages`` maps docid -> text or
    docid -> {"title", "text"} / (title, text)."""
    if docid not in passages:
        return None
    value = passages[docid]
    if isinstance(value, str):
        title, text = "", value
    elif isinstance(value, Mapping):
        title, text = value.get("title", "") or "", value["text"]
    else:
        title, text = value
    return {"docid": docid, "title": title, "text": text}


def build_groups_from_qrels(
    topics: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    passages: Mapping[str, Any],
    n_negatives: int,
    min_grade: int = 2,
    seed: int = 0,
    *,
    max_negative_grade: int = 0,
    split_positives: bool = False,
) -> list[dict]:
    """Training groups from judged topics and a first-stage run (the mini training data).

    ``topics`` {qid: query}, ``qrels`` {qid: {docid: grade}} (as :mod:`irrepro.trec` reads
    them), ``run`` {qid: {docid: score}}, ``passages`` {docid: text}. Queries are taken in
    ``topics`` order; a query is skipped (and counted in the log) when it has no positive
    with text in ``passages`` or no negative candidate. Positives are listed by grade
    (highest first), then docid; negatives in run order (score descending, then docid).
    See the module docstring for what counts as a negative and how they are sampled.
    """
    from ..trec import ranked

    if n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
    if max_negative_grade >= min_grade:
        raise ValueError(f"max_negative_grade ({max_negative_grade}) must be < min_grade ({min_grade})")
    records: list[dict] = []
    skipped = {"no_qrels": 0, "no_positive_text": 0, "no_negatives": 0}
    missing_pos = 0
    for qid, query in topics.items():
        judged = qrels.get(qid)
        if not judged:
            skipped["no_qrels"] += 1
            continue
        pos_ids = sorted((d for d, g in judged.items() if g >= min_grade), key=lambda d: (-judged[d], d))
        positives = []
        for d in pos_ids:
            p = _passage(d, passages)
            if p is None:
                missing_pos += 1
            else:
                positives.append(p)
        if not positives:
            skipped["no_positive_text"] += 1
            continue
        candidates = [
            d for d, _ in ranked(run.get(qid, {}))
            if judged.get(d, 0) <= max_negative_grade and d in passages
        ]
        if not candidates:
            skipped["no_negatives"] += 1
            continue
        if len(candidates) > n_negatives:
            rng = random.Random(f"irrepro-negatives:{seed}:{qid}")
            chosen = set(rng.sample(candidates, n_negatives))
            candidates = [d for d in candidates if d in chosen]  # keep run order
        negatives = [_passage(d, passages) for d in candidates]
        if split_positives:
            for p in positives:
                records.append({"query_id": qid, "query": query, "positive_passages": [p],
                                "negative_passages": negatives})
        else:
            records.append({"query_id": qid, "query": query, "positive_passages": positives,
                            "negative_passages": negatives})
    log.info("training groups: %d records; skipped queries %s; %d judged positives without text",
             len(records), skipped, missing_pos)
    return records


# ---------------------------------------------------------------------------- files


def write_groups(records: Iterable[Mapping], path: str | os.PathLike) -> int:
    """Write records as JSONL (``.gz`` suffix: gzip), atomically. Returns the count."""
    n = 0
    with atomic_path(path) as tmp:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(tmp, "wt", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
    return n


def _check_passages(value: Any, field: str) -> str | None:
    if not isinstance(value, list):
        return f"{field!r} must be a list, got {type(value).__name__}"
    for i, p in enumerate(value):
        if not isinstance(p, dict):
            return f"{field}[{i}] must be an object, got {type(p).__name__}"
        for key in ("docid", "text"):
            if key not in p:
                return f"{field}[{i}] lacks {key!r}"
        if not isinstance(p["text"], str) or not isinstance(p.get("title", ""), (str, type(None))):
            return f"{field}[{i}]: 'text' and 'title' must be strings"
    return None


def _normalise(rec: dict) -> dict:
    """Ids as strings, title always a string (Tevatron data has ``null``/``"-"`` titles)."""
    def psg(p):
        return {"docid": str(p["docid"]), "title": p.get("title") or "", "text": p["text"]}

    return {
        "query_id": str(rec["query_id"]),
        "query": rec["query"],
        "positive_passages": [psg(p) for p in rec["positive_passages"]],
        "negative_passages": [psg(p) for p in rec.get("negative_passages") or []],
    }


def read_groups(path: str | os.PathLike) -> list[dict]:
    """Read and validate training groups (JSONL, optionally gzipped).

    Every problem raises :class:`GroupFormatError` naming ``path:line``. A record needs
    ``query_id``, ``query`` (string), a non-empty ``positive_passages`` list and a
    ``negative_passages`` list (may be empty only if training uses ``group_size`` 1).
    """
    path = Path(path)
    records = []
    for lineno, rec in json_lines(path, error=GroupFormatError):
        for key in ("query_id", "query", "positive_passages"):
            if key not in rec:
                raise GroupFormatError(path, lineno, f"missing field {key!r}")
        if not isinstance(rec["query"], str):
            raise GroupFormatError(path, lineno, "'query' must be a string")
        for field in ("positive_passages", "negative_passages"):
            problem = _check_passages(rec.get(field) or [], field)
            if problem:
                raise GroupFormatError(path, lineno, problem)
        if not rec["positive_passages"]:
            raise GroupFormatError(path, lineno, "'positive_passages' is empty")
        records.append(_normalise(rec))
    return records


def load_tevatron_groups(path: str | os.PathLike) -> list[dict]:
    """The paper's training data: ``Tevatron/msmarco-passage-aug``'s ``train.jsonl.gz``
    (same field names; gzip detected by suffix), normalised like :func:`read_groups`."""
    return read_groups(path)


# ---------------------------------------------------------------------------- torch side


def _stable_int(*parts: Any) -> int:
    """A process-independent 64-bit hash (Python's ``hash`` of str is salted per process)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


try:  # torch is only needed for training; building/reading groups works without it
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # pragma: no cover
    _TorchDataset = object


class GroupDataset(_TorchDataset):
    """Map-style dataset over group records; item ``i`` is ``{"index", "epoch", "record"}``.

    The epoch is set by the trainer (``set_epoch``, see :mod:`irrepro.rerank.train`); the
    collator derives all sampling from ``(seed, index, epoch)``.
    """

    def __init__(self, records: Sequence[dict]):
        self.records = list(records)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return {"index": int(i), "epoch": self.epoch, "record": self.records[i]}


def sample_group(record: Mapping, index: int, epoch: int, group_size: int, seed: int) -> list[dict]:
    """``[positive] + (group_size - 1) negatives`` for one record (Tevatron's scheme).

    Positive: ``positives[(h + epoch) % n]``. Negatives: a fixed seeded permutation of the
    record's negatives, read from offset ``epoch * (group_size - 1)`` (wrapping), so they
    are distinct within a group and rotate across epochs; drawn with replacement only if
    the record has fewer than ``group_size - 1`` negatives.
    """
    h = _stable_int("irrepro-group", seed, index)
    positives = record["positive_passages"]
    pos = positives[(h + epoch) % len(positives)]
    k = group_size - 1
    if k <= 0:
        return [pos]
    negatives = list(record["negative_passages"])
    if not negatives:
        raise ValueError(
            f"query {record.get('query_id')!r} has no negative passages; group_size {group_size} needs {k}"
        )
    if len(negatives) < k:
        rng = random.Random(_stable_int("irrepro-negs-replace", seed, index, epoch))
        negs = rng.choices(negatives, k=k)
    else:
        random.Random(h).shuffle(negatives)
        offset = (epoch * k) % len(negatives)
        negs = (negatives + negatives)[offset : offset + k]
    return [pos] + negs


format_title = clean_title  # the authors' title clean-up (``title.replace('-', ' ').strip()``), see inputs


class GroupCollator:
    """Batch of queries -> ``input_ids``/``attention_mask`` of shape ``[B * G, L]``.

    Rows ``b*G .. b*G + G-1`` are query ``b``'s group, positive first. Each row is the
    authors' one-string input (:func:`irrepro.rerank.inputs.format_pair`: prefixes, cleaned
    title, passage), tokenised with the tokenizer's own special tokens and truncated jointly
    to ``qmax + pmax`` tokens, no EOS; rows are right-padded with the tokenizer's pad id to
    the longest row rounded up to a multiple of ``pad_multiple`` (16, as the authors).
    """

    def __init__(self, tokenizer, group_size: int, qmax: int = 32, pmax: int = 164, seed: int = 0,
                 pad_multiple: int | None = PAD_MULTIPLE):
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token (load it with irrepro.rerank.model.load_tokenizer)")
        self.tokenizer = tokenizer
        self.group_size = group_size
        self.max_len = max_length(qmax, pmax)
        self.seed = seed
        self.pad_multiple = pad_multiple

    def __call__(self, features: Sequence[Mapping]) -> dict:
        import torch

        texts = [
            format_pair(f["record"]["query"], p["text"], p.get("title"))
            for f in features
            for p in sample_group(f["record"], f["index"], f.get("epoch", 0), self.group_size, self.seed)
        ]
        rows = encode_texts(self.tokenizer, texts, self.max_len)
        ids, mask = pad_rows(rows, self.tokenizer.pad_token_id, self.pad_multiple)
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
