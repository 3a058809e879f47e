"""Evaluation topic sets: which downloaded files hold their topics, qrels and published runs.

Keys are source names from ``resources/sources.yaml``; the download stage writes each
source to ``<raw>/<dest>``, so a dataset's files are found without repeating paths here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .download import load_sources


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    topics: str  # source names
    qrels: str
    published_run: str | None = None  # BM25 run shipped with the data (a reference condition)


DATASETS = {
    "dl19": Dataset("dl19", "TREC DL 2019 passage", "dl19_topics", "dl19_qrels", "dl19_bm25_run"),
    "dl20": Dataset("dl20", "TREC DL 2020 passage", "dl20_topics", "dl20_qrels", "dl20_bm25_run"),
    "dev": Dataset("dev", "MS MARCO passage dev-small", "dev_topics", "dev_qrels", None),
}


def get(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None


def source_path(raw_dir: str | Path, source_name: str) -> Path:
    """Where the download stage put ``source_name`` under ``raw_dir``."""
    by_name = {s.name: s for s in load_sources()}
    if source_name not in by_name:
        raise KeyError(f"no source named {source_name!r} in sources.yaml")
    path = Path(raw_dir) / by_name[source_name].dest
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (source {source_name!r}); run the download stage")
    return path
