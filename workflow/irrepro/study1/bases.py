"""Base models: build the tiny mini bases, or fetch and pin the paper's hub models."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from ..utils import atomic_path

log = logging.getLogger("irrepro.study1")

BASE_POINTER = "BASE.json"  # paper: the hub model a base directory stands for


def build_base(P: dict, family: str, corpus: str, out: str) -> dict:
    """mini (`tiny`): tokenizer + tiny model trained on the corpus. paper: fetch the hub model."""
    spec = P["models"][family]
    if spec["id"] == "tiny":
        return build_tiny_base(family, corpus, out, P["tiny"])
    return fetch_hub_base(spec["id"], spec["revision"], out)


def build_tiny_base(family: str, corpus: str | os.PathLike, out: str | os.PathLike, sizes: dict) -> dict:
    """A byte-level BPE tokenizer (``sizes["vocab_size"]``) trained on ``corpus`` (pyserini
    JSONL) and a tiny ``family`` model warmed up on it (the other ``sizes``, see
    :func:`irrepro.tiny.build_base`) -> ``out`` (atomically). Returns the warm-up summary."""
    from .. import tiny

    work = Path(out).parent / f".{Path(out).name}.tokenizer"
    shutil.rmtree(work, ignore_errors=True)
    try:
        tiny.build_tokenizer(corpus, work, vocab_size=sizes["vocab_size"])
        return tiny.build_base(family, work, corpus, out, **{k: v for k, v in sizes.items() if k != "vocab_size"})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch_hub_base(model_id: str, revision: str | None, out: str | os.PathLike) -> dict:
    """Download ``model_id`` at ``revision`` once into the Hugging Face cache (token from
    ``$HF_TOKEN`` only) and write ``out/BASE.json`` pinning the snapshot's commit
    (:func:`resolve_base` reads it back). Returns ``{"id", "revision"}``."""
    from huggingface_hub import snapshot_download

    path = snapshot_download(model_id, revision=revision, token=os.environ.get("HF_TOKEN") or None)
    commit = Path(path).name
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / BASE_POINTER).write_text(json.dumps({"id": model_id, "revision": commit}, indent=1) + "\n")
    log.info("base %s: %s@%s (in the Hugging Face cache)", out, model_id, commit)
    return {"id": model_id, "revision": commit}


def resolve_base(base_dir: str | os.PathLike) -> str:
    """What ``from_pretrained`` should load for a base directory written by :func:`build_base`."""
    pointer = Path(base_dir) / BASE_POINTER
    if pointer.exists():
        from huggingface_hub import snapshot_download

        ref = json.loads(pointer.read_text())
        return snapshot_download(ref["id"], revision=ref["revision"], token=os.environ.get("HF_TOKEN") or None)
    return str(base_dir)
