"""The LLM spec: the params keys each backend kind takes (their one home) and ``make_backend``.

``syntod.llm`` and ``syntod.judge`` in params.yaml are such specs. The params schema is YAML and
lists the same keys; ``tests/test_syntod_llm.py`` fails when its lists differ from these.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from .base import DEFAULT_SAMPLING, Backend
from .http import OpenAIChatBackend
from .local import TransformersBackend
from .simulator import OfflineSimulator

log = logging.getLogger("irrepro.syntod.llm")

BACKEND_KINDS = ("openai", "transformers", "offline")
SPEC_KEYS = {
    # every kind: the kind, the model name, the sampling defaults of a call
    "common": {"kind", "model", "temperature", "max_tokens", "seed"},
    # the NAMES of the environment variables holding the key and the base URL; retries
    "openai": {"base_url_env", "api_key_env", "timeout_s", "max_retries", "backoff_base_s", "backoff_max_s"},
    # a local model directory; truncate: left | error (a prompt too long for the context)
    "transformers": {"model_dir", "device", "dtype", "truncate"},
    "offline": {"simulator_seed"},
}
# keys that would put a secret or an endpoint into a params file
FORBIDDEN_KEYS = {"api_key", "base_url", "key", "token"}


def kind_keys(kind: str) -> set[str]:
    """The spec keys a backend of ``kind`` takes (the common ones included)."""
    return SPEC_KEYS["common"] | SPEC_KEYS[kind]


def all_spec_keys() -> set[str]:
    """The spec keys some backend kind takes."""
    return set().union(*SPEC_KEYS.values())


def select_spec(spec: Mapping, where: str) -> dict:
    """The keys of a params spec that its kind takes, None values dropped. One params spec may
    carry the keys of every kind (both profiles share it); a key no kind takes is an error.
    ``where`` names the spec in messages (``"params: syntod.llm"``)."""
    if not isinstance(spec, Mapping) or spec.get("kind") not in BACKEND_KINDS:
        raise ValueError(f"{where}.kind must be {' | '.join(BACKEND_KINDS)}, got {spec!r:.100}")
    unknown = sorted(set(spec) - all_spec_keys())
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}")
    return {k: v for k, v in spec.items() if k in kind_keys(spec["kind"]) and v is not None}


def make_backend(spec: dict, cache_dir: str | os.PathLike | None = None) -> Backend:
    """A backend from a params-like dict, wrapped in a ``CachedBackend`` when ``cache_dir`` is given.

    ``spec``: ``kind`` (one of :data:`BACKEND_KINDS`) and the keys :data:`SPEC_KEYS` gives that
    kind. Unknown keys, and keys that would put a secret into a params file, are errors.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"backend spec must be a mapping, got {spec!r:.100}")
    kind = spec.get("kind")
    if kind not in BACKEND_KINDS:
        raise ValueError(f"backend spec: kind must be {' | '.join(BACKEND_KINDS)}, got {kind!r}")
    forbidden = sorted(FORBIDDEN_KEYS & set(spec))
    if forbidden:
        raise ValueError(f"backend spec: {forbidden} not allowed: the key and base URL come only from the "
                         f"environment (name the variables with api_key_env / base_url_env)")
    unknown = sorted(set(spec) - kind_keys(kind))
    if unknown:
        raise ValueError(f"backend spec ({kind}): unknown key(s) {unknown}; allowed: {sorted(kind_keys(kind))}")
    defaults = {k: spec[k] for k in DEFAULT_SAMPLING if spec.get(k) is not None}
    if kind == "openai":
        if not spec.get("model"):
            raise ValueError("backend spec (openai): 'model' is required")
        backend: Backend = OpenAIChatBackend(
            spec["model"], api_key_env=spec.get("api_key_env", "OPENAI_API_KEY"),
            base_url_env=spec.get("base_url_env", "OPENAI_BASE_URL"), timeout=spec.get("timeout_s", 60.0),
            max_retries=spec.get("max_retries", 5), backoff_base=spec.get("backoff_base_s", 1.0),
            backoff_max=spec.get("backoff_max_s", 30.0), defaults=defaults)
    elif kind == "transformers":
        if not spec.get("model_dir"):
            raise ValueError("backend spec (transformers): 'model_dir' is required")
        backend = TransformersBackend(spec["model_dir"], model_name=spec.get("model"), device=spec.get("device", "cpu"),
                                      dtype=spec.get("dtype", "float32"), truncate=spec.get("truncate", "left"),
                                      defaults=defaults)
    else:
        backend = OfflineSimulator(seed=spec.get("simulator_seed", 0), defaults=defaults)
    log.info("LLM backend: %s", backend.describe())
    if cache_dir is None:
        return backend
    from ..cache import CachedBackend

    return CachedBackend(backend, cache_dir)
