"""LLM backends for SynTOD response simulation, behind one interface.

Every backend answers ``chat(messages, *, temperature, max_tokens, seed, json_mode, meta) -> str``
and has ``name``, ``model`` and ``describe()`` (a dict safe to write into reports: no secrets).

- ``OpenAIChatBackend``: any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM,
  Ollama's ``/v1``) over plain ``requests``, so retries and timeouts are ours and testable:
  bounded exponential backoff with jitter on 429 (``Retry-After`` honoured), 5xx, timeouts and
  connection errors; any other 4xx fails at once with the server's message. The key and the base
  URL come only from environment variables (named in params, never their values) and the key is
  masked out of every message this module produces.
- ``TransformersBackend``: a local causal LM directory (greedy, or sampled with a seed).
- ``OfflineSimulator``: no model at all. It fills templates from the structured request in
  ``meta`` (the walk's intent, slot values, item, step, results), deterministically. It is the
  mini default so the pipeline runs anywhere; reports must name it as a template simulator.

``chat_json`` turns a reply into a JSON object: local repair of the usual breakage first
(``repair_json``), then a bounded number of corrective re-asks. ``make_backend`` builds a
(cached, see ``cache.py``) backend from a params-like dict.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import random
import re
import time
from pathlib import Path
from typing import Any
from ..secrets import redact, register_secret, register_url
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("irrepro.syntod.llm")

DEFAULT_SAMPLING = {"temperature": 0.0, "max_tokens": 512, "seed": 0}
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
MAX_RETRY_AFTER_S = 600.0  # a Retry-After beyond this is capped (and logged)
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


def public_url(url: str) -> str:
    """``url`` without user info, query and fragment: safe to log and to key a cache on."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _check_messages(messages: Any) -> None:
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
        _check_messages(messages)
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


# --------------------------------------------------------------------------- OpenAI-compatible


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


# --------------------------------------------------------------------------- local transformers


def build_prompt(tokenizer, messages: list[dict]) -> str:
    """The tokenizer's chat template if it has one, else plain ``role: content`` lines."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def _dir_fingerprint(path: Path) -> str:
    """sha256 over the names and contents of a model directory's files (the weights' identity)."""
    from ..utils import sha256_file

    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


class TransformersBackend(Backend):
    """A local causal LM (``AutoModelForCausalLM`` + tokenizer) loaded on first use.

    Greedy at temperature 0, otherwise sampled with ``torch`` seeded per call (the global RNG
    state is restored afterwards). ``json_mode`` cannot be enforced on a local model; callers
    use ``chat_json`` which repairs or re-asks. Prompts longer than the model's context minus
    ``max_tokens`` are cut from the left (``truncate="left"``, logged) or rejected ("error").
    """

    name = "transformers"

    def __init__(self, model_dir: str | os.PathLike, *, model_name: str | None = None, device: str = "cpu",
                 dtype: str = "float32", truncate: str = "left", defaults: dict | None = None):
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a transformers model directory (no config.json)")
        if truncate not in ("left", "error"):
            raise ValueError(f"truncate must be 'left' or 'error', got {truncate!r}")
        super().__init__(model_name or path.resolve().name, defaults)
        self.model_dir = path
        self.device = device
        self.dtype = dtype
        self.truncate = truncate
        self.fingerprint = _dir_fingerprint(path)
        self.truncated = 0
        self._tok = self._lm = None

    def _load(self):
        if self._lm is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.model_dir)
            self._lm = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=getattr(torch, self.dtype))
            self._lm.to(self.device).eval()
            log.info("transformers: loaded %s (%s, %s)", self.model_dir, self.device, self.dtype)
        return self._tok, self._lm

    def cache_identity(self) -> dict:
        return {"backend": self.name, "model": self.model, "fingerprint": self.fingerprint}

    def describe(self) -> dict:
        return {"kind": self.name, "model": self.model, "model_dir": str(self.model_dir),
                "fingerprint": self.fingerprint, "device": self.device, "dtype": self.dtype,
                "defaults": dict(self.defaults)}

    def _chat(self, messages, *, temperature, max_tokens, seed, json_mode, meta) -> str:
        import torch

        tok, lm = self._load()
        templated = bool(getattr(tok, "chat_template", None))
        ids = tok(build_prompt(tok, messages), return_tensors="pt", add_special_tokens=not templated)["input_ids"]
        limit = getattr(lm.config, "max_position_embeddings", None)
        if limit is not None and ids.shape[1] + max_tokens > limit:
            keep = limit - max_tokens
            if self.truncate == "error" or keep < 1:
                raise ValueError(f"{self.model}: prompt of {ids.shape[1]} tokens + max_tokens {max_tokens} "
                                 f"exceeds the model's {limit} positions")
            log.warning("%s: prompt of %d tokens cut to its last %d", self.model, ids.shape[1], keep)
            ids = ids[:, -keep:]
            self.truncated += 1
        ids = ids.to(self.device)
        gen = {"max_new_tokens": max_tokens, "do_sample": temperature > 0,
               "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id}
        if temperature > 0:
            gen["temperature"] = float(temperature)
        with torch.random.fork_rng(devices=[] if self.device == "cpu" else None), torch.no_grad():
            torch.manual_seed(seed)
            out = lm.generate(ids, attention_mask=torch.ones_like(ids), **gen)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


# --------------------------------------------------------------------------- offline simulator


def _render(value: Any) -> str:
    """A slot value as it appears in an utterance: lists joined, attribute dicts as key: value."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_render(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_render(v) for v in value)
    return str(value)


def _title(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("title") or item.get("name") or item.get("id") or _render(item))
    return str(item)


USER_TEMPLATES = {
    "search_recipe": ["Can you find me a recipe for {query}?", "I'm looking for {query} recipes.", "Search for {query}, please."],
    "suggest_recipe": ["I'd like to make something like {query}. Any ideas?", "Suggest a recipe with {query}.",
                       "What could I cook? Something {query}."],
    "search_product": ["I'd like to see {product_name}.", "Show me {query}.", "I'm looking for {query}."],
    "suggest_product": ["Can you suggest {query}?", "I need something like {query}. Any suggestions?"],
    "generic_product_query": ["Show me some {query}.", "What do you have in {query}?", "Show me some products."],
    "user_clarifies": ["I mean {query}.", "To clarify: {query}."],
    "more_results": ["Show me more results.", "Do you have other options?", "Any more?"],
    "select_i": ["Let's go with number {selection}.", "I'll take option {selection}.", "Number {selection}, please."],
    "begin_task": ["Let's start cooking.", "I'm ready, give me the first step."],
    "next_step": ["What's next?", "Next step, please.", "Done, what do I do now?"],
    "done_step": ["I'm done with this step.", "Finished, that step is done."],
    "acknowledge_step": ["Got it.", "Okay, that's clear."],
    "acknowledge_task": ["Sounds good, let's make this one.", "Great, I'll go with that recipe."],
    "goto_step": ["Take me to step {step}.", "Go to step {step}, please."],
    "show_ingredients": ["What ingredients do I need?", "Show me the ingredients."],
    "in_task_qa": ["{question}", "Quick question about this step: {question}"],
    "product_qa": ["{question}", "About this product: {question}"],
    "open_domain_qa": ["{question}", "Something else: {question}"],
    "chitchat": ["How is your day going?", "Do you like your job?", "Tell me something fun."],
    "set_timer": ["Set a timer for {duration}.", "Please start a {duration} timer."],
    "finish_task": ["I'm done, thanks!", "That's all, we're finished."],
    "show_attributes": ["What are its features?", "Tell me more about its attributes."],
    "add_to_cart": ["Add it to my cart.", "Put this one in the cart, please."],
    "remove_from_cart": ["Remove it from my cart.", "Take that out of the cart."],
    "show_cart": ["Show me my cart.", "What's in my cart?"],
    "buy_cart": ["I'd like to buy what's in my cart.", "Let's check out."],
    "add_for_compare": ["Add this one for comparison.", "I want to compare this one too."],
    "remove_from_comparison": ["Remove it from the comparison.", "Drop that one from the compare list."],
    "compare_products": ["Compare {list_of_products}.", "How do {list_of_products} compare?"],
    "delivery_address": ["Can you deliver it to {address}?", "Please ship to {address}."],
    "acknowledge": ["Okay, sounds good.", "Great, thanks."],
    "repeat": ["Sorry, can you repeat that?", "Could you say that again?"],
}
_FIELD = re.compile(r"\{(\w+)\}")


def _sim_user_turn(meta: dict, rng: random.Random) -> dict:
    intent = meta.get("intent")
    if not isinstance(intent, str) or not intent:
        raise ValueError(f"OfflineSimulator user_turn: meta['intent'] must be a non-empty string, got {intent!r}")
    slots = meta.get("slots") or {}
    if not isinstance(slots, dict):
        raise ValueError(f"OfflineSimulator user_turn: meta['slots'] must be a dict, got {slots!r:.200}")
    rendered = {k: _render(v) for k, v in slots.items() if v not in (None, "", [], {})}
    templates = USER_TEMPLATES.get(intent, [intent.replace("_", " ").capitalize() + "."])
    usable = [t for t in templates if set(_FIELD.findall(t)) <= set(rendered)] or [intent.replace("_", " ").capitalize() + "."]
    template = rng.choice(usable)
    text = template.format(**rendered)
    missing = [f"{k.replace('_', ' ')}: {v}" for k, v in rendered.items() if v not in text]
    if missing:
        text += " (" + "; ".join(missing) + ")"
    return {"text": text, "intent": intent, "slots": slots}


def _sim_system_turn(meta: dict, rng: random.Random) -> dict:
    """Compose the reply from whatever grounding the request carries (results, step, item, lists)."""
    out: dict = {}
    parts = []
    item = meta.get("item")
    results = meta.get("results") or []
    step = meta.get("step")
    if results:
        query = meta.get("query") or (meta.get("slots") or {}).get("query")
        head = rng.choice(["Here is what I found", "I found these options", "Take a look at these"])
        parts.append(f"{head}{' for ' + _render(query) if query else ''}:")
        parts += [f"{i}. {_title(r)}" for i, r in enumerate(results, 1)]
        parts.append(rng.choice(["Which one would you like?", "Does any of these look good?"]))
        out["selected_ids"] = list(range(1, len(results) + 1))
    elif isinstance(step, dict):
        parts.append(f"Step {step.get('number', '?')}: {step.get('text', '')}".rstrip())
        parts.append(rng.choice(["Let me know when you're done.", "Tell me when you're ready for the next step."]))
    elif step is not None:
        parts.append(f"Step {step}.")
    if meta.get("ingredients"):
        parts.append("You will need: " + _render(meta["ingredients"]) + ".")
    if item and not results:
        parts.insert(0, f"{_title(item)}" + (f": {item['description']}" if isinstance(item, dict) and item.get("description") else "."))
    for key, label in (("cart", "Your cart contains"), ("compare", "Your comparison list has")):
        if meta.get(key) is not None:
            parts.append(f"{label}: {_render([_title(x) for x in meta[key]]) or 'nothing yet'}.")
            if key == "cart":
                out["product_ids"] = list(range(1, len(meta[key]) + 1))
    if meta.get("answer"):
        parts.append(str(meta["answer"]))
    if not parts:
        state = str(meta.get("state") or meta.get("intent") or "")
        if state in ("start", "greeting", "welcome"):
            parts.append(f"Hello! I'm a taskbot that can help you with {meta.get('domain', 'your task')}. What would you like to do?")
        else:
            parts.append(rng.choice(["Sure.", "Of course.", "Okay."]) + " " + rng.choice(["What else can I do for you?", "How can I help next?"]))
    out["text"] = "\n".join(parts)
    return out


def _naive_slot(typ: str, value: Any, rng: random.Random) -> Any:
    """A naive-mode slot value: the given one, else a guess by slot type (no walk state)."""
    if value not in (None, "", [], {}):
        return value
    return {"selection": rng.randint(1, 3), "id_list": [1, 2, 3], "duration": "10 minutes",
            "address": "United States", "attributes": []}.get(typ, "something")


def _sim_naive_conversation(meta: dict, rng: random.Random) -> dict:
    """A whole conversation in one reply, honestly naive: user intents drawn uniformly from the
    intent list in random order (no graph, no constraints), slots from ``slot_values`` or a guess
    by type, assistant turns without retrieval or grounding blocks."""
    intents = meta.get("intents")
    if not isinstance(intents, list) or not intents:
        raise ValueError(f"OfflineSimulator naive_conversation: meta['intents'] must be a non-empty list, got {intents!r:.200}")
    types = meta.get("slots") or {}
    values = meta.get("slot_values") or {}
    item = meta.get("item")
    n_turns = meta.get("n_turns") or rng.randint(4, 12)
    parts = [f"### ASSISTANT: Hello! I'm a taskbot that can help you with {meta.get('domain', 'your task')}. "
             "What would you like to do?"]
    for _ in range(int(n_turns)):
        intent = rng.choice(intents)
        slots = {k: _naive_slot(t, values.get(k), rng) for k, t in (types.get(intent) or {}).items()}
        user = _sim_user_turn({"intent": intent, "slots": slots}, rng)
        parts.append(f"### HUMAN: {user['text']} ## {json.dumps({'intent': intent, **slots})}")
        reply = _sim_system_turn({"state": intent, "item": item if rng.random() < 0.5 else None}, rng)
        parts.append(f"### ASSISTANT: {reply['text']}")
    return {"text": " ".join(parts)}


class OfflineSimulator(Backend):
    """A deterministic template simulator, NOT a language model (the mini default).

    ``meta`` carries the structured request and is all it reads; the messages are ignored:
    - ``{"task": "user_turn", "intent": str, "slots": {...}}`` -> an utterance that contains
      every non-empty slot value verbatim; JSON: ``{"text", "intent", "slots"}``.
    - ``{"task": "system_turn", "state"?, "domain"?, "item"?, "results"?: [...], "query"?,
      "step"?: {"number", "text"} | int, "ingredients"?, "cart"?, "compare"?, "answer"?}`` -> a reply
      that mentions the results' titles, the step text, the item; JSON: ``{"text", "selected_ids"?,
      "product_ids"?}``.
    - ``{"task": "naive_conversation", "domain", "intents": [...], "slots"?: {intent: {slot: type}},
      "slot_values"?: {slot: value}, "item"?, "n_turns"?}`` -> a whole annotated conversation
      (``### ASSISTANT: ... ### HUMAN: ... ## {...}``) with intents in random order and no
      graph constraints (the naive baseline); JSON: ``{"text"}``.
    The same (simulator seed, call seed, meta) always gives the same reply, whatever the call
    order; temperature and max_tokens are ignored.
    """

    name = "offline"
    uses_meta = True
    TASKS = {"user_turn": _sim_user_turn, "system_turn": _sim_system_turn,
             "naive_conversation": _sim_naive_conversation}

    def __init__(self, seed: int = 0, defaults: dict | None = None):
        super().__init__("template-simulator-v1", defaults)
        self.seed = seed

    def cache_identity(self) -> dict:
        return {"backend": self.name, "model": self.model, "simulator_seed": self.seed}

    def describe(self) -> dict:
        return {"kind": self.name, "model": self.model, "seed": self.seed,
                "note": "deterministic template simulator, not an LLM: turn texts are filled from templates "
                        "with the walk's intents, slot values and items"}

    def _chat(self, messages, *, temperature, max_tokens, seed, json_mode, meta) -> str:
        task = (meta or {}).get("task")
        if task not in self.TASKS:
            raise ValueError(f"OfflineSimulator needs meta={{'task': one of {sorted(self.TASKS)}, ...}}, got task {task!r}")
        digest = hashlib.sha256(json.dumps([self.seed, seed, meta], sort_keys=True, default=str).encode()).digest()
        reply = self.TASKS[task](meta, random.Random(digest))
        return json.dumps(reply, ensure_ascii=False) if json_mode else reply["text"]


# --------------------------------------------------------------------------- JSON replies

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.S)
_LITERALS = {"True": "true", "False": "false", "None": "null"}


def _close_json(text: str) -> str:
    """Rewrite near-JSON into JSON: single-quoted strings, trailing commas, Python literals,
    a truncated end (open string/brackets closed, a dangling key or comma dropped), prose after
    the top-level value dropped. ``text`` starts at the value's opening bracket."""
    out: list[str] = []
    stack: list[str] = []
    cuts: list[tuple[int, list[str]]] = []  # (len(out), stack) at each structural comma
    quote = None
    i = 0

    def drop_trailing_comma():
        j = len(out) - 1
        while j >= 0 and out[j].isspace():
            j -= 1
        if j >= 0 and out[j] == ",":
            del out[j]

    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and i + 1 < len(text):
                nxt = text[i + 1]
                out.append(nxt if (nxt == "'" and quote == "'") else c + nxt)
                i += 2
                continue
            if c == quote:
                out.append('"')
                quote = None
            elif c == '"':
                out.append('\\"')
            else:
                out.append(c)
        elif c in "\"'":
            quote = c
            out.append('"')
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
            out.append(c)
        elif c in "}]":
            drop_trailing_comma()
            if stack and stack[-1] == c:
                stack.pop()
            out.append(c)
            if not stack:
                return "".join(out)
        elif c == ",":
            cuts.append((len(out), list(stack)))
            out.append(c)
        elif c.isalpha():
            m = re.match(r"[A-Za-z_]\w*", text[i:])
            word = m.group(0)
            out.append(_LITERALS.get(word, word))
            i += len(word)
            continue
        else:
            out.append(c)
        i += 1
    # Truncated: close what is open; if that is not valid, fall back to the last whole element.
    if quote:
        out.append('"')
    candidates = []
    tail = "".join(out).rstrip()
    if tail.endswith(":"):
        tail += " null"
    candidates.append(tail.rstrip(",") + "".join(reversed(stack)))
    for n, st in reversed(cuts):
        candidates.append("".join(out[:n]) + "".join(reversed(st)))
    for cand in candidates:
        try:
            json.loads(cand, strict=False)
            return cand
        except ValueError:
            continue
    return candidates[0]


def repair_json(text: str) -> Any:
    """Parse a model's JSON reply, repairing common breakage; ValueError if beyond repair.

    Handles code fences, prose before/after the value, single quotes, trailing commas,
    Python ``True/False/None`` and a reply truncated before its closing brackets.
    """
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    fence = _FENCE.search(text)
    if fence:
        text = fence.group(1).strip()
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        raise ValueError("no JSON object or array in the reply")
    fixed = _close_json(text[min(starts):])
    try:
        return json.loads(fixed, strict=False)
    except ValueError as exc:
        raise ValueError(f"not repairable JSON ({exc})") from None


def parse_reply(text: str, required_keys: list[str] | tuple[str, ...] = ()) -> dict:
    """The reply as a JSON object that has ``required_keys``; ValueError saying what is wrong."""
    obj = repair_json(text)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got a JSON {type(obj).__name__}")
    missing = [k for k in required_keys if k not in obj]
    if missing:
        raise ValueError(f"the JSON object lacks the required key(s) {missing}")
    return obj


def chat_json(backend: Backend, messages: list[dict], *, required_keys: list[str] | tuple[str, ...] = (),
              max_repairs: int = 2, **sampling) -> dict:
    """Ask in JSON mode and return the reply as a dict with ``required_keys``.

    A broken reply is first repaired locally; if that fails, the conversation is extended with
    the bad reply and a corrective instruction and asked again, at most ``max_repairs`` times.
    Through a ``CachedBackend`` the whole exchange is replayed from the cache on a rerun.
    """
    msgs = list(messages)
    reply = ""
    error = ""
    for attempt in range(max_repairs + 1):
        reply = backend.chat(msgs, json_mode=True, **sampling)
        try:
            obj = parse_reply(reply, required_keys)
        except ValueError as exc:
            error = str(exc)
            log.info("chat_json: reply %d unusable (%s)%s", attempt + 1, error,
                     "; re-asking" if attempt < max_repairs else "")
            keys = f" with the keys {list(required_keys)}" if required_keys else ""
            msgs = msgs + [
                {"role": "assistant", "content": reply},
                {"role": "user", "content": f"That reply was not usable: {error}. Answer again with only one "
                                            f"valid JSON object{keys}, no prose and no code fences."},
            ]
            continue
        return obj
    snippet = backend.mask(reply)[:200]
    raise JSONReplyError(f"{backend.name}/{backend.model}: no usable JSON after {max_repairs + 1} replies "
                         f"(max_repairs={max_repairs}); last error: {error}; last reply starts {snippet!r}")


# --------------------------------------------------------------------------- factory

SPEC_KEYS = {
    "common": {"kind", "model", "temperature", "max_tokens", "seed"},
    "openai": {"base_url_env", "api_key_env", "timeout_s", "max_retries", "backoff_base_s", "backoff_max_s"},
    "transformers": {"model_dir", "device", "dtype", "truncate"},
    "offline": {"simulator_seed"},
}
FORBIDDEN_KEYS = {"api_key", "base_url", "key", "token"}


def make_backend(spec: dict, cache_dir: str | os.PathLike | None = None) -> Backend:
    """A backend from a params-like dict, wrapped in a ``CachedBackend`` when ``cache_dir`` is given.

    ``spec``: ``kind`` (openai | transformers | offline), ``model``; sampling defaults
    ``temperature``, ``max_tokens``, ``seed``; openai: ``base_url_env``, ``api_key_env`` (the
    NAMES of environment variables), ``timeout_s``, ``max_retries``, ``backoff_base_s``,
    ``backoff_max_s``; transformers: ``model_dir``, ``device``, ``dtype``, ``truncate``; offline:
    ``simulator_seed``. Unknown keys, and keys that would put a secret into a params file, are errors.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"backend spec must be a mapping, got {spec!r:.100}")
    kind = spec.get("kind")
    if kind not in ("openai", "transformers", "offline"):
        raise ValueError(f"backend spec: kind must be openai | transformers | offline, got {kind!r}")
    forbidden = sorted(FORBIDDEN_KEYS & set(spec))
    if forbidden:
        raise ValueError(f"backend spec: {forbidden} not allowed: the key and base URL come only from the "
                         f"environment (name the variables with api_key_env / base_url_env)")
    unknown = sorted(set(spec) - SPEC_KEYS["common"] - SPEC_KEYS[kind])
    if unknown:
        raise ValueError(f"backend spec ({kind}): unknown key(s) {unknown}; allowed: "
                         f"{sorted(SPEC_KEYS['common'] | SPEC_KEYS[kind])}")
    defaults = {k: spec[k] for k in ("temperature", "max_tokens", "seed") if spec.get(k) is not None}
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
    from .cache import CachedBackend

    return CachedBackend(backend, cache_dir)
