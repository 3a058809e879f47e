"""Multiple-comparison correction of paired significance tests, and LaTeX export through ranx.

A comparison table makes one claim per (metric, pair of runs): "a is significantly better
than b". With 36 configs and BM25 that is 666 pairs per metric, so at p <= 0.05 about 33
claims would be false by chance alone. :func:`apply_correction` adjusts the p-values of a
:func:`irrepro.evaluate.compare` result over its **family: every pair of runs in the
comparison, separately for each metric** (the claims one column of the table makes), and
marks a pair significant when its *adjusted* p-value is <= ``max_p``.

Corrections (all from libraries, none home-made):

* ``bh``: Benjamini-Hochberg, false discovery rate (``scipy.stats.false_discovery_control``);
  the default, as the family is large and the question is "which of these differences are
  real", not "is any".
* ``by``: Benjamini-Yekutieli, FDR under any dependence between the tests (same scipy function).
* ``holm``: Holm-Bonferroni, family-wise error rate (``statsmodels.stats.multitest.multipletests``;
  statsmodels is optional: an error says so when it is not installed).
* ``none``: raw p-values (the table then says "uncorrected").

A pair whose p-value is NaN (identical per-query scores) is not a test: it stays NaN, is
never significant, and does not count in the family. ranx's own ``tukey`` test (Tukey's HSD)
already controls the family-wise error over all pairs; it needs no further correction.

:func:`comparison_latex` renders a corrected result as LaTeX with ranx's ``Report.to_latex``
(booktabs; superscript letters mark the runs a run is significantly better than), naming
the test and the correction in the caption. ranx letters runs ``a``-``z``, so a comparison
of more than 26 runs is split into several tables, each with the first run (the baseline)
and up to 25 others; the p-values stay those adjusted over the whole family.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

__all__ = ["CORRECTIONS", "adjust_p_values", "apply_correction", "correction_phrase", "comparison_latex"]

CORRECTIONS = {
    "bh": "Benjamini-Hochberg",
    "by": "Benjamini-Yekutieli",
    "holm": "Holm-Bonferroni",
    "none": "uncorrected",
}
_TEST_NAMES = {"student": "paired t-test", "fisher": "Fisher randomisation test", "tukey": "Tukey's HSD test"}
_RANX_LETTERS = 26


def adjust_p_values(p_values: Sequence[float], method: str) -> np.ndarray:
    """Adjusted p-values, same order; NaN entries stay NaN and are left out of the family."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown p-value correction {method!r}; use one of {sorted(CORRECTIONS)}")
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if not ok.any():
        return out
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p[ok][(p[ok] < 0) | (p[ok] > 1)][:5].tolist()}")
    if method == "none":
        out[ok] = p[ok]
    elif method in ("bh", "by"):
        from scipy.stats import false_discovery_control

        out[ok] = false_discovery_control(p[ok], method=method)
    else:  # holm
        try:
            from statsmodels.stats.multitest import multipletests
        except ImportError:
            raise ImportError("the 'holm' correction needs statsmodels (pip install statsmodels); "
                              "'bh' and 'by' need only scipy") from None
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def apply_correction(result: dict, method: str) -> dict:
    """Adjust a :func:`irrepro.evaluate.compare` result in place and return it.

    Adds ``"correction"`` (the method), ``"family_size"`` (``{metric: number of tested pairs}``)
    and ``"p_values_raw"`` (the unadjusted ``p_values``); ``"p_values"`` become the adjusted
    ones and ``"significant"`` is ``adjusted p <= max_p``. Symmetric: ``p[a][b] == p[b][a]``.
    """
    runs, metrics, max_p = result["runs"], result["metrics"], result["max_p"]
    raw = result.get("p_values_raw", result["p_values"])
    pairs = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1:]]
    adjusted = {a: {b: {} for b in runs if b != a} for a in runs}
    significant = {a: {b: {} for b in runs if b != a} for a in runs}
    family = {}
    for m in metrics:
        values = [raw[a][b][m] for a, b in pairs]
        family[m] = sum(1 for v in values if not math.isnan(v))
        for (a, b), q in zip(pairs, adjust_p_values(values, method).tolist()):
            adjusted[a][b][m] = adjusted[b][a][m] = q
            significant[a][b][m] = significant[b][a][m] = (not math.isnan(q)) and q <= max_p
    result.update(correction=method, family_size=family, p_values_raw=raw, p_values=adjusted,
                  significant=significant)
    return result


def correction_phrase(result: Mapping) -> str:
    """One sentence naming the test, the correction, its family and the threshold."""
    test = _TEST_NAMES.get(result["stat_test"], result["stat_test"])
    method = result.get("correction", "none")
    n = max(result.get("family_size", {}).values(), default=0)
    if method == "none":
        how = "p-values not corrected for multiple comparisons"
    else:
        how = f"{CORRECTIONS[method]}-adjusted p-values over all {n} pair{'s' if n != 1 else ''} of runs per metric"
    return f"{test}, {how}, significant at p <= {result['max_p']}, {result['n_queries']} queries"


def comparison_latex(result: Mapping, *, label: str = "tab:results", caption_prefix: str = "") -> str:
    """LaTeX (booktabs; needs ``\\usepackage{graphicx,booktabs}``) of a corrected comparison,
    rendered by ranx's ``Report.to_latex``; more than 26 runs give several tables (see module
    docstring), labelled ``{label}-1``, ``{label}-2``, ..."""
    from ranx.data_structures.frozenset_dict import FrozensetDict
    from ranx.data_structures.report import Report

    from .evaluate import metric_names

    metrics = list(result["metrics"])
    names = metric_names(metrics, int(result.get("rel_level", 1)))
    to_ranx = dict(zip(metrics, names))
    phrase = correction_phrase(result)

    test_and_correction = phrase.split(", significant at", 1)[0]

    class _Report(Report):
        def get_stat_test_label(self, stat_test: str) -> str:  # ranx's caption: "differences in <this> with p <= x"
            return test_and_correction

    runs = list(result["runs"])
    groups = [runs] if len(runs) <= _RANX_LETTERS else [
        [runs[0], *runs[1:][i:i + _RANX_LETTERS - 1]] for i in range(0, len(runs) - 1, _RANX_LETTERS - 1)]
    tables = []
    for k, group in enumerate(groups, 1):
        comparisons = FrozensetDict()
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                comparisons[frozenset((a, b))] = {
                    to_ranx[m]: {"p_value": result["p_values"][a][b][m], "significant": result["significant"][a][b][m]}
                    for m in metrics}
        report = _Report(
            model_names=group,
            results={a: {to_ranx[m]: result["scores"][a][m] for m in metrics} for a in group},
            comparisons=comparisons,
            metrics=names,
            max_p=result["max_p"],
            win_tie_loss={},
            rounding_digits=4,
            stat_test=result["stat_test"],
        )
        tex = report.to_latex()
        tex = tex[tex.index("% To change the table size"):]  # drop ranx's "==== add in preamble ====" banner
        this_label = label if len(groups) == 1 else f"{label}-{k}"
        tex = tex.replace("\\label{tab:results}", f"\\label{{{this_label}}}")
        if caption_prefix:
            tex = tex.replace("\\caption{\n", "\\caption{\n" + caption_prefix.strip() + "\n", 1)
        tables.append(tex.rstrip() + "\n")
    head = "% Needs \\usepackage{graphicx} and \\usepackage{booktabs}. " + phrase + ".\n"
    return head + "\n".join(tables)
