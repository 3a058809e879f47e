"""Retrieval evaluation with ranx (trec_eval-compatible figures, no home-made metrics).

Conventions, chosen to reproduce the published Anserini/Pyserini regression numbers:

* **Judged queries define the query set** (trec_eval ``-c``): queries in the run without
  qrels are dropped; judged queries missing from the run (or with no retrieved document)
  score 0 and count in the mean. A judged query with no document at or above the
  relevance level scores 0 on every metric (as in trec_eval). ranx implements this with
  ``make_comparable=True``; without it ranx refuses runs whose query set differs from
  the qrels'. On the published rank_llm BM25 runs the two sets coincide (43 DL19 and 54
  DL20 queries), so these runs do not distinguish the choices; MS MARCO dev MRR@10 (the
  official script averages over all 6,980 judged queries) and Pyserini's ``-c`` DL
  evaluations do, and they need this one.
* **Relevance level**: binary metrics (MRR, MAP, recall, precision, ...) count a document
  as relevant when its grade is >= ``rel_level``; for TREC DL that is 2 (``trec_eval -l 2``),
  which ranx spells as a ``-l2`` metric suffix. nDCG always uses the raw grades as gains
  (trec_eval's ``ndcg_cut``: gain = grade, discount log2(rank + 1)) and never gets a suffix.
* **Document order**: documents are ranked by score, ties broken by docid descending, like
  trec_eval (which ignores the rank column). ranx itself breaks ties with an unstable
  numba argsort, so before handing a run to ranx each query's scores are replaced by
  their strictly decreasing rank order (``n, n-1, ..., 1``); every rank-based metric is
  unchanged by this and ties become deterministic.
* qids and docids must be ``str`` (ranx stores them in numba typed dicts of unicode keys;
  an ``int`` qid would silently never match a ``str`` one, so it is rejected here).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import warnings
from typing import Mapping, Sequence

from .significance import apply_correction, correction_phrase
from .trec import ranked, read_qrels, read_run
from .utils import atomic_path, log
from .checks import JUDGED_KEY, judged_coverage

__all__ = [
    "metric_names",
    "evaluate_run",
    "evaluate_to_files",
    "compare",
    "comparison_table",
]

Qrels = Mapping[str, Mapping[str, int]]
RunDict = Mapping[str, Mapping[str, float]]
PathLike = str | os.PathLike

# user metric family -> (ranx metric family, is binary (takes the -lN suffix), needs @k)
_FAMILIES: dict[str, tuple[str, bool, bool | None]] = {
    "ndcg": ("ndcg", False, None),
    "mrr": ("mrr", True, None),
    "map": ("map", True, None),
    "recall": ("recall", True, True),
    "r": ("recall", True, True),
    "precision": ("precision", True, True),
    "p": ("precision", True, True),
    "hit_rate": ("hit_rate", True, True),
    "r-precision": ("r-precision", True, False),
    "rprec": ("r-precision", True, False),
}
_NAME_RE = re.compile(r"^(?P<family>[a-z_\-]+)(?:@(?P<k>[1-9][0-9]*))?$")


def _ranx_name(metric: str, rel_level: int) -> str:
    m = _NAME_RE.match(metric.strip().lower())
    if not m or m.group("family") not in _FAMILIES:
        raise ValueError(
            f"unknown metric {metric!r}; expected one of "
            "ndcg[@k], mrr[@k], map[@k], recall@k, precision@k, hit_rate@k, r-precision"
        )
    family, binary, needs_k = _FAMILIES[m.group("family")]
    k = m.group("k")
    if needs_k is True and k is None:
        raise ValueError(f"metric {metric!r} needs a cutoff, e.g. {family}@10")
    if needs_k is False and k is not None:
        raise ValueError(f"metric {metric!r} takes no cutoff")
    name = family if k is None else f"{family}@{k}"
    if binary and rel_level > 1:
        name += f"-l{rel_level}"
    return name


def _check_rel_level(rel_level: int) -> int:
    if isinstance(rel_level, bool) or not isinstance(rel_level, int) or rel_level < 1:
        raise ValueError(f"rel_level must be an integer >= 1, got {rel_level!r}")
    return rel_level


def metric_names(metrics: Sequence[str], rel_level: int) -> list[str]:
    """Map user metric names to ranx names, in order.

    ``ndcg@10 -> ndcg@10`` at any level; ``mrr@10 -> mrr@10-l2``, ``map -> map-l2``,
    ``recall@1000 -> recall@1000-l2`` when ``rel_level == 2`` (``-lN`` for any level > 1,
    nothing at level 1). Aliases: ``p@k``/``precision@k``, ``r@k``/``recall@k``,
    ``rprec``/``r-precision``. Case-insensitive; unknown names raise ``ValueError``.
    """
    if isinstance(metrics, str):
        raise TypeError("metrics must be a list of names, not a single string")
    _check_rel_level(rel_level)
    return [_ranx_name(m, rel_level) for m in metrics]


def _check_ids(mapping: Mapping, what: str) -> None:
    for qid, docs in mapping.items():
        if not isinstance(qid, str):
            raise TypeError(f"{what}: qids must be str, got {type(qid).__name__} {qid!r}")
        for docid in docs:
            if not isinstance(docid, str):
                raise TypeError(f"{what}: docids must be str, got {type(docid).__name__} {docid!r} (qid {qid})")


def _ranx_pair(qrels: Qrels, runs: Mapping[str, RunDict]):
    """Build ranx Qrels and one ranx Run per run, all over exactly the judged qids."""
    import ranx  # imported lazily: ranx + numba take seconds to import

    _check_ids(qrels, "qrels")
    if not qrels or not any(qrels.values()):
        raise ValueError("qrels contain no judged query")
    ranx_qrels = ranx.Qrels({q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items() if docs})
    out = {}
    for name, run in runs.items():
        _check_ids(run, f"run {name}")
        canon = {}
        for qid, docs in run.items():
            if qid in qrels and docs:
                order = ranked({d: float(s) for d, s in docs.items()})
                n = len(order)
                canon[qid] = {docid: float(n - i) for i, (docid, _) in enumerate(order)}
        dropped = sum(1 for q in run if q not in qrels)
        if dropped:
            log.debug("run %s: ignoring %d queries without qrels", name, dropped)
        ranx_run = ranx.Run(canon, name=name) if canon else ranx.Run(name=name)
        # adds empty results for judged queries the run lacks (they score 0)
        ranx_run.make_comparable(ranx_qrels)
        out[name] = ranx_run
    return ranx_qrels, out


@contextlib.contextmanager
def _quiet():
    """Silence numba's 'unsafe cast from uint64 to int64' warnings from ranx's doc-id hashing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unsafe cast.*")
        yield


def evaluate_run(
    qrels: Qrels, run: RunDict, metrics: Sequence[str], rel_level: int
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Evaluate one run: ``(aggregate {metric: mean}, per_query {metric: {qid: value}})``.

    Keys are the caller's metric names. The query set is the judged queries (see module
    docstring); per-query dicts are in sorted-qid order.
    """
    import ranx

    names = metric_names(metrics, rel_level)
    unique = list(dict.fromkeys(names))
    ranx_qrels, runs = _ranx_pair(qrels, {"run": run})
    ranx_run = runs["run"]
    # ranx 0.3.21 bug: evaluate(..., return_mean=False) with a single "name@k" metric raises
    # KeyError (it indexes its result with the metric name stripped of "@k"); asking for the
    # metric twice makes it return the {metric: scores} dict.
    request = unique if len(unique) > 1 else unique * 2
    with _quiet():
        scores = ranx.evaluate(ranx_qrels, ranx_run, request, return_mean=False, save_results_in_run=False)
    qids = ranx_run.get_query_ids()
    assert qids == ranx_qrels.get_query_ids(), "ranx query order mismatch"
    aggregate: dict[str, float] = {}
    per_query: dict[str, dict[str, float]] = {}
    for user, rname in zip(metrics, names):
        values = [float(v) for v in scores[rname]]
        per_query[user] = dict(zip(qids, values))
        aggregate[user] = math.fsum(values) / len(values)
    return aggregate, per_query


def _per_dataset(value, dataset: str, what: str):
    if isinstance(value, Mapping):
        if dataset not in value:
            raise KeyError(f"no {what} configured for dataset {dataset!r} (have: {sorted(value)})")
        return value[dataset]
    return value


def evaluate_to_files(
    runs: Mapping[str, Mapping[str, PathLike]],
    qrels: Mapping[str, PathLike],
    metrics: Mapping[str, Sequence[str]] | Sequence[str],
    rel_levels: Mapping[str, int] | int,
    out_json: PathLike,
    out_perquery_tsv: PathLike,
    min_judged_fraction: float = 0.0,
) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluate run files and write the metrics JSON and the per-query TSV, atomically.

    ``runs`` is ``{run_name: {dataset: run_file}}``, ``qrels`` is ``{dataset: qrels_file}``;
    ``metrics`` and ``rel_levels`` are per dataset (a mapping) or shared by all (a list / an
    int). Writes ``out_json`` = ``{run_name: {dataset: {metric: value, "judged_queries":
    {"found": n, "expected": m}}}}`` with values rounded to 4 decimals (DVC metrics; the
    judged queries the run answers, :data:`irrepro.checks.JUDGED_KEY`, after the metrics),
    and ``out_perquery_tsv`` with header ``run dataset metric qid value`` (tab-separated,
    6 decimals). Returns the JSON dict.
    A run answering fewer than ``min_judged_fraction`` of the judged queries is an error
    naming it (:func:`irrepro.checks.judged_coverage`); fewer than all is a warning.
    """
    qrels_cache: dict[str, dict] = {}
    result: dict[str, dict[str, dict[str, float]]] = {}
    rows: list[str] = ["run\tdataset\tmetric\tqid\tvalue\n"]
    for run_name, by_dataset in runs.items():
        for dataset, run_path in by_dataset.items():
            if dataset not in qrels:
                raise KeyError(f"run {run_name!r}: no qrels for dataset {dataset!r} (have: {sorted(qrels)})")
            if dataset not in qrels_cache:
                qrels_cache[dataset] = read_qrels(qrels[dataset])
            ds_metrics = list(_per_dataset(metrics, dataset, "metrics"))
            level = _per_dataset(rel_levels, dataset, "rel_level")
            run = read_run(run_path)
            # an empty, unjudged or truncated run is an error, not a row of zeros (issue 12)
            coverage = judged_coverage(run, qrels_cache[dataset], run_path, min_judged_fraction)
            agg, per_query = evaluate_run(qrels_cache[dataset], run, ds_metrics, level)
            result.setdefault(run_name, {})[dataset] = {m: round(v, 4) for m, v in agg.items()} | {JUDGED_KEY: coverage}
            log.info("%s on %s: %s", run_name, dataset, ", ".join(f"{m}={v:.4f}" for m, v in agg.items()))
            for metric, values in per_query.items():
                rows.extend(f"{run_name}\t{dataset}\t{metric}\t{qid}\t{v:.6f}\n" for qid, v in values.items())
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    with atomic_path(out_perquery_tsv) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.writelines(rows)
    return result


def compare(
    qrels: Qrels,
    runs: Mapping[str, RunDict],
    metrics: Sequence[str],
    stat_test: str = "student",
    max_p: float = 0.05,
    *,
    rel_level: int = 1,
    n_permutations: int = 1000,
    random_seed: int = 42,
    correction: str = "none",
) -> dict:
    """Compare runs on the same judged queries with paired significance tests (``ranx.compare``).

    ``stat_test`` is ``"student"`` (two-sided paired t-test, default) or ``"fisher"``
    (Fisher's randomisation test, ``n_permutations`` permutations, seeded). Returns::

        {"stat_test", "max_p", "metrics": [...], "runs": [...], "n_queries": int,
         "scores":       {run: {metric: mean}},
         "p_values":     {run: {other: {metric: p}}},
         "significant":  {run: {other: {metric: p <= max_p}}},
         "win_tie_loss": {run: {other: {metric: {"W": int, "T": int, "L": int}}}}}

    (W/T/L count queries where ``run`` beats / ties / loses to ``other``.) A p-value is NaN
    when the two runs' per-query scores are identical. ``correction`` (``bh``, ``by``, ``holm``,
    ``none``) adjusts the p-values over all pairs of runs per metric
    (:func:`irrepro.significance.apply_correction`: ``p_values`` are then the adjusted ones,
    ``p_values_raw`` the test's, ``significant`` is adjusted p <= ``max_p``); the result also
    carries ``rel_level`` and ``correction``.
    """
    import ranx

    if stat_test not in ("student", "fisher"):
        raise ValueError(f"stat_test must be 'student' or 'fisher', got {stat_test!r}")
    if len(runs) < 2:
        raise ValueError("compare needs at least two runs")
    names = metric_names(metrics, rel_level)
    if len(set(names)) != len(names):
        raise ValueError(f"metrics map to duplicate ranx metrics: {names}")
    to_user = dict(zip(names, metrics))
    # same ranx single-metric bug as in evaluate_run (compare calls evaluate per run)
    request = names if len(names) > 1 else names * 2
    ranx_qrels, ranx_runs = _ranx_pair(qrels, runs)
    with _quiet():
        report = ranx.compare(
            ranx_qrels,
            list(ranx_runs.values()),
            request,
            stat_test=stat_test,
            n_permutations=n_permutations,
            max_p=max_p,
            random_seed=random_seed,
            rounding_digits=4,
        )
    run_names = list(runs)
    out: dict = {
        "stat_test": stat_test,
        "max_p": max_p,
        "metrics": list(metrics),
        "runs": run_names,
        "n_queries": len(ranx_qrels),
        "rel_level": rel_level,
        "scores": {},
        "p_values": {},
        "significant": {},
        "win_tie_loss": {},
    }
    for a in run_names:
        out["scores"][a] = {to_user[m]: float(report.results[a][m]) for m in names}
        out["p_values"][a], out["significant"][a], out["win_tie_loss"][a] = {}, {}, {}
        for b in run_names:
            if a == b:
                continue
            cmp = report.comparisons[frozenset([a, b])]
            out["p_values"][a][b] = {to_user[m]: float(cmp[m]["p_value"]) for m in names}
            out["significant"][a][b] = {to_user[m]: bool(cmp[m]["significant"]) for m in names}
            out["win_tie_loss"][a][b] = {to_user[m]: dict(report.win_tie_loss[(a, b)][m]) for m in names}
    return apply_correction(out, correction)


def comparison_table(result: Mapping) -> str:
    """Markdown table of a :func:`compare` result: mean per run and metric, followed by the
    runs it is significantly better than (p <= max_p, after the result's correction) in
    brackets; the note under the table names the test and the correction."""
    metrics = result["metrics"]
    lines = [
        "| run | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for a in result["runs"]:
        cells = []
        for m in metrics:
            score = result["scores"][a][m]
            better = [
                b
                for b in result["runs"]
                if b != a and result["significant"][a][b][m] and score > result["scores"][b][m]
            ]
            cells.append(f"{score:.4f}" + (f" (> {', '.join(better)})" if better else ""))
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"(> x): significantly better than x; {correction_phrase(result)}.")
    return "\n".join(lines) + "\n"
