"""The deviation registry: schema + cross-checks, and its section in the reproduction report."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from irrepro.cli import main as cli_main
from irrepro.deviations import DeviationsError, default_path, load_deviations, markdown_table
from irrepro.params import load_params
from irrepro.report import build_report
from irrepro.study1.published import write_table

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "AtharvaNijasure/multi_stage_retrieval@cf514c3 train_pythia.py:96"


def _row(**over) -> dict:
    row = dict(id="study1-example", study="study1", source=SOURCE, original="does A", ours="does B",
               why="because C", switch="finetune.bf16")
    row.update(over)
    return row


def _write(tmp_path: Path, rows, name="deviations.yaml") -> Path:
    path = tmp_path / name
    path.write_text("# header\ndeviations:\n" + textwrap.indent(yaml.safe_dump(rows, sort_keys=False), "  ")
                    if rows else "# header\ndeviations:\n", encoding="utf-8")
    return path


def _error(tmp_path, rows) -> str:
    with pytest.raises(DeviationsError) as info:
        load_deviations(_write(tmp_path, rows), params=ROOT / "params.yaml")
    return str(info.value)


# ----------------------------------------------------------------------------- the committed registry
def test_committed_registry_validates_and_every_switch_is_a_params_key():
    rows = load_deviations(default_path(), params=ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert row["id"].startswith(row["study"] + "-")
        if row["switch"] is not None:  # the key exists in the raw file and in both profiles' views
            node = raw
            for part in row["switch"].split("."):
                node = node[part]
            for profile in ("mini", "paper"):
                load_deviations(default_path(), params=load_params(ROOT / "params.yaml", profile))


def test_the_code_each_row_names_exists():
    """Every ``irrepro.<module>[.<name>]`` and every repository path a row's `ours` or `why` names exists,
    so a move of the code (irrepro.rerank.train -> irrepro.lora.trainer) cannot leave the
    report pointing at nothing."""
    import importlib
    import re

    dotted, paths = set(), set()
    for row in load_deviations(default_path(), params=ROOT / "params.yaml"):
        ours = row["ours"] + " " + row["why"]
        dotted |= set(re.findall(r"\birrepro(?:\.\w+)+", ours))
        paths |= set(re.findall(r"(?<![\w/.])((?:tests|resources|workflow)/[\w/]+\.(?:py|yaml))", ours))
    assert "irrepro.lora.trainer.KeepResumeStateInNewest" in dotted and "tests/test_precision.py" in paths
    missing = []
    for name in sorted(dotted):
        parts = name.split(".")
        for i in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
                break
            except ModuleNotFoundError:
                continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
        if obj is None:
            missing.append(name)
    missing += [p for p in sorted(paths) if not (ROOT / p).exists() and not (ROOT / "workflow/irrepro" / p).exists()]
    assert not missing, f"deviations.yaml names code that does not exist: {missing}"


def test_empty_registry_is_an_empty_list(tmp_path):
    assert load_deviations(_write(tmp_path, []), params=ROOT / "params.yaml") == []


def test_rows_round_trip_in_file_order(tmp_path):
    rows = [_row(id="study1-b"), _row(id="syntod-a", study="syntod", switch=None,
                                      source="algoprog/SynTOD@3e44f10 src/fine-tuning/qlora.py:10-12,40")]
    assert load_deviations(_write(tmp_path, rows), params=ROOT / "params.yaml") == rows


# ----------------------------------------------------------------------------- bad rows
def test_duplicate_id_names_the_id(tmp_path):
    msg = _error(tmp_path, [_row(), _row(why="other")])
    assert "row 'study1-example': id: duplicate id (rows 1 and 2)" in msg


def test_unknown_switch_names_row_and_key(tmp_path):
    msg = _error(tmp_path, [_row(id="study1-ok"), _row(id="study1-bad", switch="finetune.no_such_knob")])
    assert "row 'study1-bad': switch: key 'finetune.no_such_knob' does not exist in" in msg
    assert "study1-ok" not in msg


def test_missing_field_names_row_and_field(tmp_path):
    row = _row(id="study1-nowhy")
    del row["why"]
    assert "row 'study1-nowhy': <row>: 'why' is a required property" in _error(tmp_path, [row])
    row = _row()
    del row["id"]
    assert "row 1 (no id): <row>: 'id' is a required property" in _error(tmp_path, [row])


@pytest.mark.parametrize("source", [
    "train_pythia.py:96",                                                   # no repo
    "AtharvaNijasure/multi_stage_retrieval@main train_pythia.py:96",        # a branch, not a commit
    "AtharvaNijasure/multi_stage_retrieval@cf514c3 train_pythia.py",         # no line
    "AtharvaNijasure/multi_stage_retrieval@cf514c3 train_pythia.py:96 and more",
])
def test_bad_source_names_row_and_key(tmp_path, source):
    msg = _error(tmp_path, [_row(id="study1-src", source=source)])
    assert "row 'study1-src': source: does not look like '<owner>/<repo>@<hex commit> <path>:<line>'" in msg


def test_other_bad_values_are_named(tmp_path):
    assert "row 'study1-x': study: 'study3' is not one of" in _error(tmp_path, [_row(id="study1-x", study="study3")])
    assert "row 'syntod-x': id: must start with its study 'study1-'" in _error(tmp_path, [_row(id="syntod-x")])
    assert "row 'study1-x': <row>: Additional properties are not allowed ('colour' was unexpected)" in _error(tmp_path, [_row(id="study1-x", colour="red")])
    assert "row 'study1-x': original: '' should be non-empty" in _error(tmp_path, [_row(id="study1-x", original="")])


# ----------------------------------------------------------------------------- report section
def test_report_section_lists_rows_for_both_profiles():
    rows = [_row(id="study1-pipe", original="reads a|b", switch=None),
            _row(id="syntod-x", study="syntod", switch="syntod.finetune.rank")]
    for profile in ("mini", "paper"):
        md = build_report({}, None, profile, deviations=rows)
        section = md.split("## Deviations from the original code", 1)[1]
        assert "**paper** profile" in section
        assert ("describes the paper profile" in section) == (profile == "mini")
        assert "| id | what the original does | what we do | why | switch |" in section
        assert f"| study1-pipe | reads a\\|b ({SOURCE}) | does B | because C | - |" in section
        assert "| syntod-x |" in section.split("### Study 2: SynTOD")[1]
        assert "`syntod.finetune.rank` |" in section
    assert "No deviations registered." in build_report({}, None, "paper", deviations=[])
    assert "Deviations" not in build_report({}, None, "paper")
    assert markdown_table([]).count("\n") == 2


def test_report_cli_prints_the_committed_registry(tmp_path):
    metrics = tmp_path / "bm25.json"
    metrics.write_text(json.dumps({"bm25-published-rankllm": {"dl19": {"ndcg@10": 0.5058}}}))
    out = tmp_path / "report.md"
    published = tmp_path / "published.tsv"
    write_table([], published)
    for profile in ("mini", "paper"):
        cli_main(["report", "--params", str(ROOT / "params.yaml"), "--profile", profile,
                  "--metrics", str(metrics), "--published", str(published), "--out", str(out)])
        text = out.read_text(encoding="utf-8")
        assert "## Deviations from the original code" in text
        assert f"## The authors' published adapters\n\nNone evaluated in the {profile} profile" in text
        for row in load_deviations(params=ROOT / "params.yaml"):
            assert f"| {row['id']} |" in text
