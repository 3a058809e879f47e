"""Multiple-comparison correction of the significance tables and their LaTeX export through ranx."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from irrepro.evaluate import compare
from irrepro.significance import adjust_p_values, apply_correction, comparison_latex, correction_phrase


def _bh_by_hand(p):
    """Benjamini-Hochberg step-up, written out: q_(i) = min_{j>=i} p_(j) * n / j, capped at 1."""
    n = len(p)
    order = sorted(range(n), key=lambda i: p[i])
    q = [0.0] * n
    running = 1.0
    for rank in range(n, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * n / rank)
        q[i] = running
    return q


def test_bh_matches_the_hand_computation_and_keeps_nan_out_of_the_family():
    p = [0.01, 0.04, 0.03, 0.005, 0.5, 0.2]
    np.testing.assert_allclose(adjust_p_values(p, "bh"), _bh_by_hand(p), rtol=1e-12)
    # the worked example: 0.005*6/1=0.03, 0.01*6/2=0.03, 0.03*6/3=0.06, 0.04*6/4=0.06, 0.2*6/5=0.24, 0.5
    np.testing.assert_allclose(adjust_p_values(p, "bh"), [0.03, 0.06, 0.06, 0.03, 0.5, 0.24], rtol=1e-12)
    with_nan = adjust_p_values([0.01, float("nan"), 0.04], "bh")
    assert math.isnan(with_nan[1])
    np.testing.assert_allclose(with_nan[[0, 2]], _bh_by_hand([0.01, 0.04]))  # family of 2, not 3
    np.testing.assert_array_equal(adjust_p_values(p, "none"), p)
    assert (adjust_p_values(p, "by") >= adjust_p_values(p, "bh")).all()  # BY is the more conservative
    with pytest.raises(ValueError, match="unknown p-value correction 'bonf'"):
        adjust_p_values(p, "bonf")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_p_values([1.5], "bh")


def test_holm_is_statsmodels_or_a_clear_error():
    p = [0.01, 0.04, 0.03, 0.005]
    try:
        import statsmodels  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="statsmodels"):
            adjust_p_values(p, "holm")
        return
    # Holm by hand: sorted 0.005*4, max(.., 0.01*3), max(.., 0.03*2), max(.., 0.04*1)
    np.testing.assert_allclose(adjust_p_values(p, "holm"), [0.03, 0.06, 0.06, 0.02])


def _toy(n_runs, n_queries=30, seed=0):
    rng = random.Random(seed)
    qrels = {f"q{i}": {f"d{j}": rng.randint(0, 3) for j in range(8)} for i in range(n_queries)}
    runs = {f"run{k}": {q: {d: rng.random() + 0.15 * k * (g >= 2) for d, g in qrels[q].items()} for q in qrels}
            for k in range(n_runs)}
    return qrels, runs


def test_apply_correction_adjusts_over_all_pairs_per_metric():
    qrels, runs = _toy(4)
    res = compare(qrels, runs, ["ndcg@10", "map"], rel_level=2)
    raw = {m: [res["p_values"][a][b][m] for i, a in enumerate(res["runs"]) for b in res["runs"][i + 1:]]
           for m in res["metrics"]}
    apply_correction(res, "bh")
    assert res["correction"] == "bh" and res["family_size"] == {"ndcg@10": 6, "map": 6}
    for m in res["metrics"]:
        got = [res["p_values"][a][b][m] for i, a in enumerate(res["runs"]) for b in res["runs"][i + 1:]]
        np.testing.assert_allclose(got, _bh_by_hand(raw[m]), rtol=1e-12)
        for a in res["runs"]:
            for b in res["runs"]:
                if a != b:
                    assert res["p_values"][a][b][m] == res["p_values"][b][a][m]
                    assert res["significant"][a][b][m] == (res["p_values"][a][b][m] <= res["max_p"])
                    assert res["p_values_raw"][a][b][m] <= res["p_values"][a][b][m]
    assert "Benjamini-Hochberg-adjusted p-values over all 6 pairs" in correction_phrase(res)
    apply_correction(res, "none")  # re-applying starts from the raw p-values, not the adjusted ones
    assert [res["p_values"][a][b]["map"] for i, a in enumerate(res["runs"]) for b in res["runs"][i + 1:]] == raw["map"]
    assert "not corrected" in correction_phrase(res)


def test_latex_through_ranx_names_the_correction_and_splits_past_26_runs():
    qrels, runs = _toy(3)
    res = apply_correction(compare(qrels, runs, ["ndcg@10", "map"], rel_level=2), "bh")
    res["rel_level"] = 2
    tex = comparison_latex(res, label="tab:dl19", caption_prefix="DL19.")
    assert "\\begin{table*}" in tex and tex.count("\\begin{table*}") == 1 and "\\label{tab:dl19}" in tex
    assert "Benjamini-Hochberg-adjusted p-values over all 3 pairs of runs per metric" in tex
    assert "MAP-l2" in tex and "NDCG@10" in tex and "DL19." in tex
    assert "====" not in tex  # ranx's "add in preamble" banner is not LaTeX
    # the best run is significantly better than the worst on both metrics here: letter a in run2's cells
    assert res["significant"]["run2"]["run0"]["ndcg@10"]
    row = tex[tex.index("run2 &"):].split("\\\\", 1)[0]
    assert "$^{a" in row
    big_q, big_runs = _toy(30, n_queries=12)
    big = apply_correction(compare(big_q, big_runs, ["ndcg@10"], rel_level=2), "bh")
    tex = comparison_latex(big)
    assert tex.count("\\begin{table*}") == 2 and "\\label{tab:results-1}" in tex and "\\label{tab:results-2}" in tex
    second = tex[tex.index("\\label{tab:results-1}"):]
    assert "run0 &" in second and "run29 &" in second  # the baseline heads every table
    assert "over all 435 pairs" in tex


def test_compare_to_bm25_tables_name_the_correction(tmp_path):
    from irrepro.rerank.evaluate import compare_to_bm25
    from irrepro.trec import write_run

    qrels, runs = _toy(3)
    (tmp_path / "qrels").write_text("".join(f"{q} 0 {d} {g}\n" for q, ds in qrels.items() for d, g in ds.items()))
    for name, run in runs.items():
        write_run(run, tmp_path / f"{name}.trec", tag=name)
    datasets = {"toy": {"qrels": str(tmp_path / "qrels"), "run": str(tmp_path / "run0.trec"), "rel_level": 2}}
    res = compare_to_bm25(datasets, {"cfg-a": {"toy": tmp_path / "run1.trec"}, "cfg-b": {"toy": tmp_path / "run2.trec"}},
                          ["ndcg@10"], out_md=tmp_path / "sig.md", out_tex=tmp_path / "sig.tex", correction="by")
    assert res["toy"]["correction"] == "by" and res["toy"]["family_size"] == {"ndcg@10": 3}
    md = (tmp_path / "sig.md").read_text()
    assert "Benjamini-Yekutieli-adjusted p-values over all 3 pairs of runs per metric" in md
    tex = (tmp_path / "sig.tex").read_text()
    assert "\\label{tab:significance-toy}" in tex and "Dataset toy." in tex and "Benjamini-Yekutieli" in tex
    # the default correction of the pipeline's comparisons is Benjamini-Hochberg
    assert compare_to_bm25(datasets, {"cfg-a": {"toy": tmp_path / "run1.trec"}}, ["ndcg@10"])["toy"]["correction"] == "bh"
