"""Rerank and evaluate anything: the code behind ``irrepro rerank`` and ``irrepro eval``.

Both commands reuse the pipeline's own code, so a user's figure and the pipeline's figure come
from the same lines: :func:`rerank_any` calls :func:`irrepro.rerank.evaluate.evaluate_checkpoints`
(base loaded once, adapter attached and checked, pairs tokenised and scored by
:mod:`irrepro.rerank.score`), and :func:`evaluate_any` calls :func:`irrepro.evaluate.evaluate_run`
and :func:`irrepro.evaluate.compare` (ranx, trec_eval conventions, relevance level as given).

Inputs of :func:`rerank_any`:

* **first stage**: a TREC run (6 columns) plus topics (``qid<TAB>query``), or a candidates JSONL
  with one line per (query, passage) pair::

      {"qid": "1037798", "query": "who is robert gray", "docid": "7134595",
       "score": 12.3, "text": "...", "title": "..."}

  ``qid`` and ``docid`` are required; ``query`` is required on every line unless topics are
  given (all lines of one qid must carry the same query); ``text`` (and optional ``title``) is
  required unless a corpus is given; ``score`` is the first-stage score (default: file order,
  first line best). Each query's top-``depth`` candidates are reranked.
* **corpus** (where a passage's text comes from): a JSONL file, either pyserini's
  JsonCollection (``{"id", "contents"}``, optional ``"title"``/``"text"``, read as the pipeline
  reads its own corpus) or Tevatron's (``{"docid", "text"}``, optional ``"title"``); a TSV file
  ``docid<TAB>text`` or ``docid<TAB>title<TAB>text``; or a pyserini Lucene index directory
  built with stored raw documents.
* **base**: a model directory, a ``base`` stage output (``BASE.json``: the pinned hub snapshot)
  or a hub model id; **adapter**: a peft adapter directory, a ``finetune`` output directory (its
  highest ``checkpoint-<step>``, the checkpoint the pipeline reports as final), or
  ``hf:<repo>@<commit>[:subfolder]``.

Every input problem raises :class:`InputError` whose message starts with ``{path}:{line}:``
(``{path}:0:`` for a whole-file problem).
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from .jsonl import json_lines
from .trec import TrecFormatError, read_qrels, read_run, read_topics, write_run

log = logging.getLogger("irrepro.userrerank")

__all__ = ["InputError", "read_candidates_jsonl", "read_corpus", "resolve_user_adapter", "rerank_any",
           "evaluate_any", "run_names"]

PathLike = str | os.PathLike
_CKPT = re.compile(r"^checkpoint-(\d+)$")


class InputError(TrecFormatError):
    """A bad user input; the message starts with ``{path}:{line}:``."""


# ----------------------------------------------------------------------------- readers
def _str_field(rec: dict, key: str, path: PathLike, lineno: int, required: bool = True) -> str | None:
    value = rec.get(key)
    if value is None:
        if required:
            raise InputError(path, lineno, f"missing key {key!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(path, lineno, f"{key!r} must be a string, got {type(value).__name__}")
    value = str(value)
    if key in ("qid", "docid", "id") and (not value or any(c.isspace() for c in value)):
        raise InputError(path, lineno, f"{key!r} must be non-empty without whitespace, got {value!r}")
    return value


def read_candidates_jsonl(path: PathLike, topics: Mapping[str, str] | None = None):
    """``(run, topics, passages)`` from a candidates JSONL (module docstring); ``passages``
    holds only the lines that carry a ``text``."""
    run: dict[str, dict[str, float]] = {}
    queries: dict[str, tuple[str, int]] = {}
    passages: dict[str, Any] = {}
    for lineno, rec in json_lines(path, error=InputError):
        qid = _str_field(rec, "qid", path, lineno)
        docid = _str_field(rec, "docid", path, lineno)
        query = _str_field(rec, "query", path, lineno, required=topics is None)
        if query is not None:
            if not query.strip():
                raise InputError(path, lineno, f"empty query for qid {qid}")
            if qid in queries and queries[qid][0] != query:
                raise InputError(path, lineno, f"qid {qid} has another query than on line {queries[qid][1]}")
            queries.setdefault(qid, (query, lineno))
        if "score" in rec:
            score = rec["score"]
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise InputError(path, lineno, f"'score' must be a finite number, got {score!r}")
        else:
            score = -float(lineno)  # file order: the first line of a query ranks first
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise InputError(path, lineno, f"duplicate docid {docid} for qid {qid}")
        docs[docid] = float(score)
        text = _str_field(rec, "text", path, lineno, required=False)
        if text is not None:
            title = _str_field(rec, "title", path, lineno, required=False)
            passages[docid] = {"title": title, "text": text} if title is not None else text
    if not run:
        raise InputError(path, 0, "no candidates (empty file)")
    return run, ({q: t for q, (t, _) in queries.items()} if topics is None else dict(topics)), passages


def _corpus_kind(path: Path) -> str:
    if path.is_dir():
        return "index"
    name = path.name.lower()
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    if name.endswith((".tsv", ".txt")):
        return "tsv"
    raise InputError(path, 0, "unknown corpus format: expected a .jsonl / .json, a .tsv / .txt file or a "
                              "pyserini index directory")


def _passage_of(rec: dict, path: PathLike, lineno: int) -> tuple[str, Any]:
    """One corpus record as ``(docid, passage)``, the way the pipeline's passages look
    (:func:`irrepro.rerank.evaluate.load_passages`: plain text, or ``{"title", "text"}``)."""
    if "contents" in rec:  # pyserini JsonCollection, as the corpus stage writes it
        docid = _str_field(rec, "id", path, lineno)
        text = _str_field(rec, "contents", path, lineno)
        if "title" in rec:
            return docid, {"title": rec["title"] or "", "text": _str_field(rec, "text", path, lineno, False) or text}
        return docid, text
    if "text" in rec:  # Tevatron corpus: {"docid", "title", "text"}
        docid = _str_field(rec, "docid" if "docid" in rec else "id", path, lineno)
        text = _str_field(rec, "text", path, lineno)
        title = _str_field(rec, "title", path, lineno, required=False)
        return docid, ({"title": title, "text": text} if title is not None else text)
    raise InputError(path, lineno, "expected {'id', 'contents'} (pyserini) or {'docid', 'text'} (Tevatron)")


def read_corpus(path: PathLike, docids: set[str] | None = None) -> dict[str, Any]:
    """``{docid: passage}`` for ``docids`` (all if None) from a JSONL, TSV or pyserini index."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, 0, "corpus not found")
    kind = _corpus_kind(path)
    if kind == "index":
        from . import bm25

        if not any(p.name.startswith("segments") for p in path.iterdir()):
            raise InputError(path, 0, "not a Lucene index directory (no segments_* file)")
        wanted = sorted(docids) if docids is not None else None
        if wanted is None:
            raise InputError(path, 0, "an index corpus needs the candidate docids (give a run or candidates)")
        try:
            return bm25.doc_texts(str(path), wanted)
        except KeyError as exc:
            raise InputError(path, 0, str(exc.args[0])) from None
    out: dict[str, Any] = {}
    seen: dict[str, int] = {}
    if kind == "jsonl":
        for lineno, rec in json_lines(path, error=InputError):
            docid, passage = _passage_of(rec, path, lineno)
            if docid in seen:
                raise InputError(path, lineno, f"duplicate docid {docid} (first on line {seen[docid]})")
            seen[docid] = lineno
            if docids is None or docid in docids:
                out[docid] = passage
        return out
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise InputError(path, 0, f"cannot read file: {exc.strerror or exc}") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) not in (2, 3):
                raise InputError(path, lineno, f"expected 'docid<TAB>text' or 'docid<TAB>title<TAB>text', "
                                               f"got {len(cols)} tab-separated columns")
            docid = cols[0].strip()
            if not docid or any(c.isspace() for c in docid):
                raise InputError(path, lineno, f"expected a docid without whitespace, got {docid!r}")
            if docid in seen:
                raise InputError(path, lineno, f"duplicate docid {docid} (first on line {seen[docid]})")
            seen[docid] = lineno
            if docids is None or docid in docids:
                out[docid] = cols[1] if len(cols) == 2 else {"title": cols[1], "text": cols[2]}
    return out


def _first_line_of(path: PathLike, column: int, value: str) -> int:
    """Line number of the first non-blank line whose whitespace column ``column`` is ``value`` (0 if none)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            cols = line.split()
            if len(cols) > column and cols[column] == value:
                return lineno
    return 0


# ----------------------------------------------------------------------------- rerank
def resolve_user_adapter(spec: PathLike) -> tuple[int, str]:
    """``(step, adapter)``: a finetune output directory becomes its highest ``checkpoint-<step>``
    (what the pipeline reports as the final checkpoint); anything else is step 0 as given."""
    text = str(spec)
    if not text.startswith("hf:"):
        path = Path(text)
        if not path.is_dir():
            raise InputError(path, 0, "adapter not found: expected a peft adapter directory, a finetune output "
                                      "directory or hf:<repo>@<commit>[:subfolder]")
        if not (path / "adapter_config.json").is_file() and any(_CKPT.match(p.name) for p in path.iterdir()):
            from .study1.reranking import checkpoints

            step, ckpt = checkpoints(path)[-1]
            log.info("adapter %s: using its final checkpoint %s (step %d)", path, ckpt.name, step)
            return step, str(ckpt)
        m = _CKPT.match(path.name)
        return (int(m.group(1)) if m else 0), text
    return 0, text


def rerank_any(base: PathLike, adapter: PathLike, out: PathLike, *, run: PathLike | None = None,
               topics: PathLike | None = None, candidates: PathLike | None = None, corpus: PathLike | None = None,
               depth: int = 100, batch_size: int = 64, qmax: int = 32, pmax: int = 164, dtype: str = "auto",
               tag: str = "irrepro-rerank", device: str | None = None) -> dict[str, dict[str, float]]:
    """Rerank a first stage with ``base`` + ``adapter``; write the TREC run ``out``; return it.

    Give ``run`` + ``topics`` or ``candidates`` (+ ``topics`` for queries not in the file),
    and ``corpus`` unless the candidates carry the texts. Scoring is
    :func:`irrepro.rerank.evaluate.evaluate_checkpoints` with the given depth, batch size,
    truncation and dtype: with the pipeline's values (params ``rerank.*``, ``finetune.*_max_len``)
    the run equals the pipeline's own run of that checkpoint.
    """
    from .rerank.evaluate import evaluate_checkpoints
    from .study1.bases import resolve_base
    from .trec import ranked

    if (run is None) == (candidates is None):
        raise ValueError("give exactly one first stage: a TREC run (with topics) or a candidates JSONL")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    topic_map = read_topics(topics) if topics is not None else None
    if run is not None:
        if topic_map is None:
            raise ValueError(f"a TREC run ({run}) needs topics (qid<TAB>query) for the query texts")
        first, passages, source = read_run(run), {}, Path(run)
        if not first:
            raise InputError(run, 0, "the run is empty")
    else:
        first, topic_map, passages = read_candidates_jsonl(candidates, topic_map)
        source = Path(candidates)
    for qid in sorted(q for q in first if q not in topic_map):
        raise InputError(source, _first_line_of(source, 0, qid) if run is not None else 0,
                         f"query {qid} has no topic text in {topics or source}")
    wanted = {d for q in first for d, _ in ranked(first[q])[:depth]}
    missing = sorted(wanted - set(passages))
    if missing and corpus is None:
        raise InputError(source, 0, f"{len(missing)} candidate passages have no text (e.g. {missing[:3]}): "
                                    "give a corpus or a 'text' in every candidates line")
    if missing:
        passages.update(read_corpus(corpus, set(missing)))
        absent = sorted(wanted - set(passages))
        if absent:
            qid = next(q for q in sorted(first) if absent[0] in first[q])
            line = _first_line_of(source, 2, absent[0]) if run is not None else 0
            raise InputError(source, line, f"docid {absent[0]} (query {qid}) is not in the corpus {corpus} "
                                           f"({len(absent)} of {len(wanted)} candidates missing)")
    step, adapter_spec = resolve_user_adapter(adapter)
    log.info("rerank: %d queries, top-%d (%d pairs), base %s, adapter %s", len(first), depth,
             sum(min(depth, len(d)) for d in first.values()), base, adapter_spec)
    Path(out).resolve().parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".irrepro-rerank-", dir=Path(out).resolve().parent) as tmp:
        evaluate_checkpoints(resolve_base(base), [("rerank", step, adapter_spec)],
                             {"input": {"topics": topic_map, "qrels": {}, "run": first, "rel_level": 1,
                                        "metrics": []}},
                             passages, depth, [], tmp, None, batch_size, qmax=qmax, pmax=pmax, dtype=dtype,
                             device=device, resume=False)
        reranked = read_run(Path(tmp) / "input" / f"step-{step}.trec")
    write_run(reranked, out, tag=tag)
    log.info("rerank: wrote %s (%d queries)", out, len(reranked))
    return reranked


# ----------------------------------------------------------------------------- eval
def run_names(specs: Sequence[str]) -> dict[str, str]:
    """``{name: path}`` from ``PATH`` or ``NAME=PATH`` items (a plain path is named by its file
    name without the ``.trec``/``.txt``/``.run`` suffix); names must be unique."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or os.sep in name:
            path = spec
            name = Path(spec).name
            for suffix in (".trec", ".txt", ".run", ".tsv"):
                name = name.removesuffix(suffix)
        if name in out:
            raise ValueError(f"two runs are named {name!r} ({out[name]} and {path}): name them NAME=PATH")
        out[name] = path
    return out


def evaluate_any(runs: Mapping[str, PathLike], qrels: PathLike, metrics: Sequence[str], rel_level: int, *,
                 stat_test: str = "student", correction: str = "bh", max_p: float = 0.05) -> dict:
    """Score every run against ``qrels`` (ranx, the pipeline's conventions); with two or more runs
    also paired tests between them, p-values corrected by ``correction``.

    Returns ``{"qrels", "rel_level", "metrics", "scores": {run: {metric: mean}},
    "per_query": {run: {metric: {qid: value}}}, "n_judged": int, "comparison": compare result
    or None}``. A run none of whose queries is judged in ``qrels`` is an error (wrong qrels).
    """
    from .evaluate import compare, evaluate_run, metric_names

    metric_names(list(metrics), rel_level)  # unknown metric / bad level: fail before reading files
    judged = read_qrels(qrels)
    if not judged:
        raise InputError(qrels, 0, "no judgments")
    loaded = {}
    for name, path in runs.items():
        run = read_run(path)
        if not any(q in judged for q in run):
            raise InputError(path, 0, f"none of its {len(run)} queries is judged in {qrels} (wrong qrels?)")
        unjudged = sum(1 for q in run if q not in judged)
        if unjudged:
            log.warning("%s: %d of %d queries have no judgments in %s and are ignored", path, unjudged, len(run), qrels)
        loaded[name] = run
    result = {"qrels": str(qrels), "rel_level": rel_level, "metrics": list(metrics), "scores": {}, "per_query": {},
              "n_judged": sum(1 for q in judged if judged[q]), "comparison": None}
    for name, run in loaded.items():
        agg, per_query = evaluate_run(judged, run, list(metrics), rel_level)
        result["scores"][name], result["per_query"][name] = agg, per_query
    if len(loaded) >= 2:
        result["comparison"] = compare(judged, loaded, list(metrics), stat_test=stat_test, max_p=max_p,
                                       rel_level=rel_level, correction=correction)
    return result


def scores_table(result: Mapping) -> str:
    """Markdown table: one row per run, one column per metric (4 decimals)."""
    metrics = result["metrics"]
    lines = ["| run | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    lines += [f"| {name} | " + " | ".join(f"{s[m]:.4f}" for m in metrics) + " |" for name, s in result["scores"].items()]
    lines.append("")
    lines.append(f"ranx, judged queries of {result['qrels']} ({result['n_judged']}), relevance level "
                 f"{result['rel_level']} for binary metrics.")
    return "\n".join(lines) + "\n"
