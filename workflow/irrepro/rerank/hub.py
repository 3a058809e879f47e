"""Published LoRA adapters: resolve an adapter spec to a local directory.

A spec is either

* a local directory holding a peft adapter (``adapter_config.json`` + weights), or
* ``hf:{repo_id}@{revision}`` or ``hf:{repo_id}@{revision}:{subfolder}``, e.g.
  ``hf:AtharvaNijasureUMass/finegrained_checkpoint_experiment_llama3@<commit>`` or
  ``hf:org/name@<commit>:checkpoint-500`` for an adapter kept in a subfolder of the repo.

The revision is **required** (a pinned commit hash is what makes a reproduction a
reproduction; a branch or tag is accepted but logged as mutable). Git ref names cannot
contain ``:``, so the first ``:`` after the ``@`` starts the subfolder.

What the published repos hold (as far as public code shows): the paper's authors load
them with ``PeftModel.from_pretrained(base, "AtharvaNijasureUMass/finegrained_checkpoint_experiment_...")``,
i.e. an adapter at the repository root; intermediate checkpoints, if published, are
reachable with the subfolder suffix (``...@rev:checkpoint-50``) or as separate revisions.

Downloads go through ``huggingface_hub.snapshot_download`` into the standard hub cache
(``HF_HUB_CACHE`` / ``HF_HOME``, read at call time), fetching only the adapter's folder (the
repo root's files, or the subfolder) and skipping trainer state (optimizer, scheduler, RNG
state). With ``HF_HUB_OFFLINE=1`` the cached snapshot is used and nothing is fetched.

The access token is taken only from the ``HF_TOKEN`` environment variable (never from a
stored login, never from params or the command line) and is never logged or written.

Uploads as the authors made them. Their trainer saves each checkpoint twice
(AtharvaNijasure/multi_stage_retrieval@cf514c3 train_pythia.py:156,171-182): peft's
``save_pretrained`` (``adapter_model.safetensors``) and then ``torch.save`` of the gathered
adapter state (``adapter_model.bin``). Under DeepSpeed ZeRO-3 the first holds partitioned,
i.e. empty, tensors (a header and no data), and peft loads ``adapter_model.safetensors``
whenever it exists. :func:`resolve_adapter` therefore checks which file holds the weights
(:func:`adapter_weights_file`) and, when only the ``.bin`` does, returns a *view*: a
directory beside the cache with ``adapter_config.json`` and ``adapter_model.bin`` linked in
and the empty file left out, so that peft loads the real weights; it logs which file it
chose. The score head may have 1 row (RankLLaMA's ``num_labels=1``) or 2 (the authors'
training build loads the classifier without ``num_labels``, train_pythia.py:96-99):
:func:`head_labels` reads it, and scoring loads the base with that many labels and reads
logit 0 (Tevatron's inference rule, texttron/tevatron@1351202
src/tevatron/reranker/driver/rerank.py:84). Other head shapes are refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("irrepro.rerank.hub")

__all__ = ["HubSpec", "AdapterSpecError", "parse_spec", "resolve_adapter", "HF_PREFIX", "adapter_weights_file",
           "safetensors_is_empty", "head_labels", "SAFETENSORS", "BIN"]

HF_PREFIX = "hf:"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# trainer state that HF Trainer checkpoints carry next to the adapter: never needed to score
_IGNORE = ["*optimizer.pt", "*scheduler.pt", "*rng_state*.pth", "*training_args.bin", "*.msgpack", "*.h5"]
_TRUTHY = {"1", "true", "yes", "on"}


class AdapterSpecError(ValueError):
    """An adapter spec that cannot be resolved (malformed, missing revision, not an adapter)."""


@dataclass(frozen=True)
class HubSpec:
    repo_id: str
    revision: str
    subfolder: str | None = None

    def __str__(self) -> str:
        return f"{HF_PREFIX}{self.repo_id}@{self.revision}" + (f":{self.subfolder}" if self.subfolder else "")


def parse_spec(spec: str) -> HubSpec:
    """Parse ``hf:{repo_id}@{revision}[:{subfolder}]``; raise :class:`AdapterSpecError` if malformed."""
    if not isinstance(spec, str) or not spec.startswith(HF_PREFIX):
        raise AdapterSpecError(f"not a hub adapter spec (expected 'hf:org/name@revision'): {spec!r}")
    body = spec[len(HF_PREFIX):]
    repo_id, at, rest = body.partition("@")
    if not at or not rest:
        raise AdapterSpecError(
            f"adapter spec {spec!r} has no revision: write 'hf:{repo_id or 'org/name'}@<commit>' "
            "(pin the commit hash shown on the repo's 'Files and versions' page; a revision is required "
            "so that a rerun loads the same weights)"
        )
    revision, colon, subfolder = rest.partition(":")
    if not _REPO_ID.match(repo_id):
        raise AdapterSpecError(f"adapter spec {spec!r}: {repo_id!r} is not a repo id of the form 'org/name'")
    if not revision or "@" in revision:
        raise AdapterSpecError(f"adapter spec {spec!r}: bad revision {revision!r}")
    sub = None
    if colon:
        sub = subfolder.strip("/")
        parts = sub.split("/")
        if not sub or any(p in ("", ".", "..") for p in parts) or any(c in sub for c in "*?[]\\"):
            raise AdapterSpecError(f"adapter spec {spec!r}: bad subfolder {subfolder!r}")
    return HubSpec(repo_id, revision, sub)


SAFETENSORS, BIN = "adapter_model.safetensors", "adapter_model.bin"
HEAD_SUFFIX = "score.weight"  # the classification head's weight, as peft saves it (see rerank.model.HEAD)
VIEWS = "irrepro-adapter-views"


def _is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() and any((path / name).is_file() for name in (SAFETENSORS, BIN))


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise AdapterSpecError(f"{path}: not a safetensors file ({len(head)} bytes)")
        (n,) = struct.unpack("<Q", head)
        try:
            return json.loads(fh.read(n))
        except ValueError as exc:
            raise AdapterSpecError(f"{path}: unreadable safetensors header: {exc}") from None


def safetensors_is_empty(path: str | os.PathLike) -> bool:
    """True if the safetensors file holds no tensor data: no tensors, or only zero-element
    ones (what a ZeRO-3 ``save_pretrained`` of partitioned parameters writes)."""
    header = _safetensors_header(Path(path))
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    return all(v["data_offsets"][0] == v["data_offsets"][1] for v in tensors.values())


def adapter_weights_file(path: str | os.PathLike) -> Path:
    """The file of ``path`` (an adapter directory) that holds the adapter's weights:
    ``adapter_model.safetensors`` unless it is missing or empty, else ``adapter_model.bin``.
    Raises :class:`AdapterSpecError` when neither holds weights."""
    path = Path(path)
    st, pt = path / SAFETENSORS, path / BIN
    if st.is_file() and not safetensors_is_empty(st):
        return st
    if pt.is_file():
        return pt
    what = f"{SAFETENSORS} is empty (header only)" if st.is_file() else f"no {SAFETENSORS}"
    raise AdapterSpecError(f"adapter {path}: {what} and there is no {BIN}: no weights to load")


def _load_weights(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def head_labels(path: str | os.PathLike) -> int | None:
    """Rows of the score head saved with the adapter at ``path`` (1 or 2), or None if it has
    no head. Any other shape raises :class:`AdapterSpecError`."""
    weights = adapter_weights_file(path)
    if weights.suffix == ".safetensors":
        shapes = {k: v["shape"] for k, v in _safetensors_header(weights).items() if k != "__metadata__"}
    else:
        shapes = {k: list(v.shape) for k, v in _load_weights(weights).items()}
    heads = {k: s for k, s in shapes.items() if k.endswith(HEAD_SUFFIX)}
    if not heads:
        return None
    rows = {s[0] if len(s) == 2 else None for s in heads.values()}
    if len(rows) != 1 or next(iter(rows)) not in (1, 2):
        raise AdapterSpecError(
            f"adapter {path}: score head of shape {sorted(map(tuple, heads.values()))} in {weights.name}: only [1, hidden] "
            "(RankLLaMA, num_labels=1) or [2, hidden] (the authors' training build, scored by logit 0) can be scored"
        )
    return int(next(iter(rows)))


def _view_of(path: Path, view: Path) -> Path:
    """``view`` (created if needed): ``path``'s adapter_config.json and adapter_model.bin
    linked in, without the empty safetensors file that peft would otherwise load."""
    wanted = {name: (path / name).resolve() for name in ("adapter_config.json", BIN)}
    if view.is_dir() and {p.name: p.resolve() for p in view.iterdir()} == wanted:
        return view
    view.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{view.name}.", dir=view.parent))
    for name, target in wanted.items():
        (tmp / name).symlink_to(target)
    if view.exists():
        import shutil

        shutil.rmtree(view)
    os.replace(tmp, view)
    return view


def _loadable(path: Path, view: Path, what: str) -> Path:
    """``path`` itself if peft would load its real weights, else a view without the empty file."""
    weights = adapter_weights_file(path)
    if weights.name == BIN and (path / SAFETENSORS).is_file():
        out = _view_of(path, view)
        log.warning("adapter %s: %s is empty (header only); loading the weights from %s (via %s)",
                    what, SAFETENSORS, BIN, out)
        return out
    log.info("adapter %s: weights from %s", what, weights.name)
    return path


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUTHY


def resolve_adapter(spec: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """Local directory of the peft adapter named by ``spec`` (see the module docstring).

    Local directories are returned as they are (after checking they hold an adapter). Hub
    specs are fetched with ``snapshot_download(repo_id, revision=..., token=$HF_TOKEN)``
    into ``cache_dir`` (default: ``$HF_HUB_CACHE``, else the library's default cache);
    with ``HF_HUB_OFFLINE=1`` only the local cache is used.
    """
    if isinstance(spec, os.PathLike) or not str(spec).startswith(HF_PREFIX):
        path = Path(spec)
        if not path.is_dir():
            raise AdapterSpecError(
                f"adapter {str(spec)!r} is neither a local directory nor a hub spec 'hf:org/name@revision'"
            )
        if not _is_adapter_dir(path):
            raise AdapterSpecError(f"{path}: no peft adapter here (adapter_config.json + adapter_model.safetensors)")
        key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        return _loadable(path, Path(tempfile.gettempdir()) / VIEWS / key, str(path))

    hub = parse_spec(str(spec))
    from huggingface_hub import snapshot_download

    if not _COMMIT.match(hub.revision):
        log.warning("adapter %s: revision %r is a branch or tag, not a commit hash; it may move", hub, hub.revision)
    cache = cache_dir if cache_dir is not None else os.environ.get("HF_HUB_CACHE") or None
    offline = _env_flag("HF_HUB_OFFLINE")
    kwargs = dict(
        revision=hub.revision,
        cache_dir=cache,
        # only from the environment; False = never fall back to a stored login token
        token=os.environ.get("HF_TOKEN") or False,
        local_files_only=offline,
        ignore_patterns=list(_IGNORE),
    )
    if hub.subfolder:
        kwargs["allow_patterns"] = [f"{hub.subfolder}/*"]
    else:
        kwargs["ignore_patterns"].append("*/*")  # root files only, not every checkpoint-* folder
    log.info("resolving adapter %s%s", hub, " (offline: local cache only)" if offline else "")
    snapshot = Path(snapshot_download(hub.repo_id, **kwargs))
    path = snapshot / hub.subfolder if hub.subfolder else snapshot
    if not _is_adapter_dir(path):
        where = f"subfolder {hub.subfolder!r} of " if hub.subfolder else ""
        raise AdapterSpecError(
            f"adapter {hub}: no peft adapter (adapter_config.json + adapter_model.safetensors) in {where}the "
            f"snapshot {snapshot}" + ("; the offline cache may be incomplete" if offline else "")
            + ("" if hub.subfolder else "; if the repo keeps checkpoints in subfolders, add ':checkpoint-N' to the spec")
        )
    log.info("adapter %s -> %s", hub, path)
    import huggingface_hub.constants as C

    views = Path(cache or C.HF_HUB_CACHE) / VIEWS / hub.repo_id.replace("/", "--") / snapshot.name
    return _loadable(path, views / (hub.subfolder or "_root"), str(hub))
