"""`irrepro verify`: recompute stages of a published run and judge each output.

The comparison functions are checked on hand-made numbers; the command end to end on a
copy of the session's finished mini run (pipeline_fixtures.snakemake_run), whose BM25 stages
(bm25, evaluate) are recomputed: a same-machine recomputation reproduces every output, and a published metric file that was
altered (and recorded in dvc.lock, as a wrong upload would be) fails, naming the file.
"""

import json
import os
import subprocess

import pytest

from conftest import BIN, run
from pipeline_fixtures import copy_project

from irrepro.verify import compare_numbers, flatten_metrics, output_kind

TOL = {"default": 0.005, "recall@100": 0.01}


def test_flatten_json_and_tsv_key_every_number():
    flat = flatten_metrics(json.dumps({"bm25": {"dl19": {"ndcg@10": 0.5, "n": 43}}}), ".json")
    assert flat == {("bm25", "dl19", "ndcg@10"): 0.5, ("bm25", "dl19", "n"): 43}
    tsv = "config\tstep\tdataset\tmetric\tvalue\nx\t5\tdl19\tndcg@10\t0.25\nx\t10\tdl19\tndcg@10\t0.30\n"
    flat = flatten_metrics(tsv, ".tsv")
    assert flat[("x", "dl19", "ndcg@10", "value")] == "0.25" and flat[("x", "dl19", "ndcg@10", "#1", "value")] == "0.30"


def test_compare_numbers_reports_the_largest_difference_against_its_tolerance():
    a = {("r", "dl19", "ndcg@10"): 0.2665, ("r", "dl19", "recall@100"): 0.70}
    b = {("r", "dl19", "ndcg@10"): 0.2651, ("r", "dl19", "recall@100"): 0.708}
    status, diff, where, tol, _ = compare_numbers(a, b, TOL)
    assert status == "within" and where == "r/dl19/recall@100" and diff == pytest.approx(0.008) and tol == 0.01
    b[("r", "dl19", "ndcg@10")] = 0.2600  # 0.0065 > 0.005
    status, diff, where, tol, note = compare_numbers(a, b, TOL)
    assert status == "outside" and where == "r/dl19/ndcg@10" and diff == pytest.approx(0.0065) and tol == 0.005
    assert "0.2665 -> 0.26" in note


def test_compare_numbers_fails_on_missing_keys_nan_and_changed_labels():
    assert compare_numbers({("a",): 1.0}, {("b",): 1.0}, TOL)[0] == "outside"
    assert compare_numbers({("a",): 1.0}, {("a",): float("nan")}, TOL)[0] == "outside"
    assert compare_numbers({("a",): "graph"}, {("a",): "naive"}, TOL)[0] == "outside"
    assert compare_numbers({("a",): float("nan")}, {("a",): float("nan")}, TOL)[0] == "outside"  # nan != nan


def test_output_kinds():
    assert output_kind("results/mini/metrics/bm25.json") == "metric"
    assert output_kind("results/mini/rerank_checkpoints.tsv") == "metric"
    assert output_kind("runs/mini/rerank/llama-r2-mha/dl19/step-5.trec") == "run"
    assert output_kind("models/mini/lora/llama-r2-mha/final/adapter_model.safetensors") == "bytes"
    assert output_kind("results/mini/syntod/cooking-graph.predictions.jsonl") == "bytes"


@pytest.fixture
def bm25_project(snakemake_run, shared_data, tmp_path, monkeypatch):
    """A private copy of a finished run: its BM25 run and metrics are what verify recomputes."""
    monkeypatch.setenv("IRREPRO_DATA_MIRROR", str(shared_data))
    return copy_project(snakemake_run.project, tmp_path / "p")


def verify(project, *args) -> tuple[int, str]:
    """``irrepro verify`` in ``project``: (exit status, output)."""
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run(["irrepro", "verify", *args], cwd=project, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_verify_passes_on_a_same_machine_rerun_and_fails_naming_an_altered_metric(bm25_project):
    project = bm25_project
    lock_before = (project / "dvc.lock").read_text()
    rc, out = verify(project, "--stages", "bm25", "evaluate", "--bytes", "--out", "verify.json")
    assert rc == 0 and "REPRODUCED:" in out and "NOT REPRODUCED" not in out, out
    found = {f["path"]: f for f in json.loads((project / "verify.json").read_text())}
    assert found["results/mini/metrics/bm25.json"]["status"] == "identical"
    assert found["runs/mini/bm25"]["status"] == "identical"
    # the published record and outputs are back in place
    assert (project / "dvc.lock").read_text() == lock_before
    assert "up to date" in run(["dvc", "status", "evaluate"], project)  # evaluate and everything upstream

    # A published metric file that does not match its inputs (altered, then recorded by DVC)
    metrics_path = project / "results" / "mini" / "metrics" / "bm25.json"
    doc = json.loads(metrics_path.read_text())
    doc["bm25"]["dl19"]["ndcg@10"] += 0.01
    tmp = metrics_path.with_name("bm25.json.new")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, metrics_path)  # a new file: the DVC cache is hard-linked, never edit in place
    run(["dvc", "commit", "--force", "evaluate"], project)
    published = (project / "dvc.lock").read_text()
    rc, out = verify(project, "--stages", "evaluate")
    assert rc == 1 and "NOT REPRODUCED" in out and "results/mini/metrics/bm25.json" in out, out
    assert "bm25/dl19/ndcg@10" in out and "OUTSIDE" in out, out
    # the published (altered) record and file are restored, not replaced by the recomputation
    assert (project / "dvc.lock").read_text() == published
    assert json.loads(metrics_path.read_text())["bm25"]["dl19"]["ndcg@10"] == doc["bm25"]["dl19"]["ndcg@10"]
