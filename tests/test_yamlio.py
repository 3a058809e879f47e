"""irrepro.yamlio: libyaml's parser (when PyYAML has it) gives the documents and the messages of
the pure-Python one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from irrepro.yamlio import YAMLInputError, load_yaml, load_yaml_text  # noqa: E402


def test_every_yaml_file_of_the_repo_reads_as_with_pyyaml():
    skip = {".venv", ".snakemake", ".dvc", ".git", "node_modules"}
    files = []
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if d not in skip]  # never walked: .venv alone is ~100k files
        files += [Path(folder) / n for n in names if n.endswith((".yaml", ".yml"))]
    files.sort()
    assert any(p.name == "params.yaml" for p in files)
    for p in files:
        text = p.read_text(encoding="utf-8-sig")
        ours = load_yaml(p)
        ref = yaml.load(text, Loader=yaml.SafeLoader)  # the pure-Python parser, PyYAML's reference
        assert repr(ours) == repr(ref), p  # repr: also the types (1 vs 1.0 vs True)


@pytest.mark.parametrize("text, where, words", [
    ("a: &x 1\nb: *y\n", "bad.yaml:2", "found undefined alias 'y'"),
    ("\t- x\n", "bad.yaml:1", "found character '\\t' that cannot start any token"),
    ("profile: [mini\n", "bad.yaml:2", "expected ',' or ']', but got '<stream end>'"),
    ("a: 1\nb: {c: 2, c: 3}\n", "bad.yaml:2", "duplicate key 'c'"),
])
def test_errors_name_the_file_line_and_problem(text, where, words):
    with pytest.raises(YAMLInputError) as e:
        load_yaml_text(text, "bad.yaml")
    assert where in str(e.value) and words in str(e.value)


def test_libyaml_is_used_when_pyyaml_has_it():
    from irrepro import yamlio

    assert (yamlio._FastUniqueKeyLoader is not None) == bool(getattr(yaml, "__with_libyaml__", False))
