"""The paper corpus carries the titled Tevatron corpus's titles, and scoring reads them."""

from __future__ import annotations

import gzip
import json

import pytest

from irrepro import bm25
from irrepro.rerank.evaluate import load_passages
from irrepro.rerank.score import candidates

COLLECTION = "0\tThe presence of communication amid scientific minds.  \n1\tManhattan Project was a success.\n2\tFleas live a year.\n"
TITLED = [
    {"docid": "0", "title": "-", "text": "The presence of communication amid scientific minds."},
    {"docid": "1", "title": "Manhattan Project - Wikipedia", "text": "The Manhattan Project was a success."},
    {"docid": "2", "title": "Flea life-cycle", "text": "Fleas live a year."},
]


def _write(tmp_path, titled):
    tsv = tmp_path / "collection.tsv"
    tsv.write_text(COLLECTION, encoding="utf-8")
    gz = tmp_path / "corpus.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in titled)
    return tsv, gz


def test_paper_corpus_keeps_indexed_text_and_adds_titles(tmp_path):
    tsv, gz = _write(tmp_path, TITLED)
    out = tmp_path / "corpus.jsonl"
    assert bm25.write_corpus_from_msmarco_tsv(str(tsv), str(out), titles_path=str(gz)) == 3
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert lines == [
        {"id": "0", "contents": "The presence of communication amid scientific minds.", "title": "-"},
        {"id": "1", "contents": "Manhattan Project was a success.", "title": "Manhattan Project - Wikipedia",
         "text": "The Manhattan Project was a success."},  # the titled corpus's text, where it differs
        {"id": "2", "contents": "Fleas live a year.", "title": "Flea life-cycle"},
    ]
    passages = load_passages(out)
    assert passages["1"] == {"title": "Manhattan Project - Wikipedia", "text": "The Manhattan Project was a success."}
    keys, pairs = candidates({"q": {"1": 2.0, "2": 1.0}}, {"q": "flea"}, passages, depth=2)
    assert pairs[1] == ("flea", {"title": "Flea life-cycle", "text": "Fleas live a year."})


def test_mini_corpus_lines_stay_plain_text(tmp_path):
    out = tmp_path / "c.jsonl"
    out.write_text('{"id": "7", "contents": "plain"}\n', encoding="utf-8")
    assert load_passages(out) == {"7": "plain"}


@pytest.mark.parametrize("titled, message", [
    ([TITLED[1], TITLED[0], TITLED[2]], r"corpus\.jsonl\.gz:1: docid '1' where the collection has '0'"),
    (TITLED[:2], r"ends before passage 2"),
    (TITLED + [{"docid": "3", "title": "", "text": "x"}], r"corpus\.jsonl\.gz:4: docid '3' is not in the collection"),
    (TITLED[:1] + [{"docid": "1", "text": None}], r"corpus\.jsonl\.gz:2:"),
])
def test_titles_out_of_step_are_rejected(tmp_path, titled, message):
    tsv, gz = _write(tmp_path, titled)
    out = tmp_path / "corpus.jsonl"
    with pytest.raises(ValueError, match=message):
        bm25.write_corpus_from_msmarco_tsv(str(tsv), str(out), titles_path=str(gz))
    assert not out.exists()
