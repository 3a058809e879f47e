"""Tests for irrepro.evaluate (ranx, trec_eval conventions) and irrepro.report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from irrepro.evaluate import compare, comparison_table, evaluate_run, evaluate_to_files, metric_names
from irrepro.report import (
    build_report,
    check_references,
    count_fails,
    load_metrics,
    load_references,
    metrics_table,
    write_report,
)
from irrepro.trec import read_qrels, read_run, write_run

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")

# Toy example, graded 0-3. d5 is relevant but never retrieved; x1/x2 are unjudged.
QRELS = {
    "q1": {"d1": 3, "d2": 2, "d3": 1, "d4": 0, "d5": 2},
    "q2": {"e1": 1, "e2": 2, "e3": 0},
}
RUN = {
    # ranks:   1          2          3          4          5
    "q1": {"d3": 0.9, "d1": 0.8, "d4": 0.7, "d2": 0.6, "x1": 0.5},  # grades 1, 3, 0, 2, -
    "q2": {"e3": 0.9, "e1": 0.8, "x2": 0.7, "e2": 0.6},  # grades 0, 1, -, 2
    "q9": {"d1": 1.0},  # no qrels: ignored
}
METRICS = ["ndcg@10", "mrr@10", "map", "recall@3", "recall@100"]

# nDCG@10, trec_eval: gain = grade, discount 1/log2(rank + 1), ideal = grades sorted.
#   q1 DCG  = 1/log2(2) + 3/log2(3) + 0 + 2/log2(5) + 0 = 1 + 1.892789 + 0.861353 = 3.754142
#      IDCG = 3/log2(2) + 2/log2(3) + 2/log2(4) + 1/log2(5) = 3 + 1.261860 + 1 + 0.430677 = 5.692536
#      nDCG = 3.754142 / 5.692536 = 0.659485
#   q2 DCG  = 0 + 1/log2(3) + 0 + 2/log2(5) = 0.630930 + 0.861353 = 1.492283
#      IDCG = 2/log2(2) + 1/log2(3) = 2.630930;  nDCG = 0.567207
NDCG_Q1, NDCG_Q2 = 0.6594850403848089, 0.5672074169568709
# Relevance level 2 (relevant = grade >= 2): q1 {d1, d2, d5}, q2 {e2}
#   MRR@10: q1 first relevant d1 at rank 2 -> 1/2; q2 e2 at rank 4 -> 1/4
#   AP:     q1 (P@2 = 1/2 + P@4 = 2/4) / 3 = 1/3; q2 (P@4 = 1/4) / 1 = 1/4
#   R@3:    q1 {d1} 1/3; q2 0/1 = 0        R@100: q1 2/3 (d5 missing); q2 1/1
LEVEL2 = {
    "ndcg@10": {"q1": NDCG_Q1, "q2": NDCG_Q2},
    "mrr@10": {"q1": 1 / 2, "q2": 1 / 4},
    "map": {"q1": 1 / 3, "q2": 1 / 4},
    "recall@3": {"q1": 1 / 3, "q2": 0.0},
    "recall@100": {"q1": 2 / 3, "q2": 1.0},
}
# Relevance level 1 (grade >= 1): q1 {d1, d2, d3, d5}, q2 {e1, e2}; nDCG unchanged
#   MRR@10: q1 d3 at rank 1 -> 1; q2 e1 at rank 2 -> 1/2
#   AP:     q1 (1/1 + 2/2 + 3/4) / 4 = 0.6875; q2 (1/2 + 2/4) / 2 = 0.5
#   R@3:    q1 {d3, d1} 2/4; q2 {e1} 1/2   R@100: q1 3/4; q2 2/2
LEVEL1 = {
    "ndcg@10": {"q1": NDCG_Q1, "q2": NDCG_Q2},
    "mrr@10": {"q1": 1.0, "q2": 0.5},
    "map": {"q1": 0.6875, "q2": 0.5},
    "recall@3": {"q1": 0.5, "q2": 0.5},
    "recall@100": {"q1": 0.75, "q2": 1.0},
}


def test_metric_names_maps_binary_metrics_to_l2_only():
    assert metric_names(["ndcg@10", "mrr@10", "map", "recall@100", "recall@1000", "P@10"], 2) == [
        "ndcg@10",
        "mrr@10-l2",
        "map-l2",
        "recall@100-l2",
        "recall@1000-l2",
        "precision@10-l2",
    ]
    assert metric_names(["ndcg@10", "mrr@10", "map", "recall@1000"], 1) == ["ndcg@10", "mrr@10", "map", "recall@1000"]


@pytest.mark.parametrize("bad", ["ndcg@0", "bleu", "recall", "map@x", "ndcg@10-l2"])
def test_metric_names_rejects_unknown(bad):
    with pytest.raises(ValueError):
        metric_names([bad], 1)


@pytest.mark.parametrize("level, expected", [(2, LEVEL2), (1, LEVEL1)])
def test_evaluate_run_matches_hand_computation(level, expected):
    agg, per_query = evaluate_run(QRELS, RUN, METRICS, level)
    assert set(per_query) == set(METRICS)
    for metric in METRICS:
        assert per_query[metric].keys() == {"q1", "q2"}  # q9 has no qrels
        for qid, value in expected[metric].items():
            assert per_query[metric][qid] == pytest.approx(value, abs=1e-12), (metric, qid)
        assert agg[metric] == pytest.approx(sum(expected[metric].values()) / 2, abs=1e-12), metric


def test_relevance_level_changes_binary_metrics_but_not_ndcg():
    agg1, _ = evaluate_run(QRELS, RUN, METRICS, 1)
    agg2, _ = evaluate_run(QRELS, RUN, METRICS, 2)
    assert agg1["mrr@10"] == pytest.approx(0.75) and agg2["mrr@10"] == pytest.approx(0.375)
    assert agg1["map"] == pytest.approx(0.59375) and agg2["map"] == pytest.approx(7 / 24)
    assert agg1["ndcg@10"] == agg2["ndcg@10"] == pytest.approx((NDCG_Q1 + NDCG_Q2) / 2)


def test_judged_queries_missing_from_run_count_as_zero():
    qrels = {**QRELS, "q3": {"f1": 2}}
    agg, per_query = evaluate_run(qrels, RUN, ["ndcg@10", "mrr@10"], 2)
    assert per_query["ndcg@10"]["q3"] == 0.0 and per_query["mrr@10"]["q3"] == 0.0
    # mean over 3 judged queries: (0.5 + 0.25 + 0) / 3
    assert agg["mrr@10"] == pytest.approx(0.75 / 3)
    assert agg["ndcg@10"] == pytest.approx((NDCG_Q1 + NDCG_Q2) / 3)
    # a run without any judged query scores 0 everywhere instead of crashing
    agg, _ = evaluate_run(qrels, {"other": {"d1": 1.0}}, ["ndcg@10"], 1)
    assert agg == {"ndcg@10": 0.0}


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_ties_broken_by_docid_descending_like_trec_eval(order):
    qrels = {"q": {"a": 1}}
    run = {"q": {d: 1.0 for d in order}}  # a and b tie; trec_eval ranks b first
    agg, _ = evaluate_run(qrels, run, ["mrr@10"], 1)
    assert agg["mrr@10"] == 0.5


def test_non_string_qids_are_rejected():
    with pytest.raises(TypeError):
        evaluate_run({1: {"d": 1}}, {1: {"d": 1.0}}, ["mrr@10"], 1)


def test_evaluate_to_files(tmp_path):
    qrels_path = tmp_path / "qrels.txt"
    qrels_path.write_text("".join(f"{q} Q0 {d} {g}\n" for q, docs in QRELS.items() for d, g in docs.items()))
    write_run(RUN, tmp_path / "run.txt", "toy")
    out_json, out_tsv = tmp_path / "m" / "metrics.json", tmp_path / "m" / "perquery.tsv"
    result = evaluate_to_files(
        {"toy": {"dl": tmp_path / "run.txt"}},
        {"dl": qrels_path},
        {"dl": ["ndcg@10", "map"]},
        {"dl": 2},
        out_json,
        out_tsv,
    )
    # (0.659485+0.567207)/2, 7/24; both judged queries answered (q9 has no qrels)
    expected = {"toy": {"dl": {"ndcg@10": 0.6133, "map": 0.2917, "judged_queries": {"found": 2, "expected": 2}}}}
    assert result == expected
    assert json.loads(out_json.read_text()) == expected
    rows = [line.split("\t") for line in out_tsv.read_text().splitlines()]
    assert rows[0] == ["run", "dataset", "metric", "qid", "value"]
    assert rows[1:] == [
        ["toy", "dl", "ndcg@10", "q1", "0.659485"],
        ["toy", "dl", "ndcg@10", "q2", "0.567207"],
        ["toy", "dl", "map", "q1", "0.333333"],
        ["toy", "dl", "map", "q2", "0.250000"],
    ]


# --------------------------------------------------------------------------- compare
def test_compare_paired_t_test_p_value():
    qrels = {"q1": {"a": 1}, "q2": {"a": 1}, "q3": {"a": 1}}
    good = {"q1": {"a": 2.0, "b": 1.0}, "q2": {"a": 2.0, "b": 1.0}, "q3": {"b": 2.0, "a": 1.0}}
    weak = {q: {"b": 2.0, "a": 1.0} for q in qrels}
    # per-query MRR: good = [1, 1, 1/2], weak = [1/2, 1/2, 1/2]; differences [1/2, 1/2, 0]
    # mean 1/3, sd sqrt(1/12), t = (1/3) / (sqrt(1/12)/sqrt(3)) = 2, df = 2
    # two-sided p for df=2: 1 - t/sqrt(t^2 + 2) = 1 - 2/sqrt(6) = 0.183503
    res = compare(qrels, {"good": good, "weak": weak}, ["mrr@10"], stat_test="student", max_p=0.05)
    assert res["scores"]["good"]["mrr@10"] == pytest.approx(5 / 6)
    assert res["scores"]["weak"]["mrr@10"] == pytest.approx(0.5)
    assert res["p_values"]["good"]["weak"]["mrr@10"] == pytest.approx(0.1835034190722739, abs=1e-9)
    assert res["significant"]["good"]["weak"]["mrr@10"] is False
    assert res["win_tie_loss"]["good"]["weak"]["mrr@10"] == {"W": 2, "T": 1, "L": 0}
    assert "| good | 0.8333 |" in comparison_table(res)
    fisher = compare(qrels, {"good": good, "weak": weak}, ["mrr@10", "ndcg@10"], stat_test="fisher")
    assert 0.0 <= fisher["p_values"]["good"]["weak"]["mrr@10"] <= 1.0


# --------------------------------------------------------------------------- report
REFS = {
    "profiles": {"mini": "small-model measurements, not the paper's", "paper": "the real thing"},
    "conditions": [
        {
            "condition": "bm25-published-rankllm",
            "description": "published runs",
            "source": "rank_llm",
            "profiles": ["mini", "paper"],
            "results": {
                "dl19": {"ndcg@10": {"expected": 0.5058, "tolerance": 0.0005}},
                "dl20": {"ndcg@10": {"expected": 0.4796, "tolerance": 0.0005}},
            },
        },
        {
            "condition": "bm25-pyserini",
            "description": "full collection",
            "source": "Anserini",
            "profiles": ["paper"],
            "not_measurable": {"mini": "mini indexes only a 9.7k-passage sub-collection"},
            "results": {"dev": {"mrr@10": {"expected": 0.1840, "tolerance": 0.001}}},
        },
    ],
}


def test_report_flags_wrong_value_as_fail():
    metrics = {"bm25-published-rankllm": {"dl19": {"ndcg@10": 0.5100}, "dl20": {"ndcg@10": 0.4796}}}
    text = build_report(metrics, REFS, "mini")
    assert "| bm25-published-rankllm | dl19 | ndcg@10 | 0.5058 | 0.5100 | 0.0005 | FAIL |" in text
    assert "| bm25-published-rankllm | dl20 | ndcg@10 | 0.4796 | 0.4796 | 0.0005 | OK |" in text
    assert "1 OK, 1 FAIL" in text
    assert count_fails(metrics, REFS, "mini") == 1


def test_report_statuses_and_tolerance_edge(tmp_path):
    # 0.5063 is exactly at the tolerance (OK); dl20 missing (not run); pyserini n/a in mini
    metrics = {"bm25-published-rankllm": {"dl19": {"ndcg@10": 0.5063}}}
    statuses = [c.status for c in check_references(metrics, REFS, "mini")]
    assert statuses == ["OK", "not run", "n/a in mini"]
    text = build_report(metrics, REFS, "mini")
    assert "profile: mini" in text and "not the paper's" in text
    assert "| n/a in mini [1] |" in text and "mini indexes only a 9.7k-passage sub-collection" in text
    assert "1 OK, 0 FAIL" in text
    # in the paper profile the same condition is measurable, so it is "not run" there
    assert [c.status for c in check_references(metrics, REFS, "paper")][2] == "not run"
    assert [c.status for c in check_references({"bm25-published-rankllm": {"dl19": {"ndcg@10": 0.5064}}}, REFS, "mini")][0] == "FAIL"
    out = tmp_path / "report.md"
    write_report(text, out)
    assert out.read_text() == text
    assert count_fails(metrics, REFS, "mini") == 0
    with pytest.raises(ValueError):
        build_report(metrics, REFS, "huge")


def test_metrics_table_lists_everything():
    table = metrics_table({"b": {"dl20": {"ndcg@10": 0.5}}, "a": {"dl19": {"ndcg@10": 0.25, "map": 0.125}}})
    assert table.splitlines() == [
        "| run | dataset | metric | value |",
        "|---|---|---|---|",
        "| a | dl19 | ndcg@10 | 0.2500 |",
        "| a | dl19 | map | 0.1250 |",
        "| b | dl20 | ndcg@10 | 0.5000 |",
    ]


def test_packaged_references_are_valid():
    refs = load_references()
    names = [c["condition"] for c in refs["conditions"]]
    assert names == ["bm25-published-rankllm", "bm25-pyserini", "rankllama-7b-repllama-top200"]
    by_name = {c["condition"]: c for c in refs["conditions"]}
    assert by_name["bm25-pyserini"]["results"]["dl19"]["map"]["expected"] == 0.3013
    assert "mini" not in by_name["bm25-pyserini"]["profiles"]
    assert by_name["bm25-pyserini"]["run"] == "bm25"  # the run name irrepro's CLI writes
    assert by_name["bm25-published-rankllm"]["results"]["dl20"]["ndcg@10"] == {"expected": 0.4796, "tolerance": 0.0005}


def test_load_metrics_merges_and_detects_conflicts(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"r": {"dl19": {"ndcg@10": 0.5}}}))
    (tmp_path / "b.json").write_text(json.dumps({"r": {"dl19": {"map": 0.3}}, "s": {"dl20": {"map": 0.1}}}))
    (tmp_path / "c.json").write_text(json.dumps({"r": {"dl19": {"map": 0.4}}}))
    merged = load_metrics([tmp_path / "a.json", tmp_path / "b.json"])
    assert merged == {"r": {"dl19": {"ndcg@10": 0.5, "map": 0.3}}, "s": {"dl20": {"map": 0.1}}}
    with pytest.raises(ValueError, match="conflicts"):
        load_metrics([tmp_path / "b.json", tmp_path / "c.json"])


# --------------------------------------------------------------------------- real data
@needs_data
def test_published_bm25_runs_reproduce_and_report_ok(tmp_path):
    dl, bm25 = SHARED_DATA / "trec-dl", SHARED_DATA / "bm25-top100"
    agg19, _ = evaluate_run(read_qrels(dl / "qrels.dl19-passage.txt"), read_run(bm25 / "trec_results_dl19.txt"), ["ndcg@10"], 2)
    agg20, _ = evaluate_run(read_qrels(dl / "qrels.dl20-passage.txt"), read_run(bm25 / "trec_results_dl20.txt"), ["ndcg@10"], 2)
    assert round(agg19["ndcg@10"], 4) == 0.5058
    assert round(agg20["ndcg@10"], 4) == 0.4796

    metrics = evaluate_to_files(
        {"bm25-published-rankllm": {"dl19": bm25 / "trec_results_dl19.txt", "dl20": bm25 / "trec_results_dl20.txt"}},
        {"dl19": dl / "qrels.dl19-passage.txt", "dl20": dl / "qrels.dl20-passage.txt"},
        ["ndcg@10", "map", "recall@100"],
        2,
        tmp_path / "metrics.json",
        tmp_path / "perquery.tsv",
    )
    assert metrics["bm25-published-rankllm"]["dl19"]["ndcg@10"] == 0.5058
    assert metrics["bm25-published-rankllm"]["dl20"]["ndcg@10"] == 0.4796
    # per-query rows: 3 metrics x (43 + 54) judged queries + header
    assert len((tmp_path / "perquery.tsv").read_text().splitlines()) == 1 + 3 * (43 + 54)

    refs = load_references()
    text = build_report(metrics, refs, "mini")
    assert "| bm25-published-rankllm | dl19 | ndcg@10 | 0.5058 | 0.5058 | 0.0005 | OK |" in text
    assert "| bm25-published-rankllm | dl20 | ndcg@10 | 0.4796 | 0.4796 | 0.0005 | OK |" in text
    assert "2 OK, 0 FAIL" in text
    assert "n/a in mini" in text
    assert count_fails(metrics, refs, "mini") == 0
