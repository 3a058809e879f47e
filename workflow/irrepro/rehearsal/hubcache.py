"""Tiny models of the paper's hub repos in a local Hugging Face hub cache, loadable offline.

:func:`build_hub_cache` writes, for every repo of :data:`~.realconfigs.SPECS` (the paper's three
bases and the SynTOD TOD base), a tiny random model of the real ``transformers`` class, saved as
the hub serves the real checkpoint: the real ``config.json`` field set (:func:`.realconfigs.
tiny_config`), weights in the checkpoint's dtype (Llama-3.1 and Mistral bf16, Pythia and Llama-2
fp16) as sharded safetensors with ``model.safetensors.index.json``, ``generation_config.json``
and the tokenizer files of :mod:`.hubtokenizers`.

Cache layout (huggingface_hub's, see ``huggingface_hub.file_download`` of the installed
version): ``models--<org>--<name>/blobs/<etag>``, ``snapshots/<commit>/<file>`` a relative
symlink to its blob, ``refs/main`` holding the commit. The etag is what the hub sends: the
sha256 of the bytes for LFS files (the hub's default ``.gitattributes`` tracks ``*.safetensors``,
``*.model``, ``*.bin``; the hub also stores files of 10 MiB or more in LFS), git's blob id
(sha1 of ``b"blob <size>\\0" + bytes``) for the others.

Revisions: no real commit can be fetched here, so each repo gets a fixed fake commit,
:func:`fake_commit` = sha1 of ``"irrepro-rehearsal:<repo_id>"`` (40 hex digits, deterministic),
also written to ``refs/main``. ``from_pretrained(repo_id, revision=fake_commit(repo_id))`` and
:func:`irrepro.study1.bases.fetch_hub_base` then work with ``HF_HUB_OFFLINE=1`` and
``HF_HUB_CACHE=<cache_dir>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from ..download import git_blob_id
from ..utils import sha256_file
from .hubtokenizers import build_tokenizer
from .realconfigs import SPECS, TINY, RepoSpec, tiny_config

log = logging.getLogger("irrepro.rehearsal")

LFS_SUFFIXES = (".safetensors", ".model", ".bin", ".pt", ".pth", ".gguf")
LFS_MIN_BYTES = 10 << 20
MAX_SHARD_SIZE = "4MB"  # several shards per tiny model, as the real checkpoints have
_DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


def fake_commit(repo_id: str) -> str:
    """The fixed revision of ``repo_id`` in the rehearsal cache (documented in the module)."""
    return hashlib.sha1(f"irrepro-rehearsal:{repo_id}".encode()).hexdigest()


def repo_folder(cache_dir: str | os.PathLike, repo_id: str, repo_type: str = "model") -> Path:
    return Path(cache_dir) / "--".join([f"{repo_type}s", *repo_id.split("/")])


def etag(path: Path) -> str:
    """The hub's etag of a file: sha256 for LFS files, git blob id otherwise (module docstring)."""
    if path.name.endswith(LFS_SUFFIXES) or path.stat().st_size >= LFS_MIN_BYTES:
        return sha256_file(path)
    return git_blob_id(path)


def install_snapshot(cache_dir: str | os.PathLike, repo_id: str, revision: str, files_dir: str | os.PathLike,
                     repo_type: str = "model") -> Path:
    """Put every file under ``files_dir`` into the hub cache as ``repo_id``@``revision`` (blobs by
    etag, relative symlinks from the snapshot, ``refs/main``); returns the snapshot directory.
    An existing snapshot of that revision is replaced."""
    repo = repo_folder(cache_dir, repo_id, repo_type)
    snap = repo / "snapshots" / revision
    shutil.rmtree(snap, ignore_errors=True)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for src in sorted(p for p in Path(files_dir).rglob("*") if p.is_file()):
        rel = src.relative_to(files_dir)
        blob = repo / "blobs" / etag(src)
        if not blob.exists():
            shutil.copyfile(src, blob)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snap


def _init_model(spec: RepoSpec, cfg: dict, seed: int):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**cfg)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return model.to(getattr(torch, _DTYPES[spec.dtype]))


def write_repo_files(spec: RepoSpec, out: str | os.PathLike, texts: Iterable[str] | None = None, seed: int = 0,
                     max_shard_size: str = MAX_SHARD_SIZE, **sizes) -> dict:
    """The files of ``spec``'s repo, tiny, into ``out``: weights (``save_pretrained`` in the real
    dtype, sharded), then ``config.json`` / ``generation_config.json`` replaced by the real field
    sets (transformers would write its own version's fields), then the tokenizer files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(spec, **{**TINY, **sizes})
    model = _init_model(spec, cfg, seed)
    model.save_pretrained(str(out), max_shard_size=max_shard_size)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(spec.generation_config, indent=2) + "\n")
    build_tokenizer(spec, out, texts)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    return {"repo_id": spec.repo_id, "dtype": spec.dtype, "shards": sorted(set(index["weight_map"].values())),
            "parameters": sum(p.numel() for p in model.parameters())}


def build_hub_cache(cache_dir: str | os.PathLike, repos: Sequence[str] | None = None,
                    texts: Iterable[str] | None = None, seed: int = 0, max_shard_size: str = MAX_SHARD_SIZE,
                    **sizes) -> dict[str, dict]:
    """Write the tiny repos (default: all of :data:`SPECS`) into the hub cache ``cache_dir``.

    ``texts``: training text of the NeoX-layout (Pythia) tokenizer (e.g. the mirror's passages).
    ``sizes``: hidden / layers / heads / intermediate (default :data:`~.realconfigs.TINY`).
    Returns ``{repo_id: {"revision", "snapshot", "dtype", "shards", "parameters"}}``; the
    revisions are :func:`fake_commit`'s.
    """
    repos = list(repos or SPECS)
    unknown = [r for r in repos if r not in SPECS]
    if unknown:
        raise KeyError(f"no rehearsal spec for {unknown}; known: {sorted(SPECS)}")
    texts = list(texts) if texts is not None else None
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    out = {}
    for repo_id in repos:
        spec, rev = SPECS[repo_id], fake_commit(repo_id)
        with tempfile.TemporaryDirectory(prefix=".build-", dir=cache_dir) as work:
            info = write_repo_files(spec, work, texts, seed, max_shard_size, **sizes)
            snap = install_snapshot(cache_dir, repo_id, rev, work)
        out[repo_id] = {"revision": rev, "snapshot": str(snap), **info}
        log.info("rehearsal hub cache: %s@%s (%s, %d parameters, %d shards) -> %s", repo_id, rev, spec.dtype,
                 info["parameters"], len(info["shards"]), snap)
    return out
