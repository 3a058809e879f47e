"""Small files in the exact formats and mirror paths of the paper route's downloads.

:func:`build_upstream_mirror` writes, under ``out_dir`` at each source's ``mirror`` path of
``resources/sources.yaml``, from the real files of the offline mirror (``../shared/data``):

* ``msmarco_collection``: ``collection.tar.gz`` holding ``collection.tsv`` (``pid<TAB>passage``,
  the MS MARCO pids and texts of the DL19+DL20 BM25 top-100 passages, in pid order as the real
  collection);
* ``tevatron_msmarco_corpus``: the titled corpus (gzip JSONL ``{"docid", "title", "text"}``, the
  same passages in the same order, as :func:`irrepro.bm25.with_titles` requires);
* ``tevatron_msmarco_aug_train``: Tevatron's training groups (gzip JSONL ``{"query_id", "query",
  "positive_passages": [{"docid", "title", "text"}], "negative_passages": [...]}``) built from the
  judged DL20 queries (positives: grade >= 2; negatives: the published BM25 run's passages judged
  0 or unjudged), as the mini route builds its groups; DL19 stays held out;
* ``dev_topics`` / ``dev_qrels``: the first ``dev_queries`` dev-small topics and their qrels lines,
  byte-exact (their relevant passages are not in this collection: dev metrics measure nothing
  in a rehearsal, the files only exercise the code);
* the SynTOD training catalogs: the test catalogs' records under new ids and titles
  (:func:`rehearsal_item`), because the paper route drops every training item that shares an id
  or a title with the test catalog; their content is the test items' (the rehearsal checks the
  code path, not the absence of leakage). The first :data:`LEAKED_TEST_ITEMS` test items are also
  listed unchanged, so the route's overlap filter has something to drop.

Titles: the real RocketQA titles are not in the mirror. Fixture titles are the first words of the
passage, except ``"-"`` (the placeholder the real data uses for no title) for pids with
``sha1(pid) % 10`` in {0, 1} and ``null`` for 2, so both forms reach the code.

Every file is deterministic (gzip mtime 0, fixed tar metadata), so its checksum is stable.
The real pins stay in sources.yaml: :func:`checksum_overlay` gives the fixtures' checksums and
:func:`overlaid_sources` a copy of the registry with them, for ``download_profile(...,
sources_path=...)``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ..yamlio import load_yaml

from ..download import SOURCES_YAML, load_sources
from ..utils import atomic_path, sha256_file

log = logging.getLogger("irrepro.rehearsal")

# mirror-relative inputs (the mini files)
RANKLLM = ("bm25-top100/retrieve_results_dl19.json", "bm25-top100/retrieve_results_dl20.json")
TRAIN_TOPICS, TRAIN_QRELS, TRAIN_RUN = ("trec-dl/topics.dl20.txt", "trec-dl/qrels.dl20-passage.txt",
                                        "bm25-top100/trec_results_dl20.txt")
DEV_TOPICS, DEV_QRELS = "trec-dl/topics.msmarco-passage.dev-subset.txt", "trec-dl/qrels.msmarco-passage.dev-subset.txt"
RECIPES, PRODUCTS = "syntod/recipe_seed_test_set.jsonl", "syntod/ecommerce_product_catalog_test.jsonl"

# source name -> what the fixture is built from
FIXTURE_SOURCES = ("msmarco_collection", "tevatron_msmarco_corpus", "tevatron_msmarco_aug_train", "dev_topics",
                   "dev_qrels", "syntod_recipe_corpus", "syntod_ecommerce_catalog_4k_final",
                   "syntod_ecommerce_catalog_4k")
RECIPE_ID_OFFSET = 900_000_000
OVERLAY_SOURCES = "sources.rehearsal.yaml"  # the overlaid registry, written beside the fixtures
REHEARSAL_TAG = " (rehearsal)"
LEAKED_TEST_ITEMS = 3  # test items also listed verbatim in each training catalog (build_upstream_mirror)


# ----------------------------------------------------------------------------- helpers
def fixture_title(pid: str, text: str) -> str | None:
    """The fixture's title of passage ``pid`` (module docstring): ``"-"``, ``None`` or words."""
    bucket = int(hashlib.sha1(pid.encode()).hexdigest(), 16) % 10
    if bucket < 2:
        return "-"
    if bucket == 2:
        return None
    return " ".join(text.split()[:4])


def _gzip_bytes_to(path: Path, data: bytes, name: str = "") -> None:
    with open(path, "wb") as raw, gzip.GzipFile(filename=name, mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(data)


def _jsonl(records: Iterable[Mapping]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


def _write(path: Path, data: bytes, gz: bool = False) -> None:
    with atomic_path(path) as tmp:
        if gz:
            _gzip_bytes_to(tmp, data)
        else:
            tmp.write_bytes(data)


def find_mirror(roots: Iterable[str | os.PathLike]) -> Path:
    """The first mirror root holding every input the fixtures are built from."""
    needed = (*RANKLLM, TRAIN_TOPICS, TRAIN_QRELS, TRAIN_RUN, DEV_TOPICS, DEV_QRELS, RECIPES, PRODUCTS)
    tried = []
    for root in roots:
        missing = [p for p in needed if not (Path(root) / p).is_file()]
        if not missing:
            return Path(root)
        tried.append(f"{root} (missing {missing[0]})")
    raise FileNotFoundError("no data mirror with the rehearsal's inputs: " + ("; ".join(tried) or "none given"))


def mirror_passages(mirror: Path) -> dict[str, str]:
    """{pid: text} of the mini passages, in pid order (via the mini corpus route's own reader)."""
    from ..bm25 import write_corpus_from_rankllm

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "corpus.jsonl"
        write_corpus_from_rankllm([str(mirror / p) for p in RANKLLM], str(out))
        docs = {}
        with open(out, encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                docs[rec["id"]] = rec["contents"]
    for pid, text in docs.items():
        if "\t" in text or "\n" in text or "\r" in text:
            raise ValueError(f"passage {pid} holds a tab or line break; it cannot be a collection.tsv line")
    return docs


# ----------------------------------------------------------------------------- MS MARCO / Tevatron
def write_collection_tar(passages: Mapping[str, str], path: Path) -> None:
    """``collection.tar.gz`` with one member ``collection.tsv`` (fixed metadata, gzip mtime 0)."""
    data = "".join(f"{pid}\t{text}\n" for pid, text in passages.items()).encode("utf-8")
    info = tarfile.TarInfo("collection.tsv")
    info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    _write(path, buf.getvalue(), gz=True)


def titled_corpus(passages: Mapping[str, str]) -> list[dict]:
    return [{"docid": pid, "title": fixture_title(pid, text), "text": text} for pid, text in passages.items()]


def tevatron_groups(mirror: Path, passages: Mapping[str, str], n_negatives: int = 30, seed: int = 0) -> list[dict]:
    """Tevatron-format groups of the judged DL20 queries (module docstring), fixture titles."""
    from ..rerank.data import build_groups_from_qrels
    from ..trec import read_qrels, read_run, read_topics

    qrels = read_qrels(mirror / TRAIN_QRELS)
    topics = {q: t for q, t in read_topics(mirror / TRAIN_TOPICS).items() if q in qrels}
    records = build_groups_from_qrels(topics, qrels, read_run(mirror / TRAIN_RUN), passages, n_negatives,
                                      min_grade=2, seed=seed)
    out = []
    for rec in records:
        def psg(p):
            return {"docid": p["docid"], "title": fixture_title(p["docid"], p["text"]), "text": p["text"]}

        out.append({"query_id": rec["query_id"], "query": rec["query"],
                    "positive_passages": [psg(p) for p in rec["positive_passages"]],
                    "negative_passages": [psg(p) for p in rec["negative_passages"]]})
    return out


def dev_subset(mirror: Path, n_queries: int) -> tuple[bytes, bytes]:
    """(topics bytes, qrels bytes): the first ``n_queries`` dev-small topics, their qrels lines."""
    topic_lines = (mirror / DEV_TOPICS).read_bytes().splitlines(keepends=True)[:n_queries]
    qids = {line.split(b"\t", 1)[0] for line in topic_lines}
    qrel_lines = [line for line in (mirror / DEV_QRELS).read_bytes().splitlines(keepends=True)
                  if line.split(None, 1)[0] in qids]
    return b"".join(topic_lines), b"".join(qrel_lines)


# ----------------------------------------------------------------------------- SynTOD
def rehearsal_item(rec: dict) -> dict:
    """A test-catalog record as a distinct training item: new id (recipes: +900,000,000; products:
    ``RH`` + id, ``asin`` likewise) and `` (rehearsal)`` after the title; other fields unchanged."""
    rec = dict(rec)
    if isinstance(rec.get("id"), int):
        rec["id"] = RECIPE_ID_OFFSET + rec["id"]
    else:
        rec["id"] = f"RH{rec['id']}"
        if rec.get("asin"):
            rec["asin"] = f"RH{rec['asin']}"
    rec["title"] = f"{rec['title']}{REHEARSAL_TAG}"
    return rec


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ----------------------------------------------------------------------------- build + overlay
def build_upstream_mirror(out_dir: str | os.PathLike, mirror: str | os.PathLike,
                          dev_queries: int = 20, n_negatives: int = 30, seed: int = 0) -> dict[str, dict]:
    """Write the fixtures under ``out_dir`` (each at its source's ``mirror`` path) from the real
    files of ``mirror``; returns :func:`checksum_overlay` of ``out_dir``."""
    mirror, out_dir = Path(mirror), Path(out_dir)
    by_name = {s.name: s for s in load_sources()}
    dest = {name: out_dir / by_name[name].mirror for name in FIXTURE_SOURCES}

    passages = mirror_passages(mirror)
    write_collection_tar(passages, dest["msmarco_collection"])
    _write(dest["tevatron_msmarco_corpus"], _jsonl(titled_corpus(passages)), gz=True)
    groups = tevatron_groups(mirror, passages, n_negatives, seed)
    _write(dest["tevatron_msmarco_aug_train"], _jsonl(groups), gz=True)
    topics, qrels = dev_subset(mirror, dev_queries)
    _write(dest["dev_topics"], topics)
    _write(dest["dev_qrels"], qrels)

    recipes, products = _records(mirror / RECIPES), _records(mirror / PRODUCTS)
    # + the first LEAKED_TEST_ITEMS test items verbatim: the paper route must drop them (a training
    # catalog that shares items with the test seeds), so undoing that filter fails the rehearsal
    _write(dest["syntod_recipe_corpus"], _jsonl([*(rehearsal_item(r) for r in recipes), *recipes[:LEAKED_TEST_ITEMS]]))
    _write(dest["syntod_ecommerce_catalog_4k_final"],
           _jsonl([*(rehearsal_item(r) for r in products), *products[:LEAKED_TEST_ITEMS]]))
    _write(dest["syntod_ecommerce_catalog_4k"], _jsonl(rehearsal_item(r) for r in products[: len(products) // 2]))
    log.info("rehearsal mirror %s: %d passages, %d training groups, %d dev topics, %d recipes, %d products",
             out_dir, len(passages), len(groups), topics.count(b"\n"), len(recipes), len(products))
    return checksum_overlay(out_dir)


def checksum_overlay(out_dir: str | os.PathLike, names: Iterable[str] = FIXTURE_SOURCES) -> dict[str, dict]:
    """``{source name: {"sha256", "size", "md5": None, "git_blob": None}}`` of the fixture files
    under ``out_dir``: the pins that replace the real ones for a rehearsal (a missing file raises)."""
    by_name = {s.name: s for s in load_sources()}
    out = {}
    for name in names:
        path = Path(out_dir) / by_name[name].mirror
        if not path.is_file():
            raise FileNotFoundError(f"{path}: fixture of source {name!r} missing; run build_upstream_mirror")
        out[name] = {"sha256": sha256_file(path), "size": path.stat().st_size, "md5": None, "git_blob": None}
    return out


def overlaid_sources(overlay: Mapping[str, Mapping[str, Any]], base: str | os.PathLike = SOURCES_YAML) -> dict:
    """The registry ``base`` (parsed YAML) with each overlaid entry's keys replaced (``None``
    removes a key). An overlay name that is not in ``base`` is an error."""
    data = load_yaml(base)
    entries = {e["name"]: e for e in data["sources"]}
    unknown = sorted(set(overlay) - set(entries))
    if unknown:
        raise KeyError(f"{base}: no source named {unknown}")
    for name, fields in overlay.items():
        for key, value in fields.items():
            if value is None:
                entries[name].pop(key, None)
            else:
                entries[name][key] = value
    return data


def write_overlaid_sources(overlay: Mapping[str, Mapping[str, Any]], path: str | os.PathLike,
                           base: str | os.PathLike = SOURCES_YAML) -> Path:
    """Write :func:`overlaid_sources` to ``path`` (validated by the download stage's loader)."""
    data = overlaid_sources(overlay, base)
    with atomic_path(path) as tmp:
        tmp.write_text("# sources.yaml with the rehearsal fixtures' checksums (irrepro.rehearsal.upstream)\n"
                       + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        load_sources(tmp)
    return Path(path)
