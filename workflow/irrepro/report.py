"""Reproduction report: measured metrics against published reference figures.

Pyserini two-click style: every reference number (``resources/references.yaml``) is
printed next to what this run measured with an OK/FAIL verdict. Statuses:

* ``OK`` / ``FAIL``: measurable in this profile, measured, ``|measured - expected| <=
  tolerance`` or not;
* ``not run``: measurable in this profile but no measured value in the metrics JSON;
* ``n/a in <profile> [k]``: the condition cannot be measured in this profile; note ``[k]``
  under the table gives the reason.

Only FAILs count as failures (:func:`count_fails`); the CLI decides whether to exit
non-zero or warn.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping


from .yamlio import load_yaml

from .utils import atomic_path
from .errors import read_json_file
from .checks import JUDGED_KEY

__all__ = [
    "Check",
    "load_references",
    "load_metrics",
    "check_references",
    "count_fails",
    "count_failures",
    "build_report",
    "table_rows",
    "REPORT_COLUMNS",
    "metrics_table",
    "write_report",
    "deviations_section",
]

MetricsJson = Mapping[str, Mapping[str, Mapping[str, float]]]
# float slack so that 0.5058 vs 0.5063 with tolerance 0.0005 is OK despite binary rounding
_EPS = 1e-9


@dataclass(frozen=True)
class Check:
    condition: str
    dataset: str
    metric: str
    expected: float
    measured: float | None
    tolerance: float
    status: str  # "OK", "FAIL", "not run" or "n/a in <profile>"
    reason: str = ""  # why n/a


def _default_references_path() -> Path:
    return Path(str(resources.files("irrepro").joinpath("resources", "references.yaml")))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def load_references(path: str | os.PathLike | None = None) -> dict:
    """Load and validate a references YAML (default: the packaged ``references.yaml``)."""
    path = Path(path) if path is not None else _default_references_path()
    refs = load_yaml(path)
    _validate_references(refs, str(path))
    return refs


def _validate_references(refs: Any, where: str) -> None:
    if not isinstance(refs, Mapping):
        raise ValueError(f"{where}: expected a mapping at top level")
    profiles = refs.get("profiles")
    if not isinstance(profiles, Mapping) or not profiles:
        raise ValueError(f"{where}: expected 'profiles: {{name: description}}'")
    conditions = refs.get("conditions")
    if not isinstance(conditions, list) or not conditions:
        raise ValueError(f"{where}: expected a non-empty 'conditions' list")
    seen = set()
    for i, cond in enumerate(conditions):
        here = f"{where}: conditions[{i}]"
        if not isinstance(cond, Mapping):
            raise ValueError(f"{here}: expected a mapping")
        for key in ("condition", "description", "source", "profiles", "results"):
            if key not in cond:
                raise ValueError(f"{here}: missing '{key}'")
        name = cond["condition"]
        here = f"{where}: condition {name}"
        if name in seen:
            raise ValueError(f"{here}: duplicate condition")
        seen.add(name)
        unknown = [p for p in cond["profiles"] if p not in profiles]
        unknown += [p for p in cond.get("not_measurable", {}) or {} if p not in profiles]
        if unknown:
            raise ValueError(f"{here}: unknown profile(s) {unknown}; known: {list(profiles)}")
        if not isinstance(cond["results"], Mapping) or not cond["results"]:
            raise ValueError(f"{here}: expected 'results: {{dataset: {{metric: {{expected, tolerance}}}}}}'")
        for dataset, by_metric in cond["results"].items():
            if not isinstance(by_metric, Mapping) or not by_metric:
                raise ValueError(f"{here}, {dataset}: expected {{metric: {{expected, tolerance}}}}")
            for metric, ref in by_metric.items():
                spot = f"{here}, {dataset} {metric}"
                if not isinstance(ref, Mapping) or "expected" not in ref or "tolerance" not in ref:
                    raise ValueError(f"{spot}: expected {{expected: x, tolerance: t}}")
                _number(ref["expected"], f"{spot} expected")
                if _number(ref["tolerance"], f"{spot} tolerance") < 0:
                    raise ValueError(f"{spot}: tolerance must be >= 0")


def load_metrics(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> dict:
    """Load and merge metrics JSON files ``{run: {dataset: {metric: value}}}``.

    A (run, dataset, metric) present in two files with different values is an error.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    merged: dict[str, dict[str, dict[str, float]]] = {}
    for path in paths:
        data = read_json_file(path)
        for run, by_dataset in data.items():
            for dataset, by_metric in by_dataset.items():
                slot = merged.setdefault(run, {}).setdefault(dataset, {})
                for metric, value in by_metric.items():
                    if metric in slot and slot[metric] != value:
                        raise ValueError(
                            f"{path}: {run}/{dataset}/{metric} = {value} conflicts with {slot[metric]} from an earlier file"
                        )
                    slot[metric] = value
    return merged


def _as_references(references: Mapping | str | os.PathLike | None) -> Mapping:
    if references is None or isinstance(references, (str, os.PathLike)):
        return load_references(references)
    _validate_references(references, "references")
    return references


def _lookup(metrics_json: MetricsJson, run: str, dataset: str, metric: str) -> float | None:
    by_metric = metrics_json.get(run, {}).get(dataset, {})
    if metric in by_metric:
        return by_metric[metric]
    lowered = {k.lower(): v for k, v in by_metric.items()}
    return lowered.get(metric.lower())


def check_references(
    metrics_json: MetricsJson, references: Mapping | str | os.PathLike | None, profile: str
) -> list[Check]:
    """One :class:`Check` per reference number, in references order."""
    refs = _as_references(references)
    if profile not in refs["profiles"]:
        raise ValueError(f"unknown profile {profile!r}; references know {list(refs['profiles'])}")
    checks: list[Check] = []
    for cond in refs["conditions"]:
        name = cond["condition"]
        run = cond.get("run", name)
        measurable = profile in cond["profiles"]
        reason = ""
        if not measurable:
            reason = " ".join(str((cond.get("not_measurable") or {}).get(profile, "not measurable in this profile")).split())
        for dataset, by_metric in cond["results"].items():
            for metric, ref in by_metric.items():
                expected = float(ref["expected"])
                tol = float(ref["tolerance"])
                measured = None
                if not measurable:
                    status = f"n/a in {profile}"
                else:
                    value = _lookup(metrics_json, run, dataset, metric)
                    if value is None:
                        status = "not run"
                    else:
                        measured = float(value)
                        ok = math.isfinite(measured) and abs(measured - expected) <= tol + _EPS
                        status = "OK" if ok else "FAIL"
                checks.append(Check(name, dataset, metric, expected, measured, tol, status, reason))
    return checks


def count_fails(
    metrics_json: MetricsJson, references: Mapping | str | os.PathLike | None, profile: str
) -> int:
    """Number of FAIL verdicts (for the CLI's exit status; "not run" and "n/a" are not failures)."""
    return sum(c.status == "FAIL" for c in check_references(metrics_json, references, profile))


count_failures = count_fails


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def metrics_table(metrics_json: MetricsJson) -> str:
    """Markdown table of every measured run x dataset x metric (runs and datasets sorted,
    metrics in their recorded order; the judged-queries flag beside them is not a metric)."""
    lines = ["| run | dataset | metric | value |", "|---|---|---|---|"]
    for run in sorted(metrics_json):
        for dataset in sorted(metrics_json[run]):
            for metric, value in metrics_json[run][dataset].items():
                if metric == JUDGED_KEY:
                    continue
                lines.append(f"| {_cell(run)} | {_cell(dataset)} | {_cell(metric)} | {_fmt(float(value))} |")
    return "\n".join(lines) + "\n"


REPORT_COLUMNS = ("condition", "dataset", "metric", "expected", "measured", "tolerance", "status")


def table_rows(checks: Iterable[Check]) -> tuple[list[dict[str, str]], dict[str, int]]:
    """The reproduction table as data, exactly as the report prints it.

    Returns one ``{column: text}`` row per check (columns :data:`REPORT_COLUMNS`; an n/a
    status carries its note number, ``n/a in mini [1]``) and ``{condition: note number}``
    for the n/a conditions, so other renderings (the report figure) show the same table.
    """
    rows: list[dict[str, str]] = []
    notes: dict[str, int] = {}
    for c in checks:
        status = c.status
        if status.startswith("n/a"):
            k = notes.setdefault(c.condition, len(notes) + 1)
            status = f"{status} [{k}]"
        rows.append(dict(condition=c.condition, dataset=c.dataset, metric=c.metric, expected=_fmt(c.expected),
                         measured=_fmt(c.measured), tolerance=f"{c.tolerance:g}", status=status))
    return rows, notes


# What the rerankers read, per profile (irrepro.rerank.inputs; the paper's titled corpus: bm25.with_titles).
RERANKER_INPUTS = {
    "mini": "Reranker inputs: the authors' one-string format (`query:  {q} document:  {title} {p}`, joint "
            "truncation to query_max_len + passage_max_len, no EOS); the mini passages (rank_llm's BM25 "
            "result files) have no titles, so every mini pair, in training and in scoring, has an empty title.",
    "paper": "Reranker inputs: the authors' one-string format (`query:  {q} document:  {title} {p}`, joint "
             "truncation to 32 + 164 tokens, no EOS), with the titles of Tevatron/msmarco-passage-corpus in "
             "scoring as in the training groups (Tevatron/msmarco-passage-aug).",
}


def build_report(
    metrics_json: MetricsJson,
    references: Mapping | str | os.PathLike | None,
    profile: str,
    *,
    include_all_metrics: bool = True,
    deviations: list[Mapping] | None = None,
) -> str:
    """Markdown reproduction report for ``profile`` (see module docstring).

    ``deviations``: the rows of the deviation registry
    (:func:`irrepro.deviations.load_deviations`); when given (also when empty) the report
    has a section "Deviations from the original code" (:func:`deviations_section`)."""
    refs = _as_references(references)
    checks = check_references(metrics_json, refs, profile)
    profile_text = " ".join(str(refs["profiles"][profile]).split())
    rows, notes = table_rows(checks)
    out = [
        f"# Reproduction report (profile: {profile})",
        "",
        f"Profile **{profile}**: {profile_text}",
        "",
        *([RERANKER_INPUTS[profile], ""] if profile in RERANKER_INPUTS else []),
        "| " + " | ".join(REPORT_COLUMNS) + " |",
        "|---|---|---|---|---|---|---|",
    ]
    out += ["| " + " | ".join(_cell(row[col]) for col in REPORT_COLUMNS) + " |" for row in rows]
    n_ok = sum(c.status == "OK" for c in checks)
    n_fail = sum(c.status == "FAIL" for c in checks)
    n_not_run = sum(c.status == "not run" for c in checks)
    n_na = sum(c.status.startswith("n/a") for c in checks)
    out += ["", f"**Summary: {n_ok} OK, {n_fail} FAIL** ({n_not_run} not run, {n_na} n/a in {profile})", ""]
    if notes:
        reasons = {c.condition: c.reason for c in checks}
        out.append("Not measurable in this profile:")
        out.append("")
        for name, k in notes.items():
            out.append(f"- [{k}] {name}: {reasons[name]}")
        out.append("")
    out += ["## Conditions", ""]
    for cond in refs["conditions"]:
        desc = " ".join(str(cond["description"]).split())
        src = " ".join(str(cond["source"]).split())
        out.append(f"- **{cond['condition']}** (run `{cond.get('run', cond['condition'])}`): {desc} Source: {src}")
        for dataset, by_metric in cond["results"].items():
            for metric, ref in by_metric.items():
                if ref.get("note"):
                    out.append(f"  - {dataset} {metric}: {' '.join(str(ref['note']).split())}")
    out.append("")
    if deviations is not None:
        out += [deviations_section(deviations, profile)]
    if include_all_metrics and metrics_json:
        out += ["## All measured metrics", "", metrics_table(metrics_json)]
    return "\n".join(out).rstrip("\n") + "\n"


_STUDIES = (("study1", "Study 1: LoRA rerankers"), ("syntod", "Study 2: SynTOD"))


def deviations_section(rows: list[Mapping], profile: str) -> str:
    """The section "Deviations from the original code": the registry's rows as one table per
    study. The registry describes the **paper** profile, in either profile's report."""
    from .deviations import markdown_table

    out = ["## Deviations from the original code", "",
           "Every known difference between the **paper** profile and the original code "
           "(registry `workflow/irrepro/resources/deviations.yaml`; the original's file and line in "
           "brackets; `switch` is the params.yaml key that selects the original behaviour)."]
    if profile != "paper":
        out.append(f"This table describes the paper profile; the {profile} profile differs from the "
                   "originals further, by its scale (models, data and step counts in params.yaml).")
    out.append("")
    if not rows:
        return "\n".join(out + ["No deviations registered.", ""])
    for study, title in _STUDIES:
        these = [r for r in rows if r["study"] == study]
        if these:
            out += [f"### {title}", "", markdown_table(these)]
    return "\n".join(out)


def write_report(report_text: str, out_path: str | os.PathLike) -> None:
    """Write a report (from :func:`build_report`) to ``out_path`` atomically."""
    with atomic_path(out_path) as tmp:
        tmp.write_text(report_text, encoding="utf-8")
