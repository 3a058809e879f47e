"""On-disk reply cache for LLM backends: a rerun of the same generation makes zero calls.

One JSON file per request under ``cache_dir/<ab>/<key>.json``, where ``key`` is the sha256 of
the backend's identity (name, model, and the endpoint without credentials, or the local model's
weight fingerprint), the messages, the resolved sampling parameters and ``json_mode`` (plus
``meta`` for backends whose reply depends on it: the offline simulator). Files are written
atomically (temp file + rename), so two processes filling the same cache at worst both call
the backend for one key and the last complete file wins; a reader never sees half a file. An
unreadable entry is logged and refetched. No secret is part of a key or a file. An entry also
keeps the reply's token ``usage`` (``{"prompt_tokens", "completion_tokens"}``, or null when the
backend reports none); :meth:`CachedBackend.usage_totals` sums it over every reply served, cached
or fetched, so a generation's stats.json says what its data cost (``irrepro plan`` reads it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from ..utils import atomic_path
from .llm.base import Backend, check_messages
from ..secrets import redact_obj

log = logging.getLogger("irrepro.syntod.cache")

KEY_VERSION = 1


def request_key(backend: Backend, messages: list[dict], sampling: dict, json_mode: bool, meta: dict | None) -> tuple[str, dict]:
    """(sha256 hex, the keyed request) for one call to ``backend``."""
    request = {
        "v": KEY_VERSION,
        "identity": backend.cache_identity(),
        "messages": messages,
        "sampling": sampling,
        "json_mode": bool(json_mode),
        "meta": meta if backend.uses_meta else None,
    }
    blob = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest(), request


class CachedBackend(Backend):
    """Wrap ``backend`` with the on-disk cache; counts ``hits``, ``misses`` and backend ``calls``."""

    def __init__(self, backend: Backend, cache_dir: str | os.PathLike):
        self.inner = backend
        self.name = backend.name
        self.model = backend.model
        self.uses_meta = backend.uses_meta
        self.defaults = backend.defaults
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = self.calls = 0
        self.last_usage: dict | None = None
        self._usage = {"replies": 0, "prompt_tokens": 0, "completion_tokens": 0, "replies_without_usage": 0}

    def path_for(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def chat(self, messages: list[dict], *, temperature: float | None = None, max_tokens: int | None = None,
             seed: int | None = None, json_mode: bool = False, meta: dict | None = None) -> str:
        check_messages(messages)
        sampling = self.inner.sampling(temperature, max_tokens, seed)
        key, request = request_key(self.inner, messages, sampling, json_mode, meta)
        path = self.path_for(key)
        entry = self._read(path, key)
        if entry is not None:
            self.hits += 1
            self._count(entry.get("usage"))
            return entry["reply"]
        self.misses += 1
        self.calls += 1
        # a key or credential the server reflected into its reply is never stored (nor returned)
        reply = self.inner.mask(self.inner.chat(messages, json_mode=json_mode, meta=meta, **sampling))
        usage = getattr(self.inner, "last_usage", None)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(redact_obj({"key": key, **request, "reply": reply, "usage": usage}),
                                            ensure_ascii=False, indent=1), encoding="utf-8")
        self._count(usage)
        return reply

    def _count(self, usage) -> None:
        ok = isinstance(usage, dict) and all(isinstance(usage.get(k), int) for k in ("prompt_tokens", "completion_tokens"))
        self.last_usage = dict(usage) if ok else None
        if ok:
            self._usage["replies"] += 1
            self._usage["prompt_tokens"] += usage["prompt_tokens"]
            self._usage["completion_tokens"] += usage["completion_tokens"]
        else:
            self._usage["replies_without_usage"] += 1

    def usage_totals(self) -> dict:
        """Token usage summed over every reply served (cache hits included; entries written before
        usage was recorded, or from backends without it, count in ``replies_without_usage``)."""
        return dict(self._usage)

    def _read(self, path: Path, key: str) -> dict | None:
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("cache: unreadable entry %s (%s); asking the backend again", path, exc)
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("reply"), str):
            log.warning("cache: entry %s is not a reply for this key; asking the backend again", path)
            return None
        return entry

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "calls": self.calls}

    def log_stats(self) -> None:
        log.info("cache %s: %d hits, %d misses, %d backend calls", self.cache_dir, self.hits, self.misses, self.calls)

    def sampling(self, temperature=None, max_tokens=None, seed=None) -> dict:
        return self.inner.sampling(temperature, max_tokens, seed)

    def cache_identity(self) -> dict:
        return self.inner.cache_identity()

    def describe(self) -> dict:
        return {**self.inner.describe(), "cache_dir": str(self.cache_dir)}

    def mask(self, text: str) -> str:
        return self.inner.mask(text)
