"""Reranker input format (Tevatron RankLLaMA): ``query: {q}`` + ``document: {title} {passage}``.

Query and document are truncated separately (32 + 164 tokens by default) and joined in one
sequence: [bos] query document [eos]. The score is the classification head's output at
the last non-pad token, so the tokenizer's pad token must differ from eos (tiny models
have their own ``<pad>``; for Llama-family models we set pad = unk or add one).
"""

from __future__ import annotations


def query_text(query: str) -> str:
    return f"query: {query}"


def doc_text(passage: str, title: str = "") -> str:
    return f"document: {title} {passage}" if title else f"document: {passage}"


def encode_pair(tokenizer, query: str, passage: str, qmax: int = 32, pmax: int = 164, title: str = "") -> list[int]:
    """Token ids of one (query, passage) pair, unpadded."""
    q = tokenizer(query_text(query), add_special_tokens=False, truncation=True, max_length=qmax)["input_ids"]
    d = tokenizer(doc_text(passage, title), add_special_tokens=False, truncation=True, max_length=pmax)["input_ids"]
    ids = q + d
    if tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return ids
