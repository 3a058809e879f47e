"""Stage ``bm25``: BM25 top-k runs of every dataset of the profile."""

from __future__ import annotations

import logging
from pathlib import Path

from ..commands import In, Out
from ..errors import InputError

log = logging.getLogger("irrepro")

HELP = "BM25 top-k for every dataset of the profile (TREC runs)"
ARGS = (In("--index"), In("--raw"), Out("--out", "directory of <dataset>.trec runs"))
PARAMS = ("profile", "bm25", "datasets")


def run(a, P) -> int:
    from .. import bm25
    from ..datasets import get, source_path
    from ..params import route
    from ..trec import read_qrels, read_topics, write_run
    from ..utils import atomic_path

    B = P["bm25"]
    index = a.index
    if route(P["profile"]) == "paper" and B["prebuilt_index"]:
        index = bm25.prebuilt_index_path(B["prebuilt_index"])
    elif not (Path(index) / "segments.gen").exists() and not any(Path(index).glob("segments_*")):
        raise InputError("not a Lucene index (no segments file)", file=index, hint="run the index stage first")
    with atomic_path(Path(a.out), is_dir=True) as tmp:
        for name in P["datasets"]:
            ds = get(name)
            topics = read_topics(source_path(a.raw, ds.topics))
            judged = read_qrels(source_path(a.raw, ds.qrels))
            topics = {q: t for q, t in topics.items() if q in judged}
            log.info("bm25 %s: %d judged topics, k=%d k1=%s b=%s", name, len(topics), B["topk"], B["k1"], B["b"])
            ranked = bm25.search(index, topics, k=B["topk"], k1=B["k1"], b=B["b"], threads=B["threads"])
            write_run(ranked, tmp / f"{name}.trec", tag=f"bm25-k1_{B['k1']}-b_{B['b']}")
    return 0
