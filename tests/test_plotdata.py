"""Curves as data: the plot files, the headline summary, and DVC rendering them as lines."""

import csv
import json
import shutil
import subprocess
import sys

import pytest

from irrepro import plotdata
from irrepro.params import load_params


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def inputs(tmp_path):
    """Small but real-shaped outputs of collect, finetune, ablate-collect and evaluate-tod."""
    ck = tmp_path / "rerank_checkpoints.tsv"
    lines = ["config\tstep\tdataset\tmetric\tvalue"]
    for cfg, base in (("llama-r8-mha", 0.1), ("pythia-r1-mlp", 0.2)):
        for step in (5, 10, 15):
            for m, scale in (("ndcg@10", 1.0), ("map", 0.5)):
                lines.append(f"{cfg}\t{step}\tdl19\t{m}\t{base * scale + step / 100:.6f}")
        lines.append(f"{cfg}\t15\tdev\tndcg@10\t0.300000")  # final-only dataset: no curve
    ck.write_text("\n".join(lines) + "\n")
    lora = []
    for cfg in ("llama-r8-mha", "pythia-r1-mlp"):
        d = tmp_path / "lora" / cfg
        d.mkdir(parents=True)
        (d / "train_summary.json").write_text(json.dumps(
            {"losses": [{"step": 1, "loss": 2.0794, "learning_rate": 1e-3}, {"step": 2, "loss": 1.5}]}))
        lora.append(d)
    ab = tmp_path / "ablation.tsv"
    cols = ["config", "family", "rank", "targets", "step", "dataset", "variant", "kind", "layers", "projections",
            "metric", "value", "delta_full", "delta_head_only"]
    rows = [["llama-r8-mha", "llama", "8", "mha", "15", "dl19", "full", "full", "", "", "ndcg@10", "0.5", "0", "0.1"],
            ["llama-r8-mha", "llama", "8", "mha", "15", "dl19", "layer-0", "layer", "0", "", "ndcg@10", "0.4", "-0.1", "0"],
            ["llama-r8-mha", "llama", "8", "mha", "15", "dl19", "cell-0-q_proj", "cell", "0", "q_proj", "ndcg@10", "0.45",
             "-0.05", "0.05"],
            ["llama-r8-mha", "llama", "8", "mha", "15", "dl19", "mha", "group", "", "", "map", "0.3", "-0.2", "0"],
            ["llama-r8-mha", "llama", "8", "mha", "15", "dl19", "mlp", "group", "", "", "ndcg@10", "0.3", "-0.2", "0"],
            ["llama-r8-mha", "llama", "8", "mha", "15", "dl19", "bm25", "first_stage", "", "", "ndcg@10", "0.3", "", ""]]
    ab.write_text("\n".join("\t".join(r) for r in [cols, *rows]) + "\n")
    syn = tmp_path / "syntod"
    syn.mkdir()
    recs = [{"kind": "intent", "gold": {"intent": "search_recipe", "query": "x"}, "parsed": {"intent": "search_recipe"}},
            {"kind": "intent", "gold": {"intent": "next_step"}, "parsed": None},
            {"kind": "intent", "gold": {"intent": "next_step"}, "parsed": {"intent": "chitchat"}},
            {"kind": "response", "gold": "hi", "predicted": "hello"}]
    pred = syn / "cooking-graph.predictions.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in recs))
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "bm25.json").write_text(json.dumps({"bm25": {"dl19": {"ndcg@10": 0.47561}}}))
    (metrics / "rerank.json").write_text(json.dumps({"rerank-llama-r8-mha": {"dl19": {"ndcg@10": 0.25}},
                                                     "rerank-pythia-r1-mlp": {"dl19": {"ndcg@10": 0.35}}}))
    (metrics / "syntod.json").write_text(json.dumps(
        {"cooking": {"graph": {"heldout": {"strict": {"intent_acc": 0.61234}}, "gemini": {"strict": {"intent_acc": 0.1}}}}}))
    return dict(checkpoints_tsv=ck, lora_dirs=lora, ablation_tsv=ab, syntod_predictions=[pred],
                bm25_json=metrics / "bm25.json", rerank_json=metrics / "rerank.json",
                syntod_json=metrics / "syntod.json")


def _params(root):
    P = load_params(str(root / "params.yaml"), "mini")
    P["finetune"]["families"] = ["llama", "mistral", "pythia"]
    return P


def test_plot_files_hold_the_inputs_numbers(inputs, tmp_path, root):
    out = tmp_path / "plots"
    counts = plotdata.write_all(_params(root), out, tmp_path / "summary.json", **inputs)
    curves = _csv(out / "learning_curves.csv")
    assert counts["learning_curves.csv"] == len(curves) == 6  # 2 configs x 3 steps; dev (final-only) dropped
    first = curves[0]
    assert (first["config"], first["series"], first["panel"], first["step"]) == ("llama-r8-mha", "r8-mha", "dl19 llama", "5")
    assert float(first["ndcg@10"]) == pytest.approx(0.15) and float(first["map"]) == pytest.approx(0.1)
    loss = _csv(out / "train_loss.csv")
    assert [(r["config"], r["step"], float(r["loss"])) for r in loss] == [
        ("llama-r8-mha", "1", 2.0794), ("llama-r8-mha", "2", 1.5), ("pythia-r1-mlp", "1", 2.0794), ("pythia-r1-mlp", "2", 1.5)]
    deltas = _csv(out / "ablation_deltas.csv")  # the ablation metric only, no heatmap cells, no full row
    assert [(r["variant"], float(r["delta_full"])) for r in deltas] == [("llama-r8-mha layer-0", -0.1),
                                                                        ("llama-r8-mha mlp", -0.2)]
    conf = _csv(out / "syntod_confusion" / "cooking-graph.csv")
    assert [(r["actual"], r["predicted"]) for r in conf] == [
        ("search_recipe", "search_recipe"), ("next_step", "(invalid)"), ("next_step", "chitchat")]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["bm25.dl19.ndcg@10"] == 0.4756
    assert summary["rerank_best.dl19.ndcg@10"] == 0.35 and summary["rerank_best.dl19.config"] == "pythia-r1-mlp"
    assert summary["rerank_mean.llama.dl19.ndcg@10"] == 0.25
    assert summary["syntod.cooking.graph.intent_acc"] == 0.6123
    assert len(summary) <= 12, "the headline file must stay small enough for one screen of dvc exp show"
    # byte-identical rerun
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    plotdata.write_all(_params(root), out, tmp_path / "summary.json", **inputs)
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_missing_and_bad_inputs_are_named(inputs, tmp_path, root):
    (inputs["lora_dirs"][0] / "train_summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="llama-r8-mha/train_summary.json"):
        plotdata.train_loss(inputs["lora_dirs"], tmp_path / "x.csv")
    bad = tmp_path / "syntod" / "ecommerce-naive.predictions.jsonl"
    bad.write_text('{"kind": "intent"}\nnot json\n')
    with pytest.raises(ValueError, match=r"ecommerce-naive.predictions.jsonl:2: not valid JSON"):
        plotdata.syntod_confusion([bad], tmp_path / "conf")
    assert not (tmp_path / "conf").exists()


def test_dvc_renders_learning_curves_as_lines_per_config(inputs, tmp_path, root):
    """The project's dvc.yaml plot declarations + template, on real plot files: `dvc plots show`
    gives a line chart with one series per config and a confusion matrix per SynTOD model."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=repo, check=True)
    shutil.copytree(root / ".dvc" / "plots", repo / ".dvc" / "plots")
    plots = repo / "results" / "mini" / "plots"
    plotdata.write_all(_params(root), plots, repo / "results" / "mini" / "metrics" / "summary.json", **inputs)
    import yaml

    stage = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["plot_data"]
    stage = {"cmd": "true", "plots": stage["plots"]}
    text = yaml.safe_dump({"stages": {"plot_data": stage}}).replace("${profile}", "mini")
    text = text.replace("${figures.metric}", "ndcg@10").replace("${ablate.metric}", "ndcg@10")
    (repo / "dvc.yaml").write_text(text)
    res = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=repo, check=True,
                         capture_output=True, text=True)
    data = json.loads(res.stdout)["data"]
    curves = data["results/mini/plots/learning_curves.csv"][0]["content"]
    assert curves["spec"]["mark"]["type"] == "line"
    assert curves["spec"]["encoding"]["x"]["field"] == "step"
    assert curves["spec"]["encoding"]["color"]["field"] == "series"
    assert {d["config"] for d in curves["data"]["values"]} == {"llama-r8-mha", "pythia-r1-mlp"}
    loss = data["results/mini/plots/train_loss.csv"][0]["content"]
    assert loss["spec"]["mark"]["type"] == "line" and loss["spec"]["encoding"]["y"]["field"] == "loss"
    conf = data["results/mini/plots/syntod_confusion/cooking-graph.csv"][0]["content"]
    assert conf["spec"]["encoding"]["x"]["field"] == "actual"
    assert "results/mini/plots/ablation_deltas.csv" in data


def test_tensorboard_reporting_is_checked_before_training(tmp_path, monkeypatch):
    """finetune.report_to: a bad value or a missing tensorboard package fails with the key
    named; with tensorboard the events go to the log directory, never into the output."""
    import importlib.util
    import os

    from irrepro.lora.trainer import report_to_arg as _report_to

    assert _report_to("none", None) == "none"
    with pytest.raises(ValueError, match="finetune.report_to: 'wandb'"):
        _report_to("wandb", None)
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
        assert _report_to("tensorboard", tmp_path / "tb") == "tensorboard"
        assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "tb")
    else:
        with pytest.raises(ValueError, match="pip install tensorboard"):
            _report_to("tensorboard", tmp_path / "tb")
