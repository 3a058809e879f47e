"""Reranker input format: the authors' Tevatron fork, for training and scoring alike.

One string per (query, passage) pair, as ``format_pair`` in
AtharvaNijasure/multi_stage_retrieval@cf514c3 train_pythia.py:268-270 builds it::

    f"{query_prefix} {query} {passage_prefix} {title} {passage}".strip()

with ``query_prefix = "query: "`` and ``passage_prefix = "document: "`` (full_finetune_pythia.sbatch,
``--query_prefix`` / ``--passage_prefix``), so the string has two spaces after each colon, and
``title = title.replace('-', ' ').strip()`` (MS MARCO's placeholder title ``-`` becomes
empty, which leaves three spaces between ``document:`` and the passage).

Tokenisation (the authors' ``RerankerTrainCollator``, train_pythia.py:207-228, and
``RerankerInferenceCollator``, :245-262): the whole string is tokenised with the
tokenizer's *own* special tokens (``add_special_tokens=True``: BOS for Llama / Mistral,
nothing for GPT-NeoX / Pythia, nothing for the mini tokenizer) and truncated *jointly* from
the right to ``rerank_max_len`` tokens, which the authors set to 32 + 164 = 196
(``query_max_len + passage_max_len`` here). No EOS is appended (``append_eos_token``
defaults to False, rerank_arguments.py). Rows are right-padded to the longest row of the
batch rounded up to a multiple of 16 (``pad_to_multiple_of=16``, rerank_arguments.py), with
the pad id of :func:`irrepro.rerank.model.load_tokenizer`; the attention mask is 1 on real
tokens. The score is read at the last non-pad token, i.e. the last real token: an encoded
row must therefore not *end* with the pad id (checked by :func:`encode_texts`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "document: "
PAD_MULTIPLE = 16

__all__ = [
    "QUERY_PREFIX",
    "PASSAGE_PREFIX",
    "PAD_MULTIPLE",
    "clean_title",
    "format_pair",
    "passage_parts",
    "max_length",
    "encode_texts",
    "encode_pair",
    "padded_width",
    "pad_rows",
]


def clean_title(title: str | None) -> str:
    """The authors' title clean-up: every ``-`` becomes a space, then strip (``None`` -> "")."""
    return (title or "").replace("-", " ").strip()


def format_pair(query: str, passage: str, title: str | None = "") -> str:
    """The one input string of a pair (see the module docstring); ``title`` is cleaned here."""
    return f"{QUERY_PREFIX} {query} {PASSAGE_PREFIX} {clean_title(title)} {passage}".strip()


def passage_parts(passage: str | Mapping[str, Any]) -> tuple[str, str]:
    """``(text, title)`` of a passage given as plain text or as ``{"text", "title"?}``."""
    if isinstance(passage, str):
        return passage, ""
    if isinstance(passage, Mapping):
        return passage["text"], passage.get("title") or ""
    raise TypeError(f"a passage must be a string or a mapping with 'text', got {type(passage).__name__}")


def max_length(qmax: int, pmax: int) -> int:
    """The joint token budget: the authors' ``rerank_max_len = 32 + 164``."""
    total = int(qmax) + int(pmax)
    if total < 2:
        raise ValueError(f"query_max_len + passage_max_len must be >= 2, got {qmax} + {pmax}")
    return total


def encode_texts(tokenizer, texts: Sequence[str], max_len: int, batch: int = 4096) -> list[list[int]]:
    """Token ids of formatted pair strings: the tokenizer's own special tokens, truncated
    jointly to ``max_len``, unpadded. Raises ``ValueError`` if a row ends with the pad id
    (its score would be read at another token)."""
    out: list[list[int]] = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(
            list(texts[i : i + batch]),
            add_special_tokens=True,
            truncation=True,
            max_length=int(max_len),
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        out.extend(list(ids) for ids in enc["input_ids"])
    pad = tokenizer.pad_token_id
    for i, ids in enumerate(out):
        if not ids:
            raise ValueError(f"pair {i} encodes to no tokens: {texts[i][:80]!r}")
        if pad is not None and ids[-1] == pad:
            raise ValueError(
                f"pair {i} ends with the pad token id {pad} ({tokenizer.pad_token!r}): the score would be read at "
                f"an earlier token; text {texts[i][-80:]!r}"
            )
    return out


def encode_pair(tokenizer, query: str, passage: str, qmax: int = 32, pmax: int = 164, title: str | None = "") -> list[int]:
    """Token ids of one (query, passage) pair, unpadded (``qmax + pmax`` tokens at most)."""
    return encode_texts(tokenizer, [format_pair(query, passage, title)], max_length(qmax, pmax))[0]


def padded_width(longest: int, multiple: int | None = PAD_MULTIPLE) -> int:
    """``longest`` rounded up to a multiple of ``multiple`` (unchanged for ``None`` or 1)."""
    if not multiple or multiple <= 1:
        return int(longest)
    return -(-int(longest) // int(multiple)) * int(multiple)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, multiple: int | None = PAD_MULTIPLE,
             width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(input_ids, attention_mask)`` int64 arrays of ``rows``.

    Width: ``width`` if given, else the longest row rounded up to ``multiple``.
    """
    lens = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    if width is None:
        width = padded_width(int(lens.max()) if len(lens) else 0, multiple)
    if len(lens) and int(lens.max()) > width:
        raise ValueError(f"a row of {int(lens.max())} tokens does not fit width {width}")
    mask = np.arange(int(width))[None, :] < lens[:, None]
    ids = np.full((len(rows), int(width)), int(pad_id), dtype=np.int64)
    # row-major boolean assignment fills row 0's real positions first, then row 1's, ...
    ids[mask] = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(lens.sum()))
    return ids, mask.astype(np.int64)
