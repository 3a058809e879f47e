"""The backend interface: what every LLM backend answers, and the errors it raises.

A backend answers ``chat(messages, *, temperature, max_tokens, seed, json_mode, meta) -> str``
and has ``name``, ``model`` and ``describe()`` (a dict safe to write into reports: no secrets).
``cache_identity()`` names what, besides the request, determines a reply (the reply cache keys
on it) and ``mask()`` removes the backend's secrets from a text.
"""

from __future__ import annotations

from typing import Any

DEFAULT_SAMPLING = {"temperature": 0.0, "max_tokens": 512, "seed": 0}
ROLES = ("system", "user", "assistant")


class LLMError(RuntimeError):
    """A backend could not produce a reply (after its bounded retries)."""


class LLMHTTPError(LLMError):
    """The endpoint answered with an HTTP error that is not retried (4xx other than 429)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class JSONReplyError(LLMError):
    """No JSON object with the required keys could be obtained within the repair bound."""


def check_messages(messages: Any) -> None:
    """ValueError unless ``messages`` is a non-empty list of ``{"role", "content"}`` chat messages."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}]: expected {{'role': one of {list(ROLES)}, 'content': str}}, got {m!r:.200}")


class Backend:
    """The interface. Subclasses implement ``_chat``; ``chat`` resolves sampling defaults.

    ``temperature``/``max_tokens``/``seed`` left as None take the backend's ``defaults``
    (from the spec), so a cache key always sees the values actually used.
    """

    name = "base"
    uses_meta = False  # True if the reply depends on ``meta`` (then the cache keys on it)

    def __init__(self, model: str, defaults: dict | None = None):
        self.model = model
        unknown = set(defaults or {}) - set(DEFAULT_SAMPLING)
        if unknown:
            raise ValueError(f"unknown sampling default(s) {sorted(unknown)}; known: {sorted(DEFAULT_SAMPLING)}")
        self.defaults = {**DEFAULT_SAMPLING, **(defaults or {})}
        self.calls = 0
        # token counts of the last reply when the backend reports them (OpenAI `usage`), else None
        self.last_usage: dict | None = None

    def sampling(self, temperature: float | None = None, max_tokens: int | None = None,
                 seed: int | None = None) -> dict:
        """The sampling parameters a call with these arguments uses."""
        given = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        out = {k: self.defaults[k] if v is None else v for k, v in given.items()}
        if not (isinstance(out["temperature"], (int, float)) and out["temperature"] >= 0):
            raise ValueError(f"temperature must be a number >= 0, got {out['temperature']!r}")
        if not (isinstance(out["max_tokens"], int) and out["max_tokens"] > 0):
            raise ValueError(f"max_tokens must be a positive int, got {out['max_tokens']!r}")
        if not isinstance(out["seed"], int):
            raise ValueError(f"seed must be an int, got {out['seed']!r}")
        return out

    def chat(self, messages: list[dict], *, temperature: float | None = None, max_tokens: int | None = None,
             seed: int | None = None, json_mode: bool = False, meta: dict | None = None) -> str:
        """One assistant reply to ``messages`` (OpenAI chat format)."""
        check_messages(messages)
        params = self.sampling(temperature, max_tokens, seed)
        self.calls += 1
        self.last_usage = None
        return self._chat(messages, json_mode=bool(json_mode), meta=meta, **params)

    def _chat(self, messages, *, temperature, max_tokens, seed, json_mode, meta) -> str:
        raise NotImplementedError

    def cache_identity(self) -> dict:
        """What, besides the request, determines the reply (part of the cache key)."""
        return {"backend": self.name, "model": self.model}

    def describe(self) -> dict:
        return {"kind": self.name, "model": self.model, "defaults": dict(self.defaults)}

    def mask(self, text: str) -> str:
        """``text`` with this backend's secrets replaced by ``***``."""
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"

