"""Cheap input checks run before any expensive work (model loading, training, scoring).

Each raises :class:`~irrepro.errors.InputError` naming the file (and line or key), so a job
fails in a second with the culprit named, not after 43 s inside a library that names nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
from pathlib import Path
from typing import Iterator, Mapping

from .errors import InputError, IrreproError, read_json_file

log = logging.getLogger("irrepro.checks")

BASE_POINTER = "BASE.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
# JSON files of a model directory that transformers parses without naming them on an error
MODEL_JSON_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "vocab.json")
# The key under which a metrics JSON carries a run's judged-query coverage ({"found", "expected"})
# beside its metrics (see judged_coverage); readers of metric values skip it.
JUDGED_KEY = "judged_queries"


def check_safetensors(path: str | os.PathLike) -> None:
    """A safetensors file whose header parses and whose tensors end exactly at the file's end
    (a truncated copy, an interrupted download, fails here naming the file)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise InputError(f"truncated safetensors file ({size} bytes, no header)", file=path)
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise InputError(f"truncated safetensors file (header of {n} bytes, file of {size})", file=path)
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError):
            raise InputError("not a safetensors file (its header is not JSON)", file=path) from None
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2]
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        raise InputError(f"truncated safetensors file ({size} bytes, its header describes {expected})", file=path,
                         hint="copy or download it again, or rerun the stage that wrote it")


def check_adapter_dir(path: str | os.PathLike) -> None:
    """A peft adapter directory: ``adapter_config.json`` (JSON object) and complete weights
    (``adapter_model.safetensors`` or a non-empty ``adapter_model.bin``)."""
    path = Path(path)
    config = path / "adapter_config.json"
    if not config.is_file():
        raise InputError("adapter_config.json missing: not a complete adapter", file=path,
                         hint="delete it or rerun finetune")
    try:
        if not isinstance(json.loads(config.read_text(encoding="utf-8")), dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise InputError("not a JSON object", file=config) from None
    st, bin_ = path / "adapter_model.safetensors", path / "adapter_model.bin"
    if bin_.is_file() and bin_.stat().st_size > 0:
        return  # the authors' uploads: the .bin holds the weights (an empty .safetensors beside it)
    if not st.is_file():
        raise InputError("adapter weights missing (adapter_model.safetensors / .bin)", file=path)
    check_safetensors(st)


def check_model_dir(path: str | os.PathLike, what: str = "base model") -> None:
    """A base model directory as the ``base`` stage writes it: a hub pointer (``BASE.json``) or a
    transformers model (``config.json``, weights, tokenizer files)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{what} directory not found", file=path, hint="run the base stage first")
    if (path / BASE_POINTER).is_file():
        read_json_file(path / BASE_POINTER)
        return
    if not (path / "config.json").is_file():
        raise InputError(f"not a {what} directory: config.json missing", file=path,
                         hint=f"a {what} holds config.json, weights and a tokenizer, or {BASE_POINTER}")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise InputError(f"not a {what} directory: no tokenizer files ({', '.join(TOKENIZER_FILES)})", file=path)
    for name in MODEL_JSON_FILES:  # a truncated tokenizer.json: file and line, not "line 52" of nothing
        if (path / name).is_file():
            read_json_file(path / name)
    for st in path.glob("*.safetensors"):
        check_safetensors(st)


@contextlib.contextmanager
def loading(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Around a library load of ``path`` (a tokenizer, a model): any library error becomes an
    :class:`InputError` naming ``path`` and ``what`` was loaded (the tokenizers library says
    "data did not match any variant of untagged enum ModelUntagged at line 1 column 143956"
    and names no file)."""
    try:
        yield
    except (IrreproError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise InputError(f"cannot load the {what}: {type(exc).__name__}: {text}", file=path) from exc


def judged_coverage(run: Mapping[str, Mapping], qrels: Mapping[str, Mapping], run_path: str | os.PathLike,
                    min_fraction: float) -> dict:
    """How many of the judged queries a run answers: ``{"found", "expected"}``, the flag the
    metrics JSONs carry under :data:`JUDGED_KEY`. Below ``min_fraction`` (an empty, unjudged or
    truncated run) is an :class:`InputError` naming the run; a shortfall above it is a warning."""
    expected = {q for q, docs in qrels.items() if docs}
    found = sum(1 for q in expected if run.get(q))
    fraction = found / len(expected) if expected else 1.0
    if fraction < min_fraction:
        raise InputError(f"the run answers {found} of {len(expected)} judged queries "
                         f"({fraction:.0%} < evaluate.min_judged_fraction {min_fraction:.0%})", file=run_path,
                         hint="an empty, unjudged or truncated run; rerun the stage that wrote it")
    if found < len(expected):
        log.warning("%s: answers %d of %d judged queries (missing ones score 0)", run_path, found, len(expected))
    return {"found": found, "expected": len(expected)}


def check_corpus_jsonl(path: str | os.PathLike) -> int:
    """A JsonCollection corpus: every line a JSON object with a string ``id`` (unique) and
    ``contents``. Returns the number of passages. (A repeated id would let the later text win
    silently in every reader.)"""
    from .errors import iter_jsonl

    seen: dict[str, int] = {}
    for n, rec in iter_jsonl(path, "passage"):
        if not isinstance(rec, dict) or "id" not in rec or "contents" not in rec:
            raise InputError("expected a JSON object with 'id' and 'contents'", file=path, line=n)
        docid = str(rec["id"])
        if docid in seen:
            raise InputError(f"duplicate passage id {docid!r}", file=path, line=n, hint=f"first on line {seen[docid]}")
        seen[docid] = n
    if not seen:
        raise InputError("no passages", file=path)
    return len(seen)


def check_groups(path: str | os.PathLike, group_size: int) -> int:
    """Training groups before any model is loaded: unique ``query_id``s, and negatives for a
    group of ``group_size`` (none at all with ``group_size`` > 1 is an error; fewer than
    ``group_size - 1`` is a warning: they are sampled with replacement). The format itself is
    checked by :func:`irrepro.rerank.data.read_groups`. Returns the number of groups."""
    import gzip

    from .errors import iter_jsonl

    path = Path(path)
    if not path.is_file():
        raise InputError("training groups not found", file=path, hint="run the train_groups stage first")
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as fh:  # a truncated gzip fails here, named
            try:
                while fh.read(1 << 20):
                    pass
            except (EOFError, OSError) as exc:
                raise InputError(f"cannot decompress: {exc}", file=path) from None
        return -1
    seen: dict[str, int] = {}
    short = 0
    for n, rec in iter_jsonl(path, "training group"):
        if not isinstance(rec, dict):
            raise InputError("expected a JSON object", file=path, line=n)
        qid = str(rec.get("query_id"))
        if qid in seen:
            raise InputError(f"duplicate query_id {qid!r}", file=path, line=n, hint=f"first on line {seen[qid]}")
        seen[qid] = n
        negatives = rec.get("negative_passages") or []
        if group_size > 1 and not negatives:
            raise InputError(f"no negative passages for query_id {qid!r}, but finetune.group_size is {group_size}",
                             file=path, line=n, hint="a group is 1 positive + group_size - 1 negatives")
        short += len(negatives) < group_size - 1
    if not seen:
        raise InputError("no training groups", file=path)
    if short:
        log.warning("%s: %d of %d groups have fewer than group_size - 1 = %d negatives (sampled with replacement)",
                    path, short, len(seen), group_size - 1)
    return len(seen)


def check_text_jsonl(path: str | os.PathLike) -> int:
    """SynTOD fine-tuning text: every line ``{"text": str}``. Returns the number of records."""
    from .errors import iter_jsonl

    if not Path(path).is_file():
        raise InputError("training text not found", file=path)
    count = 0
    for n, rec in iter_jsonl(path, "record"):
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise InputError("expected {\"text\": string}", file=path, line=n)
        count += 1
    if not count:
        raise InputError("no training records", file=path)
    return count
