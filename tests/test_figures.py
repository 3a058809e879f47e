"""Tests for irrepro.figures, the figure notebooks and `irrepro figure` (papermill).

The plotting functions are checked against the synthetic tidy rows they were given (the
numbers on the axes are the input numbers), the files save() writes are checked by their
format's magic bytes, and one notebook is executed for real by papermill on the `irrepro`
kernel, plus one run with a missing input.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import matplotlib
import matplotlib.colors as mcolors
import nbformat
import numpy as np
import pytest

from irrepro import figures
from irrepro.cli import main as cli_main
from irrepro.params import load_params
from irrepro.report import build_report, load_metrics

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["llama", "pythia"]
RANKS = [1, 8, 32]
TARGETS = ["mha", "mlp", "all"]
STEPS = [5, 10, 15]
PROJS = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
         "pythia": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]}
MHA = {"q_proj", "k_proj", "v_proj", "o_proj", "query_key_value", "dense"}


def _value(fam, rank, tgt, step, dataset, metric):
    """A distinct, reproducible number per row (so a mix-up of rows changes what is plotted)."""
    return round(0.1 + 0.01 * FAMILIES.index(fam) + 0.002 * RANKS.index(rank) + 0.0007 * TARGETS.index(tgt)
                 + 0.004 * STEPS.index(step) + 0.05 * (dataset == "dl20") + 0.3 * (metric == "map"), 6)


@pytest.fixture(scope="module")
def checkpoint_rows():
    return [dict(config=f"{f}-r{r}-{t}", step=s, dataset=d, metric=m, value=_value(f, r, t, s, d, m))
            for f in FAMILIES for r in RANKS for t in TARGETS for s in STEPS
            for d in ("dl19", "dl20") for m in ("ndcg@10", "map")]


def _write_tsv(path: Path, rows: list[dict], columns) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def checkpoints_tsv(tmp_path_factory, checkpoint_rows):
    return _write_tsv(tmp_path_factory.mktemp("ckpt") / "rerank_checkpoints.tsv", checkpoint_rows,
                      figures.CHECKPOINT_COLUMNS)


def _delta(layer, proj_index, cfg_index):
    return round(-0.01 * (layer + 1) * (proj_index + 1) + 0.003 * cfg_index, 6)


def _ablation_rows(cells: bool = True) -> list[dict]:
    """Two layers; llama-r8-mha has only MHA cells, so its MLP cells must show as missing."""
    rows = []
    for ci, (fam, tgt) in enumerate([("llama", "mha"), ("llama", "all"), ("pythia", "mlp")]):
        cfg = f"{fam}-r8-{tgt}"
        full = 0.3 + 0.01 * ci

        def add(variant, kind, layers, projections, delta):
            rows.append(dict(config=cfg, family=fam, rank=8, targets=tgt, step=15, dataset="dl19", variant=variant,
                             kind=kind, layers=layers, projections=projections, metric="ndcg@10",
                             value=round(full + delta, 6), delta_full=delta, delta_head_only=round(delta + 0.1, 6)))
        add("full", "full", "-", "-", 0.0)
        add("head_only", "head_only", "0,1", "-", -0.1)
        add("layer-0", "layer", "0", "-", round(-0.02 - 0.001 * ci, 6))
        add("bm25", "first_stage", "-", "-", -0.2)  # ablate-collect's BM25 row: never plotted
        add("mha", "group", "0,1", ",".join(p for p in PROJS[fam] if p in MHA), round(-0.03 - 0.001 * ci, 6))
        if cells:
            for layer in range(2):
                for j, proj in enumerate(PROJS[fam]):
                    if (tgt == "mha" and proj not in MHA) or (tgt == "mlp" and proj in MHA):
                        continue
                    add(f"cell-{layer}-{proj}", "cell", str(layer), proj, _delta(layer, j, ci))
    return rows


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def _assert_labelled(fig, first_column_only_y: bool = False):
    assert fig.get_suptitle()
    axes = _visible_axes(fig)
    assert axes
    for ax in axes:
        assert ax.get_xlabel().strip(), ax
        assert ax.get_title().strip(), ax
    assert axes[0].get_ylabel().strip()
    if not first_column_only_y:
        assert all(ax.get_ylabel().strip() for ax in axes)


def _note_texts(fig) -> str:
    return " ".join(t.get_text() for t in fig.texts)


@pytest.fixture(autouse=True)
def _style():
    """The figures params' style for each test, rcParams restored afterwards."""
    with matplotlib.rc_context():
        figures.set_style(font_size=9, width_in=6.4, height_in=4.0, palette="tab10")
        yield


# --------------------------------------------------------------------------- loaders and inputs
def test_require_names_missing_inputs_and_their_stage(tmp_path):
    present = tmp_path / "rerank_checkpoints.tsv"
    present.write_text("x")
    assert figures.require(present) == [present]
    missing1, missing2 = tmp_path / "a" / "ablation.tsv", tmp_path / "rerank.json"
    with pytest.raises(FileNotFoundError) as err:
        figures.require(present, missing1, missing2)
    msg = str(err.value)
    assert str(missing1) in msg and "ablate-collect" in msg
    assert str(missing2) in msg and "irrepro collect" in msg
    assert str(present) not in msg


def test_load_checkpoints_parses_configs(checkpoints_tsv, checkpoint_rows):
    df = figures.load_checkpoints(checkpoints_tsv)
    assert len(df) == len(checkpoint_rows)
    first = df.iloc[0]
    assert (first["family"], first["rank"], first["targets"]) == ("llama", 1, "mha")
    assert df["step"].dtype.kind == "i" and df["value"].dtype.kind == "f"


@pytest.mark.parametrize("bad, where, expected", [
    ({"config": "gpt2-r8-mha"}, 3, "config 'gpt2-r8-mha'"),
    ({"value": "high"}, 3, "column 'value'"),
    ({"step": "5.5"}, 3, "column 'step'"),
])
def test_load_checkpoints_rejects_bad_rows_naming_file_and_line(tmp_path, checkpoint_rows, bad, where, expected):
    rows = [dict(r) for r in checkpoint_rows[:3]]
    rows[1].update(bad)  # data row 2 = file line 3
    path = _write_tsv(tmp_path / "c.tsv", rows, figures.CHECKPOINT_COLUMNS)
    with pytest.raises(figures.FigureInputError, match=rf"{path}:{where}: .*{expected}"):
        figures.load_checkpoints(path)


def test_loaders_reject_missing_columns_and_unknown_kinds(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("config\tstep\tvalue\nllama-r1-mha\t5\t0.1\n")
    with pytest.raises(figures.FigureInputError, match=r"c.tsv: missing column\(s\) \['dataset', 'metric'\]"):
        figures.load_checkpoints(path)
    rows = _ablation_rows()
    rows[4]["kind"] = "neuron"
    bad = _write_tsv(tmp_path / "ablation.tsv", rows, figures.ABLATION_COLUMNS)
    with pytest.raises(figures.FigureInputError, match=r"ablation.tsv:6: kind 'neuron'"):
        figures.load_ablation(bad)


def test_selection_error_names_file_and_available_values(checkpoints_tsv):
    df = figures.load_checkpoints(checkpoints_tsv)
    with pytest.raises(figures.FigureInputError, match=r"rerank_checkpoints.tsv: no rows for metric 'mrr@10'"):
        figures.checkpoint_curves(df, "mrr@10", "dl19", "mini")


# --------------------------------------------------------------------------- (a) - (c)
def test_checkpoint_curves_plot_the_input_numbers(checkpoints_tsv, checkpoint_rows):
    fig = figures.checkpoint_curves(figures.load_checkpoints(checkpoints_tsv), "ndcg@10", "dl20", "mini")
    _assert_labelled(fig)
    axes = _visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["Llama", "Pythia (GPT-NeoX)"]
    assert axes[0].get_ylabel() == "nDCG@10 on DL20"
    assert axes[0].get_xlabel() == "optimizer step (checkpoint)"
    for ax, fam in zip(axes, FAMILIES):
        expected = {}
        for r in checkpoint_rows:
            if r["config"].startswith(fam + "-") and r["dataset"] == "dl20" and r["metric"] == "ndcg@10":
                expected.setdefault(r["config"], []).append((r["step"], r["value"]))
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert set(lines) == set(expected)
        for cfg, points in expected.items():
            xs, ys = zip(*sorted(points))
            assert list(lines[cfg].get_xdata()) == list(xs)
            np.testing.assert_allclose(lines[cfg].get_ydata(), ys)
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert sorted(legend) == sorted(expected) and len(legend) == len(RANKS) * len(TARGETS)
    assert "mini profile: tiny models" in _note_texts(fig)


def test_mini_note_only_for_mini(checkpoints_tsv):
    fig = figures.checkpoint_curves(figures.load_checkpoints(checkpoints_tsv), "ndcg@10", "dl19", "paper")
    assert "tiny models" not in _note_texts(fig)
    assert "(paper)" in fig.get_suptitle()


def test_rank_comparison_uses_the_final_checkpoint(checkpoints_tsv):
    fig = figures.rank_comparison(figures.load_checkpoints(checkpoints_tsv), "map", "dl19", "mini")
    _assert_labelled(fig, first_column_only_y=True)
    axes = _visible_axes(fig)
    assert "map" in axes[0].get_ylabel().lower() and "DL19" in axes[0].get_ylabel()
    for ax, fam in zip(axes, FAMILIES):
        assert ax.get_xscale() == "log"
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert set(lines) == {"MHA only", "MLP only", "MHA + MLP"}
        for tgt, label in figures.TARGET_LABELS.items():
            assert list(lines[label].get_xdata()) == RANKS
            np.testing.assert_allclose(lines[label].get_ydata(), [_value(fam, r, tgt, 15, "dl19", "map") for r in RANKS])
    legend_texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert legend_texts == ["MHA only", "MLP only", "MHA + MLP"]


def test_module_comparison_bars_are_means_over_ranks_with_min_max(checkpoints_tsv):
    fig = figures.module_comparison(figures.load_checkpoints(checkpoints_tsv), "ndcg@10", "dl19", "mini")
    _assert_labelled(fig)
    ax = _visible_axes(fig)[0]
    containers = [c for c in ax.containers if hasattr(c, "patches")]
    assert [c.get_label() for c in containers] == ["MHA only", "MLP only", "MHA + MLP"]
    for container, tgt in zip(containers, TARGETS):
        finals = [[_value(f, r, tgt, 15, "dl19", "ndcg@10") for r in RANKS] for f in FAMILIES]
        np.testing.assert_allclose([p.get_height() for p in container.patches], [np.mean(v) for v in finals])
        segments = container.errorbar.lines[2][0].get_segments()
        np.testing.assert_allclose([(s[0][1], s[1][1]) for s in segments], [(min(v), max(v)) for v in finals])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Llama", "Pythia (GPT-NeoX)"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["MHA only", "MLP only", "MHA + MLP"]


# --------------------------------------------------------------------------- (d) heatmap
def test_ablation_heatmap_cells_are_the_deltas(tmp_path):
    path = _write_tsv(tmp_path / "ablation.tsv", _ablation_rows(), figures.ABLATION_COLUMNS)
    fig = figures.ablation_heatmap(figures.load_ablation(path), "ndcg@10", "dl19", "mini")
    _assert_labelled(fig, first_column_only_y=True)
    axes = _visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["llama-r8-mha", "llama-r8-all", "pythia-r8-mlp"]
    all_deltas = []
    for ci, (ax, (fam, tgt)) in enumerate(zip(axes, [("llama", "mha"), ("llama", "all"), ("pythia", "mlp")])):
        image = ax.images[0]
        array = image.get_array()
        assert [t.get_text() for t in ax.get_xticklabels()] == PROJS[fam]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1"]
        for layer in range(2):
            for j, proj in enumerate(PROJS[fam]):
                absent = (tgt == "mha" and proj not in MHA) or (tgt == "mlp" and proj in MHA)
                assert bool(np.ma.getmaskarray(array)[layer, j]) == absent, (ax.get_title(), layer, proj)
                if not absent:
                    assert array[layer, j] == pytest.approx(_delta(layer, j, ci))
                    all_deltas.append(_delta(layer, j, ci))
        assert image.get_cmap().name.startswith("RdBu")
        # diverging, centred at 0, one scale for all panels
        assert (image.norm.vmin, image.norm.vmax) == (axes[0].images[0].norm.vmin, axes[0].images[0].norm.vmax)
    norm = axes[0].images[0].norm
    assert norm.vmax == pytest.approx(max(abs(d) for d in all_deltas)) and norm.vmin == pytest.approx(-norm.vmax)
    (cbar_ax,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert cbar_ax.get_ylabel() == "Δ nDCG@10 on DL19 vs full adapter"


def test_ablation_heatmap_without_cells_falls_back_to_variants(tmp_path):
    path = _write_tsv(tmp_path / "ablation.tsv", _ablation_rows(cells=False), figures.ABLATION_COLUMNS)
    fig = figures.ablation_heatmap(figures.load_ablation(path), "ndcg@10", "dl19", "paper")
    (ax,) = _visible_axes(fig)
    assert ax.get_xlabel() and ax.get_ylabel() == "config"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["llama-r8-all", "llama-r8-mha", "pythia-r8-mlp"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["head_only", "layer-0", "mha"]  # kind order, no full
    expected = {(r["config"], r["variant"]): r["delta_full"] for r in _ablation_rows(cells=False)}
    array = ax.images[0].get_array()
    for i, cfg in enumerate(["llama-r8-all", "llama-r8-mha", "pythia-r8-mlp"]):
        for j, variant in enumerate(["head_only", "layer-0", "mha"]):
            assert array[i, j] == pytest.approx(expected[(cfg, variant)])
    assert "tiny models" not in _note_texts(fig)


# --------------------------------------------------------------------------- (e) report table
def test_report_table_matches_report_md_and_highlights_fail(tmp_path):
    bm25 = {"bm25-published-rankllm": {"dl19": {"ndcg@10": 0.4}, "dl20": {"ndcg@10": 0.47962}},
            "bm25": {"dl19": {"ndcg@10": 0.2, "map": 0.1}}}
    rerank = {"rerank-llama-r8-mha": {"dl19": {"ndcg@10": 0.25}}}
    paths = [tmp_path / "bm25.json", tmp_path / "rerank.json"]
    for p, data in zip(paths, (bm25, rerank)):
        p.write_text(json.dumps(data))
    rows, notes = figures.load_report(paths, "mini")
    fig = figures.report_table(rows, notes, "mini")
    # the report.md table, parsed back from its markdown: the figure must show the same rows
    md = build_report(load_metrics(paths), None, "mini")
    md_rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
               if line.startswith("| ") and not line.startswith("| condition") and "|---" not in line]
    md_rows = md_rows[:len(rows)]
    table = fig.axes[0].tables[0]
    cells = table.get_celld()
    shown = [[cells[i, j].get_text().get_text() for j in range(7)] for i in range(1, len(rows) + 1)]
    assert shown == md_rows
    assert [cells[0, j].get_text().get_text() for j in range(7)] == \
        ["condition", "dataset", "metric", "expected", "measured", "tolerance", "status"]
    statuses = [r[6] for r in shown]
    assert statuses[:2] == ["FAIL", "OK"]  # 0.4 vs 0.5058 fails; 0.47962 vs 0.4796 is within 0.0005
    fail = mcolors.to_rgba(figures.FAIL_COLOR)
    for i, status in enumerate(statuses, start=1):
        assert (cells[i, 0].get_facecolor() == pytest.approx(fail)) == (status == "FAIL")
    assert "1 OK, 1 FAIL of 11" in fig.axes[0].get_title()
    assert notes and all(reason for reason in notes.values())
    assert "[1] mini's BM25" in _note_texts(fig) + " ".join(t.get_text() for t in fig.axes[0].texts)


# --------------------------------------------------------------------------- save
def test_save_writes_valid_png_pdf_svg_reproducibly(tmp_path, checkpoints_tsv):
    fig = figures.rank_comparison(figures.load_checkpoints(checkpoints_tsv), "ndcg@10", "dl19", "mini")
    written = figures.save(fig, tmp_path / "figs", "ranks", ["png", "pdf", "svg"], dpi=100)
    png, pdf, svg = written
    assert [p.name for p in written] == ["ranks.png", "ranks.pdf", "ranks.svg"]
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    assert struct.unpack(">II", head[16:24]) == (640, round(100 * 4.0 * 1.15))  # figsize x dpi
    assert png.stat().st_size > 5000
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF") and len(data) > 5000
    assert b"<svg" in svg.read_bytes()[:1000]
    before = {p: p.read_bytes() for p in written}
    figures.save(fig, tmp_path / "figs", "ranks", ["png", "pdf", "svg"], dpi=100)
    assert all(p.read_bytes() == b for p, b in before.items())  # same figure, same bytes
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["ranks.pdf", "ranks.png", "ranks.svg"]
    # a rerun (new figure from the same data) writes the same bytes: no timestamps, DVC sees no change
    again = figures.rank_comparison(figures.load_checkpoints(checkpoints_tsv), "ndcg@10", "dl19", "mini")
    rerun = figures.save(again, tmp_path / "rerun", "ranks", ["png", "pdf", "svg"], dpi=100)
    assert [p.read_bytes() for p in rerun] == list(before.values())
    with pytest.raises(figures.FigureInputError, match=r"unsupported format\(s\) \['gif'\]"):
        figures.save(fig, tmp_path / "figs", "ranks", ["gif"], dpi=100)


# --------------------------------------------------------------------------- notebooks
NOTEBOOKS = ["checkpoint_curves", "rank_comparison", "module_comparison", "ablation_heatmap", "reproduction_report"]


def test_notebooks_are_generated_without_outputs_and_take_the_cli_parameters():
    proc = subprocess.run([sys.executable, str(ROOT / "notebooks" / "make_notebooks.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cli_keys = set(load_params(ROOT / "params.yaml", "mini")["figures"]) | {"profile", "inputs", "out_dir", "name"}
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        first = nb.cells[0]
        assert first.cell_type == "code" and first.metadata["tags"] == ["parameters"]
        names = {line.split("=")[0].strip() for line in first.source.splitlines() if "=" in line}
        assert names == cli_keys, name
        assert nb.metadata["kernelspec"]["name"] == "irrepro"
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        assert f"figures.{'report_table' if name == 'reproduction_report' else name}(" in "".join(c.source for c in nb.cells)


def test_every_notebook_code_runs_on_synthetic_inputs(tmp_path, checkpoints_tsv):
    """The code cells of all five notebooks, run in-process (no kernel: the papermill runs below
    cover one notebook end to end), with the inputs the workflow passes."""
    ablation = _write_tsv(tmp_path / "ablation.tsv", _ablation_rows(), figures.ABLATION_COLUMNS)
    bm25, rerank = tmp_path / "bm25.json", tmp_path / "rerank.json"
    bm25.write_text(json.dumps({"bm25-published-rankllm": {"dl19": {"ndcg@10": 0.5058}}}))
    rerank.write_text(json.dumps({"rerank-llama-r8-mha": {"dl19": {"ndcg@10": 0.25}}}))
    inputs = {name: {"checkpoints": str(checkpoints_tsv)} for name in NOTEBOOKS[:3]}
    inputs["ablation_heatmap"] = {"ablation": str(ablation)}
    inputs["reproduction_report"] = {"bm25": str(bm25), "rerank": str(rerank), "checkpoints": str(checkpoints_tsv)}
    P = load_params(ROOT / "params.yaml", "mini")
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        ns = dict(P["figures"], profile="mini", inputs=inputs[name], out_dir=str(tmp_path / "figs"), name=name)
        for cell in nb.cells[1:]:
            if cell.cell_type == "code":
                exec("\n".join(line for line in cell.source.splitlines() if not line.startswith("%")), ns)
        assert len(ns["table"]) > 0, name
        assert (tmp_path / "figs" / f"{name}.png").stat().st_size > 5000
        assert (tmp_path / "figs" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    assert list(ns["table"]["status"][:1]) == ["OK"]  # the report rows came from the metrics JSON


def test_figure_cli_rejects_malformed_input_argument(capsys):
    with pytest.raises(SystemExit):
        cli_main(["figure", "--params", str(ROOT / "params.yaml"), "--name", "x", "--notebook", "x.ipynb",
                  "--input", "no-equals-sign", "--out-dir", "o", "--out-notebook", "o.ipynb"])
    assert "expected KEY=PATH" in capsys.readouterr().err


@pytest.fixture(scope="module")
def kernel():
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("irrepro")
    except NoSuchKernel:
        pytest.skip("Jupyter kernel 'irrepro' is not installed (make setup installs it)")
    return "irrepro"


def _figure_argv(tmp_path, checkpoints):
    return ["figure", "--params", str(ROOT / "params.yaml"), "--profile", "mini", "--name", "checkpoint_curves",
            "--notebook", str(ROOT / "notebooks" / "checkpoint_curves.ipynb"), "--input", f"checkpoints={checkpoints}",
            "--out-dir", str(tmp_path / "figures"), "--out-notebook", str(tmp_path / "nb" / "checkpoint_curves.ipynb"),
            "--log", str(tmp_path / "figure.log")]


def test_figure_cli_executes_the_notebook_with_papermill(kernel, tmp_path, checkpoints_tsv):
    assert cli_main(_figure_argv(tmp_path, checkpoints_tsv)) == 0
    png, pdf = tmp_path / "figures" / "checkpoint_curves.png", tmp_path / "figures" / "checkpoint_curves.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    nb = nbformat.read(tmp_path / "nb" / "checkpoint_curves.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and f'"checkpoints": "{checkpoints_tsv}"' in injected[0].source
    P = load_params(ROOT / "params.yaml", "mini")
    assert nb.metadata.papermill.parameters == dict(P["figures"], profile="mini", name="checkpoint_curves",
                                                    inputs={"checkpoints": str(checkpoints_tsv)},
                                                    out_dir=str(tmp_path / "figures"))
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the figure
    table_html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert table_html and "llama-r8-all" in table_html[-1]  # the plotted numbers
    assert not [o for o in outputs if o.output_type == "error"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []  # no temp files left
    assert "executed notebook written" in (tmp_path / "figure.log").read_text()


def test_figure_cli_missing_input_fails_naming_it(kernel, tmp_path, capsys):
    missing = tmp_path / "results" / "rerank_checkpoints.tsv"
    assert cli_main(_figure_argv(tmp_path, missing)) == 1  # a failure, reported on one line
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("irrepro figure: ")]
    assert len(errors) == 1, errors
    msg = errors[0]
    assert "FileNotFoundError" in msg and str(missing) in msg and "irrepro collect" in msg
    assert "checkpoint_curves.ipynb: cell" in msg
    assert not (tmp_path / "nb").exists() or not list((tmp_path / "nb").iterdir())
    assert not (tmp_path / "figures").exists()


# --------------------------------------------------------------------------- (f) SynTOD graph vs naive
SYNTOD_SETS = ["published_gemini", "published_llama", "heldout"]


SYNTOD_PANELS = ["strict/intent_acc", "original/intent_acc", "strict/slot_f1", "original/slot_macro_f1",
                 "strict/relevance_mean", "strict/json_valid_rate"]


def _syntod_rows():
    """Distinct values per (domain, method, test set, scorer/metric); naive lacks ecommerce relevance on heldout."""
    rows = []
    for di, domain in enumerate(["cooking", "ecommerce"]):
        for mi, method in enumerate(["graph", "naive"]):
            for ti, ts in enumerate(SYNTOD_SETS):
                for ki, panel in enumerate(SYNTOD_PANELS):
                    scorer, metric = panel.split("/")
                    value = round(0.1 + 0.13 * ki + 0.05 * ti + 0.02 * mi + 0.01 * di, 4)
                    if (domain, method, ts, panel) == ("ecommerce", "naive", "heldout", "strict/relevance_mean"):
                        value = ""
                    rows.append(dict(domain=domain, method=method, test_set=ts, scorer=scorer, metric=metric,
                                     value=value, n=10 + ti + 100 * mi))
    return rows


def test_same_figure_same_bytes_across_processes(tmp_path):
    """Constrained layout's positions differ in the last bits from one process to the next (more
    so for a figure laid out twice, as a displayed one), so now and then the same figure gave a
    different PDF (a rerun's DVC hash changed). save() rounds the frozen positions: six processes
    with different hash seeds write the same bytes."""
    tsv = _write_tsv(tmp_path / "syntod.tsv", _syntod_rows(), figures.SYNTOD_COLUMNS)
    script = (
        "import sys\nfrom irrepro import figures\n"
        "fig = figures.syntod_comparison(figures.load_syntod(sys.argv[1]), figures.SYNTOD_METRICS, 'mini')\n"
        "fig.draw_without_rendering()\n"
        "figures.save(fig, sys.argv[2], 'syntod', ['pdf'], dpi=100)\n"
    )
    saved = set()
    for seed in range(6):
        out = tmp_path / f"seed-{seed}"
        subprocess.run([sys.executable, "-c", script, str(tsv), str(out)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": str(seed)})
        saved.add((out / "syntod.pdf").read_bytes())
    assert len(saved) == 1


def test_syntod_comparison_bars_are_the_input_values(tmp_path):
    rows = _syntod_rows()
    df = figures.load_syntod(_write_tsv(tmp_path / "syntod.tsv", rows, figures.SYNTOD_COLUMNS))
    assert int(df["value"].isna().sum()) == 1  # the empty value is NaN
    fig = figures.syntod_comparison(df, figures.SYNTOD_METRICS, "mini")
    _assert_labelled(fig)
    axes = _visible_axes(fig)
    assert len(axes) == 10  # 5 scorer/metric panels x 2 domains
    expect = {(r["domain"], r["method"], r["test_set"], f'{r["scorer"]}/{r["metric"]}'): r["value"] for r in rows}
    for i, metric in enumerate(figures.SYNTOD_METRICS):
        for j, domain in enumerate(["cooking", "ecommerce"]):
            ax = axes[i * 2 + j]
            scorer, name = metric.split("/")
            assert domain in ax.get_title() and ax.get_ylabel() == f"{figures.SYNTOD_LABELS[name]} ({scorer})"
            assert [t.get_text() for t in ax.get_xticklabels()] == [s.replace("_", "\n") for s in SYNTOD_SETS]
            graph, naive = ax.containers  # one bar container per method, in method order
            for method, bars in (("graph", graph), ("naive", naive)):
                want = [expect[(domain, method, ts, metric)] for ts in SYNTOD_SETS]
                got = [b.get_height() for b in bars]
                for g, w in zip(got, want):
                    assert (np.isnan(g) if w == "" else g == pytest.approx(w)), (domain, method, metric, got, want)
            assert all(b.get_x() < n.get_x() for b, n in zip(graph, naive))  # graph left of naive
            gap = (domain, metric) == ("ecommerce", "strict/relevance_mean")  # naive/heldout missing: no label
            assert [t.get_text() for t in ax.texts] == ["n=10", "n=11", "n=12", "n=110", "n=111", "" if gap else "n=112"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [figures.SYNTOD_METHOD_LABELS[m] for m in ("graph", "naive")]
    assert "offline template simulator" in _note_texts(fig) and "not an LLM" in _note_texts(fig)
    assert "simulator" not in _note_texts(figures.syntod_comparison(df, ["slot_f1"], "paper"))
    table = figures.syntod_data(df, figures.SYNTOD_METRICS)
    assert table.loc[("cooking", "heldout"), ("strict/slot_f1", "naive")] == \
        pytest.approx(expect[("cooking", "naive", "heldout", "strict/slot_f1")])
    assert table.loc[("cooking", "heldout"), ("original/slot_macro_f1", "graph")] == \
        pytest.approx(expect[("cooking", "graph", "heldout", "original/slot_macro_f1")])
    with pytest.raises(figures.FigureInputError, match=r"no rows for metric\(s\) \['strict/bleu'\]"):
        figures.syntod_comparison(df, ["intent_acc", "bleu"], "mini")


def test_syntod_notebook_is_generated_and_runs_on_the_collect_tsv(tmp_path):
    syntod = _write_tsv(tmp_path / "syntod.tsv", _syntod_rows(), figures.SYNTOD_COLUMNS)
    P = load_params(ROOT / "params.yaml", "mini")
    nb = nbformat.read(ROOT / "notebooks" / "syntod_comparison.ipynb", as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    names = {line.split("=")[0].strip() for line in first.source.splitlines() if "=" in line}
    assert first.metadata["tags"] == ["parameters"]
    assert names == set(P["figures"]) | {"profile", "inputs", "out_dir", "name"}
    ns = dict(P["figures"], profile="mini", inputs={"syntod": str(syntod)}, out_dir=str(tmp_path / "figs"),
              name="syntod_comparison")
    for cell in nb.cells[1:]:
        if cell.cell_type == "code":
            exec("\n".join(line for line in cell.source.splitlines() if not line.startswith("%")), ns)
    assert ns["table"].shape == (6, 10)  # (domain, test set) x (5 scorer/metric panels x 2 methods)
    assert (tmp_path / "figs" / "syntod_comparison.png").stat().st_size > 5000
    with pytest.raises(FileNotFoundError, match="irrepro syntod-collect"):
        figures.require(tmp_path / "missing" / "syntod_metrics.tsv")
