"""SynTOD generation: graph walks -> annotated conversations, and the naive one-prompt baseline.

Graph-guided generation (:func:`generate_conversations`) follows one sampled walk per
conversation, turn by turn. A user turn's slot values are fixed first (from the walk, or
from the catalog item: the query is the target's title terms, product_name its title,
address one of its shipping countries, ...) and the user simulator is asked for an
utterance that contains them, as JSON ``{"text": ...}``; a system turn is asked with its
grounding (the result page, the recipe and its current step, the product's catalog facts,
the cart) and preceded by the grounding blocks of the published files (``### SUGGESTIONS:``,
``### RESULTS:``, ``### RECIPE:``). Prompts are data: ``resources/syntod/prompts.yaml``
(one template per user intent and per system state; see :func:`load_prompts`). Each turn is
asked with its own sampling seed (:func:`turn_seed`), so two turns with the same prompt get
their own samples and cache entries, and a rerun the same ones.

Retrieval-augmented pages: :func:`build_catalog_index` indexes the domain catalog with BM25
(``irrepro.bm25``: recipes as title + tags + ingredients, products as title + category +
brand + features) and :class:`BM25Pager` is a ``sample_walks`` pager whose pages are the
BM25 ranking for the walk's query (the target's title terms, :func:`item_query`, which is
also the value the user's ``query`` slot gets), the target placed by the sampler at the
walk's selection position; all queries go in one batch search, so one JVM per process.

Crash safety: every finished conversation is appended to the structured JSONL at once
(flush + fsync); a rerun skips the walk ids already there (a truncated last line is dropped
with a warning; a record made from another walk or another generator setup is redone), and
the finished file is rewritten in walk order, so a resumed run ends with the same bytes as
an uninterrupted one. Generated texts are cleaned of ``##`` runs so a reply can never fake a
turn marker or an annotation.

The naive baseline (:func:`generate_naive`) asks for a whole annotated conversation in one
prompt (intent list + slot requirements, no graph, no retrieval) and keeps the replies
:func:`irrepro.syntod.format.parse` reads without warnings; bad replies are re-asked at most
``max_repairs`` times, then skipped and counted.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import random
import re
import string
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..yamlio import load_yaml

from ..progress import progress
from ..utils import atomic_path
from .format import (
    DOMAIN_TOPICS,
    Conversation,
    Turn,
    _conv_to_record,
    _record_to_conv,
    header_for,
    parse,
    write_jsonl,
)
from .graph import GRAPH_DIR, Graph, Recipe, SeedError, Walk
from .llm import Backend, LLMError, chat_json

log = logging.getLogger("irrepro.syntod.generate")

PROMPTS_PATH = GRAPH_DIR / "prompts.yaml"
HISTORY_TURNS = 6  # human/assistant turns shown to the model as context
HISTORY_CHARS = 400  # each cut to this many characters
DESCRIPTION_CHARS = 300  # catalog descriptions in RESULTS lines and prompts
QUERY_TERMS = 6
BM25_K1, BM25_B = 0.9, 0.4  # Anserini's defaults
NAIVE_TURNS = (4, 12)  # user turns asked of the naive baseline (uniform, per conversation)

COMMON_FIELDS = {"bot_name", "bot_description", "domain", "domain_topic", "history", "last_system",
                 "item_title", "item_description", "n_steps"}
USER_FIELDS = COMMON_FIELDS | {"intent", "intent_description", "slots", "target_step", "step_number"}
SYSTEM_FIELDS = COMMON_FIELDS | {"state", "last_user", "query", "results", "suggestions", "recipe", "step_number",
                                 "step_text", "ingredients", "cart", "compare", "facts"}
FIELDS = {
    "user_system": USER_FIELDS, "user_turn": USER_FIELDS | {"instruction"}, "user": USER_FIELDS,
    "system_system": SYSTEM_FIELDS, "system_turn": SYSTEM_FIELDS | {"instruction"}, "system": SYSTEM_FIELDS,
    "naive": {"bot_name", "bot_description", "domain", "domain_topic", "header", "intents", "n_turns", "item_title",
              "item_description"},
}
TOP_LEVEL_TEMPLATES = ("user_system", "user_turn", "system_system", "system_turn", "naive")
BLOCKS = ("suggestions", "results", "recipe")
# system template field -> the offline simulator's meta key it feeds
GROUNDING_META = {"results": "results", "query": "query", "step_text": "step",
                  "ingredients": "ingredients", "cart": "cart", "compare": "compare", "facts": "answer",
                  "item_title": "title", "item_description": "item", "recipe": "item"}
STOPWORDS = frozenset("a an and the of for with in on to by from at or & de la le n".split())
_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
_HASHES = re.compile(r"#{2,}")
_TAG = re.compile(r"<[^>]+>")
_DURATION = re.compile(r"\b(\d+(?:\s*(?:-|to)\s*\d+)?)\s*(minutes?|mins?|hours?|hrs?|seconds?|secs?)\b", re.I)


class PromptError(ValueError):
    """prompts.yaml is malformed; the message names the file, the template and the field."""


class GenerationError(RuntimeError):
    """A generation output that cannot be resumed (a corrupt line that is not the last)."""


# ----------------------------------------------------------------------------- prompts
def _template_fields(text: str, where: str) -> set[str]:
    fields = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise PromptError(f"{where}: not a valid str.format template ({exc}); literal braces are written {{{{ }}}}") from None
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise PromptError(f"{where}: field {{{name}}} must be a plain name (literal braces are written {{{{ }}}})")
        if spec or conv:
            raise PromptError(f"{where}: field {{{name}}} must not carry a format spec or conversion")
        fields.add(name)
    return fields


class Prompts:
    """The templates of ``prompts.yaml``, checked against the documented fields at load."""

    def __init__(self, data: dict, source: str):
        self.source = source
        self.data = data
        self.fields: dict[str, set[str]] = {}  # template key -> fields it uses
        self.blocks: dict[str, list[str]] = {}
        if not isinstance(data, dict) or not isinstance(data.get("domains"), dict):
            raise PromptError(f"{source}: expected a mapping with 'domains' and the templates")
        # only generation prompts: the fingerprint of the conversations hashes this whole mapping,
        # so a judge prompt here would regenerate them (judge prompts: judge_prompts.yaml)
        unknown = sorted(set(data) - {"version", "domains", *TOP_LEVEL_TEMPLATES, *data["domains"]})
        if unknown:
            raise PromptError(f"{source}: unknown top-level key(s) {unknown}: a generation prompts file holds "
                              f"version, domains, {', '.join(TOP_LEVEL_TEMPLATES)} and one section per domain (the "
                              f"judge's prompts are in judge_prompts.yaml)")
        for key in TOP_LEVEL_TEMPLATES:
            self._add(key, data.get(key), FIELDS[key])
        for domain, spec in data["domains"].items():
            if not isinstance(spec, dict) or not {"bot_name", "description"} <= set(spec):
                raise PromptError(f"{source}: domains.{domain}: needs bot_name and description")
            section = data.get(domain)
            if not isinstance(section, dict) or not all(isinstance(section.get(r), dict) for r in ("user", "system")):
                raise PromptError(f"{source}: {domain}: needs 'user' and 'system' mappings of templates")
            for intent, text in section["user"].items():
                self._add(f"{domain}.user.{intent}", text, FIELDS["user"])
            temps = section.get("temperature") or {}
            if not isinstance(temps, dict) or set(temps) - {"user", "system"}:
                raise PromptError(f"{source}: {domain}.temperature: a mapping with 'user' and/or 'system'")
            for role, table in temps.items():
                for name, t in (table or {}).items():
                    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 2:
                        raise PromptError(f"{source}: {domain}.temperature.{role}.{name}: a number in [0, 2], got {t!r}")
                    if name not in section[role]:
                        raise PromptError(f"{source}: {domain}.temperature.{role}.{name}: no such {role} template")
            for state, entry in section["system"].items():
                key = f"{domain}.system.{state}"
                if isinstance(entry, dict):
                    unknown = set(entry) - {"prompt", "blocks"}
                    if unknown:
                        raise PromptError(f"{source}: {key}: unknown key(s) {sorted(unknown)} (prompt, blocks)")
                    blocks = entry.get("blocks") or []
                    bad = [b for b in blocks if b not in BLOCKS]
                    if bad:
                        raise PromptError(f"{source}: {key}.blocks: unknown block(s) {bad}; known: {list(BLOCKS)}")
                    self.blocks[key] = list(blocks)
                    entry = entry.get("prompt")
                self._add(key, entry, FIELDS["system"])

    def _add(self, key: str, text: Any, allowed: set[str]) -> None:
        where = f"{Path(self.source).name}: {key}"
        if not isinstance(text, str) or not text.strip():
            raise PromptError(f"{where}: missing or empty template")
        used = _template_fields(text, where)
        unknown = sorted(used - allowed)
        if unknown:
            raise PromptError(f"{where}: unknown field {{{unknown[0]}}} (allowed: {', '.join(sorted(allowed))})")
        self.fields[key] = used

    def text(self, key: str) -> str:
        node: Any = self.data
        for part in key.split("."):
            node = node[part]
        return node["prompt"] if isinstance(node, dict) else node

    def render(self, key: str, fields: dict) -> str:
        """Template ``key`` (dotted, e.g. ``cooking.user.select_i``) filled from ``fields``."""
        if key not in self.fields:
            raise PromptError(f"{Path(self.source).name}: no template {key!r}")
        missing = sorted(self.fields[key] - set(fields))
        if missing:
            raise PromptError(f"{Path(self.source).name}: {key}: no value for field {{{missing[0]}}}")
        return self.text(key).format(**{k: fields[k] for k in self.fields[key]})

    def check_graph(self, graph: Graph) -> None:
        """Every user intent and every system state of ``graph`` has a template."""
        d = graph.domain
        if d not in self.data["domains"]:
            raise PromptError(f"{Path(self.source).name}: domains: no entry for {d!r}")
        missing = [f"{d}.user.{i}" for i in graph.kept_intents() if f"{d}.user.{i}" not in self.fields]
        missing += [f"{d}.system.{n}" for n, node in graph.nodes.items()
                    if node.role == "system" and n != graph.end and f"{d}.system.{n}" not in self.fields]
        if missing:
            raise PromptError(f"{Path(self.source).name}: missing template(s) for graph {graph.source}: {', '.join(missing)}")

    def temperature(self, domain: str, role: str, name: str) -> float | None:
        """The sampling temperature of one turn (``<domain>.temperature.<role>.<name>``), or
        None for the backend's default (the release: 1.0 unless a prompt sets its own)."""
        table = ((self.data.get(domain) or {}).get("temperature") or {}).get(role) or {}
        return table.get(name)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.data, sort_keys=True).encode()).hexdigest()


def load_prompts(path: str | os.PathLike | None = None) -> Prompts:
    """Read and check ``prompts.yaml`` (default: the packaged one); PromptError names template + field."""
    path = Path(path or PROMPTS_PATH)
    try:
        data = load_yaml(path)
    except (OSError, yaml.YAMLError) as exc:
        raise PromptError(f"{path}: cannot read prompts: {exc}") from None
    return Prompts(data, str(path))


# ----------------------------------------------------------------------------- catalog views
def _clean(text: Any) -> str:
    """A model's or a catalog's text made safe for the SynTOD format (no ``##`` runs)."""
    return _HASHES.sub("#", str(text)).strip()


def _flat(text: Any, limit: int | None = DESCRIPTION_CHARS) -> str:
    if isinstance(text, (list, tuple)):
        text = " ".join(str(t) for t in text)
    text = " ".join(_TAG.sub(" ", html.unescape(str(text or ""))).split())
    text = _clean(text)
    if limit and len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return text


def item_query(item) -> str:
    """The walk's query for a target item: its first title terms, lower-cased, no stopwords."""
    terms: list[str] = []
    for w in _WORD.findall(item.title.lower()):
        if w not in STOPWORDS and len(w) > 1 and w not in terms:
            terms.append(w)
    return " ".join(terms[:QUERY_TERMS]) or item.title.lower()


def keyword_query(item, n: int = 4) -> str:
    """A keyword-style suggestion query that does not name the dish / product (the release asks
    the user simulator for one, Recipe/prompts SUGGEST_RECIPE_PROMPT): recipes: tags, then
    ingredient words; products: category, then attribute values; words of the title left out."""
    title = set(_WORD.findall(item.title.lower()))
    raw = item.raw
    if isinstance(item, Recipe):
        pool = [str(t) for t in raw.get("tags") or []] + _ingredient_names(item)
    else:
        pool = [item.category] + [v for vs in _attributes(item).values() for v in vs[:1]]
    terms: list[str] = []
    for phrase in pool:
        for w in _WORD.findall(str(phrase).lower()):
            if w not in STOPWORDS and w not in title and len(w) > 2 and not w.isdigit() and w not in terms:
                terms.append(w)
    return " ".join(terms[:n]) or ("dinner ideas" if isinstance(item, Recipe) else "gift ideas")


def catalog_text(item) -> str:
    """What BM25 indexes: recipes title + tags + ingredients; products title + category + brand + features."""
    raw = item.raw
    if isinstance(item, Recipe):
        ingredients = [i.get("ingredient") or i.get("text", "") if isinstance(i, dict) else str(i)
                       for i in raw.get("ingredients") or []]
        parts = [item.title, " ".join(raw.get("tags") or []), " ".join(ingredients)]
    else:
        feats = raw.get("feature") or []
        parts = [item.title, item.category, str(raw.get("brand") or ""), " ".join(feats if isinstance(feats, list) else [str(feats)])]
    return "\n".join(p for p in parts if p)


def _short(title: str, words: int = 5) -> str:
    return " ".join([w for w in title.split() if any(c.isalnum() for c in w)][:words])


def _description(item) -> str:
    raw = item.raw
    return _flat(raw.get("description") or raw.get("summary") or "")


def _result_line(pos: int, item) -> str:
    raw = item.raw
    if isinstance(item, Recipe):
        parts = [f"id: {pos}", _flat(item.title, None)]
        if raw.get("minutes") is not None:
            parts.append(f"{raw['minutes']} minutes")
        if raw.get("rating") is not None:
            parts.append(f"rating: {raw['rating']} ({raw.get('ratingCount', 0)})")
        parts.append(_description(item))
        return ", ".join(p for p in parts if p)
    return f"id: {pos}, product_title: {_flat(item.title, None)}, description: {_description(item)}"


def _ingredient_names(recipe: Recipe) -> list[str]:
    return [_flat(i.get("ingredient") or i.get("text", ""), None) if isinstance(i, dict) else _flat(i, None)
            for i in recipe.raw.get("ingredients") or []]


def _ingredient_texts(recipe: Recipe) -> list[str]:
    return [" ".join(t.replace(";", " ").split()) for t in (_flat(x, None) for x in recipe.ingredients) if t]


def _recipe_block(recipe: Recipe) -> str:
    steps = [f"{i}: {_flat(s, None)}" for i, s in enumerate(recipe.steps, 1)]
    return (f"title: {_flat(recipe.title, None)}, description: {_description(recipe)}, "
            f"ingredients: [{', '.join(_ingredient_names(recipe))}], steps: {steps}")


def _attributes(item) -> dict:
    attrs = getattr(item, "attributes", None) or {}
    return {str(k): [str(v) for v in (vs if isinstance(vs, list) else [vs]) if str(v).strip()] for k, vs in attrs.items()}


def _facts_lines(item) -> list[str]:
    """A product's catalog facts: attributes then features."""
    lines = [f"{k}: {', '.join(dict.fromkeys(v))}" for k, v in _attributes(item).items() if v]
    feats = item.raw.get("feature") or []
    lines += [_flat(f, 160) for f in (feats if isinstance(feats, list) else [feats])[:4] if str(f).strip()]
    return lines


# ----------------------------------------------------------------------------- BM25 pages
def build_catalog_index(items: Sequence, out_dir: str | os.PathLike, threads: int = 1) -> Path:
    """BM25 index of a domain catalog under ``out_dir`` (``corpus.jsonl`` + ``index/``), built
    once: an index whose corpus fingerprint matches ``items`` is reused. Returns the index dir."""
    from ..bm25 import build_index, write_corpus_jsonl

    out = Path(out_dir)
    docs = [(it.id, catalog_text(it)) for it in items]
    digest = hashlib.sha256(json.dumps(docs, ensure_ascii=False).encode()).hexdigest()
    stamp, index = out / "catalog.sha256", out / "index"
    if index.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest:
        log.info("catalog index %s is up to date (%d items)", index, len(docs))
        return index
    out.mkdir(parents=True, exist_ok=True)
    write_corpus_jsonl(docs, out / "corpus.jsonl")
    build_index(str(out / "corpus.jsonl"), str(index), threads)
    with atomic_path(stamp) as tmp:
        tmp.write_text(digest + "\n")
    return index


class BM25Pager:
    """A ``sample_walks`` pager: the BM25 ranking of the walk's query (:func:`item_query` of
    the target) minus the target, in rank order. The rankings of all items are computed in
    one batch search at construction. When BM25 matches fewer items than a walk shows, the
    page is padded with a seeded random sample of the rest (counted in ``padded``)."""

    def __init__(self, items: Sequence, index_dir: str | os.PathLike, k1: float = BM25_K1, b: float = BM25_B,
                 threads: int = 1):
        from ..bm25 import search

        self.ids = [it.id for it in items]
        self.queries = {it.id: item_query(it) for it in items}
        self.runs = search(str(index_dir), self.queries, k=len(items), k1=k1, b=b, threads=threads)
        self.calls = self.padded = self.retrieved = 0

    def __call__(self, target, k: int, rng: random.Random) -> list[str]:
        ranked = [d for d in self.runs.get(target.id, {}) if d != target.id][:k]
        self.calls += 1
        self.retrieved += len(ranked)
        if len(ranked) < k:
            rest = [i for i in self.ids if i != target.id and i not in ranked]
            if k - len(ranked) > len(rest):
                raise SeedError(f"a walk shows {k + 1} result slots but the catalog has only {len(self.ids)} items")
            self.padded += k - len(ranked)
            ranked += rng.sample(rest, k - len(ranked))
        return ranked

    def stats(self) -> dict:
        return {"walks": self.calls, "retrieved": self.retrieved, "padded": self.padded}



# ----------------------------------------------------------------------------- slots
def _duration(recipe, step: int, rng: random.Random) -> str:
    if isinstance(recipe, Recipe) and 0 < step <= len(recipe.steps):
        m = _DURATION.search(recipe.steps[step - 1])
        if m:
            return f"{m.group(1)} {m.group(2).lower()}"
    return rng.choice(["5 minutes", "10 minutes", "15 minutes", "20 minutes", "30 minutes"])


def _question(intent: str, item, rng: random.Random) -> str:
    short = _short(item.title)
    if intent == "product_qa":
        keys = [k for k, v in _attributes(item).items() if v]
        options = [f"What {k.lower()} options does the {short} come in?" for k in keys]
        options += [f"Who makes the {short}?", f"What is the {short} made of?"]
        return rng.choice(options)
    topic = (getattr(item, "category", "") or "cooking").lower()
    return rng.choice([f"What should I look for when buying {topic}?", f"How do I take care of my {topic}?",
                       f"What is popular in {topic} right now?"])


def slot_value(name: str, typ: str, intent: str, item, target, state: dict, items: dict, rng: random.Random):
    """The value of a slot the walk left open, from the catalog item (see the module docstring)."""
    if typ == "free_text":
        if name == "product_name":
            return _flat(target.title, None)
        if name == "question":
            return _question(intent, item, rng)
        if name == "topic":
            return getattr(item, "category", "") or "cooking"
        if name == "query" and intent == "compare_products":
            names = [_short(items[i].title, 4) for i in state.get("compare") or [] if i in items]
            return "compare " + " and ".join(names)
        if intent in ("suggest_recipe", "suggest_product"):
            return keyword_query(target)
        if intent == "search_recipe" and str(target.raw.get("query") or "").strip():
            return _flat(target.raw["query"], None)  # the seed's own query, as the release asks for it
        return item_query(target)
    if typ == "attributes":
        attrs = [(k, v[0]) for k, v in _attributes(item).items() if v]
        return [{k: v} for k, v in sorted(rng.sample(attrs, min(2, len(attrs))))]
    if typ == "duration":
        return _duration(item, int(state.get("step") or 0), rng)
    if typ == "address":
        places = [str(p) for p in item.raw.get("location") or []]
        return rng.choice(places) if places else "United States"
    if typ == "selection":
        return rng.randint(1, 3)
    if typ == "name_list":
        return [_flat(items[i].title, None) for i in state.get("compare") or [] if i in items]
    if typ == "id_list":
        return [1, 2, 3]
    return item_query(item)


def _hints(intent: str, effect: str | None, types: dict, item, state: dict, rng: random.Random) -> dict:
    """What the simulator needs beyond the annotation's slots: the step a goto asks for, a
    question for a recipe question turn that has no question slot."""
    if effect == "step_goto":
        return {"step": state.get("step")}
    if isinstance(item, Recipe) and intent in ("in_task_qa", "open_domain_qa") and "question" not in types:
        if intent == "open_domain_qa" or not item.raw.get("ingredients"):
            return {"question": rng.choice(["How long can I keep leftovers in the fridge?", "What is the difference "
                                            "between baking soda and baking powder?", "How do I keep a knife sharp?"])}
        ingredient = rng.choice(_ingredient_names(item))
        return {"question": rng.choice([f"Can I use something instead of {ingredient}?",
                                        f"How much {ingredient} do I need?"])}
    return {}


def _slot_strings(value) -> list[str]:
    if isinstance(value, dict):
        return [f"{k}: {_slot_text(v)}" for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _slot_strings(v)]
    return [str(value)]


def _slot_text(value) -> str:
    return ", ".join(_slot_strings(value))


def slots_missing_from(text: str, slots: dict) -> list[str]:
    """Slot names whose value (rendered as the simulator does) is not in ``text`` (case-insensitive)."""
    low = text.lower()
    return [k for k, v in slots.items() if v not in (None, "", [], {})
            and not all(s.lower() in low for s in _slot_strings(v))]


# ----------------------------------------------------------------------------- one conversation
def _item_meta(item) -> dict:
    return {"title": _flat(item.title, None), "description": _description(item)}


class _ConversationBuilder:
    """Generates the turns of one walk (state: history, the current query)."""

    def __init__(self, walk: Walk, graph: Graph, items: dict, backend: Backend, prompts: Prompts,
                 max_repairs: int):
        self.w, self.g, self.items, self.backend, self.p = walk, graph, items, backend, prompts
        self.max_repairs = max_repairs
        self.target = items[walk.target]
        self.turns: list[Turn] = []
        self.query: str | None = None
        self.missing_slots = 0
        dom = prompts.data["domains"][graph.domain]
        self.base = {"bot_name": dom["bot_name"], "bot_description": dom["description"], "domain": graph.domain,
                     "domain_topic": DOMAIN_TOPICS.get(graph.domain, graph.domain)}

    def _history(self) -> str:
        said = [t for t in self.turns if t.role in ("human", "assistant")][-HISTORY_TURNS:]
        lines = [f"{'USER' if t.role == 'human' else 'ASSISTANT'}: {t.text[:HISTORY_CHARS]}" for t in said]
        return "\n".join(lines) or "(none)"

    def _last(self, role: str) -> str:
        return next((t.text for t in reversed(self.turns) if t.role == role), "")

    def _target(self, state: dict):
        """The item the current query looks for (Walk.targets; the walk's target before any)."""
        return self.items.get(self.w.target_of(state)) or self.target

    def _common(self, state: dict) -> dict:
        item = self.items.get(state.get("selected")) or self._target(state)
        n_steps = state.get("n_steps") or 0
        return {**self.base, "history": self._history(), "last_system": self._last("assistant"),
                "item_title": _flat(item.title, None), "item_description": _description(item),
                "n_steps": n_steps}, item

    def _ask(self, role: str, key: str, fields: dict, meta: dict) -> str:
        instruction = self.p.render(key, fields)
        messages = [{"role": "system", "content": self.p.render(f"{role}_system", fields)},
                    {"role": "user", "content": self.p.render(f"{role}_turn", {**fields, "instruction": instruction})}]
        temperature = self.p.temperature(self.g.domain, role, key.rsplit(".", 1)[-1])
        reply = chat_json(self.backend, messages, required_keys=["text"], max_repairs=self.max_repairs,
                          seed=turn_seed(self.backend, self.w.id, meta["turn"]), temperature=temperature,
                          meta={**meta, "conversation": self.w.id})
        return _clean(reply["text"]) or "..."

    def user_turn(self, i: int) -> None:
        step = self.w.steps[i]
        fields, item = self._common(step.state)
        rng = random.Random(f"{self.w.id}:{i}")
        types = self.g.intents[step.intent]["slots"]
        slots = {}
        for name, typ in types.items():
            value = step.slots.get(name)
            slots[name] = value if value is not None else slot_value(
                name, typ, step.intent, item, self._target(step.state), step.state, self.items, rng)
        hints = _hints(step.intent, self.g.nodes[step.node].effect, types, item, step.state, rng)
        fields.update(intent=step.intent, intent_description=self.g.intents[step.intent]["description"],
                      slots=json.dumps(slots, ensure_ascii=False), target_step=step.state.get("step") or "",
                      step_number=step.info.get("goto_from") or step.state.get("step") or "")
        text = self._ask("user", f"{self.g.domain}.user.{step.intent}", fields,
                         {"task": "user_turn", "intent": step.intent, "slots": {**slots, **hints}, "turn": i})
        if slots_missing_from(text, slots):
            self.missing_slots += 1
        if slots.get("query") and (self.g.nodes[step.node].effect == "new_query" or step.intent == "user_clarifies"):
            self.query = slots["query"]
        self.turns.append(Turn.make("human", text, step.intent, slots))

    def _facts(self, i: int, item, state: dict) -> str:
        prev = next((s for s in reversed(self.w.steps[:i]) if s.role == "user"), None)
        intent = prev.intent if prev else None
        pslots = next((t.slots for t in reversed(self.turns) if t.role == "human"), None) or {}
        rng = random.Random(f"{self.w.id}:{i}:facts")
        if isinstance(item, Recipe):
            raw = item.raw
            if intent == "set_timer":
                return f"A timer is set for {pslots.get('duration') or _duration(item, state.get('step') or 0, rng)}."
            if intent == "in_task_qa" and raw.get("tips"):
                return "Tip: " + _flat(rng.choice(raw["tips"]), None)
            if intent == "show_ingredients":
                return "Ingredients: " + "; ".join(_ingredient_texts(item))
            if intent in ("open_domain_qa", "chitchat") and raw.get("fun_facts"):
                return "Fun fact: " + _flat(rng.choice(raw["fun_facts"]), None)
            return ""
        if intent == "delivery_address":
            places = [str(p) for p in item.raw.get("location") or []]
            asked = _slot_text(pslots.get("address") or "")
            ok = any(p.lower() in asked.lower() for p in places)
            return (f"Ships to: {', '.join(places) or 'no shipping information'}. "
                    f"Delivery to {asked}: {'possible' if ok else 'not listed'}.")
        if intent == "buy_cart":
            bought = [self.items[b].title for b in (prev.info.get("bought") or []) if b in self.items]
            return "Ordered: " + "; ".join(_flat(t, None) for t in bought)
        if intent in ("product_qa", "show_attributes"):
            return "\n".join(_facts_lines(item))
        return ""

    def system_turn(self, i: int) -> None:
        step = self.w.steps[i]
        node = self.g.nodes[step.node]
        state = step.state
        fields, item = self._common(state)
        key = f"{self.g.domain}.system.{step.node}"
        page = [self.items[x] for x in (self.w.pages[state["page"]] if state.get("page") is not None else [])]
        n = int(state.get("step") or 0)
        recipe = item if isinstance(item, Recipe) else None
        cart = [self.items[x] for x in state.get("cart") or [] if x in self.items]
        compare = [self.items[x] for x in state.get("compare") or [] if x in self.items]
        target = self._target(state)
        suggestions = [_flat(t, None) for t in (target.raw.get("related") or [])] or [_flat(x.title, None) for x in page]
        facts = self._facts(i, item, state)
        query = self.query or item_query(target)
        fields.update(
            state=step.node, last_user=self._last("human"), query=query,
            results="\n".join(_result_line(k, x) for k, x in enumerate(page, 1)),
            suggestions="\n".join(suggestions), recipe=_recipe_block(recipe) if recipe else "",
            step_number=n or "", step_text=_flat(recipe.steps[n - 1], None) if recipe and 0 < n <= len(recipe.steps) else "",
            ingredients="\n".join(_ingredient_texts(recipe)) if recipe else "",
            cart="\n".join(f"{k}. {_flat(x.title, None)}" for k, x in enumerate(cart, 1)) or "(empty)",
            compare="\n".join(f"{k}. {_flat(x.title, None)} ({'; '.join(_facts_lines(x)[:3])})"
                              for k, x in enumerate(compare, 1)) or "(empty)",
            facts=facts or "(no specific facts)")
        meta: dict = {"task": "system_turn", "state": step.node, "domain": fields["domain_topic"], "turn": i}
        for f in sorted(self.p.fields[key], key=lambda f: f == "item_title"):  # a full item before a title-only one
            m = GROUNDING_META.get(f)
            if m == "results":
                meta[m] = [_item_meta(x) for x in page]
            elif m == "step" and fields["step_text"]:
                meta[m] = {"number": n, "text": fields["step_text"]}
            elif m == "ingredients" and recipe:
                meta[m] = _ingredient_texts(recipe)
            elif m in ("cart", "compare"):
                meta[m] = [_item_meta(x) for x in (cart if m == "cart" else compare)]
            elif m == "answer" and facts:
                meta[m] = facts
            elif m == "item":
                meta[m] = _item_meta(item)
            elif m == "title":
                meta.setdefault("item", {"title": fields["item_title"]})
            elif m == "query":
                meta[m] = query
        for block in self.p.blocks.get(key, []):
            text = {"results": fields["results"], "suggestions": fields["suggestions"], "recipe": fields["recipe"]}[block]
            if text:
                self.turns.append(Turn.make(block, text))
        text = self._ask("system", key, fields, meta)
        ann = node.annotation or {}
        self.turns.append(Turn.make("assistant", text, ann.get("intent"), dict(step.slots) or None))

    def build(self, header: str, fingerprint: str) -> Conversation:
        for i, step in enumerate(self.w.steps):
            if step.node == self.g.end:
                continue
            (self.user_turn if step.role == "user" else self.system_turn)(i)
        meta = {"id": self.w.id, "domain": self.g.domain, "source": f"generate:graph:{self.w.id}",
                "method": "graph", "walk_sha256": _walk_sha(self.w), "generator": fingerprint,
                "target": self.w.target, "user_turns_missing_slots": self.missing_slots}
        return Conversation(header, list(self.g.header_intents), self.turns, meta)


def turn_seed(backend: Backend, conversation: str, turn: int | str) -> int:
    """The sampling seed of one turn: the backend's seed offset by a hash of (conversation,
    turn). Two turns with the same prompt (short replies repeat) thus get their own samples
    and their own cache entries, and a rerun gets the same ones."""
    offset = int.from_bytes(hashlib.sha256(f"{conversation}:{turn}".encode()).digest()[:4], "big")
    return (int(backend.sampling()["seed"]) + offset) % 2**31


def _walk_sha(walk: Walk) -> str:
    return hashlib.sha256(json.dumps(walk.to_dict(), sort_keys=True).encode()).hexdigest()


def _fingerprint(backend: Backend, prompts: Prompts, method: str) -> str:
    ident = json.dumps([method, backend.cache_identity(), backend.sampling(), prompts.sha256()], sort_keys=True, default=str)
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- resumable output
def _text_path(out_jsonl: Path) -> Path:
    name = out_jsonl.name[: -len(".jsonl")] if out_jsonl.name.endswith(".jsonl") else out_jsonl.name
    return out_jsonl.with_name(name + ".txt.jsonl")


def load_finished(path: str | os.PathLike) -> dict[str, Conversation]:
    """Conversations already in a (possibly interrupted) structured JSONL, by id. A last line
    cut by a crash is dropped (and cut off the file) with a warning; a bad line before it
    raises GenerationError naming file:line."""
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    done: dict[str, Conversation] = {}
    offset = 0
    lines = data.split(b"\n")
    for no, raw in enumerate(lines, 1):
        end = offset + len(raw) + (1 if no < len(lines) else 0)
        complete = no < len(lines)  # a line without its newline was cut
        if raw.strip():
            try:
                if not complete:
                    raise ValueError("no newline at the end")
                conv = _record_to_conv(json.loads(raw), f"{path.name}:{no}")
            except ValueError as exc:
                if any(x.strip() for x in lines[no:]):
                    raise GenerationError(f"{path}:{no}: not a conversation record ({exc}); "
                                          "only the last line can be cut by a crash") from None
                log.warning("%s:%d: dropping an incomplete last record (%s)", path, no, str(exc)[:100])
                with open(path, "r+b") as fh:
                    fh.truncate(offset)
                break
            done[conv.id] = conv
        offset = end
    return done


class _Appender:
    """Appends one structured record per finished conversation, flushed and fsynced."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "a", encoding="utf-8", newline="\n")

    def add(self, conv: Conversation) -> None:
        self.fh.write(json.dumps(_conv_to_record(conv)) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def _cache_stats(backend) -> dict:
    return backend.stats() if hasattr(backend, "stats") else {"calls": backend.calls}


def _run(jobs: list[tuple[str, Any]], make, out_jsonl, out_text, resume: bool, fingerprint: str, what: str,
         backend: Backend, check=lambda conv, job: True) -> dict:
    """Shared driver: resume, generate the missing jobs (``make(job) -> Conversation | None``),
    append each at once, rewrite both outputs in job order."""
    out_jsonl = Path(out_jsonl)
    out_text = Path(out_text) if out_text else _text_path(out_jsonl)
    done = load_finished(out_jsonl) if resume else {}
    if not resume and out_jsonl.exists():
        out_jsonl.unlink()
    keep = {}
    for cid, job in jobs:
        conv = done.get(cid)
        if conv is not None and conv.meta.get("generator") == fingerprint and check(conv, job):
            keep[cid] = conv
    stale = len(done) - len(keep)
    if stale:
        log.warning("%s: %d finished records are from other walks or another generator set-up; redoing them",
                    out_jsonl, stale)
        write_jsonl([c for c in done.values() if c.id in keep], out_jsonl)
    todo = [(cid, job) for cid, job in jobs if cid not in keep]
    log.info("%s: %d conversations, %d already finished, %d to generate -> %s", what, len(jobs), len(keep), len(todo), out_jsonl)
    made = dict(keep)
    failed = 0
    every = max(1, len(todo) // 10)
    appender = _Appender(out_jsonl)
    try:
        for k, (cid, job) in enumerate(progress(todo, desc=what, unit="conversations"), 1):
            conv = make(job)
            if conv is None:
                failed += 1
            else:
                appender.add(conv)
                made[cid] = conv
            if k % every == 0 or k == len(todo):
                log.info("%s: %d/%d generated (%d failed); backend %s", what, k, len(todo), failed, _cache_stats(backend))
    finally:
        appender.close()
    ordered = [made[cid] for cid, _ in jobs if cid in made]
    write_jsonl(ordered, out_jsonl, "structured")
    write_jsonl(ordered, out_text, "text")
    if hasattr(backend, "log_stats"):
        backend.log_stats()
    return {"requested": len(jobs), "conversations": len(ordered), "resumed": len(keep),
            "generated": len(ordered) - len(keep), "failed": failed, "backend_calls": _cache_stats(backend),
            # token usage of every reply served (irrepro plan's LLM-cost calibration)
            "llm_usage": backend.usage_totals() if hasattr(backend, "usage_totals") else None,
            "backend": backend.describe(), "structured": str(out_jsonl), "text": str(out_text)}


def generate_conversations(walks: Sequence[Walk], graph: Graph, items: Sequence, backend: Backend,
                           out_jsonl: str | os.PathLike, *, method: str = "graph", resume: bool = True,
                           out_text: str | os.PathLike | None = None, prompts: Prompts | None = None,
                           max_repairs: int = 2) -> dict:
    """One conversation per walk (see the module docstring) -> ``out_jsonl`` (structured) and
    ``out_text`` (SynTOD ``{"text"}``; default ``<out_jsonl stem>.txt.jsonl``). A walk whose
    turns cannot be generated (no usable JSON within ``max_repairs``, backend gave up) is
    skipped, counted in ``failed`` and retried by the next run. Returns generation stats."""
    if method != "graph":
        raise ValueError(f"generate_conversations: method must be 'graph' (the naive baseline is generate_naive), got {method!r}")
    prompts = prompts or load_prompts()
    prompts.check_graph(graph)
    by_id = {it.id: it for it in items}
    bad = [w.id for w in walks if w.domain != graph.domain or any(i not in by_id for p in w.pages for i in p)
           or w.target not in by_id or any(s.node not in graph.nodes for s in w.steps)]
    if bad:
        raise SeedError(f"walk {bad[0]}: not a walk of graph {graph.source} over these items "
                        "(domain, node names or item ids differ)")
    header = header_for(graph.domain, graph.header_intents)
    fingerprint = _fingerprint(backend, prompts, method)

    def make(walk: Walk) -> Conversation | None:
        try:
            return _ConversationBuilder(walk, graph, by_id, backend, prompts, max_repairs).build(header, fingerprint)
        except LLMError as exc:  # JSONReplyError included
            log.warning("walk %s: skipped: %s", walk.id, backend.mask(str(exc))[:300])
            return None

    stats = _run([(w.id, w) for w in walks], make, out_jsonl, out_text, resume, fingerprint,
                 f"generate {graph.domain}/graph", backend, check=lambda c, w: c.meta.get("walk_sha256") == _walk_sha(w))
    convs_turns = _count_turns(Path(stats["structured"]))
    return {"method": method, "domain": graph.domain, **stats, **convs_turns}


def _count_turns(path: Path) -> dict:
    from .format import read_jsonl

    convs = read_jsonl(path)
    human = [t for c in convs for t in c.turns if t.role == "human"]
    return {"turns": sum(len(c.turns) for c in convs), "user_turns": len(human),
            "user_turns_missing_slots": sum(int(c.meta.get("user_turns_missing_slots") or 0) for c in convs)}


# ----------------------------------------------------------------------------- naive baseline
_START = re.compile(r"### (?:ASSISTANT|HUMAN):")


def parse_naive_reply(reply: str, header: str, conv_id: str, domain: str) -> tuple[Conversation | None, str]:
    """A naive reply as a conversation (``header`` + the reply from its first turn marker), or
    (None, the problem). Accepted: parses without warnings and has an annotated human turn."""
    m = _START.search(reply)
    if not m:
        return None, "no '### ASSISTANT:' / '### HUMAN:' turn markers"
    body = reply[m.start():].strip()
    body = re.sub(r"\s*```\s*$", "", body)
    conv = parse(header + body, source=conv_id, meta={"id": conv_id, "domain": domain})
    if conv.meta["warnings"]:
        return None, conv.meta["warnings"][0].split(": ", 1)[-1]
    if not any(t.role == "human" for t in conv.turns):
        return None, "no human turn"
    return conv, ""


def _intent_lines(graph: Graph) -> str:
    lines = []
    for name in graph.kept_intents():
        spec = graph.intents[name]
        slots = ", ".join(f"{k} ({t})" for k, t in spec["slots"].items()) or "no slots"
        lines.append(f"- {name}: {spec['description']}; slots: {slots}")
    return "\n".join(lines)


def generate_naive(n: int, domain: str, graph: Graph, items: Sequence, backend: Backend, out_jsonl: str | os.PathLike,
                   seed: int, *, resume: bool = True, out_text: str | os.PathLike | None = None,
                   prompts: Prompts | None = None, max_repairs: int = 2) -> dict:
    """The naive baseline: ``n`` conversations, each from ONE prompt with the intent list and
    the slot requirements (and a catalog item as topic, cycling through a seeded permutation),
    written like :func:`generate_conversations`. A reply :func:`parse_naive_reply` rejects is
    re-asked with the problem at most ``max_repairs`` times, then skipped and counted."""
    if graph.domain != domain:
        raise ValueError(f"generate_naive: graph {graph.source} is for {graph.domain!r}, not {domain!r}")
    if n < 1 or not items:
        raise ValueError(f"generate_naive: need n >= 1 and items (n={n}, {len(items)} items)")
    prompts = prompts or load_prompts()
    prompts.check_graph(graph)
    header = header_for(domain, graph.header_intents)
    dom = prompts.data["domains"][domain]
    fingerprint = _fingerprint(backend, prompts, "naive")
    order = list(range(len(items)))
    random.Random(f"{seed}:naive").shuffle(order)
    by_id = {it.id: it for it in items}
    slot_types = {k: dict(graph.intents[k]["slots"]) for k in graph.kept_intents()}
    rejected = [0]

    def make(job: tuple[int, Any]) -> Conversation | None:
        i, item = job
        cid = f"{domain}-naive-s{seed}-{i:05d}"
        rng = random.Random(f"{seed}:naive:{i}")
        n_turns = rng.randint(*NAIVE_TURNS)
        values = {}
        for intent, types in slot_types.items():
            for name, typ in types.items():
                if typ not in ("selection", "id_list") and name not in values:
                    values[name] = slot_value(name, typ, intent, item, item, {"compare": [item.id]}, by_id, rng)
        fields = {"bot_name": dom["bot_name"], "bot_description": dom["description"], "domain": domain,
                  "domain_topic": DOMAIN_TOPICS.get(domain, domain), "header": header, "intents": _intent_lines(graph),
                  "n_turns": n_turns, "item_title": _flat(item.title, None), "item_description": _description(item)}
        messages = [{"role": "user", "content": prompts.render("naive", fields)}]
        meta = {"task": "naive_conversation", "domain": fields["domain_topic"], "intents": graph.kept_intents(),
                "slots": slot_types, "slot_values": values, "item": _item_meta(item), "n_turns": n_turns,
                "conversation": cid}
        problem = ""
        for attempt in range(max_repairs + 1):
            try:
                reply = backend.chat(messages, meta=meta, seed=turn_seed(backend, cid, "naive"))
            except LLMError as exc:
                log.warning("naive %s: skipped: %s", cid, backend.mask(str(exc))[:300])
                return None
            conv, problem = parse_naive_reply(reply, header, cid, domain)
            if conv is not None:
                conv.meta.pop("warnings", None)
                conv.meta.update(source=f"generate:naive:{cid}", method="naive", generator=fingerprint, target=item.id)
                return conv
            rejected[0] += 1
            log.info("naive %s: reply %d unusable (%s)", cid, attempt + 1, problem)
            messages = messages + [{"role": "assistant", "content": reply},
                                   {"role": "user", "content": f"That conversation could not be read: {problem}. "
                                    "Write it again in exactly the format asked, nothing else."}]
        log.warning("naive %s: skipped after %d unusable replies (last problem: %s)", cid, max_repairs + 1, problem)
        return None

    jobs = [(f"{domain}-naive-s{seed}-{i:05d}", (i, items[order[i % len(items)]])) for i in range(n)]
    stats = _run(jobs, make, out_jsonl, out_text, resume, fingerprint, f"generate {domain}/naive", backend,
                 check=lambda c, job: c.meta.get("target") == job[1].id)
    turns = _count_turns(Path(stats["structured"]))
    return {"method": "naive", "domain": domain, **stats, "rejected_replies": rejected[0],
            "turns": turns["turns"], "user_turns": turns["user_turns"]}


# ----------------------------------------------------------------------------- splits
def split_train_heldout(convs: Sequence[Conversation], heldout_fraction: float, seed: int) -> tuple[list, list]:
    """(train, heldout), deterministic by conversation id: the ``round(n * fraction)``
    conversations with the smallest sha256(``seed:id``) are held out; order is kept."""
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction!r}")
    ids = [c.id for c in convs]
    if len(set(ids)) != len(ids) or None in ids:
        raise ValueError("split_train_heldout: conversation ids must be present and unique")
    rank = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    held = set(rank[: round(len(ids) * heldout_fraction)])
    return [c for c in convs if c.id not in held], [c for c in convs if c.id in held]

