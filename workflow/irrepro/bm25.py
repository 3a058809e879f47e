"""First-stage BM25 with pyserini/Anserini: corpus files, Lucene index, batch search, doc text.

Two routes produce the same JsonCollection JSONL (``{"id": docid, "contents": text}``):

* mini: :func:`write_corpus_from_rankllm` collects the passages of rank_llm's BM25 top-100
  retrieve results (DL19 + DL20, about 9.7k unique passages) into a sub-collection;
* paper: :func:`write_corpus_from_msmarco_tsv` converts MS MARCO's ``collection.tsv``
  (8.8M passages), or :func:`prebuilt_index_path` fetches pyserini's prebuilt index.

BM25 parameters are always passed explicitly (:func:`search` calls ``set_bm25(k1, b)``);
pyserini's CLI silently uses k1=0.82 b=0.68 for ``msmarco-v1-passage``, we never rely on it.

pyserini is imported lazily through :func:`irrepro.java.import_pyserini`, which picks a
Java >= 21 and starts the JVM correctly (see :mod:`irrepro.java`); the JVM costs ~8 s once
per process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping
from .errors import FailureError, InputError, read_json_file

from irrepro.java import import_pyserini, java_message
from irrepro.progress import progress
from irrepro.utils import atomic_path

log = logging.getLogger("irrepro.bm25")

PathLike = str | os.PathLike
Run = dict[str, dict[str, float]]

_LOG_EVERY = 1_000_000  # lines, for the 8.8M-passage TSV


# ----------------------------------------------------------------------------- corpora
def _docid_key(docid: str) -> tuple[int, int, str]:
    """Sort numerically when the id is an integer (MS MARCO pids), else lexically after them."""
    return (0, int(docid), docid) if docid.isdigit() else (1, 0, docid)


def write_corpus_jsonl(docs: Iterable[tuple], out_path: PathLike) -> int:
    """``(docid, contents)`` or ``(docid, contents, extra fields)`` per line, atomically."""
    n = 0
    with atomic_path(out_path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as out:
        for docid, text, *extra in docs:
            out.write(json.dumps({"id": docid, "contents": text, **(extra[0] if extra else {})}, ensure_ascii=False))
            out.write("\n")
            n += 1
    return n


def write_corpus_from_rankllm(json_paths: list[str], out_path: str) -> int:
    """Write the unique passages of rank_llm retrieve-result files as a JsonCollection JSONL.

    Each input is a JSON list of ``{"query": ..., "hits": [{"content", "qid", "docid",
    "rank", "score"}, ...]}``. Output: one ``{"id": docid, "contents": content}`` per unique
    docid, sorted by docid as an integer, text byte-exact (no normalisation, non-ASCII kept
    as UTF-8). Raises ValueError if one docid carries different content in two places
    (naming both files and the docid) or if an input is not in the expected shape.
    Written atomically. Returns the number of passages written.
    """
    if not json_paths:
        raise ValueError("write_corpus_from_rankllm: no input files")
    docs: dict[str, tuple[str, str]] = {}  # docid -> (content, first file seen in)
    for path in json_paths:
        path = str(path)
        data = read_json_file(path)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of {{query, hits}} objects")
        n_hits = 0
        for qi, entry in enumerate(data):
            hits = entry.get("hits") if isinstance(entry, dict) else None
            if not isinstance(hits, list):
                raise ValueError(f"{path}: entry {qi} has no 'hits' list")
            for hi, hit in enumerate(hits):
                try:
                    docid, content = str(hit["docid"]), hit["content"]
                except (KeyError, TypeError):
                    raise ValueError(f"{path}: entry {qi} hit {hi} lacks 'docid'/'content'") from None
                if not isinstance(content, str):
                    raise ValueError(f"{path}: entry {qi} hit {hi} (docid {docid}): content is not a string")
                n_hits += 1
                seen = docs.get(docid)
                if seen is None:
                    docs[docid] = (content, path)
                elif seen[0] != content:
                    raise ValueError(
                        f"docid {docid} has different content in {seen[1]} and {path}"
                    )
        log.info("%s: %d queries, %d hits; %d unique passages so far", path, len(data), n_hits, len(docs))
    n = write_corpus_jsonl(((d, docs[d][0]) for d in sorted(docs, key=_docid_key)), out_path)
    log.info("wrote %d passages to %s", n, out_path)
    return n


@contextlib.contextmanager
def _open_collection(path: str):
    """``collection.tsv`` as a binary stream: the file itself, or streamed out of the
    official ``collection.tar.gz`` download without unpacking it to disk."""
    if not path.endswith((".tar.gz", ".tgz")):
        with open(path, "rb") as fh:
            yield fh
        return
    with tarfile.open(path, "r|gz") as tar:
        for member in tar:
            if member.isfile() and member.name.rsplit("/", 1)[-1] == "collection.tsv":
                yield tar.extractfile(member)
                return
    raise ValueError(f"{path}: no collection.tsv inside the archive")


def _iter_msmarco_tsv(tsv_path: str) -> Iterable[tuple[str, str]]:
    with _open_collection(tsv_path) as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{tsv_path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: not valid UTF-8 ({e})") from None
            # Same normalisation as Anserini/pyserini's convert_collection_to_jsonl.py
            # (``line.rstrip().split('\t')``), so texts equal the prebuilt index's.
            fields = line.rstrip().split("\t")
            if len(fields) != 2:
                raise ValueError(f"{where}: expected 'pid<TAB>passage', got {len(fields)} field(s)")
            pid, text = fields
            if not pid.isdigit():
                raise ValueError(f"{where}: passage id {pid[:40]!r} is not an integer")
            if lineno % _LOG_EVERY == 0:
                log.info("%s: %d passages read", tsv_path, lineno)
            yield pid, text


def _iter_tevatron_corpus(path: str) -> Iterable[tuple[int, str, str, str]]:
    """``(lineno, docid, title, text)`` of ``Tevatron/msmarco-passage-corpus``'s
    ``corpus.jsonl.gz`` (one ``{"docid", "title", "text"}`` per line)."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                rec = json.loads(line)
                docid, title, text = str(rec["docid"]), rec.get("title") or "", rec["text"]
                if not isinstance(text, str) or not isinstance(title, str):
                    raise TypeError("'title' and 'text' must be strings")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}:{lineno}: expected a JSON object with 'docid', 'title', 'text' ({exc})") from None
            yield lineno, docid, title, text


def with_titles(docs: Iterable[tuple[str, str]], titles_path: str, stats: dict | None = None) -> Iterable[tuple]:
    """Attach the titled corpus's title to every ``(pid, text)`` of ``collection.tsv``.

    Both files list the 8.8M passages in the same order, so they are read in lockstep
    (no 8.8M-entry table in memory); a docid out of step, or a count that differs, raises
    ValueError naming the file and line. Yields ``(pid, text, {"title": title})``, plus
    ``"text"`` (the titled corpus's text) where it differs from ``collection.tsv``'s after
    the same trailing-whitespace strip: ``contents`` stays the text BM25 indexes, the
    reranker reads the titled corpus's text and title, as the training data has them.
    ``stats`` (if given) receives ``{"titled", "text_differs"}`` counts.
    """
    counts = {"titled": 0, "text_differs": 0}
    tev = _iter_tevatron_corpus(titles_path)
    for pid, text in docs:
        try:
            lineno, docid, title, ttext = next(tev)
        except StopIteration:
            raise ValueError(f"{titles_path}: ends before passage {pid} of the collection") from None
        if docid != pid:
            raise ValueError(f"{titles_path}:{lineno}: docid {docid!r} where the collection has {pid!r} "
                             "(the two files must list the passages in the same order)")
        extra = {"title": title}
        ttext = ttext.rstrip()
        if ttext != text:
            extra["text"] = ttext
            counts["text_differs"] += 1
        counts["titled"] += bool(title.replace("-", " ").strip())
        yield pid, text, extra
    for lineno, docid, *_ in tev:
        raise ValueError(f"{titles_path}:{lineno}: docid {docid!r} is not in the collection (extra passages)")
    if stats is not None:
        stats.update(counts)


def write_corpus_from_msmarco_tsv(tsv_path: str, out_path: str, titles_path: str | None = None) -> int:
    """Convert MS MARCO ``collection.tsv`` (``pid<TAB>passage``; or the ``collection.tar.gz``
    holding it) to JsonCollection JSONL; with ``titles_path`` (the titled Tevatron corpus,
    the training data's passages) every line also carries ``"title"`` (and ``"text"`` where
    that corpus's text differs), see :func:`with_titles`. BM25 indexes ``contents`` only.

    Streams the file (8.8M lines for the full collection), keeping the file's order. Text
    is kept as in the file except trailing whitespace, which is stripped exactly like
    Anserini's ``convert_collection_to_jsonl.py`` that built pyserini's prebuilt index.
    A malformed line (not two tab-separated fields, non-integer pid, invalid UTF-8) or a
    repeated pid raises ValueError with ``file:line``; nothing is written then.
    Returns the number of passages written.
    """
    tsv_path = str(tsv_path)
    seen: set[int] = set()

    def checked() -> Iterable[tuple[str, str]]:
        for lineno, (pid, text) in enumerate(_iter_msmarco_tsv(tsv_path), 1):
            ipid = int(pid)
            if ipid in seen:
                raise ValueError(f"{tsv_path}:{lineno}: duplicate passage id {pid}")
            seen.add(ipid)
            yield pid, text

    t0 = time.perf_counter()
    stats: dict = {}
    docs = checked() if titles_path is None else with_titles(checked(), str(titles_path), stats)
    n = write_corpus_jsonl(docs, out_path)
    log.info("wrote %d passages from %s to %s in %.1f s", n, tsv_path, out_path, time.perf_counter() - t0)
    if titles_path is not None:
        log.info("titles from %s: %d passages with a title, %d whose text differs from the collection's (kept as "
                 "'text' for the reranker)", titles_path, stats.get("titled", 0), stats.get("text_differs", 0))
    return n


# ----------------------------------------------------------------------------- index
_COLLECTION_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


def _count_lines(path: PathLike) -> int | None:
    if str(path).endswith(".gz"):
        return None
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


@contextlib.contextmanager
def _indexing_progress(indexer: Any, expected: int | None):
    """Report Anserini's live document counters while ``indexer.run()`` blocks (pyjnius releases
    the GIL during Java calls, so a Python thread can poll the thread-safe counters)."""
    stop = threading.Event()

    def poll() -> None:
        from jnius import detach

        try:
            counters = indexer.getCounters()
            with progress(desc="indexing", total=expected, unit="docs") as bar:
                while True:
                    done = sum(int(getattr(counters, k).get()) for k in ("indexed", "empty", "unindexable", "skipped"))
                    bar.update(done - bar.n)
                    if stop.wait(1.0):
                        break
        finally:
            detach()  # a Python thread that touched the JVM must leave it before it ends

    thread = threading.Thread(target=poll, name="index-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def build_index(corpus_jsonl: str, index_dir: str, threads: int) -> None:
    """Build a Lucene index of a JsonCollection JSONL file with Anserini's IndexCollection.

    Runs in-process through pyserini's JVM (``io.anserini.index.IndexCollection`` with
    ``DefaultLuceneDocumentGenerator``, Porter stemming, English stopwords: the settings of
    pyserini's MS MARCO passage index), storing the raw JSON of each document (for
    :func:`doc_text`) but no positions or docvectors, merged to one segment. The index is
    built in a temporary directory next to ``index_dir`` and renamed onto it only when
    Anserini reports no errors and the expected document count; an existing ``index_dir``
    is replaced then.
    """
    corpus = Path(corpus_jsonl).resolve()
    if not corpus.is_file():
        raise FileNotFoundError(f"corpus not found: {corpus}")
    import_pyserini("pyserini.pyclass")
    from jnius import autoclass

    IndexCollection = autoclass("io.anserini.index.IndexCollection")
    Args = autoclass("io.anserini.index.IndexCollection$Args")

    expected = _count_lines(corpus)
    index_path = Path(index_dir)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with atomic_path(index_path, is_dir=True) as tmp_index, tempfile.TemporaryDirectory(
        prefix=f".{index_path.name}.input-", dir=index_path.parent
    ) as input_dir:
        # JsonCollection reads a directory; give it one holding just this file.
        name = corpus.name if corpus.name.endswith(_COLLECTION_SUFFIXES) else "corpus.jsonl"
        link = Path(input_dir) / name
        try:
            os.link(corpus, link)
        except OSError:
            os.symlink(corpus, link)
        args = Args()
        args.collectionClass = "JsonCollection"
        args.generatorClass = "DefaultLuceneDocumentGenerator"
        args.input = str(input_dir)
        args.index = str(tmp_index)
        args.threads = int(threads)
        args.storeRaw = True
        args.storeContents = False
        args.storePositions = False
        args.storeDocvectors = False
        args.optimize = True
        args.quiet = True
        indexer = IndexCollection(args)
        with _indexing_progress(indexer, expected):
            try:
                indexer.run()
            except Exception as exc:  # a Java exception: name the corpus, not the JVM's stack
                raise FailureError(f"Anserini failed: {java_message(exc)}", file=corpus) from exc
        c = indexer.getCounters()
        counts = {k: int(getattr(c, k).get()) for k in ("indexed", "empty", "unindexable", "skipped", "errors")}
        log.info("indexed %s in %.1f s: %s", corpus, time.perf_counter() - t0, counts)
        if counts["errors"] or counts["unindexable"]:
            raise RuntimeError(f"Anserini failed on {corpus}: {counts}")
        if expected is not None and counts["indexed"] + counts["empty"] != expected:
            raise RuntimeError(f"{corpus} has {expected} documents but Anserini reports {counts}")
        if counts["indexed"] == 0:
            raise RuntimeError(f"no documents indexed from {corpus}: {counts}")
    _SEARCHERS.pop(str(index_path.resolve()), None)
    log.info("index ready at %s", index_dir)


def prebuilt_index_path(name: str) -> str:
    """Local directory of pyserini's prebuilt Lucene index ``name`` (e.g. ``msmarco-v1-passage``).

    Paper route. Downloads it into pyserini's cache (``~/.cache/pyserini`` or
    ``$PYSERINI_CACHE``) if needed, then checks its statistics as
    ``LuceneSearcher.from_prebuilt_index`` does. The returned path can be given to
    :func:`search` and :func:`doc_text`. Needs internet on first use.
    """
    util = import_pyserini("pyserini.util")
    lucene_index = import_pyserini("pyserini.index.lucene")
    path = util.download_prebuilt_index(name, verbose=False)
    reader = lucene_index.LuceneIndexReader(path)
    if reader.validate(name) is False:
        raise ValueError(f"{name!r} is not a known pyserini prebuilt Lucene index")
    log.info("prebuilt index %s at %s", name, path)
    return str(path)


# ----------------------------------------------------------------------------- search
_SEARCH_CHUNK = 500  # queries per batch_search call (progress granularity)


def search(
    index_dir: str,
    topics: Mapping[str, str],
    k: int,
    k1: float,
    b: float,
    threads: int,
) -> Run:
    """BM25 (explicit ``k1``, ``b``) top-``k`` for each topic, multi-threaded.

    Returns ``{qid: {docid: score}}``, each inner dict in rank order (score descending, ties
    broken by Anserini by docid); every qid is present, with ``{}`` if nothing matched.
    """
    qids = [str(q) for q in topics]
    queries = [topics[q] for q in topics]
    t0 = time.perf_counter()
    searcher = open_searcher(index_dir)
    try:
        searcher.set_bm25(float(k1), float(b))
        hits = {}
        # chunks of queries only to report progress: each query's hits do not depend on the others
        with progress(desc=f"BM25 top-{k}", total=len(qids), unit="queries") as bar:
            for i in range(0, len(qids), _SEARCH_CHUNK):
                hits.update(searcher.batch_search(queries[i:i + _SEARCH_CHUNK], qids[i:i + _SEARCH_CHUNK],
                                                  k=int(k), threads=int(threads)))
                bar.update(len(qids[i:i + _SEARCH_CHUNK]))
    finally:
        searcher.close()
    run: Run = {}
    for qid in qids:
        run[qid] = {str(h.docid): float(h.score) for h in hits.get(qid, [])}
    log.info(
        "BM25(k1=%g, b=%g) top-%d for %d queries on %s (%d docs) in %.1f s: %d hits",
        k1, b, k, len(qids), index_dir, searcher.num_docs, time.perf_counter() - t0,
        sum(len(v) for v in run.values()),
    )
    return run


def open_searcher(index_dir: PathLike) -> Any:
    """pyserini's ``LuceneSearcher`` on ``index_dir``. A directory Lucene cannot open (no
    ``segments_N`` file, a truncated or foreign index) is an :class:`InputError` naming it,
    with the Java exception's first line instead of pyjnius' whole Java stack."""
    lucene = import_pyserini("pyserini.search.lucene")
    try:
        return lucene.LuceneSearcher(str(index_dir))
    except Exception as exc:
        raise InputError(f"not a readable Lucene index: {java_message(exc)}", file=index_dir,
                         hint="rebuild it with the index stage") from exc


# ----------------------------------------------------------------------------- documents
_SEARCHERS: dict[str, tuple[int, Any]] = {}
_SEARCHERS_LOCK = threading.Lock()


def _doc_searcher(index_dir: PathLike) -> Any:
    """A searcher per index directory, reopened if the directory was replaced (rebuilt)."""
    key = str(Path(index_dir).resolve())
    ino = os.stat(key).st_ino
    with _SEARCHERS_LOCK:
        cached = _SEARCHERS.get(key)
        if cached is not None and cached[0] == ino:
            return cached[1]
        searcher = open_searcher(key)
        _SEARCHERS[key] = (ino, searcher)
        return searcher


def _text_of(document: Any, docid: str, index_dir: PathLike) -> str:
    raw = document.raw()
    if raw is not None:
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            return raw  # a collection whose raw field is the text itself
        if isinstance(obj, dict) and isinstance(obj.get("contents"), str):
            return obj["contents"]
        return raw
    contents = document.contents()
    if contents is None:
        raise ValueError(f"{index_dir}: document {docid} has no stored raw text (index built without -storeRaw?)")
    return contents


def doc_text(index_dir: str, docid: str) -> str:
    """Stored passage text of ``docid`` (the ``contents`` of its raw JSON). KeyError if absent."""
    document = _doc_searcher(index_dir).doc(str(docid))
    if document is None:
        raise KeyError(f"docid {docid} not in index {index_dir}")
    return _text_of(document, str(docid), index_dir)


def doc_texts(index_dir: str, docids: Iterable[str]) -> dict[str, str]:
    """:func:`doc_text` for many ids (one searcher); KeyError naming the first missing id."""
    searcher = _doc_searcher(index_dir)
    out: dict[str, str] = {}
    for docid in docids:
        docid = str(docid)
        if docid in out:
            continue
        document = searcher.doc(docid)
        if document is None:
            raise KeyError(f"docid {docid} not in index {index_dir}")
        out[docid] = _text_of(document, docid, index_dir)
    return out

