"""Stage ``index``: the pyserini Lucene index of the corpus."""

from __future__ import annotations

from ..commands import In, Out

HELP = "build the pyserini Lucene index"
ARGS = (In("--corpus", "JSONL corpus file"), Out("--out"))
PARAMS = ("bm25.threads",)


def run(a, P) -> int:
    from .. import bm25
    from ..checks import check_corpus_jsonl

    check_corpus_jsonl(a.corpus)  # a broken line or a duplicate id named before the JVM starts
    bm25.build_index(a.corpus, a.out, threads=P["bm25"]["threads"])
    return 0
