"""SynTOD items: which catalog items the generator may use, and which items a conversation is about.

Train items are never test items. The published test conversations were generated from the
release's TEST seed catalogs (``syntod_recipe_seed``, ``syntod_ecommerce_catalog``), so
generating our training conversations from the same files would train the TOD model on the
recipes and products its test conversations are about. :func:`items_stage` therefore writes,
per domain, the catalog the generator may use (``train.jsonl``: walks, generation, BM25 result
pages and the mini base's corpus read only this file) and the held-out items (``test.jsonl``):

* ``syntod.train_catalog.<domain>`` null (mini): the test seed catalog is split by item id,
  seeded (:func:`split_items`, ``syntod.item_split: {test_fraction, seed}``);
* a source name (paper): the release's training catalog (downloaded, records brought to the
  seed schema by :func:`normalize_record`) minus every item that shares an id or a title with
  the test seed catalog, which stays evaluation-only (``test.jsonl`` = all of it).

A conversation's items (:func:`conversation_items`) are the catalog titles found in its
``### RECIPE:`` blocks (``title: <t>, description: ...``) and ``### RESULTS:`` lines
(``id: <n>, <t>, ...`` / ``id: <n>, product_title: <t>, ...``): ``mentioned`` = all of them,
``selected`` = the RECIPE blocks and the results picked by a ``select_i`` turn (the line at the
selection's position on the last page). Titles are compared after :func:`norm_title`, and a
line names title ``t`` when its text up to a comma (or its end) is ``t``, so titles with commas
are found. A published test conversation is *unseen* when none of its items (by
``syntod.item_split.items_of``) is a training item; the evaluation scores each published test
set twice, on all its conversations and on the unseen ones (test set ``<name>_unseen``, see
:func:`add_unseen_sets`; a conversation keeps its key, so the evaluation generates its
completions once for both sets).
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

log = logging.getLogger("irrepro.syntod.items")

ITEM_SPLIT_KEYS = ("test_fraction", "seed", "items_of")
ITEMS_OF = ("mentioned", "selected")
UNSEEN_SUFFIX = "_unseen"
TRAIN_FILE, TEST_FILE = "train.jsonl", "test.jsonl"

_RESULT_LINE = re.compile(r"^\s*id:\s*\d+\s*,\s*(?:product_title:\s*)?(.*)$")
_RECIPE_TITLE = re.compile(r"^\s*title:\s*(.*)$", re.DOTALL)


# ----------------------------------------------------------------------------- titles


def norm_title(text: object) -> str:
    """A title as compared everywhere here: HTML entities decoded, whitespace collapsed, casefolded."""
    return " ".join(html.unescape(str(text)).split()).casefold()


def _titles_in(text: str, titles: frozenset[str] | set[str]) -> str | None:
    """The longest title of ``titles`` that ``text`` starts with, followed by a comma or the end."""
    norm = norm_title(text)
    cuts = [i for i, ch in enumerate(norm) if ch == ","] + [len(norm)]
    for cut in reversed(cuts):
        head = norm[:cut].strip()
        if head in titles:
            return head
    return None


def _page(text: str, titles) -> list[str | None]:
    """The catalog title (or None) of every ``id: n, ...`` line of a RESULTS block, in order."""
    out = []
    for line in text.splitlines():
        m = _RESULT_LINE.match(line)
        if m:
            out.append(_titles_in(m.group(1), titles))
    return out


def conversation_items(conv, titles: Iterable[str], items_of: str = "mentioned") -> set[str]:
    """The normalized titles of ``titles`` (a catalog's, normalized) that ``conv`` is about
    (see the module docstring for ``items_of``)."""
    if items_of not in ITEMS_OF:
        raise ValueError(f"items_of must be one of {list(ITEMS_OF)}, got {items_of!r}")
    titles = titles if isinstance(titles, (set, frozenset)) else frozenset(titles)
    found: set[str] = set()
    page: list[str | None] = []
    for turn in conv.turns:
        if turn.role == "recipe":
            m = _RECIPE_TITLE.match(turn.text)
            hit = _titles_in(m.group(1), titles) if m else None
            if hit:
                found.add(hit)
        elif turn.role == "results":
            page = _page(turn.text, titles)
            if items_of == "mentioned":
                found.update(t for t in page if t)
        elif turn.role == "human" and items_of == "selected" and turn.intent == "select_i":
            sel = (turn.slots or {}).get("selection")
            if isinstance(sel, int) and not isinstance(sel, bool) and 1 <= sel <= len(page) and page[sel - 1]:
                found.add(page[sel - 1])
    return found


def is_unseen(conv, train_titles, catalog_titles, items_of: str = "mentioned") -> bool:
    """True when none of ``conv``'s items (looked up among ``catalog_titles``) is a training title."""
    train = train_titles if isinstance(train_titles, (set, frozenset)) else set(train_titles)
    return not (conversation_items(conv, catalog_titles, items_of) & train)


# ----------------------------------------------------------------------------- catalogs


def item_split_params(P: Mapping) -> dict:
    """``P["syntod"]["item_split"]``, checked (``test_fraction`` in (0, 1))."""
    from .stages import params_section

    spec = params_section(P, "syntod.item_split", ITEM_SPLIT_KEYS)
    f = spec["test_fraction"]
    if not isinstance(f, (int, float)) or not 0 < f < 1:
        raise ValueError(f"params: syntod.item_split.test_fraction must be in (0, 1), got {f!r}")
    if spec["items_of"] not in ITEMS_OF:
        raise ValueError(f"params: syntod.item_split.items_of must be one of {list(ITEMS_OF)}, got {spec['items_of']!r}")
    return dict(spec)


def split_items(records: Sequence[dict], test_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """``(train, test)`` records: the ``round(n * test_fraction)`` records with the smallest
    sha256(``seed:id``) are test items (independent of file order); both keep file order.
    Each part must be non-empty."""
    n = len(records)
    n_test = round(n * float(test_fraction))
    if not 0 < n_test < n:
        raise ValueError(f"syntod.item_split.test_fraction {test_fraction} leaves {n_test} of {n} items for test; "
                         "both parts must be non-empty")
    rank = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}:{records[i]['id']}".encode()).hexdigest())
    test = set(rank[:n_test])
    return [r for i, r in enumerate(records) if i not in test], [r for i, r in enumerate(records) if i in test]


def _text(x) -> str:
    return x if isinstance(x, str) else str(x.get("text") or x.get("ingredient") or "") if isinstance(x, dict) else str(x)


def normalize_record(domain: str, rec: dict) -> tuple[dict | None, str | None]:
    """``(record in the seed schema, None)`` or ``(None, why it is unusable)``. Recipes: ``steps``
    as strings or ``{text}`` objects become ``{stepNum: 1..n, text}``; ingredients as strings
    become ``{text, ingredient}``. Products: ``id`` falls back to ``asin``. Other fields are kept."""
    if not isinstance(rec, dict):
        return None, "not an object"
    rec = dict(rec)
    if domain == "ecommerce" and not rec.get("id") and rec.get("asin"):
        rec["id"] = rec["asin"]
    if rec.get("id") in (None, "") or isinstance(rec["id"], (dict, list)):
        return None, "no id"
    if not isinstance(rec.get("title"), str) or not rec["title"].strip():
        return None, "no title"
    if domain == "ecommerce":
        rec["id"] = str(rec["id"])
        if rec.get("attributes") is not None and not isinstance(rec["attributes"], dict):
            rec["attributes"] = {}
        return rec, None
    steps = [_text(s).strip() for s in rec.get("steps") or [] if _text(s).strip()] if isinstance(rec.get("steps"), list) else []
    if not steps:
        return None, "no steps"
    rec["steps"] = [{"stepNum": i, "text": t} for i, t in enumerate(steps, 1)]
    if isinstance(rec.get("ingredients"), list):
        rec["ingredients"] = [i if isinstance(i, dict) else {"text": str(i), "ingredient": str(i)}
                              for i in rec["ingredients"]]
    return rec, None


def read_records(path: str | os.PathLike) -> list[dict]:
    """The JSON objects of a JSONL file; a line that is not JSON is an error naming file and line."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for no, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{no}: not valid JSON: {exc.msg}") from None
    return out


def training_catalog(domain: str, test_records: Sequence[dict], train_records: Sequence[dict] | None,
                     spec: Mapping) -> tuple[list[dict], list[dict], dict]:
    """``(train, test, stats)`` item records of ``domain``: a seeded split of ``test_records``
    when ``train_records`` is None, else ``train_records`` (normalized, de-duplicated by id)
    minus every record sharing an id or a title with ``test_records``."""
    if train_records is None:
        train, test = split_items(test_records, spec["test_fraction"], int(spec["seed"]))
        return train, test, {"mode": "split", "test_fraction": spec["test_fraction"], "seed": spec["seed"],
                             "catalog_items": len(test_records)}
    test_ids = {str(r.get("id")) for r in test_records}
    test_titles = {norm_title(r.get("title", "")) for r in test_records}
    skipped: dict[str, int] = {}
    train, seen, removed, dupes = [], set(), 0, 0
    for raw in train_records:
        rec, why = normalize_record(domain, raw)
        if rec is None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        if str(rec["id"]) in test_ids or norm_title(rec["title"]) in test_titles:
            removed += 1
            continue
        if str(rec["id"]) in seen:
            dupes += 1
            continue
        seen.add(str(rec["id"]))
        train.append(rec)
    if not train:
        raise ValueError(f"{domain}: no usable training catalog record (skipped: {skipped}, test items removed: {removed})")
    return train, list(test_records), {"mode": "train_catalog", "catalog_items": len(train_records),
                                       "skipped": skipped, "duplicates": dupes, "removed_test_items": removed}


def write_records(records: Iterable[dict], path: str | os.PathLike) -> None:
    from ..utils import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def catalog_titles(path: str | os.PathLike) -> frozenset[str]:
    """The normalized titles of a catalog JSONL (records with a ``title``)."""
    return frozenset(norm_title(r["title"]) for r in read_records(path) if isinstance(r, dict) and r.get("title"))


# ----------------------------------------------------------------------------- stage


def unseen_counts(convs: Sequence, train: frozenset[str], all_titles: frozenset[str]) -> dict:
    """How many of ``convs`` are unseen under each ``items_of`` rule, and how many have no item."""
    out = {"conversations": len(convs)}
    for how in ITEMS_OF:
        items = [conversation_items(c, all_titles, how) for c in convs]
        out[f"unseen_{how}"] = sum(not (i & train) for i in items)
        out[f"without_items_{how}"] = sum(not i for i in items)
    return out


def split_domain(P: Mapping, domain: str, raw: str | os.PathLike) -> tuple[list[dict], list[dict], dict, str | None]:
    """``(train items, test items, split stats, training catalog source or None)`` of ``domain``
    under the params (a pure function of the raw files and ``syntod.item_split`` /
    ``syntod.train_catalog``, so the TOD base can recompute it)."""
    from ..datasets import source_path
    from .stages import SEED_SOURCES

    source = ((P["syntod"].get("train_catalog") or {}).get(domain))
    test_records = read_records(source_path(raw, SEED_SOURCES[domain]))
    train_records = read_records(source_path(raw, source)) if source else None
    train, test, stats = training_catalog(domain, test_records, train_records, item_split_params(P))
    return train, test, stats, source


def items_stage(P: Mapping, domain: str, raw: str | os.PathLike, out_dir: str | os.PathLike,
                out_metrics: str | os.PathLike) -> dict:
    """Write ``out_dir/train.jsonl`` (the generator's items) and ``out_dir/test.jsonl`` (held-out
    items) of ``domain`` and the split's counts, incl. unseen published test conversations per
    test set, to ``out_metrics`` (DVC metrics). Returns the metrics."""
    from ..datasets import source_path
    from ..utils import atomic_path
    from .evaluation import PUBLISHED
    from .format import read_jsonl
    from .stages import SEED_SOURCES

    spec = item_split_params(P)
    train, test, stats, source = split_domain(P, domain, raw)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_records(train, out / TRAIN_FILE)
    write_records(test, out / TEST_FILE)
    train_t = frozenset(norm_title(r["title"]) for r in train)
    all_t = train_t | frozenset(norm_title(r["title"]) for r in test)
    published = {name: unseen_counts(read_jsonl(source_path(raw, src)), train_t, all_t)
                 for name, src in PUBLISHED[domain].items()}
    metrics = {"domain": domain, **stats, "train_catalog": source or SEED_SOURCES[domain],
               "test_catalog": SEED_SOURCES[domain], "train_items": len(train), "test_items": len(test),
               "items_of": spec["items_of"], "published": published}
    with atomic_path(out_metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("syntod-items %s: %d train / %d test items (%s) -> %s; unseen published conversations (%s): %s",
             domain, len(train), len(test), stats["mode"], out, spec["items_of"],
             {n: f"{c['unseen_' + spec['items_of']]}/{c['conversations']}" for n, c in published.items()})
    return metrics


# ----------------------------------------------------------------------------- evaluation subsets


def add_unseen_sets(test_sets: Mapping[str, Sequence], published: Iterable[str], train_titles, all_titles,
                    items_of: str) -> dict[str, list]:
    """``test_sets`` with, after each published set ``<name>``, the set ``<name>_unseen`` of its
    conversations whose items are all unseen (:func:`is_unseen`). Every conversation gets its
    evaluation key as ``id`` (:func:`irrepro.syntod.evaluation.conversation_key` at its place in
    the whole set), so a conversation has the same key, sample and prompts in both sets and the
    "all" set is evaluated exactly as without subsets."""
    from .evaluation import conversation_key

    published = set(published)
    out: dict[str, list] = {}
    for name, convs in test_sets.items():
        keyed = [c if c.id is not None else dataclasses.replace(c, meta={**c.meta, "id": conversation_key(c, i)})
                 for i, c in enumerate(convs)]
        out[name] = keyed
        if name in published:
            out[name + UNSEEN_SUFFIX] = [c for c in keyed if is_unseen(c, train_titles, all_titles, items_of)]
            log.info("%s: %d of %d conversations have only unseen items (items_of=%s) -> test set %s", name,
                     len(out[name + UNSEEN_SUFFIX]), len(keyed), items_of, name + UNSEEN_SUFFIX)
            if not out[name + UNSEEN_SUFFIX]:
                log.warning("%s: no conversation with only unseen items; %s is empty", name, name + UNSEEN_SUFFIX)
    return out


def unseen_test_sets(test_sets: Mapping[str, Sequence], domain: str, items_dir: str | os.PathLike,
                     items_of: str) -> dict[str, list]:
    """:func:`add_unseen_sets` for ``domain`` with the catalogs of an items_stage directory."""
    from .evaluation import PUBLISHED

    train_t = catalog_titles(Path(items_dir) / TRAIN_FILE)
    all_t = train_t | catalog_titles(Path(items_dir) / TEST_FILE)
    return add_unseen_sets(test_sets, PUBLISHED[domain], train_t, all_t, items_of)
