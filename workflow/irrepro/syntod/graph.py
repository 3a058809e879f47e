"""SynTOD state transition graphs (YAML data) and the constrained random-walk sampler.

A graph (``resources/syntod/<domain>.yaml``) lists system states and user intents as nodes
that alternate, each with weighted next nodes, the user intents' slots and slot types, and
the walk constraints as rules. :func:`load_graph` validates it against
``workflow/schemas/syntod_graph.schema.yaml`` and then checks what a schema cannot (edge
targets exist, roles alternate, every node reachable from ``start`` and able to reach
``end``, rules name real nodes, ...); every error names the file and the key, e.g.
``cooking.yaml: nodes.next_step.next[2]: unknown node 'nxt_step'``.

:func:`sample_walks` draws walks with ``random.Random`` seeded per walk (walk ``i`` of seed
``s`` is the same whatever ``n``). At each node the edges a rule (or an effect's
precondition) disallows are masked and the remaining weights renormalised, so walks obey
the constraints by construction instead of being rejected and redrawn. Each walk carries
what a response simulator needs per turn: node, role, intent, the slot skeleton (known
values filled, free text left ``None``) and the state after the turn (result page, selected
item, cart / comparison list, recipe step).

Effects (what entering a node does to the walk state) and their implicit preconditions:
``new_query`` starts a result list; ``show_page`` shows its next page; ``select`` picks a
position on the current page (needs a page; the walk's first selection is the target item,
later ones prefer positions not yet selected); ``step_begin`` / ``step_next`` /
``step_goto`` move the recipe step (next at the last step marks the task finished, the
counter never passes the real number of steps; goto picks another real step);
``cart_add`` / ``compare_add`` add the selected item (needs one not yet in that list);
``cart_remove`` / ``compare_remove`` remove a random item (needs one); ``cart_clear`` buys.
After the walk the pages are filled: the target at the position of the first selection,
distinct other catalog items (``pager``; default: a seeded random sample) elsewhere.

Rules that change the sampled node instead of masking an edge (the original walkers draw a
node and then overwrite it): a ``max_count`` rule with ``instead`` sends a walk that would
pass the limit to ``instead`` (e.g. more_results -> select_i); a ``replace`` rule replaces a
sampled user node of its ``nodes``, while the walk state matches ``when`` (``selected``: an
item was selected; ``task_started``: a recipe step was shown), with probability ``prob`` by a
uniform choice among the allowed ``by`` nodes. Each replacement is recorded in the step's
``info`` (``replaced``: the drawn node, ``rule``) and counted in ``Walk.replaced``.

Every query (a ``new_query`` node) after the first looks for another item (``Walk.targets``;
the e-commerce release searches for the next product it adds to the cart / comparison list):
the first selection on that query's pages is that item. Intents marked ``drop`` (the release's
safety and rare intents) are sampled and then deleted together with the following system turn,
as the release's converter does (``Walk.dropped`` counts them).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import jsonschema
import yaml

from ..jsonl import input_error, json_lines
from ..yamlio import YAMLInputError, load_yaml

from ..utils import atomic_path
from ..vocab import DOMAINS

log = logging.getLogger("irrepro.syntod.graph")

PACKAGE_DIR = Path(__file__).resolve().parents[1]
GRAPH_DIR = PACKAGE_DIR / "resources" / "syntod"
SCHEMA_PATH = PACKAGE_DIR.parent / "schemas" / "syntod_graph.schema.yaml"

SYSTEM_EFFECTS = {"show_page"}
STEP_EFFECTS = {"step_begin", "step_next", "step_goto"}
STEP_RULES = {"step_bounds", "goto_real_step", "task_finished"}


class GraphError(ValueError):
    """A graph file that is not valid; the message names the file and the node/key."""


class SeedError(ValueError):
    """A seed file (recipes / products) that cannot be used; the message names file:line."""


# ----------------------------------------------------------------------------- graph model
@dataclass(frozen=True)
class Edge:
    to: str
    weight: float


@dataclass(frozen=True)
class Node:
    name: str
    role: str  # "system" | "user"
    intent: str | None  # user nodes: the annotated label
    effect: str | None
    annotation: dict | None  # system nodes: {"intent"?: str, "slots": {name: type}}
    next: tuple[Edge, ...]


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    nodes: frozenset[str]
    params: dict


@dataclass(frozen=True)
class Graph:
    domain: str
    source: str
    items: str  # "recipe" | "product"
    start: str
    end: str
    page_size: int
    max_length: int
    intents: dict  # intent -> {"slots": {name: type}, "eval_as": str | None, "description": str}
    nodes: dict  # name -> Node
    rules: tuple[Rule, ...]
    header_intents: tuple[str, ...] = ()  # the intent names the published header lists

    def rules_for(self, node: str) -> list[Rule]:
        return [r for r in self.rules if node in r.nodes]

    def eval_fold(self) -> dict[str, str]:
        """Intent -> label it is folded into for evaluation (``eval_as``)."""
        return {k: v["eval_as"] for k, v in self.intents.items() if v.get("eval_as")}

    def dropped_intents(self) -> set[str]:
        """Intents sampled and then deleted with the following system turn (``drop: true``)."""
        return {k for k, v in self.intents.items() if v.get("drop")}

    def kept_intents(self) -> list[str]:
        """The intents a finished conversation can carry (every intent but the dropped ones)."""
        return [k for k, v in self.intents.items() if not v.get("drop")]


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a mapping key given twice (YAML would silently keep the last)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise GraphError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _key(path: Iterable) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def graph_path(domain_or_path: str | os.PathLike) -> Path:
    """The YAML file of a shipped domain (``cooking``, ``ecommerce``) or the given path."""
    if str(domain_or_path) in DOMAINS:
        return GRAPH_DIR / f"{domain_or_path}.yaml"
    return Path(domain_or_path)


def load_graph(domain_or_path: str | os.PathLike) -> Graph:
    """Read, schema-validate and semantically check a graph; raise GraphError naming file + key."""
    path = graph_path(domain_or_path)
    name = path.name
    try:
        raw = load_yaml(path)
    except FileNotFoundError:
        raise GraphError(f"{path}: not found (domains: {', '.join(DOMAINS)})") from None
    except GraphError as exc:
        raise GraphError(f"{name}: {exc}") from None
    except YAMLInputError as exc:  # duplicate key or syntax error: file and line named
        raise GraphError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise GraphError(f"{name}: not valid YAML: {exc}") from None
    schema = load_yaml(SCHEMA_PATH)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise GraphError(f"{name}: invalid graph:\n  " + "\n  ".join(f"{name}: {_key(e.absolute_path)}: {e.message}" for e in errors))
    problems = check_semantics(raw)
    if problems:
        raise GraphError(f"{name}: invalid graph:\n  " + "\n  ".join(f"{name}: {p}" for p in problems))
    nodes = {
        n: Node(n, spec["role"], spec.get("intent", n) if spec["role"] == "user" else None, spec.get("effect"),
                spec.get("annotation"), tuple(Edge(e["to"], float(e["weight"])) for e in spec.get("next", [])))
        for n, spec in raw["nodes"].items()
    }
    intents = {k: {"slots": dict((v or {}).get("slots", {})), "eval_as": (v or {}).get("eval_as"),
                   "description": (v or {}).get("description", ""), "drop": bool((v or {}).get("drop"))}
               for k, v in raw["intents"].items()}
    rules = tuple(Rule(r["name"], r["kind"], frozenset(r["nodes"]),
                       {k: v for k, v in r.items() if k not in ("name", "kind", "nodes", "description")})
                  for r in raw["constraints"]["rules"])
    header = tuple(raw.get("header_intents") or [k for k, v in intents.items() if not v["drop"]])
    g = Graph(raw["domain"], str(path), raw["items"], raw["start"], raw["end"], raw["page_size"],
              raw["constraints"]["max_length"], intents, nodes, rules, header)
    log.info("graph %s: %d nodes, %d intents, %d rules", name, len(nodes), len(intents), len(rules))
    return g


def check_semantics(raw: dict) -> list[str]:
    """Checks beyond the schema, as ``<key>: <problem>`` strings (empty = valid)."""
    P: list[str] = []
    nodes, intents, start, end = raw["nodes"], raw["intents"], raw["start"], raw["end"]
    for key in ("start", "end"):
        if raw[key] not in nodes:
            P.append(f"{key}: unknown node {raw[key]!r}")
    if P:
        return P
    if nodes[start]["role"] != "system":
        P.append(f"nodes.{start}.role: the start node must be a system node")
    if nodes[end].get("next"):
        P.append(f"nodes.{end}.next: the end node has no outgoing edges")
    used_intents = set()
    for n, spec in nodes.items():
        role, edges = spec["role"], spec.get("next", [])
        if n != end and not edges:
            P.append(f"nodes.{n}.next: a node other than the end node needs at least one edge")
        seen = set()
        for i, e in enumerate(edges):
            to = e["to"]
            if to not in nodes:
                P.append(f"nodes.{n}.next[{i}]: unknown node {to!r}")
            elif to in seen:
                P.append(f"nodes.{n}.next[{i}]: duplicate edge to {to!r}")
            elif to != end and nodes[to]["role"] == role:
                P.append(f"nodes.{n}.next[{i}]: {role} node {n!r} is followed by {role} node {to!r} "
                         "(system states and user intents alternate)")
            seen.add(to)
        effect = spec.get("effect")
        if effect and (effect in SYSTEM_EFFECTS) != (role == "system"):
            P.append(f"nodes.{n}.effect: {effect!r} does not fit a {role} node")
        if effect in STEP_EFFECTS and raw["items"] != "recipe":
            P.append(f"nodes.{n}.effect: {effect!r} needs items: recipe (items: {raw['items']})")
        if role == "user":
            if "annotation" in spec:
                P.append(f"nodes.{n}.annotation: only system nodes carry an annotation (user turns are annotated by their intent)")
            intent = spec.get("intent", n)
            if intent not in intents:
                where = f"nodes.{n}.intent" if "intent" in spec else f"nodes.{n}"
                P.append(f"{where}: unknown intent {intent!r} (not in intents)")
            used_intents.add(intent)
        elif "intent" in spec:
            P.append(f"nodes.{n}.intent: system nodes have no intent (use annotation)")
    for k, spec in intents.items():
        if k not in used_intents:
            P.append(f"intents.{k}: no user node carries this intent")
        fold = (spec or {}).get("eval_as")
        if fold is not None and fold not in intents:
            P.append(f"intents.{k}.eval_as: unknown intent {fold!r}")
    names = set()
    for i, r in enumerate(raw["constraints"]["rules"]):
        if r["name"] in names:
            P.append(f"constraints.rules[{i}].name: duplicate rule name {r['name']!r}")
        names.add(r["name"])
        for j, n in enumerate(r["nodes"]):
            if n not in nodes:
                P.append(f"constraints.rules[{i}].nodes[{j}]: unknown node {n!r}")
        if r["kind"] in STEP_RULES and raw["items"] != "recipe":
            P.append(f"constraints.rules[{i}].kind: {r['kind']!r} needs items: recipe (items: {raw['items']})")
        for key in ("count", "by", "reset"):
            for j, n in enumerate(r.get(key) or []):
                if n not in nodes:
                    P.append(f"constraints.rules[{i}].{key}[{j}]: unknown node {n!r}")
        targets = list(r.get("by") or []) + ([r["instead"]] if r.get("instead") else [])
        if r.get("instead") and r["instead"] not in nodes:
            P.append(f"constraints.rules[{i}].instead: unknown node {r['instead']!r}")
        for n in r["nodes"]:
            for t in targets:
                if n in nodes and t in nodes and nodes[n]["role"] != nodes[t]["role"]:
                    P.append(f"constraints.rules[{i}]: {nodes[n]['role']} node {n!r} cannot be replaced by "
                             f"{nodes[t]['role']} node {t!r}")
        if r["kind"] == "replace" and any(n in nodes and nodes[n]["role"] != "user" for n in r["nodes"]):
            P.append(f"constraints.rules[{i}].nodes: a replace rule replaces user nodes only")
    if P:
        return P  # reachability is meaningless with dangling edges
    forward = {n: [e["to"] for e in s.get("next", [])] for n, s in nodes.items()}
    for r in raw["constraints"]["rules"]:  # a replacement is a transition too
        targets = list(r.get("by") or []) + ([r["instead"]] if r.get("instead") else [])
        for n, tos in list(forward.items()):
            if set(tos) & set(r["nodes"]):
                forward[n] = tos + [t for t in targets if t not in tos]
    backward: dict[str, list[str]] = {n: [] for n in nodes}
    for n, tos in forward.items():
        for to in tos:
            backward[to].append(n)
    reach = _closure(start, forward)
    for n in nodes:
        if n not in reach:
            P.append(f"nodes.{n}: unreachable from {start!r}")
    ends = _closure(end, backward)
    for n in nodes:
        if n in reach and n not in ends:
            P.append(f"nodes.{n}: {end!r} cannot be reached from this node")
    return P


def _closure(first: str, adjacency: dict[str, list[str]]) -> set[str]:
    seen, todo = {first}, deque([first])
    while todo:
        for m in adjacency[todo.popleft()]:
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


# ----------------------------------------------------------------------------- seed items
@dataclass
class Recipe:
    """A cooking seed: ``steps`` in order (stepNum 1..n); ``raw`` is the whole record."""
    id: str
    title: str
    steps: list[str]
    ingredients: list[str]
    raw: dict = field(repr=False)


@dataclass
class Product:
    """An e-commerce seed; ``attributes`` maps attribute name -> values; ``raw`` is the record."""
    id: str
    title: str
    category: str
    attributes: dict
    raw: dict = field(repr=False)


def _seed_error(path: str | os.PathLike, lineno: int, message: str) -> SeedError:
    return SeedError(f"{path}:{lineno}: {message}" if lineno else f"{path}: {message}")


def _read_records(path: str | os.PathLike) -> Iterable[tuple[str, dict]]:
    """``(file:line, object)`` of each record of a seed JSONL (:func:`irrepro.jsonl.json_lines`)."""
    path = Path(path)
    for no, rec in json_lines(path, error=_seed_error):
        yield f"{path}:{no}", rec


def _field(rec: dict, key: str, types, where: str):
    if key not in rec or rec[key] in (None, ""):
        raise SeedError(f"{where}: missing {key!r}")
    if not isinstance(rec[key], types):
        raise SeedError(f"{where}: {key!r} must be {types}, got {type(rec[key]).__name__}")
    return rec[key]


def _unique(items: list, path) -> list:
    seen: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.id in seen:
            raise SeedError(f"{path}: duplicate id {it.id!r} (records {seen[it.id] + 1} and {i + 1})")
        seen[it.id] = i
    if not items:
        raise SeedError(f"{path}: no records")
    return items


def load_recipes(path: str | os.PathLike) -> list[Recipe]:
    """Recipe seeds (SynTOD ``recipe_seed_*.jsonl``): id, title, steps with stepNum 1..n."""
    out = []
    for where, rec in _read_records(path):
        rid = str(_field(rec, "id", (int, str), where))
        title = _field(rec, "title", str, where)
        steps = _field(rec, "steps", list, where)
        nums = [s.get("stepNum") if isinstance(s, dict) else None for s in steps]
        if nums != list(range(1, len(steps) + 1)):
            raise SeedError(f"{where}: steps: stepNum must run 1..{len(steps)}, got {nums}")
        texts = [s.get("text") for s in steps]
        if not all(isinstance(t, str) and t.strip() for t in texts):
            raise SeedError(f"{where}: steps: every step needs a non-empty 'text'")
        ingredients = [i.get("text") or i.get("ingredient", "") if isinstance(i, dict) else str(i)
                       for i in rec.get("ingredients") or []]
        out.append(Recipe(rid, title, texts, ingredients, rec))
    log.info("recipes: %d from %s", len(out), path)
    return _unique(out, path)


def load_products(path: str | os.PathLike) -> list[Product]:
    """Product seeds (SynTOD product catalog JSONL): id (ASIN), title, category, attributes."""
    out = []
    for where, rec in _read_records(path):
        pid = str(_field(rec, "id", str, where))
        title = _field(rec, "title", str, where)
        attributes = rec.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise SeedError(f"{where}: 'attributes' must be an object, got {type(attributes).__name__}")
        out.append(Product(pid, title, str(rec.get("category") or ""), attributes, rec))
    log.info("products: %d from %s", len(out), path)
    return _unique(out, path)


def load_items(graph: Graph, path: str | os.PathLike) -> list:
    """The seed loader matching ``graph.items``."""
    return load_recipes(path) if graph.items == "recipe" else load_products(path)


# ----------------------------------------------------------------------------- walks
@dataclass
class Step:
    """One node of a walk. ``slots``: the annotation skeleton (user: the intent's slots;
    system: the node's annotation slots), known values filled, free text ``None``.
    ``state``: after the node (page / selection / cart / compare for products; step,
    n_steps, finished for recipes). ``info``: what this node did (``goto_from``,
    ``removed``, ``bought``)."""
    node: str
    role: str
    intent: str | None
    slots: dict
    state: dict
    info: dict = field(default_factory=dict)


@dataclass
class Walk:
    """One sampled walk. ``pages[k]`` = item ids of the k-th result page shown (a state's
    ``page`` indexes it); ``stop_reason``: end | max_length | dead_end (decided before the
    dropped turns are deleted); ``masked``: how often each rule (or ``effect:<name>``
    precondition) masked an edge in this walk."""
    id: str
    domain: str
    seed: int
    target: str
    pages: list[list[str]]
    steps: list[Step]
    stop_reason: str
    masked: dict
    # targets[q - 1]: the item query q looks for (targets[0] == target); replaced / dropped:
    # how often each replace rule changed a drawn node / each dropped intent was deleted
    targets: list[str] = field(default_factory=list)
    replaced: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)

    def target_of(self, state: dict) -> str:
        """The item the query current in ``state`` looks for (the walk's target before any)."""
        q = int(state.get("query") or 1)
        return self.targets[q - 1] if 0 < q <= len(self.targets) else self.target

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Walk":
        return cls(**{**d, "steps": [Step(**s) for s in d["steps"]]})

    def user_steps(self) -> list[Step]:
        return [s for s in self.steps if s.role == "user"]


Pager = Callable[[Any, int, random.Random], list[str]]


def random_pager(items: Sequence) -> Pager:
    """Default pager: ``k`` distinct non-target item ids, a seeded random sample of the catalog."""
    ids = [it.id for it in items]

    def pager(target, k: int, rng: random.Random) -> list[str]:
        pool = [i for i in ids if i != target.id]
        if k > len(pool):
            raise SeedError(f"a walk shows {k + 1} result slots but the catalog has only {len(ids)} items")
        return rng.sample(pool, k)

    return pager


class _WalkState:
    """The mutable state of one walk; items are (page, position) references until the end."""

    def __init__(self, graph: Graph, target, rng: random.Random):
        self.g, self.rng = graph, rng
        self.n_steps = len(target.steps) if graph.items == "recipe" else None
        self.visits: Counter = Counter()
        self.history: list[str] = []  # nodes entered, in order
        self.pages = 0
        self.page: int | None = None
        self.page_no = self.query_no = 0
        self.selected: tuple | None = None
        self.first_selected: tuple | None = None
        self.cart: list[tuple] = []
        self.compare: list[tuple] = []
        self.step, self.finished = 0, False
        self.page_query: list[int] = []  # page index -> the query (1-based) it answers
        self.anchors: dict[int, tuple] = {}  # query -> (page, position) of its first selection

    def over_limit(self, r: Rule) -> bool:
        """A ``max_count`` rule's limit is reached: visits of ``count`` (default: its nodes),
        counted since the last visit of a ``reset`` node when the rule has ``reset``."""
        counted = set(r.params.get("count") or r.nodes)
        since = self.history
        if r.params.get("reset"):
            last = max((k for k, n in enumerate(self.history) if n in r.params["reset"]), default=-1)
            since = self.history[last + 1:]
        return sum(n in counted for n in since) >= r.params["max"]

    def redirect(self, node: Node) -> tuple[str, str] | None:
        """(rule, node to go to instead) when a ``max_count`` rule with ``instead`` catches ``node``."""
        for r in self.g.rules_for(node.name):
            if r.kind == "max_count" and r.params.get("instead") and self.over_limit(r):
                return r.name, r.params["instead"]
        return None

    def matches(self, when: dict) -> bool:
        """The walk state matches a ``replace`` rule's ``when`` (selected / task_started)."""
        now = {"selected": self.first_selected is not None, "task_started": self.step > 0}
        return all(now[k] == v for k, v in (when or {}).items())

    def blocked_by(self, node: Node) -> str | None:
        """Name of the rule or effect precondition that forbids entering ``node`` now."""
        for r in self.g.rules_for(node.name):
            if r.kind == "max_count" and not r.params.get("instead") and self.over_limit(r):
                return r.name
            if r.kind == "task_started" and (self.step > 0) != r.params["value"]:
                return r.name
            if r.kind == "min_items" and len(getattr(self, r.params["list"])) < r.params["min"]:
                return r.name
            if r.kind == "step_bounds" and self.finished:
                return r.name
            if r.kind == "goto_real_step" and self.n_steps < 2:
                return r.name
            if r.kind == "task_finished" and self.finished != r.params["value"]:
                return r.name
        e = node.effect
        ok = {
            "select": self.page is not None,
            "cart_add": self.selected is not None and self.selected not in self.cart,
            "compare_add": self.selected is not None and self.selected not in self.compare,
            "cart_remove": bool(self.cart),
            "compare_remove": bool(self.compare),
            "step_next": self.step > 0,
            "step_goto": self.step > 0 and (self.n_steps or 0) >= 2,
        }.get(e, True)
        return None if ok else f"effect:{e}"

    def enter(self, node: Node) -> Step:
        self.visits[node.name] += 1
        self.history.append(node.name)
        info: dict = {}
        e = node.effect
        if e == "new_query":
            self.query_no, self.page_no, self.page = self.query_no + 1, 0, None
        elif e == "show_page":
            self.page, self.pages, self.page_no = self.pages, self.pages + 1, self.page_no + 1
            self.page_query.append(max(self.query_no, 1))
        elif e == "select":
            positions = list(range(self.g.page_size))
            fresh = [p for p in positions if (self.page, p) not in (self.cart + self.compare + [self.selected])]
            self.selected = (self.page, self.rng.choice(fresh or positions))
            self.first_selected = self.first_selected or self.selected
            self.anchors.setdefault(self.page_query[self.page], self.selected)
        elif e == "step_begin":
            self.step, self.finished = 1, False
        elif e == "step_next":
            if self.step < self.n_steps:
                self.step += 1
            else:
                self.finished = True
        elif e == "step_goto":
            info["goto_from"] = self.step
            self.step = self.rng.choice([s for s in range(1, self.n_steps + 1) if s != self.step])
            self.finished = False
        elif e in ("cart_add", "compare_add"):
            getattr(self, e.split("_")[0]).append(self.selected)
        elif e in ("cart_remove", "compare_remove"):
            lst = getattr(self, e.split("_")[0])
            info["removed"] = lst.pop(self.rng.randrange(len(lst)))
        elif e == "cart_clear":
            info["bought"], self.cart = list(self.cart), []
        return Step(node.name, node.role, node.intent, self._slots(node), self._snapshot(), info)

    def _slots(self, node: Node) -> dict:
        types = self.g.intents[node.intent]["slots"] if node.role == "user" else (node.annotation or {}).get("slots", {})
        slots: dict = {}
        for name, typ in types.items():
            value = None
            if typ == "selection" and node.effect == "select":
                value = self.selected[1] + 1
            elif typ == "id_list":  # positions (1-based) in the list the system turn shows
                shown = {"shown_cart": self.cart, "show_comparison": self.compare}.get((node.annotation or {}).get("intent"))
                value = list(range(1, (len(shown) if shown is not None else self.g.page_size) + 1))
            elif typ == "name_list":
                value = [("title", ref) for ref in self.compare]
            slots[name] = value
        return slots

    def _snapshot(self) -> dict:
        if self.g.items == "recipe":
            s = {"step": self.step, "n_steps": self.n_steps, "finished": self.finished}
        else:
            s = {"cart": list(self.cart), "compare": list(self.compare)}
        s.update(query=self.query_no, page=self.page, page_no=self.page_no, selected=self.selected)
        return s


def _replacement(graph: Graph, state: _WalkState, node: str, rng: random.Random) -> tuple[str, str] | None:
    """(rule, new node) if a redirect (``max_count`` + ``instead``) or the first matching
    ``replace`` rule changes the node just drawn, else None."""
    redirect = state.redirect(graph.nodes[node])
    if redirect:
        return redirect
    for r in graph.rules_for(node):
        if r.kind == "replace" and state.matches(r.params.get("when")):
            if rng.random() < r.params["prob"]:
                allowed = [b for b in r.params["by"] if not state.blocked_by(graph.nodes[b])]
                if allowed:
                    return r.name, rng.choice(allowed)
            return None  # only the first matching replace rule draws (the release's elif chain)
    return None


def _walk_nodes(graph: Graph, state: _WalkState, rng: random.Random) -> tuple[list[Step], str, Counter, Counter]:
    steps = [state.enter(graph.nodes[graph.start])]
    masked: Counter = Counter()
    replaced: Counter = Counter()
    node = graph.start
    while node != graph.end and len(steps) < graph.max_length:
        allowed = []
        for e in graph.nodes[node].next:
            why = state.blocked_by(graph.nodes[e.to])
            if why:
                masked[why] += 1
            else:
                allowed.append(e)
        if not allowed:
            return steps, "dead_end", masked, replaced
        node = rng.choices([e.to for e in allowed], weights=[e.weight for e in allowed])[0]
        change = _replacement(graph, state, node, rng)
        info = {}
        if change:
            replaced[change[0]] += 1
            info = {"replaced": node, "rule": change[0]}
            node = change[1]
        steps.append(state.enter(graph.nodes[node]))
        steps[-1].info.update(info)
    return steps, ("end" if node == graph.end else "max_length"), masked, replaced


def _drop(graph: Graph, steps: list[Step]) -> tuple[list[Step], Counter]:
    """The steps without the dropped intents' user turns and the system turn after each."""
    drop = graph.dropped_intents()
    kept, dropped, skip = [], Counter(), False
    for s in steps:
        if skip and s.role == "system" and s.node != graph.end:
            skip = False
            continue
        skip = False
        if s.role == "user" and s.intent in drop:
            dropped[s.intent] += 1
            skip = True
            continue
        kept.append(s)
    return kept, dropped


def _resolve(value, ids: dict, titles: dict):
    """Replace (page, position) references by item ids and ("title", ref) by item titles."""
    if isinstance(value, tuple):
        if value and value[0] == "title":
            return titles[ids[value[1]]]
        return ids[value]
    if isinstance(value, list):
        return [_resolve(v, ids, titles) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, ids, titles) for k, v in value.items()}
    return value


def _query_targets(graph: Graph, target, items: Sequence, steps: list[Step], n_queries: int,
                   rng: random.Random) -> list:
    """The item each query looks for: the walk's target first, then for every later query
    another catalog item, of the target's category when the next list the walk adds to is the
    comparison list (the e-commerce release searches for the next product it adds to the cart
    or comparison list and draws comparison products from the target's category)."""
    targets, used = [target], {target.id}
    starts = [k for k, s in enumerate(steps) if graph.nodes[s.node].effect == "new_query"]
    for prev, k in zip(starts, starts[1:n_queries]):
        if not any(graph.nodes[s.node].effect == "select" for s in steps[prev:k]):
            targets.append(targets[-1])  # nothing was selected: the new query looks for the same item
            continue
        nxt = next((graph.nodes[s.node].effect for s in steps[k:]
                    if graph.nodes[s.node].effect in ("cart_add", "compare_add")), None)
        pool = [it for it in items if it.id not in used]
        if nxt == "compare_add" and isinstance(target, Product):
            pool = [it for it in pool if it.category == target.category] or pool
        if not pool:
            raise SeedError(f"{graph.domain}: a walk issues {n_queries} queries but the catalog has only {len(items)} items")
        targets.append(rng.choice(pool))
        used.add(targets[-1].id)
    return targets


def _fill_pages(graph: Graph, state: _WalkState, targets: list, items: Sequence, pager: Pager,
                rng: random.Random, where: str) -> dict:
    """(page, position) -> item id: each query's target at its first selection (or at a random
    position of its first page), the pager's items for that target elsewhere, no id twice."""
    ids: dict = {}
    used = {t.id for t in targets}
    for q in sorted(set(state.page_query)):
        refs = [(p, pos) for p, pq in enumerate(state.page_query) if pq == q for pos in range(graph.page_size)]
        anchor = state.anchors.get(q) or refs[rng.randrange(graph.page_size)]
        k = len(refs) - 1
        want = min(k + len(used) - 1, len(items) - 1)
        got = list(pager(targets[q - 1], want, rng))
        if len(got) != want or len(set(got) | {targets[q - 1].id}) != want + 1:
            raise SeedError(f"{where}: the pager must return {want} distinct non-target ids, got {got}")
        others = [x for x in got if x not in used][:k]
        if len(others) < k:
            rest = [it.id for it in items if it.id not in used and it.id not in others]
            if k - len(others) > len(rest):
                raise SeedError(f"a walk shows {len(refs) + len(used) - 1} result slots but the catalog has only "
                                f"{len(items)} items")
            others += rng.sample(rest, k - len(others))
        used.update(others)
        others.reverse()
        for ref in refs:
            ids[ref] = targets[q - 1].id if ref == anchor else others.pop()
    return ids


def sample_walks(graph: Graph, n: int, seed: int, items: Sequence, pager: Pager | None = None) -> list[Walk]:
    """``n`` walks on ``graph``, deterministic in ``seed``; targets cycle through a seeded
    permutation of ``items`` (Recipe for recipe graphs, Product for product graphs). A pager
    ``pager(target, k, rng)`` returns ``k`` distinct ids other than ``target``'s, best first;
    ids already on the walk's pages are skipped."""
    kind = Recipe if graph.items == "recipe" else Product
    if not items:
        raise SeedError(f"{graph.domain}: no seed items")
    bad = [i for i, it in enumerate(items) if not isinstance(it, kind)]
    if bad:
        raise SeedError(f"{graph.domain}: items[{bad[0]}] is a {type(items[bad[0]]).__name__}, "
                        f"the graph needs {kind.__name__} seeds (items: {graph.items})")
    pager = pager or random_pager(items)
    order = list(range(len(items)))
    random.Random(f"{seed}:targets").shuffle(order)
    titles = {it.id: it.title for it in items}
    walks = []
    for i in range(n):
        rng = random.Random(f"{seed}:walk:{i}")
        target = items[order[i % len(items)]]
        state = _WalkState(graph, target, rng)
        steps, reason, masked, replaced = _walk_nodes(graph, state, rng)
        targets = _query_targets(graph, target, items, steps, state.query_no, rng)
        ids = _fill_pages(graph, state, targets, items, pager, rng, f"{graph.domain}: walk {i}")
        pages = [[ids[(p, pos)] for pos in range(graph.page_size)] for p in range(state.pages)]
        steps, dropped = _drop(graph, steps)
        for s in steps:
            s.slots, s.state, s.info = (_resolve(x, ids, titles) for x in (s.slots, s.state, s.info))
        walks.append(Walk(f"{graph.domain}-s{seed}-{i:05d}", graph.domain, seed, target.id, pages, steps,
                          reason, dict(sorted(masked.items())), [t.id for t in targets],
                          dict(sorted(replaced.items())), dict(sorted(dropped.items()))))
    stats = walk_stats(walks)
    log.info("walks %s: %d (seed %d), length mean %.1f, stop reasons %s", graph.domain, n, seed,
             stats["length"]["mean"], stats["stop_reasons"])
    if stats["stop_reasons"].get("dead_end"):
        log.warning("walks %s: %d walks hit a node whose every edge was masked", graph.domain,
                    stats["stop_reasons"]["dead_end"])
    return walks


def _summary(xs: list[int]) -> dict:
    if not xs:
        return {"mean": 0.0, "min": 0, "max": 0}
    return {"mean": round(sum(xs) / len(xs), 4), "min": min(xs), "max": max(xs)}


def walk_stats(walks: Sequence[Walk]) -> dict:
    """Walk statistics for DVC metrics: count, length (nodes) and user turns (mean/min/max),
    stop reasons, user-intent counts, opening-intent counts, masked-edge counts per rule,
    replacements per rule and deleted (dropped) turns per intent."""
    intents: Counter = Counter()
    opening: Counter = Counter()
    masked: Counter = Counter()
    replaced: Counter = Counter()
    dropped: Counter = Counter()
    for w in walks:
        user = w.user_steps()
        intents.update(s.intent for s in user)
        if user:
            opening[user[0].intent] += 1
        masked.update(w.masked)
        replaced.update(w.replaced)
        dropped.update(w.dropped)
    return {
        "n": len(walks),
        "length": _summary([len(w.steps) for w in walks]),
        "user_turns": _summary([len(w.user_steps()) for w in walks]),
        "stop_reasons": dict(sorted(Counter(w.stop_reason for w in walks).items())),
        "intents": dict(sorted(intents.items())),
        "opening_intents": dict(sorted(opening.items())),
        "masked_edges": dict(sorted(masked.items())),
        "replaced": dict(sorted(replaced.items())),
        "dropped": dict(sorted(dropped.items())),
    }


def write_walks(walks: Iterable[Walk], path: str | os.PathLike) -> int:
    """Walks as JSONL (one ``Walk.to_dict()`` per line), written atomically; returns the count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for w in walks:
            fh.write(json.dumps(w.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_walks(path: str | os.PathLike) -> list[Walk]:
    """Walks written by :func:`write_walks`; a bad line raises an :class:`~irrepro.errors.InputError`
    (a ValueError) naming file:line (:func:`irrepro.jsonl.json_lines`)."""
    out = []
    for no, rec in json_lines(path):
        try:
            out.append(Walk.from_dict(rec))
        except (TypeError, KeyError) as exc:
            raise input_error(path, no, f"not a walk record: {exc}") from None
    return out
