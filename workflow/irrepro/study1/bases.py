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
        from .. import tiny

        T = P["tiny"]
        work = Path(out).parent / f".{Path(out).name}.tokenizer"
        shutil.rmtree(work, ignore_errors=True)
        try:
            tiny.build_tokenizer(corpus, work, vocab_size=T["vocab_size"])
            sizes = {k: v for k, v in T.items() if k != "vocab_size"}
            return tiny.build_base(family, work, corpus, out, **sizes)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    from huggingface_hub import snapshot_download

    # Download once into the HF cache (token from the environment only); record what was used.
    path = snapshot_download(spec["id"], revision=spec["revision"], token=os.environ.get("HF_TOKEN") or None)
    commit = Path(path).name
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / BASE_POINTER).write_text(json.dumps({"id": spec["id"], "revision": commit}, indent=1) + "\n")
    log.info("base %s: %s@%s (in the Hugging Face cache)", family, spec["id"], commit)
    return {"id": spec["id"], "revision": commit}


def resolve_base(base_dir: str | os.PathLike) -> str:
    """What ``from_pretrained`` should load for a base directory written by :func:`build_base`."""
    pointer = Path(base_dir) / BASE_POINTER
    if pointer.exists():
        from huggingface_hub import snapshot_download

        ref = json.loads(pointer.read_text())
        return snapshot_download(ref["id"], revision=ref["revision"], token=os.environ.get("HF_TOKEN") or None)
    return str(base_dir)
