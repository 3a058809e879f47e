"""The SynTOD conversation format: parser, writer, JSONL files and teacher-forcing views.

One conversation is one string (the published files hold ``{"text": ...}`` per line)::

    <header listing the allowed intents>: ### ASSISTANT: Hello! ... ### HUMAN: I want ...
    ## {"intent": "search_recipe", "query": "..."} ### RESULTS: id: 1, ... ### ASSISTANT: ...

Turns start at a marker ``### NAME:`` (ASSISTANT, HUMAN and the grounding blocks RESULTS,
SUGGESTIONS, RECIPE). A human turn ends with its annotation ``## {"intent": ..., <slots>}``;
an assistant turn may end with one too (``{"selected_ids": [...]}`` in cooking,
``{"intent": "shown_cart", "product_ids": [...]}`` in e-commerce). Only human and assistant
turns carry annotations: an annotation is the last ``## `` that follows whitespace (or starts
the turn) and is followed by ``{``.

Exactness: every turn keeps the whitespace around its text (``Turn.ws``) and its annotation
text verbatim (``Turn.raw_annotation``), and the header is kept verbatim, so
``render(parse(x)) == x`` byte for byte for every string this module can split into turns
(all 393 published test conversations included). Irregular data (missing annotation,
annotation that is not JSON or not an object, human annotation without an intent, unknown
markers) is still read: the problem is recorded in ``conv.meta["warnings"]`` as
``<file>:<line>: human turn 3: annotation is not JSON: ...`` and the raw text is kept, or,
with ``strict=True``, raised as :class:`SynTODFormatError` with the same message.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple

from ..utils import atomic_path

log = logging.getLogger("irrepro.syntod.format")

KNOWN_ROLES = ("assistant", "human", "results", "suggestions", "recipe")
ANNOTATED_ROLES = ("assistant", "human")
DEFAULT_WS = (" ", " ", " ")
DOMAIN_TOPICS = {"cooking": "recipes", "ecommerce": "shopping"}

_MARKER = re.compile(r"### ([A-Z][A-Z_]*):")
_ANNOTATION = re.compile(r"(?:(?<=\s)|^)## (?=\{)")
_HEADER_INTENTS = re.compile(r"allowed user intents are;(.*):\s*$", re.DOTALL)
_HEADER_TOPIC = re.compile(r"helps with (\w+)")


class SynTODFormatError(ValueError):
    """A conversation or JSONL record that cannot be read; the message names file:line."""


@dataclass
class Turn:
    """One turn. ``intent``/``slots`` come from the annotation (``slots`` = the annotation's
    other keys); ``raw_annotation`` is the annotation text exactly as written (None = no
    annotation) and is what :func:`render` writes. ``ws`` = (whitespace after the marker,
    whitespace before ``## ``, whitespace after the turn)."""

    role: str
    text: str
    intent: str | None = None
    slots: dict | None = None
    raw_annotation: str | None = None
    ws: tuple[str, str, str] = DEFAULT_WS

    @classmethod
    def make(cls, role: str, text: str, intent: str | None = None, slots: dict | None = None) -> "Turn":
        """A new turn whose annotation (if intent or slots are given) is their JSON."""
        raw = None
        if intent is not None or slots:
            raw = json.dumps({**({"intent": intent} if intent is not None else {}), **(slots or {})})
        return cls(role, text, intent, dict(slots or {}) if raw is not None else None, raw)

    @property
    def annotation(self) -> dict | None:
        """The annotation as one dict (intent first), or None when absent or unreadable."""
        if self.intent is None and self.slots is None:
            return None
        return {**({"intent": self.intent} if self.intent is not None else {}), **(self.slots or {})}


@dataclass
class Conversation:
    """A conversation: ``header`` verbatim (including its trailing whitespace), the intents
    it lists, the turns, and ``meta`` (id, domain, source = file:line, warnings)."""

    header: str
    intents: list[str]
    turns: list[Turn]
    meta: dict = field(default_factory=dict)

    @property
    def id(self) -> str | None:
        return self.meta.get("id")

    @property
    def domain(self) -> str | None:
        return self.meta.get("domain")


class Example(NamedTuple):
    """A teacher-forcing example: the model sees ``prompt`` and must produce ``target``."""

    prompt: str
    target: str


# what follows the header's colon in the published files: one space in cooking, two in
# e-commerce (the e-commerce converter adds one before its " ### ASSISTANT: " prefix)
HEADER_END = {"cooking": " ", "ecommerce": "  "}


def header_for(domain: str, intents: Iterable[str]) -> str:
    """The published header for ``domain`` ("cooking" or "ecommerce"), byte for byte as in the
    published test files when ``intents`` is the graph's ``header_intents``."""
    if domain not in DOMAIN_TOPICS:
        raise ValueError(f"unknown SynTOD domain {domain!r}; expected one of {sorted(DOMAIN_TOPICS)}")
    return (f"Conversation between human and AI that helps with {DOMAIN_TOPICS[domain]}, "
            f"allowed user intents are; {', '.join(intents)}:{HEADER_END[domain]}")


def header_intents(header: str) -> list[str]:
    """The intents a header lists (``... allowed user intents are; a, b, c:``); [] if none."""
    m = _HEADER_INTENTS.search(header)
    return [x.strip() for x in m.group(1).split(",") if x.strip()] if m else []


def header_domain(header: str) -> str | None:
    """"cooking" / "ecommerce" from the header's "helps with recipes/shopping", else None."""
    m = _HEADER_TOPIC.search(header)
    by_topic = {v: k for k, v in DOMAIN_TOPICS.items()}
    return by_topic.get(m.group(1)) if m else None


def parse_annotation(raw: str) -> tuple[object, str | None]:
    """Decode an annotation: (value, problem). Trailing text after a complete JSON value is
    tolerated (value kept, problem reported); undecodable text gives (None, problem)."""
    try:
        return json.loads(raw), None
    except json.JSONDecodeError as exc:
        try:
            value, end = json.JSONDecoder().raw_decode(raw.lstrip())
        except json.JSONDecodeError:
            return None, f"annotation is not JSON: {exc.msg} (char {exc.pos}): {raw[:80]!r}"
        return value, f"trailing text after the annotation JSON: {raw.lstrip()[end:].strip()[:40]!r}"


def parse_completion(text: str) -> dict | None:
    """Read a model's annotation completion (what follows ``## ``) leniently: the first JSON
    object in it, else just an ``"intent": "..."`` pair found by regex, else None."""
    start = text.find("{")
    if start >= 0:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
    m = re.search(r'"intent"\s*:\s*"([^"]*)"', text)
    return {"intent": m.group(1)} if m else None


def _split_ws(s: str) -> tuple[str, str, str]:
    """(leading whitespace, stripped text, trailing whitespace); all-whitespace goes first."""
    text = s.strip()
    if not text:
        return s, "", ""
    lead = s[: len(s) - len(s.lstrip())]
    return lead, text, s[len(lead) + len(text):]


def _parse_turn(role: str, body: str, where: str, problems: list[str]) -> Turn:
    hits = list(_ANNOTATION.finditer(body)) if role in ANNOTATED_ROLES else []
    if not hits:
        pre, text, post = _split_ws(body)
        if role == "human":
            problems.append(f"{where}: no annotation")
        return Turn(role, text, ws=(pre, " ", post))
    i = hits[-1].start()
    pre, text, mid = _split_ws(body[:i])
    after = body[i + 3:]
    raw = after.rstrip()
    post = after[len(raw):]
    value, problem = parse_annotation(raw)
    if problem:
        problems.append(f"{where}: {problem}")
    intent = slots = None
    if isinstance(value, dict):
        slots = {k: v for k, v in value.items() if k != "intent"}
        intent = value.get("intent")
        if intent is not None and not isinstance(intent, str):
            problems.append(f"{where}: intent is not a string: {intent!r}")
            slots["intent"], intent = intent, None
        elif intent is None and role == "human":
            problems.append(f"{where}: annotation has no intent: {raw[:80]!r}")
    elif value is not None:
        problems.append(f"{where}: annotation is not a JSON object: {raw[:80]!r}")
    return Turn(role, text, intent, slots, raw, (pre, mid, post))


def parse(text: str, source: str = "<string>", strict: bool = False, meta: dict | None = None) -> Conversation:
    """Parse one conversation string. ``source`` (e.g. ``file.jsonl:17``) prefixes every
    warning; ``strict`` raises the first one instead. ``meta`` entries are added to the
    conversation's meta (id, domain and source default from the text and ``source``)."""
    problems: list[str] = []
    pieces = _MARKER.split(text)
    header, roles, bodies = pieces[0], pieces[1::2], pieces[2::2]
    intents = header_intents(header)
    if not roles:
        problems.append(f"{source}: no '### ASSISTANT:' / '### HUMAN:' turn markers")
    if not intents:
        problems.append(f"{source}: header lists no intents ('allowed user intents are; ...:')")
    turns, seen = [], Counter()
    for name, body in zip(roles, bodies):
        role = name.lower()
        seen[role] += 1
        where = f"{source}: {role} turn {seen[role]}"
        if role not in KNOWN_ROLES:
            problems.append(f"{where}: unknown marker '### {name}:'")
        turns.append(_parse_turn(role, body, where, problems))
    if strict and problems:
        raise SynTODFormatError(problems[0])
    info = {"id": source, "domain": header_domain(header), "source": source, **(meta or {}), "warnings": problems}
    return Conversation(header, intents, turns, info)


def _render_turn(t: Turn) -> str:
    pre, mid, post = t.ws
    raw = t.raw_annotation
    if raw is None and t.annotation is not None:
        raw = json.dumps(t.annotation)
    ann = "" if raw is None else f"{mid}## {raw}"
    return f"### {t.role.upper()}:{pre}{t.text}{ann}{post}"


def render(conv: Conversation) -> str:
    """The conversation as one SynTOD string (byte-identical to the parsed original)."""
    return conv.header + "".join(_render_turn(t) for t in conv.turns)


def user_turn_examples(conv: Conversation) -> list[Example]:
    """One example per annotated human turn, in order: prompt = the gold conversation up to
    and including the human utterance followed by ``## ``, target = the gold annotation."""
    out = []
    for i, t in enumerate(conv.turns):
        if t.role == "human" and t.raw_annotation is not None:
            history = conv.header + "".join(_render_turn(x) for x in conv.turns[:i])
            prompt = f"{history}### HUMAN:{t.ws[0]}{t.text}{t.ws[1]}## "
            out.append(Example(prompt, t.raw_annotation))
    return out


def system_turn_examples(conv: Conversation) -> list[Example]:
    """One example per assistant turn: prompt = the gold conversation up to and including
    the ``### ASSISTANT:`` marker and its whitespace, target = the gold response text
    (without the assistant's own ``## {...}`` annotation)."""
    out = []
    for i, t in enumerate(conv.turns):
        if t.role == "assistant":
            history = conv.header + "".join(_render_turn(x) for x in conv.turns[:i])
            out.append(Example(f"{history}### ASSISTANT:{t.ws[0]}", t.text))
    return out


# ---------------------------------------------------------------- JSONL files

def _conv_to_record(conv: Conversation) -> dict:
    rest = {k: v for k, v in conv.meta.items() if k not in ("id", "domain", "source")}
    return {
        "id": conv.meta.get("id"), "domain": conv.meta.get("domain"), "source": conv.meta.get("source"),
        "header": conv.header, "intents": conv.intents,
        "turns": [{"role": t.role, "text": t.text, "intent": t.intent, "slots": t.slots,
                   "annotation": t.raw_annotation, "ws": list(t.ws)} for t in conv.turns],
        "meta": rest,
    }


def _need(rec: dict, key: str, types, where: str, optional: bool = False):
    value = rec.get(key)
    if key not in rec and not optional:
        raise SynTODFormatError(f"{where}: missing key {key!r}")
    if not (value is None and optional) and not isinstance(value, types):
        raise SynTODFormatError(f"{where}: key {key!r} has type {type(value).__name__}")
    return value


def _record_to_conv(rec: dict, where: str) -> Conversation:
    header = _need(rec, "header", str, where)
    intents = _need(rec, "intents", list, where)
    turns = []
    for k, t in enumerate(_need(rec, "turns", list, where)):
        tw = f"{where}: turns[{k}]"
        if not isinstance(t, dict):
            raise SynTODFormatError(f"{tw}: not an object")
        ws = _need(t, "ws", list, tw)
        if len(ws) != 3 or not all(isinstance(x, str) and not x.strip() for x in ws):
            raise SynTODFormatError(f"{tw}: key 'ws' must be three whitespace strings")
        turn = Turn(_need(t, "role", str, tw), _need(t, "text", str, tw), _need(t, "intent", str, tw, True),
                    _need(t, "slots", dict, tw, True), _need(t, "annotation", str, tw, True), tuple(ws))
        if turn.raw_annotation is not None:
            value, _ = parse_annotation(turn.raw_annotation)
            if isinstance(value, dict) and value != turn.annotation and not (turn.intent is None and "intent" in value):
                raise SynTODFormatError(f"{tw}: intent/slots disagree with the annotation text")
        turns.append(turn)
    meta = {"id": rec.get("id"), "domain": rec.get("domain"), "source": rec.get("source"),
            **(_need(rec, "meta", dict, where, True) or {})}
    return Conversation(header, intents, turns, meta)


def read_jsonl(path: str | os.PathLike, strict: bool = False) -> list[Conversation]:
    """Read a JSONL file of conversations, one per line: the published ``{"text": ...}``
    records (parsed; id = ``<stem>:<line>``, source = ``<name>:<line>``) or our structured
    records (with ``turns``). Blank lines are skipped. A line that is not a JSON object of
    either kind raises :class:`SynTODFormatError` naming file and line."""
    path = Path(path)
    convs, n_warn = [], 0
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SynTODFormatError(f"{where}: line is not JSON: {exc}") from None
            if isinstance(rec, dict) and "turns" in rec:
                conv = _record_to_conv(rec, where)
            elif isinstance(rec, dict) and isinstance(rec.get("text"), str):
                conv = parse(rec["text"], where, strict, meta={"id": f"{path.stem}:{lineno}"})
            else:
                raise SynTODFormatError(f"{where}: record has neither a 'text' string nor 'turns'")
            n_warn += len(conv.meta.get("warnings", []))
            convs.append(conv)
    log.info("read %d conversations from %s (%d warnings)", len(convs), path, n_warn)
    return convs


def write_jsonl(convs: Iterable[Conversation], path: str | os.PathLike, fmt: str = "structured") -> int:
    """Write conversations atomically, one JSON line each: ``fmt="structured"`` (id, domain,
    source, header, intents, turns, meta; reads back equal) or ``fmt="text"`` (the published
    ``{"text": ...}`` form, byte-identical to a published file read with :func:`read_jsonl`)."""
    if fmt not in ("structured", "text"):
        raise ValueError(f"fmt must be 'structured' or 'text', not {fmt!r}")
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for conv in convs:
            rec = _conv_to_record(conv) if fmt == "structured" else {"text": render(conv)}
            fh.write(json.dumps(rec) + "\n")
            n += 1
    log.info("wrote %d conversations (%s) to %s", n, fmt, path)
    return n


def to_text_jsonl(convs: Iterable[Conversation], path: str | os.PathLike) -> int:
    """Write conversations in the published ``{"text": ...}`` JSONL form."""
    return write_jsonl(convs, path, fmt="text")


def summarize(convs: list[Conversation]) -> dict:
    """Counts for reports and tests: conversations, turns per role, human turns, annotated /
    unannotated / unreadable human annotations, intents and slot keys seen (with counts),
    intents used but not listed in the header, and the number of warnings."""
    roles, intents, slot_keys, outside = Counter(), Counter(), Counter(), Counter()
    human = annotated = failed = 0
    for conv in convs:
        listed = set(conv.intents)
        for t in conv.turns:
            roles[t.role] += 1
            if t.role != "human":
                continue
            human += 1
            if t.raw_annotation is not None:
                annotated += 1
                failed += t.intent is None
            if t.intent is not None:
                intents[t.intent] += 1
                outside[t.intent] += t.intent not in listed
            slot_keys.update((t.slots or {}).keys())
    return {
        "conversations": len(convs), "turns": dict(sorted(roles.items())), "human_turns": human,
        "annotated_human_turns": annotated, "missing_annotations": human - annotated,
        "unreadable_annotations": failed, "intents": dict(sorted(intents.items())),
        "slot_keys": dict(sorted(slot_keys.items())),
        "intents_outside_header": {k: v for k, v in sorted(outside.items()) if v},
        "warnings": sum(len(c.meta.get("warnings", [])) for c in convs),
    }


def check_annotations(path: Path, convs: list[Conversation]) -> None:
    """``--strict``: every human turn carries an intent, and the intent is one of the domain's
    (the graph's intents and their ``eval_as`` names; the conversation header's list when the
    domain is unknown). A problem raises :class:`~irrepro.errors.InputError` naming file and line."""
    from ..errors import InputError
    from .graph import DOMAINS, load_graph

    lines = [n for n, ln in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if ln.strip()]
    known: dict[str, set] = {}
    for line, conv in zip(lines, convs):
        domain = conv.meta.get("domain")
        if domain in DOMAINS and domain not in known:
            g = load_graph(domain)
            known[domain] = set(g.intents) | {v["eval_as"] for v in g.intents.values() if v.get("eval_as")}
        allowed = known.get(domain) or set(conv.intents or [])
        for k, turn in enumerate(conv.turns):
            if turn.role != "human":
                continue
            if not turn.intent:
                raise InputError(f"human turn {k} has no intent annotation", file=path, line=line,
                                 hint="--strict requires one on every human turn")
            if allowed and turn.intent not in allowed:
                raise InputError(f"human turn {k}: intent {turn.intent!r} is not an intent of domain "
                                 f"{domain or '(from the header)'}", file=path, line=line)


def check_file(path: str | os.PathLike, strict: bool = False) -> dict:
    """:func:`summarize` one JSONL file plus its round-trip check: ``round_trip_mismatches``
    counts published records whose re-rendered text differs from the stored text, and
    structured records whose rendered text parses back to different turns."""
    path = Path(path)
    convs = read_jsonl(path, strict)
    if strict:
        check_annotations(path, convs)
    records = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    bad = 0
    for rec, conv in zip(records, convs):
        text = render(conv)
        if "turns" in rec:
            bad += parse(text).turns != conv.turns
        else:
            bad += text != rec["text"]
    if bad:
        log.error("%s: %d of %d conversations do not round-trip", path, bad, len(convs))
    return {**summarize(convs), "round_trip_mismatches": bad}
