"""``OfflineSimulator``: no model at all. It fills templates from the structured request in
``meta`` (the walk's intent, slot values, item, step, results), deterministically. It is the
mini default so the pipeline runs anywhere; reports must name it as a template simulator.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re
from pathlib import Path
from typing import Any

from ...errors import InputError
from ...yamlio import load_yaml
from .base import Backend


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


# per intent, the user utterance templates: data, like the generation prompts
USER_TEMPLATES_PATH = Path(__file__).resolve().parents[2] / "resources" / "syntod" / "simulator_templates.yaml"


def load_user_templates(path: str | os.PathLike = USER_TEMPLATES_PATH) -> dict[str, list[str]]:
    """``{intent: [template, ...]}`` of a templates file; InputError names the file and the intent."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise InputError("expected a mapping of intent -> list of templates", file=path)
    for intent, templates in data.items():
        if not (isinstance(templates, list) and templates and all(isinstance(t, str) for t in templates)):
            raise InputError(f"expected a non-empty list of template strings, got {templates!r:.200}",
                             file=path, key=str(intent))
    return data


@functools.cache
def user_templates() -> dict[str, list[str]]:
    """The packaged templates, read once (on the first user turn)."""
    return load_user_templates()


@functools.cache
def user_templates_sha256() -> str:
    """sha256 of the packaged templates file: part of the reply-cache key, so an edit of the
    templates is not served the replies made from the old ones."""
    return hashlib.sha256(USER_TEMPLATES_PATH.read_bytes()).hexdigest()


_FIELD = re.compile(r"\{(\w+)\}")


def _sim_user_turn(meta: dict, rng: random.Random) -> dict:
    intent = meta.get("intent")
    if not isinstance(intent, str) or not intent:
        raise ValueError(f"OfflineSimulator user_turn: meta['intent'] must be a non-empty string, got {intent!r}")
    slots = meta.get("slots") or {}
    if not isinstance(slots, dict):
        raise ValueError(f"OfflineSimulator user_turn: meta['slots'] must be a dict, got {slots!r:.200}")
    rendered = {k: _render(v) for k, v in slots.items() if v not in (None, "", [], {})}
    templates = user_templates().get(intent, [intent.replace("_", " ").capitalize() + "."])
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
            parts.append(rng.choice(["Sure.", "Of course.", "Okay."]) + " "
                         + rng.choice(["What else can I do for you?", "How can I help next?"]))
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
        return {"backend": self.name, "model": self.model, "simulator_seed": self.seed,
                "user_templates_sha256": user_templates_sha256()}

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

