"""Set-up step (``make setup``): run every ranx kernel the project uses once on a toy run, so
that numba compiles them into ranx's on-disk cache. A fresh venv otherwise pays ~30 s of JIT
compilation in its first evaluations (the tests, the first pipeline jobs).

    python -m irrepro.precompile
"""

from __future__ import annotations

import warnings

from .evaluate import compare, evaluate_run

METRICS = ["ndcg@10", "mrr@10", "map", "recall@100", "recall@1000"]


def compile_kernels() -> None:
    qrels = {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 3}}
    runs = {"a": {"q1": {"d1": 2.0, "d2": 1.0, "d4": 0.5}, "q2": {"d3": 1.0, "d5": 0.2}},
            "b": {"q1": {"d2": 2.0, "d1": 1.0}, "q2": {"d5": 1.0, "d3": 0.5}}}
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # scipy on near-identical toy scores
    for rel_level in (1, 2):
        evaluate_run(qrels, runs["a"], METRICS, rel_level)
        for stat_test in ("student", "fisher"):
            compare(qrels, runs, METRICS, stat_test, rel_level=rel_level, n_permutations=10)


if __name__ == "__main__":
    compile_kernels()
