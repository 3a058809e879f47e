"""JSON replies: ``chat_json`` turns a reply into a JSON object, by local repair of the usual
breakage first (``repair_json``), then a bounded number of corrective re-asks."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from .base import Backend, JSONReplyError

log = logging.getLogger("irrepro.syntod.llm")

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

