"""Stage ``corpus``: the profile's passage corpus as JSONL."""

from __future__ import annotations

import logging

from ..commands import In, Out

log = logging.getLogger("irrepro")

HELP = "write the profile's passage corpus as JSONL"
ARGS = (In("--raw"), Out("--out"))
PARAMS = ("bm25.corpus",)


def run(a, P) -> int:
    from .. import bm25
    from ..datasets import source_path

    if P["bm25"]["corpus"] == "rankllm-top100":
        # The mini sub-collection: every passage in the DL19+DL20 BM25 top-100 lists.
        jsons = [source_path(a.raw, f"{d}_bm25_top100") for d in ("dl19", "dl20")]
        n = bm25.write_corpus_from_rankllm([str(j) for j in jsons], a.out)
    else:
        # Titles (and the text) of the titled Tevatron corpus ride along for the reranker, so
        # scoring reads passages as training saw them (Tevatron/msmarco-passage-aug has titles).
        n = bm25.write_corpus_from_msmarco_tsv(str(source_path(a.raw, "msmarco_collection")), a.out,
                                               titles_path=str(source_path(a.raw, "tevatron_msmarco_corpus")))
    log.info("corpus: %d passages -> %s", n, a.out)
    return 0
