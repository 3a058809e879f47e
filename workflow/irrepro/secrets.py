"""Masking of credentials in anything the project writes: messages, logs, cache entries.

:func:`redact` replaces, in any text,
- the user info of URLs (``https://user:pass@host`` -> ``https://***@host``);
- the credentials of ``Authorization`` headers, basic and bearer (``Basic ***``,
  ``Bearer ***``), whatever quoting surrounds them;
- every registered secret, raw and base64-encoded, and the base64 of a ``user:password`` pair
  (what a basic-auth header carries, e.g. echoed back by a server).
Secrets are registered by the code that reads them (:func:`register_secret`) and, once per
process, from the environment: the value of every variable whose name says it holds a secret
(``*KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``) and the credentials inside URL-valued
variables (``OPENAI_BASE_URL``). Values shorter than :data:`MIN_SECRET_LEN` are not masked
(masking ``"1"`` everywhere would destroy the text and protect nothing).
:func:`is_secret_key` says whether a config key names a secret whose value must never be
printed (used by the params validation).
"""

from __future__ import annotations

import base64
import os
import re
from urllib.parse import unquote, urlsplit

MASK = "***"
MIN_SECRET_LEN = 6
SECRET_KEYS = {"api_key", "apikey", "key", "token", "secret", "password", "passwd", "base_url", "authorization"}
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<info>[^/@\s'\"]+)@")
_BEARER = re.compile(r"(?P<kind>\b[Bb]earer)(?P<sep>\s+)(?P<cred>[A-Za-z0-9._~+/=-]{8,})")
_BASIC = re.compile(r"(?P<kind>\b[Bb]asic)(?P<sep>\s+)(?P<cred>[A-Za-z0-9+/]{4,}={0,2})")
_registered: set[str] = set()
_env_loaded: dict[str, str] | None = None


def is_secret_key(name: str) -> bool:
    """Whether a config key names a secret (its value is never printed)."""
    n = str(name).lower()
    return n in SECRET_KEYS or any(s in n for s in ("password", "secret")) or n.endswith(("_key", "_token"))


def _variants(value: str) -> set[str]:
    out = {value}
    for enc in (value.encode("utf-8"),):
        b = base64.b64encode(enc).decode("ascii")
        out |= {b, b.rstrip("="), base64.urlsafe_b64encode(enc).decode("ascii").rstrip("=")}
    return {v for v in out if len(v) >= MIN_SECRET_LEN}


def register_secret(value: str | None, user: str | None = None) -> None:
    """Mask ``value`` (raw and base64) from now on; with ``user``, also ``base64(user:value)``."""
    if not value:
        return
    if len(value) >= MIN_SECRET_LEN:
        _registered.update(_variants(value))
    if user is not None:
        _registered.update(_variants(f"{user}:{value}"))


def register_url(url: str | None) -> None:
    """Register the credentials inside a URL's user info."""
    if not url or "@" not in url:
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if parts.password:
        register_secret(parts.password, user=parts.username or "")
        register_secret(unquote(parts.password), user=unquote(parts.username or ""))
    elif parts.username:
        register_secret(parts.username)


def _load_env() -> None:
    global _env_loaded
    snapshot = {k: v for k, v in os.environ.items() if _SECRET_ENV.search(k) or "://" in v}
    if snapshot == _env_loaded:
        return
    _env_loaded = snapshot
    for name, value in snapshot.items():
        if "://" in value:
            register_url(value)
        elif _SECRET_ENV.search(name) and not name.endswith(("_ENV", "_PATH", "_FILE", "_DIR")):
            register_secret(value)


def _is_basic_cred(cred: str) -> bool:
    """Whether ``cred`` is what a basic-auth header carries: base64 of ``user:password``."""
    try:
        return ":" in base64.b64decode(cred + "=" * (-len(cred) % 4), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False


def redact(text: str) -> str:
    """``text`` with every credential this module knows of replaced by ``***``."""
    if not text:
        return text
    _load_env()
    text = _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
    text = _BEARER.sub(lambda m: m.group("kind") + m.group("sep") + MASK, text)
    text = _BASIC.sub(lambda m: m.group("kind") + m.group("sep") + MASK if _is_basic_cred(m.group("cred"))
                      else m.group(0), text)
    for secret in sorted(_registered, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_obj(obj):
    """``obj`` (JSON-like) with :func:`redact` applied to every string, keys included."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj
