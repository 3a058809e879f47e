"""Strict readers and writers for the TREC text formats the workflow exchanges.

Formats (one record per line, UTF-8):

* topics: ``qid<TAB>query`` (exactly one tab). Surrounding whitespace of the query is
  stripped (MS MARCO dev-small has queries such as ``"2\\t Androgen receptor define"``);
  the text inside is kept byte-exact (MS MARCO's mojibake included).
* qrels: ``qid iter docid grade``, whitespace separated; ``iter`` is ``Q0`` or ``0``
  (the DL20 and dev qrels use ``0``); ``grade`` is a non-negative integer.
* run: ``qid Q0 docid rank score tag``, whitespace separated; ``rank`` an integer >= 1,
  ``score`` a finite float, no (qid, docid) pair twice.

Blank lines are skipped everywhere. Every problem raises :class:`TrecFormatError`, whose
message starts with ``{path}:{lineno}:`` (``{path}:0:`` for whole-file problems) and says
what was expected, so a bad line can be found without a debugger.

Order: readers return dicts in file order; evaluation never depends on it (see
:func:`irrepro.evaluate.evaluate_run`, which orders documents the way trec_eval does).
"""

from __future__ import annotations

import math
import logging
import numbers
import os
from pathlib import Path
from typing import Iterator, Mapping

from .utils import atomic_path

__all__ = [
    "TrecFormatError",
    "read_topics",
    "read_qrels",
    "read_run",
    "write_run",
    "ranked",
]

QRELS_ITER_VALUES = ("Q0", "0")
RUN_ITER_VALUES = ("Q0", "0")
log = logging.getLogger("irrepro.trec")


class TrecFormatError(ValueError):
    """A malformed line (or file) in a TREC topics/qrels/run file."""

    def __init__(self, path: str | os.PathLike, lineno: int, message: str):
        self.path = str(path)
        self.lineno = lineno
        super().__init__(f"{path}:{lineno}: {message}")


def _lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its line terminator) for non-blank lines."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TrecFormatError(path, 0, f"cannot read file: {exc.strerror or exc}") from exc
    if data.startswith(b"\xef\xbb\xbf"):  # a byte-order mark would glue itself to the first qid
        log.warning("%s: starts with a UTF-8 byte-order mark; ignored", path)
        data = data[3:]
    for lineno, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TrecFormatError(path, lineno, f"expected UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        if line.strip():
            yield lineno, line


def read_topics(path: str | os.PathLike) -> dict[str, str]:
    """Read ``qid<TAB>query`` topics into ``{qid: query}`` (file order)."""
    topics: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, line in _lines(path):
        if "\t" not in line:
            raise TrecFormatError(path, lineno, f"expected 'qid<TAB>query', found no tab in {line!r}")
        qid, _, query = line.partition("\t")
        qid = qid.strip()
        query = query.strip()
        if "\t" in query:
            raise TrecFormatError(path, lineno, "expected exactly one tab ('qid<TAB>query'), found more")
        if not qid or any(c.isspace() for c in qid):
            raise TrecFormatError(path, lineno, f"expected a non-empty qid without whitespace, got {qid!r}")
        if not query:
            raise TrecFormatError(path, lineno, f"expected a non-empty query for qid {qid}")
        if qid in topics:
            raise TrecFormatError(path, lineno, f"duplicate qid {qid} (first on line {first_line[qid]})")
        topics[qid] = query
        first_line[qid] = lineno
    return topics


def _columns(path: str | os.PathLike, lineno: int, line: str, layout: str) -> list[str]:
    """The whitespace-separated columns of ``line``: exactly as many as ``layout`` names."""
    cols = line.split()
    n = len(layout.split())
    if len(cols) != n:
        raise TrecFormatError(path, lineno, f"expected {n} whitespace-separated columns '{layout}', got {len(cols)}")
    return cols


def _parse(kind, text: str, path: str | os.PathLike, lineno: int, what: str):
    """``kind(text)`` (int or float); a ValueError becomes 'expected {what}, got {text!r}'."""
    try:
        return kind(text)
    except ValueError:
        raise TrecFormatError(path, lineno, f"expected {what}, got {text!r}") from None


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Read ``qid iter docid grade`` qrels into ``{qid: {docid: grade}}`` (file order)."""
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in _lines(path):
        qid, it, docid, grade_s = _columns(path, lineno, line, "qid iter docid grade")
        if it not in QRELS_ITER_VALUES:
            raise TrecFormatError(path, lineno, f"expected iteration column 'Q0' or '0', got {it!r}")
        grade = _parse(int, grade_s, path, lineno, "an integer relevance grade")
        if grade < 0:
            raise TrecFormatError(path, lineno, f"expected a non-negative relevance grade, got {grade}")
        docs = qrels.setdefault(qid, {})
        if docid in docs:
            raise TrecFormatError(path, lineno, f"duplicate judgment for qid {qid} docid {docid}")
        docs[docid] = grade
    return qrels


def read_run(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a 6-column TREC run into ``{qid: {docid: score}}`` (file order).

    The rank and tag columns are validated but not returned: like trec_eval, evaluation
    orders documents by score (see :func:`ranked`), not by the rank column.
    """
    run: dict[str, dict[str, float]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for lineno, line in _lines(path):
        qid, it, docid, rank_s, score_s, _tag = _columns(path, lineno, line, "qid Q0 docid rank score tag")
        if it not in RUN_ITER_VALUES:
            raise TrecFormatError(path, lineno, f"expected 'Q0' in column 2, got {it!r}")
        rank = _parse(int, rank_s, path, lineno, "an integer rank in column 4")
        if rank < 1:
            raise TrecFormatError(path, lineno, f"expected a rank >= 1 in column 4, got {rank}")
        score = _parse(float, score_s, path, lineno, "a numeric score in column 5")
        if not math.isfinite(score):
            raise TrecFormatError(path, lineno, f"expected a finite score in column 5, got {score_s!r}")
        key = (qid, docid)
        if key in first_line:
            raise TrecFormatError(
                path, lineno, f"duplicate docid {docid} for qid {qid} (first on line {first_line[key]})"
            )
        first_line[key] = lineno
        run.setdefault(qid, {})[docid] = score
    return run


def ranked(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """Documents of one query in evaluation order: score descending, ties by docid descending.

    This is trec_eval's order (it sorts on score, then ``strcmp`` of docnos, descending,
    and ignores the rank column), so ranks written by :func:`write_run` are the ranks any
    trec_eval-compatible evaluator sees.
    """
    return sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def _check_token(value: str, what: str, path: str | os.PathLike) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise TrecFormatError(path, 0, f"cannot write run: expected a non-empty {what} without whitespace, got {value!r}")


def write_run(run: Mapping[str, Mapping[str, float]], path: str | os.PathLike, tag: str) -> None:
    """Write ``{qid: {docid: score}}`` as a 6-column TREC run, atomically.

    Queries in sorted qid order; within a query, documents in :func:`ranked` order (score
    descending, ties by docid descending, as trec_eval breaks them) with ranks 1..n.
    Scores are written with ``repr`` so that :func:`read_run` gives back the same floats.
    """
    _check_token(tag, "run tag", path)
    lines: list[str] = []
    for qid in sorted(run):
        _check_token(qid, "qid", path)
        docs = run[qid]
        for docid, score in docs.items():
            _check_token(docid, "docid", path)
            if not isinstance(score, numbers.Real) or isinstance(score, bool) or not math.isfinite(score):
                raise TrecFormatError(path, 0, f"cannot write run: expected a finite score for {qid}/{docid}, got {score!r}")
        for rank, (docid, score) in enumerate(ranked({d: float(s) for d, s in docs.items()}), start=1):
            lines.append(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.writelines(lines)
