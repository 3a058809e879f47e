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
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("irrepro.rerank.hub")

__all__ = ["HubSpec", "AdapterSpecError", "parse_spec", "resolve_adapter", "HF_PREFIX"]

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


def _is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() and any(
        (path / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")
    )


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
        return path

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
    return path
