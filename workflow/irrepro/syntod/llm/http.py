"""An OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, Ollama's ``/v1``) over
plain ``requests``, so retries and timeouts are ours and testable: bounded exponential backoff
with jitter on 429 (``Retry-After`` honoured), 5xx, timeouts and connection errors; any other
4xx fails at once with the server's message. The key and the base URL come only from
environment variables (named in params, never their values) and the key is masked out of every
message this module produces.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ...secrets import redact, register_secret, register_url
from .base import Backend, LLMError, LLMHTTPError

log = logging.getLogger("irrepro.syntod.llm")

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
MAX_RETRY_AFTER_S = 600.0  # a Retry-After beyond this is capped (and logged)


def public_url(url: str) -> str:
    """``url`` without user info, query and fragment: safe to log and to key a cache on."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class OpenAIChatBackend(Backend):
    """An OpenAI-compatible chat-completions endpoint over HTTP (OpenAI, vLLM, Ollama ``/v1``).

    The key is read from ``$api_key_env`` (optional: local vLLM/Ollama servers need none) and the
    base URL from ``base_url`` or ``$base_url_env`` (default: the OpenAI API). Both stay private:
    ``describe()``, logs and exceptions show the endpoint without credentials and mask the key.
    """

    name = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 base_url_env: str = "OPENAI_BASE_URL", timeout: float = 60.0, max_retries: int = 5,
                 backoff_base: float = 1.0, backoff_max: float = 30.0, defaults: dict | None = None):
        import requests

        super().__init__(model, defaults)
        for label, value in (("timeout", timeout), ("backoff_base", backoff_base), ("backoff_max", backoff_max)):
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{label} must be a number >= 0, got {value!r}")
        if not (isinstance(max_retries, int) and max_retries >= 0):
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        url = base_url or os.environ.get(base_url_env) or DEFAULT_OPENAI_URL
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"base URL (from {'base_url' if base_url else '$' + base_url_env}) must be http(s)://..., "
                             f"got {public_url(url)!r}")
        parts = urlsplit(url)
        # Credentials in the URL (a gateway's basic auth) are sent as such, never logged or keyed on.
        self._basic_auth = (parts.username or "", parts.password or "") if parts.username else None
        self._base_url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")
        self.endpoint = public_url(url)
        self.api_key_env = api_key_env
        self.base_url_env = base_url_env
        self._api_key = os.environ.get(api_key_env) or None
        self._secrets = [s for s in (self._api_key, parts.password) if s]
        register_secret(self._api_key)  # masked (raw and base64) in every message and cache entry
        register_url(url)
        if self._api_key and self._basic_auth:
            log.warning("%s: both $%s and credentials in the base URL are set; using the API key", self.endpoint, api_key_env)
            self._basic_auth = None
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.requests = 0  # HTTP attempts, retries included
        self._requests = requests
        self._session = requests.Session()
        self._sleep = time.sleep
        self._jitter = random.Random()  # only spaces retries out; never affects a reply
        if self._api_key is None:
            log.info("%s: $%s is not set; sending requests without an API key", self.endpoint, api_key_env)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact(text)  # Authorization headers (basic, bearer; raw and base64) echoed by a server

    def cache_identity(self) -> dict:
        return {"backend": self.name, "model": self.model, "endpoint": self.endpoint}

    def describe(self) -> dict:
        return {
            "kind": self.name, "model": self.model, "endpoint": self.endpoint,
            "api_key_env": self.api_key_env, "api_key_set": self._api_key is not None,
            "timeout_s": self.timeout, "max_retries": self.max_retries,
            "backoff_base_s": self.backoff_base, "backoff_max_s": self.backoff_max,
            "defaults": dict(self.defaults),
        }

    def backoff(self, attempt: int) -> float:
        """Delay before retry ``attempt`` (1-based): exponential, capped, with equal jitter."""
        cap = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return cap / 2 + self._jitter.uniform(0, cap / 2)

    def _chat(self, messages, *, temperature, max_tokens, seed, json_mode, meta) -> str:
        req = self._requests
        payload = {"model": self.model, "messages": messages, "temperature": temperature,
                   "max_tokens": max_tokens, "seed": seed}
        if json_mode:
            payload["response_format"] = {"type": "json_object"}
        if meta and os.environ.get("IRREPRO_LLM_SEND_META") == "1":
            # the rehearsal's server (irrepro.rehearsal.llmserve) answers from the structured
            # request; never set for a real API
            payload["irrepro_meta"] = meta
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(1, attempts + 1):
            self.requests += 1
            retry_after = None
            try:
                resp = self._session.post(self._base_url + "/chat/completions", json=payload,
                                          headers=headers, auth=self._basic_auth, timeout=self.timeout)
            except req.Timeout:
                last = f"no answer within the {self.timeout:g} s timeout"
            except (req.ConnectionError, req.exceptions.ChunkedEncodingError) as exc:
                last = f"connection error: {self.mask(str(exc))[:300]}"
            except req.RequestException as exc:
                raise LLMError(f"{self.endpoint}: request failed ({type(exc).__name__}): {self.mask(str(exc))[:300]}") from None
            else:
                code = resp.status_code
                if code == 200:
                    return self._content(resp)
                message = self.mask(_server_message(resp))
                if code != 429 and code < 500:
                    raise LLMHTTPError(f"{self.endpoint}: HTTP {code} from /chat/completions "
                                       f"(model {self.model!r}; not retried): {message}", code)
                last = f"HTTP {code}: {message}"
                retry_after = _retry_after(resp.headers.get("Retry-After"))
            if attempt == attempts:
                break
            delay = self.backoff(attempt) if retry_after is None else retry_after
            log.warning("%s: %s; retry %d/%d in %.2f s", self.endpoint, last, attempt, self.max_retries, delay)
            self._sleep(delay)
        raise LLMError(f"{self.endpoint}: gave up after {attempts} attempt(s) (max_retries={self.max_retries}); "
                       f"last error: {last}")

    def _content(self, resp) -> str:
        try:
            body = resp.json()
            choice = body["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError(f"{self.endpoint}: HTTP 200 but not a chat-completions response: "
                           f"{self.mask(resp.text)[:300]!r}") from None
        self.last_usage = reply_usage(body)
        if not isinstance(content, str):
            raise LLMError(f"{self.endpoint}: the reply has no text content (finish_reason "
                           f"{choice.get('finish_reason')!r})")
        if choice.get("finish_reason") == "length":
            log.warning("%s: reply cut at max_tokens (finish_reason=length)", self.endpoint)
        return content


def reply_usage(body: Any) -> dict | None:
    """``{"prompt_tokens", "completion_tokens"}`` of a chat-completions response (None if the
    server sent no ``usage``, e.g. some Ollama versions; irrepro plan calibrates LLM costs from it)."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return None
    out = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens")}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in out.values()):
        return None
    return out


def _server_message(resp) -> str:
    """The error message an OpenAI-style server put in its body, else the body's start."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        for value in (err, body.get("message"), body.get("detail")):
            if isinstance(value, str) and value:
                return value[:500]
    return (resp.text or resp.reason or "").strip()[:500]


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), capped."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    if seconds > MAX_RETRY_AFTER_S:
        log.warning("Retry-After %.0f s capped at %.0f s", seconds, MAX_RETRY_AFTER_S)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
