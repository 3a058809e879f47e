"""Generate the figure notebooks of this directory (run: python notebooks/make_notebooks.py).

The notebooks are thin papermill templates around ``irrepro.figures``; they are written
from this script so that they stay reviewable, uniform and free of outputs. Each has:

1. first, a ``parameters`` cell with defaults for a mini run by hand (``irrepro figure`` always
   overrides them with params.yaml's ``figures`` section, the profile, the inputs and the
   output directory);
2. input check (a missing input fails the notebook naming it and the stage that makes it),
   style, load, plot, save;
3. the figure and a small table of the plotted numbers.

``python notebooks/make_notebooks.py --check`` exits 1 if a stored notebook differs from
what this script generates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "irrepro", "display_name": "Python (irrepro)", "language": "python"}
# Mini defaults, same values as params.yaml's figures section (see the module docstring).
STYLE_DEFAULTS = {"metric": "ndcg@10", "dataset": "dl19", "formats": ["png", "pdf"], "dpi": 150,
                  "font_size": 9, "width_in": 6.4, "height_in": 4.0, "palette": "tab10"}
CHECKPOINTS = {"checkpoints": "results/mini/rerank_checkpoints.tsv"}

# name -> (title, what the figure shows, default inputs, load+plot+table code)
NOTEBOOKS = {
    "checkpoint_curves": (
        "Learning curves per checkpoint",
        "The reranking metric of every LoRA config at every saved checkpoint (optimizer step), one panel "
        "per model family.",
        CHECKPOINTS,
        'df = figures.load_checkpoints(inputs["checkpoints"])\n'
        "fig = figures.checkpoint_curves(df, metric, dataset, profile)\n"
        "table = figures.curves_data(df, metric, dataset)",
    ),
    "rank_comparison": (
        "Final-checkpoint metric vs LoRA rank",
        "The final checkpoint of each config, per family, against the LoRA rank (log2 axis), one line per "
        "set of adapted modules.",
        CHECKPOINTS,
        'df = figures.load_checkpoints(inputs["checkpoints"])\n'
        "fig = figures.rank_comparison(df, metric, dataset, profile)\n"
        "table = figures.final_data(df, metric, dataset)",
    ),
    "module_comparison": (
        "Adapted modules: MHA vs MLP vs both",
        "Final-checkpoint metric per family and adapted modules: mean over LoRA ranks (bars), min-max "
        "(whiskers), one dot per rank.",
        CHECKPOINTS,
        'df = figures.load_checkpoints(inputs["checkpoints"])\n'
        "fig = figures.module_comparison(df, metric, dataset, profile)\n"
        "table = figures.module_data(df, metric, dataset)",
    ),
    "ablation_heatmap": (
        "Where is relevance learned? Layer x projection ablations",
        "Change of the metric against the full adapter when the LoRA update of one projection in one layer "
        "is switched off (per ablated config); without per-cell ablations, one config x variant heatmap.",
        {"ablation": "results/mini/ablation.tsv"},
        'df = figures.load_ablation(inputs["ablation"])\n'
        "fig = figures.ablation_heatmap(df, metric, dataset, profile)\n"
        "table = pd.concat(figures.heatmap_data(df, metric, dataset), names=[\"config\"])",
    ),
    "reproduction_report": (
        "Reproduction report",
        "The reproduction report's table (irrepro.report: every published reference number next to the "
        "measured one, OK/FAIL within its tolerance) as a figure; FAIL rows are highlighted.",
        {"bm25": "results/mini/metrics/bm25.json", "rerank": "results/mini/metrics/rerank.json"},
        "# every .json input is a metrics file (other inputs, e.g. the checkpoint table, are not table rows)\n"
        "metrics = [path for key, path in sorted(inputs.items()) if str(path).endswith(\".json\")]\n"
        "table, notes = figures.load_report(metrics, profile)\n"
        "fig = figures.report_table(table, notes, profile)",
    ),
    "syntod_comparison": (
        "SynTOD: graph vs naive training conversations",
        "TOD models fine-tuned on conversations from the state-transition-graph generator vs the naive "
        "one-prompt baseline, per domain and test set (published Gemini / Llama test conversations and the "
        "method's own held-out split): intent accuracy and slot F1 under two scorers, `strict` (the project's) "
        "and `original` (the SynTOD release's evaluation: nearest-intent snapping, dropped safety intents, "
        "slot F1 over the gold slots, macro over intents), and mean response relevance (0-2, by the judge "
        "named in syntod_comparison.md). Study 1's `metric`/`dataset` parameters do not apply here.",
        {"syntod": "results/mini/syntod_metrics.tsv"},
        'df = figures.load_syntod(inputs["syntod"])\n'
        "fig = figures.syntod_comparison(df, figures.SYNTOD_METRICS, profile)\n"
        "table = figures.syntod_data(df, figures.SYNTOD_METRICS)",
    ),
}


def _parameters_source(name: str, inputs: dict) -> str:
    lines = ["# Parameters (papermill injects the real values after this cell)",
             f"profile = {'mini'!r}", f"inputs = {inputs!r}", f"out_dir = {'results/mini/figures'!r}",
             f"name = {name!r}"]
    lines += [f"{key} = {value!r}" for key, value in STYLE_DEFAULTS.items()]
    return "\n".join(lines)


def _deviation_cells() -> list:
    """The report's section "Deviations from the original code": the registry as a table."""
    return [
        new_markdown_cell("## Deviations from the original code\n\nEvery known difference between the **paper** "
                          "profile and the original code (`workflow/irrepro/resources/deviations.yaml`, checked "
                          "against params.yaml). The table describes the paper profile in either profile's run; "
                          "`switch` is the params.yaml key that selects the original behaviour."),
        new_code_cell("from irrepro.deviations import COLUMNS, load_deviations\n\n"
                      "deviations = pd.DataFrame(load_deviations(), columns=[\"study\", *(key for key, _ in COLUMNS), "
                      "\"source\"])\n"
                      "deviations = deviations.rename(columns=dict(COLUMNS)).fillna({\"switch\": \"-\"})\n"
                      "print(f\"{len(deviations)} deviation(s) registered (paper profile; this run: {profile})\")\n"
                      "with pd.option_context(\"display.max_colwidth\", None):\n"
                      "    display(deviations)"),
    ]


def build(name: str) -> nbformat.NotebookNode:
    """The notebook for figure ``name`` (cell ids are fixed so regeneration is byte-stable)."""
    title, what, inputs, plot = NOTEBOOKS[name]
    cells = [
        new_code_cell(_parameters_source(name, inputs), metadata={"tags": ["parameters"]}),
        new_markdown_cell(f"# {title}\n\n{what}\n\nRun by the workflow as `irrepro figure --name {name} ...` "
                          "(papermill, kernel `irrepro`); the parameters above are defaults for a mini run by "
                          "hand from the project root."),
        new_code_cell("%matplotlib inline\nimport pandas as pd\nfrom IPython.display import display\n\n"
                      "from irrepro import figures\n\n"
                      "figures.require(*inputs.values())  # fails naming each missing input and its stage\n"
                      "figures.set_style(font_size=font_size, width_in=width_in, height_in=height_in, "
                      "palette=palette)"),
        new_code_cell(plot),
        new_code_cell("written = figures.save(fig, out_dir, name, formats, dpi)\n"
                      "print(\"\\n\".join(str(path) for path in written))"),
        new_code_cell("display(fig)"),
        new_markdown_cell("The plotted numbers:"),
        new_code_cell("table.round(4)"),
    ]
    if name == "reproduction_report":
        cells.append(new_code_cell("for k, reason in notes.items():\n    print(f\"[{k}] {reason}\")"))
        cells += _deviation_cells()
    for i, cell in enumerate(cells):
        cell.id = f"{name.replace('_', '-')}-{i}"
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC,
                                             "language_info": {"name": "python"}})
    return nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE), help="directory to write (default: this one)")
    ap.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 if stale")
    a = ap.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        text = nbformat.writes(build(name)) + "\n"
        path = Path(a.out) / f"{name}.ipynb"
        if a.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.write_text(text, encoding="utf-8")
            print(path)
    if stale:
        print("stale notebooks (rerun notebooks/make_notebooks.py):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
