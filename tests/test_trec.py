"""Tests for irrepro.trec: strict TREC readers and the atomic run writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from irrepro.trec import TrecFormatError, ranked, read_qrels, read_run, read_topics, write_run

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _write(tmp_path: Path, name: str, lines: list[str] | bytes) -> Path:
    path = tmp_path / name
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _assert_error(exc: pytest.ExceptionInfo, path: Path, lineno: int, fragment: str) -> None:
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{lineno}: "), msg
    assert fragment in msg, msg
    assert isinstance(exc.value, ValueError)
    assert exc.value.lineno == lineno


# --------------------------------------------------------------------------- topics
def test_read_topics_strips_query_and_skips_blank_lines(tmp_path):
    path = _write(tmp_path, "t.tsv", ["1048585\twhat is paula deen's brother", "", "2\t Androgen receptor define", "3\tÃ‚Â mojibake kept "])
    assert read_topics(path) == {
        "1048585": "what is paula deen's brother",
        "2": "Androgen receptor define",
        "3": "Ã‚Â mojibake kept",
    }


def test_read_topics_rejects_invalid_utf8(tmp_path):
    path = _write(tmp_path, "t.tsv", b"1\tok\n2\tbad \xff byte\n")
    with pytest.raises(TrecFormatError) as exc:
        read_topics(path)
    _assert_error(exc, path, 2, "UTF-8")


# --------------------------------------------------------------------------- qrels
def test_read_qrels_accepts_q0_and_0_iteration(tmp_path):
    path = _write(tmp_path, "q.txt", ["1 Q0 d1 2", "1 0 d2 0", "", "2\t0\td3\t3"])
    assert read_qrels(path) == {"1": {"d1": 2, "d2": 0}, "2": {"d3": 3}}


# --------------------------------------------------------------------------- runs
def test_read_run_returns_scores(tmp_path):
    path = _write(tmp_path, "r.txt", ["1 Q0 d1 1 15.5 bm25", "1 Q0 d2 2 -3e-2 bm25", "", "2 Q0 d1 1 7 bm25"])
    assert read_run(path) == {"1": {"d1": 15.5, "d2": -0.03}, "2": {"d1": 7.0}}


# --------------------------------------------------------------------------- bad lines, every reader
# each reader's file: its valid line 1, a blank line 2 (still counted), the bad line 3, then for
# topics a valid line 4 that is never reached
READERS = {
    "topics": (read_topics, "t.tsv", ["1\tgood query", ""], ["4\tnever reached"]),
    "qrels": (read_qrels, "q.txt", ["1 Q0 d1 2", ""], []),
    "run": (read_run, "r.txt", ["1 Q0 d1 1 2.0 tag", ""], []),
}


@pytest.mark.parametrize(
    "reader, bad, fragment",
    [
        ("topics", "3 no tab here", "no tab"),
        ("topics", "3\t   ", "non-empty query"),
        ("topics", "\tquery without id", "non-empty qid"),
        ("topics", "3\tquery\textra column", "exactly one tab"),
        ("topics", "1\tduplicate of the first", "duplicate qid 1 (first on line 1)"),
        ("qrels", "1 Q0 d9", "expected 4 whitespace-separated columns"),
        ("qrels", "1 Q0 d9 1 extra", "expected 4 whitespace-separated columns"),
        ("qrels", "1 X0 d9 1", "iteration column 'Q0' or '0'"),
        ("qrels", "1 Q0 d9 1.5", "integer relevance grade"),
        ("qrels", "1 Q0 d9 rel", "integer relevance grade"),
        ("qrels", "1 Q0 d9 -1", "non-negative relevance grade"),
        ("qrels", "1 Q0 d1 3", "duplicate judgment for qid 1 docid d1"),
        ("run", "1 Q0 d9 2 1.0", "expected 6 whitespace-separated columns"),
        ("run", "1 Q0 d9 2 1.0 tag extra", "expected 6 whitespace-separated columns"),
        ("run", "1 Q1 d9 2 1.0 tag", "'Q0' in column 2"),
        ("run", "1 Q0 d9 two 1.0 tag", "integer rank"),
        ("run", "1 Q0 d9 0 1.0 tag", "rank >= 1"),
        ("run", "1 Q0 d9 2 high tag", "numeric score"),
        ("run", "1 Q0 d9 2 nan tag", "finite score"),
        ("run", "1 Q0 d1 2 0.5 tag", "duplicate docid d1 for qid 1 (first on line 1)"),
    ],
)
def test_readers_reject_bad_lines(tmp_path, reader, bad, fragment):
    read, name, before, after = READERS[reader]
    path = _write(tmp_path, name, [*before, bad, *after])
    with pytest.raises(TrecFormatError) as exc:
        read(path)
    _assert_error(exc, path, 3, fragment)


def test_missing_file_is_a_format_error(tmp_path):
    with pytest.raises(TrecFormatError) as exc:
        read_run(tmp_path / "absent.txt")
    assert str(exc.value).startswith(f"{tmp_path / 'absent.txt'}:0: cannot read file")


# --------------------------------------------------------------------------- write_run
def test_write_run_round_trips_and_orders(tmp_path):
    run = {
        "q2": {"b": 0.1 + 0.2, "a": -1.5, "c": 1e-17},
        "q1": {"x": 2.0, "z": 2.0, "y": 3.0, "w": 2.0},
    }
    path = tmp_path / "out" / "run.txt"
    write_run(run, path, tag="mytag")
    assert read_run(path) == run  # exact floats back (repr round-trips)
    lines = path.read_text().splitlines()
    # queries sorted; score descending; ties (x, z, w at 2.0) by docid descending as in trec_eval
    assert lines == [
        "q1 Q0 y 1 3.0 mytag",
        "q1 Q0 z 2 2.0 mytag",
        "q1 Q0 x 3 2.0 mytag",
        "q1 Q0 w 4 2.0 mytag",
        "q2 Q0 b 1 0.30000000000000004 mytag",
        "q2 Q0 c 2 1e-17 mytag",
        "q2 Q0 a 3 -1.5 mytag",
    ]
    assert [d for d, _ in ranked(run["q1"])] == ["y", "z", "x", "w"]


@pytest.mark.parametrize(
    "run, tag",
    [
        ({"q1": {"d1": float("nan")}}, "t"),
        ({"q1": {"d 1": 1.0}}, "t"),
        ({"q 1": {"d1": 1.0}}, "t"),
        ({"q1": {"d1": 1.0}}, "two words"),
        ({"q1": {"d1": "1.0"}}, "t"),
    ],
)
def test_write_run_is_atomic_on_bad_input(tmp_path, run, tag):
    path = tmp_path / "run.txt"
    path.write_text("previous content\n")
    with pytest.raises(TrecFormatError):
        write_run(run, path, tag=tag)
    assert path.read_text() == "previous content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.txt"]  # no temp file left


# --------------------------------------------------------------------------- real files
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")
def test_real_files_parse():
    dl = SHARED_DATA / "trec-dl"
    assert len(read_topics(dl / "topics.dl19-passage.txt")) == 43
    assert len(read_topics(dl / "topics.dl20.txt")) == 200
    dev = read_topics(dl / "topics.msmarco-passage.dev-subset.txt")
    assert len(dev) == 6980 and dev["2"] == "Androgen receptor define"
    assert len(read_qrels(dl / "qrels.dl19-passage.txt")) == 43
    assert len(read_qrels(dl / "qrels.dl20-passage.txt")) == 54  # iteration column is "0"
    run = read_run(SHARED_DATA / "bm25-top100" / "trec_results_dl19.txt")
    assert len(run) == 43 and all(len(docs) == 100 for docs in run.values())
