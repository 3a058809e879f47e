"""Study 1 and Study 2 (SynTOD) figures: input checks, tidy-table loaders, styling, plotting and saving.

The figure notebooks in ``notebooks/`` (executed by papermill through ``irrepro figure``)
are thin: they call :func:`require`, a loader, :func:`set_style`, one plotting function and
:func:`save`. All logic lives here so that it is unit-tested. Every plotting function
returns a :class:`matplotlib.figure.Figure` built without pyplot (no global figure state),
and has a ``*_data`` companion returning the numbers it plots, which the notebooks show as
a table next to the figure.
"""

from __future__ import annotations

import logging
import math
import os
import textwrap
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine

from .utils import atomic_path
from .vocab import CONFIG_RE, FAMILIES, TARGETS
from .vocab import METHODS as SYNTOD_METHODS

log = logging.getLogger("irrepro.figures")

__all__ = [
    "FigureInputError",
    "require",
    "load_checkpoints",
    "load_ablation",
    "load_report",
    "set_style",
    "save",
    "metric_label",
    "curves_data",
    "final_data",
    "module_data",
    "heatmap_data",
    "checkpoint_curves",
    "rank_comparison",
    "module_comparison",
    "ablation_heatmap",
    "report_table",
    "load_syntod",
    "syntod_data",
    "syntod_comparison",
    "run_notebook",
]

# Which stage writes each input (by file name), for the error of a missing input.
PRODUCERS = {
    "rerank_checkpoints.tsv": "irrepro collect",
    "rerank.json": "irrepro collect",
    "ablation.tsv": "irrepro ablate-collect",
    "ablation.json": "irrepro ablate-collect",
    "bm25.json": "irrepro evaluate",
    "report.md": "irrepro report",
    "syntod_metrics.tsv": "irrepro syntod-collect",
}
CHECKPOINT_COLUMNS = ("config", "step", "dataset", "metric", "value")
ABLATION_COLUMNS = ("config", "family", "rank", "targets", "step", "dataset", "variant", "kind", "layers",
                    "projections", "metric", "value", "delta_full", "delta_head_only")
# as irrepro.rerank.ablate writes them (mha/mlp are kind "group"; "first_stage" is the BM25 cut)
ABLATION_KINDS = ("full", "head_only", "layer", "band", "proj", "group", "cell", "first_stage")
TARGET_LABELS = {"mha": "MHA only", "mlp": "MLP only", "all": "MHA + MLP"}
FAMILY_LABELS = {"llama": "Llama", "mistral": "Mistral", "pythia": "Pythia (GPT-NeoX)"}
TARGET_STYLES = {"mha": "-", "mlp": "--", "all": ":"}
MINI_NOTE = ("mini profile: tiny models (a few layers, built and fine-tuned locally on CPU) reranking a "
             "9.7k-passage sub-collection. Real measurements of small models, not comparable with the "
             "paper's 7B-model numbers.")
SYNTOD_COLUMNS = ("domain", "method", "test_set", "scorer", "metric", "value", "n")
# panels "<scorer>/<metric>": strict = the project's scorer, original = the SynTOD release's
SYNTOD_METRICS = ("strict/intent_acc", "original/intent_acc", "strict/slot_f1", "original/slot_macro_f1",
                  "strict/relevance_mean")
SYNTOD_LABELS = {"intent_acc": "intent accuracy", "intent_macro_f1": "intent macro F1", "slot_f1": "slot F1",
                 "slot_macro_f1": "slot F1 (macro)", "slot_micro_f1": "slot F1 (micro)",
                 "relevance_mean": "relevance (0-2)"}
SYNTOD_METHOD_LABELS = {"graph": "graph\n(state walks)", "naive": "naive\n(one prompt)"}
SYNTOD_MINI_NOTE = ("mini profile: offline template simulator (no LLM) as generator, heuristic token-overlap judge "
                    "(not an LLM), tiny TOD models trained a few steps on CPU; syntod_comparison.md names the "
                    "backends used.")
_METRIC_NAMES = {"ndcg": "nDCG", "mrr": "MRR", "map": "MAP", "recall": "Recall", "precision": "P"}
_DATASET_NAMES = {"dl19": "DL19", "dl20": "DL20", "dev": "MS MARCO dev"}


class FigureInputError(ValueError):
    """A figure input is malformed or lacks the requested rows; the message names the file."""


# --------------------------------------------------------------------------- inputs
def require(*paths: str | os.PathLike) -> list[Path]:
    """Return ``paths`` as Paths if they all exist; else raise FileNotFoundError naming every
    missing one and the workflow stage that writes it."""
    missing = [Path(p) for p in paths if not Path(p).exists()]
    if missing:
        lines = [f"  {p} (written by the `{PRODUCERS[p.name]}` stage)" if p.name in PRODUCERS
                 else f"  {p} (written by a stage upstream of the figures)" for p in missing]
        raise FileNotFoundError("missing figure input(s), run the workflow up to them first:\n" + "\n".join(lines))
    return [Path(p) for p in paths]


def _read_tsv(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise FigureInputError(f"{path}: missing column(s) {missing}; expected {list(columns)}")
    df.attrs["source"] = str(path)
    return df


def _numeric(df: pd.DataFrame, col: str, path, allow_empty: bool = False, integer: bool = False) -> pd.Series:
    text = df[col].str.strip()
    empty = (text == "") if allow_empty else pd.Series(False, index=text.index)
    values = pd.to_numeric(text.mask(empty, "nan"), errors="coerce")
    bad = values.isna() & ~empty
    if integer:
        bad |= values.notna() & (values != values.round())
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise FigureInputError(f"{path}:{i + 2}: column {col!r}: expected a number, got {df[col].iloc[i]!r}")
    return values.astype("int64") if integer else values.astype(float)


def load_checkpoints(path: str | os.PathLike) -> pd.DataFrame:
    """Load collect's tidy ``rerank_checkpoints.tsv`` (config step dataset metric value) and add
    the config's family, rank and targets parsed from its name."""
    df = _read_tsv(path, CHECKPOINT_COLUMNS)
    parts = df["config"].str.extract(CONFIG_RE)
    bad = parts["family"].isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise FigureInputError(f"{path}:{i + 2}: config {df['config'].iloc[i]!r} is not "
                               "'{family}-r{rank}-{targets}' (family " + "|".join(FAMILIES) + ", targets " + "|".join(TARGETS) + ")")
    df["step"] = _numeric(df, "step", path, integer=True)
    df["value"] = _numeric(df, "value", path)
    df["family"], df["targets"] = parts["family"], parts["targets"]
    df["rank"] = parts["rank"].astype("int64")
    log.info("loaded %d checkpoint rows (%d configs) from %s", len(df), df["config"].nunique(), path)
    return df


def load_ablation(path: str | os.PathLike) -> pd.DataFrame:
    """Load ablate-collect's tidy ``ablation.tsv``; numbers parsed, kinds checked, the ``layers``
    and ``projections`` columns kept as written (comma-joined, ``-`` for none)."""
    df = _read_tsv(path, ABLATION_COLUMNS)
    bad = ~df["kind"].isin(ABLATION_KINDS)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise FigureInputError(f"{path}:{i + 2}: kind {df['kind'].iloc[i]!r} is not one of {list(ABLATION_KINDS)}")
    for col in ("rank", "step"):
        df[col] = _numeric(df, col, path, integer=True)
    df["value"] = _numeric(df, "value", path)
    for col in ("delta_full", "delta_head_only"):
        df[col] = _numeric(df, col, path, allow_empty=True)
    log.info("loaded %d ablation rows (%d configs, %d variants) from %s",
             len(df), df["config"].nunique(), df["variant"].nunique(), path)
    return df


def load_report(metrics_paths: Iterable[str | os.PathLike], profile: str,
                references: str | os.PathLike | Mapping | None = None) -> tuple[pd.DataFrame, dict[int, str]]:
    """The reproduction report's table (:func:`irrepro.report.table_rows`, the rows report.md
    prints) as a DataFrame, and its notes ``{number: reason}`` for the n/a rows."""
    from .report import REPORT_COLUMNS, check_references, load_metrics, table_rows

    from .params import route

    checks = check_references(load_metrics(list(metrics_paths)), references, route(profile))
    rows, notes = table_rows(checks)
    reasons = {c.condition: c.reason for c in checks}
    return pd.DataFrame(rows, columns=list(REPORT_COLUMNS)), {k: reasons[cond] for cond, k in notes.items()}


# --------------------------------------------------------------------------- style and output
def set_style(font_size: float = 9, width_in: float = 6.4, height_in: float = 4.0, palette: str = "tab10",
              **_ignored) -> None:
    """Apply the ``figures`` params to matplotlib's rcParams (size, fonts, colour cycle) and
    make saved files byte-reproducible; extra keys (the rest of the params section) are ignored
    so ``set_style(**P["figures"])`` works."""
    try:
        cmap = matplotlib.colormaps[palette]
    except KeyError:
        raise FigureInputError(f"figures.palette: unknown matplotlib colormap {palette!r}") from None
    # qualitative palettes (tab10, Set2, ...) as they are; continuous ones sampled at 10 points
    colors = list(cmap.colors) if getattr(cmap, "N", 256) <= 20 else list(cmap(np.linspace(0, 1, 10)))
    rc = {
        "font.size": font_size,
        "axes.titlesize": font_size + 1,
        "axes.labelsize": font_size,
        "legend.fontsize": font_size - 1,
        "xtick.labelsize": font_size - 1,
        "ytick.labelsize": font_size - 1,
        "figure.figsize": (width_in, height_in),
        "axes.prop_cycle": matplotlib.cycler(color=colors),
        "axes.grid": True,
        "grid.alpha": 0.3,
        "svg.hashsalt": "irrepro",  # stable SVG ids
        "pdf.fonttype": 42,
    }
    matplotlib.rcParams.update(rc)


_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None},
             "svg": {"Date": None}}


def save(fig: Figure, out_dir: str | os.PathLike, name: str, formats: Sequence[str], dpi: int) -> list[Path]:
    """Write ``<out_dir>/<name>.<fmt>`` for each format, each atomically and without
    timestamps (same figure, same bytes). Returns the written paths."""
    bad = [fmt for fmt in formats if fmt not in _METADATA]
    if bad:
        raise FigureInputError(f"figures.formats: unsupported format(s) {bad}; use {sorted(_METADATA)}")
    if isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
        # constrained layout moves artists a little on every draw: lay out once, then freeze, so
        # every format (and every later save) shows the same layout. The solved positions also
        # differ in the last bits from one process to the next (identical only with hash
        # randomisation and ASLR off), enough to change a 6-decimal PDF coordinate now and then:
        # the frozen positions are rounded to 1e-9 of the figure.
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
        for ax in fig.axes:
            ax.set_position([round(float(v), 9) for v in ax.get_position().bounds])
    written = []
    for fmt in formats:
        dest = Path(out_dir) / f"{name}.{fmt}"
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=_METADATA[fmt])
        written.append(dest)
    log.info("saved figure %s: %s", name, ", ".join(str(p) for p in written))
    return written


# --------------------------------------------------------------------------- labels
def metric_label(metric: str, dataset: str | None = None) -> str:
    """``ndcg@10`` on ``dl19`` -> ``nDCG@10 on DL19``."""
    base, _, cut = metric.partition("@")
    text = _METRIC_NAMES.get(base, base) + (f"@{cut}" if cut else "")
    return f"{text} on {_DATASET_NAMES.get(dataset, dataset)}" if dataset else text


def _new_figure(profile: str, nrows: int = 1, ncols: int = 1, height_scale: float = 1.0, note: str = MINI_NOTE,
                **kw):
    """A constrained-layout Figure of the style's size (height scaled) with its axes grid; for the
    mini profile, the caption ``note`` saying what the mini numbers are, with room kept for it."""
    width, height = matplotlib.rcParams["figure.figsize"]
    fig = Figure(figsize=(width, height * height_scale), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    if profile == "mini":
        fig.text(0.5, 0.0, "\n".join(textwrap.wrap(note, 130)), ha="center", va="bottom",
                 fontsize=matplotlib.rcParams["font.size"] - 2, style="italic", color="0.3")
        bottom = 0.33 / (height * height_scale)  # two caption lines, in figure fraction
        fig.get_layout_engine().set(rect=(0, bottom, 1, 1 - bottom))
    return fig, axes


def _select(df: pd.DataFrame, metric: str, dataset: str) -> pd.DataFrame:
    sel = df[(df["metric"] == metric) & (df["dataset"] == dataset)]
    if sel.empty:
        raise FigureInputError(
            f"{df.attrs.get('source', 'table')}: no rows for metric {metric!r} on dataset {dataset!r}; "
            f"metrics {sorted(df['metric'].unique())}, datasets {sorted(df['dataset'].unique())}")
    return sel


def _rank_colors(ranks: Iterable[int]) -> dict[int, str]:
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {r: cycle[i % len(cycle)] for i, r in enumerate(sorted(set(ranks)))}


def _families(df: pd.DataFrame) -> list[str]:
    return [f for f in FAMILIES if f in set(df["family"])]


def _config_order(df: pd.DataFrame) -> list[str]:
    """Configs sorted by family, rank, then adapted modules (mha, mlp, all)."""
    first = df.drop_duplicates("config")
    keyed = first.assign(_f=first["family"].map(FAMILIES.index), _t=first["targets"].map(TARGETS.index))
    return list(keyed.sort_values(["_f", "rank", "_t"])["config"])


# --------------------------------------------------------------------------- (a) checkpoint curves
def curves_data(df: pd.DataFrame, metric: str, dataset: str) -> pd.DataFrame:
    """``metric`` on ``dataset`` per checkpoint: one row per config, one column per step."""
    sel = _select(df, metric, dataset)
    table = sel.pivot_table(index="config", columns="step", values="value", aggfunc="first")
    return table.reindex(index=_config_order(sel))


def checkpoint_curves(df: pd.DataFrame, metric: str, dataset: str, profile: str) -> Figure:
    """(a) metric vs optimizer step, one panel per model family, one line per config (colour:
    LoRA rank, line style: adapted modules)."""
    sel = _select(df, metric, dataset)
    fams = _families(sel)
    colors = _rank_colors(sel["rank"])
    fig, axes = _new_figure(profile, len(fams), 1, height_scale=0.2 + 0.6 * len(fams))
    for ax, fam in zip(axes[:, 0], fams):
        part = sel[sel["family"] == fam]
        for cfg in _config_order(part):
            g = part[part["config"] == cfg].sort_values("step")
            ax.plot(g["step"], g["value"], marker="o", markersize=3, label=cfg,
                    color=colors[g["rank"].iat[0]], linestyle=TARGET_STYLES[g["targets"].iat[0]])
        ax.set_title(FAMILY_LABELS[fam])
        ax.set_xlabel("optimizer step (checkpoint)")
        ax.set_ylabel(metric_label(metric, dataset))
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 if part["config"].nunique() <= 12 else 2,
                  fontsize="small", title="config", title_fontsize="small")
        steps = sorted(part["step"].unique())
        if len(steps) <= 12:
            ax.set_xticks(steps)
    fig.suptitle(f"{metric_label(metric, dataset)} per checkpoint, LoRA rerankers ({profile})")
    return fig


# --------------------------------------------------------------------------- (b) rank comparison
def final_data(df: pd.DataFrame, metric: str, dataset: str) -> pd.DataFrame:
    """One row per config at its final (highest) checkpoint: config family rank targets step value."""
    sel = _select(df, metric, dataset)
    last = sel.loc[sel.groupby("config")["step"].idxmax()].set_index("config", drop=False)
    return last.loc[_config_order(last), ["config", "family", "rank", "targets", "step", "value"]].reset_index(drop=True)


def rank_comparison(df: pd.DataFrame, metric: str, dataset: str, profile: str) -> Figure:
    """(b) final-checkpoint metric vs LoRA rank (log2 axis), one panel per family, one line per
    set of adapted modules."""
    fin = final_data(df, metric, dataset)
    fams = _families(fin)
    ranks = sorted(fin["rank"].unique())
    fig, axes = _new_figure(profile, 1, len(fams), height_scale=1.15, sharey=True)
    for ax, fam in zip(axes[0], fams):
        part = fin[fin["family"] == fam]
        for tgt in TARGETS:
            g = part[part["targets"] == tgt].sort_values("rank")
            if not g.empty:
                ax.plot(g["rank"], g["value"], marker="o", linestyle=TARGET_STYLES[tgt], label=TARGET_LABELS[tgt])
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.minorticks_off()
        ax.set_xlabel("LoRA rank (log2 axis)")
        ax.set_title(FAMILY_LABELS[fam])
    axes[0][0].set_ylabel(f"{metric_label(metric, dataset)}, final checkpoint")
    legend = {}  # one entry per set of adapted modules, whichever panel has it
    for ax in axes[0]:
        handles, labels = ax.get_legend_handles_labels()
        legend.update(zip(labels, handles))
    labels = [TARGET_LABELS[t] for t in TARGETS if TARGET_LABELS[t] in legend]
    fig.legend([legend[lab] for lab in labels], labels, loc="outside right center", title="adapted\nmodules")
    fig.suptitle(f"Final-checkpoint {metric_label(metric, dataset)} vs LoRA rank ({profile})")
    return fig


# --------------------------------------------------------------------------- (c) module comparison
def module_data(df: pd.DataFrame, metric: str, dataset: str) -> pd.DataFrame:
    """Final-checkpoint metric per family x adapted modules, over ranks: mean, min, max, n."""
    fin = final_data(df, metric, dataset)
    out = fin.groupby(["family", "targets"], sort=False)["value"].agg(["mean", "min", "max", "count"])
    return out.rename(columns={"count": "n_ranks"}).reset_index()


def module_comparison(df: pd.DataFrame, metric: str, dataset: str, profile: str) -> Figure:
    """(c) MHA vs MLP vs both: grouped bars per family (mean over ranks), whiskers min-max over
    ranks, one dot per rank."""
    fin = final_data(df, metric, dataset)
    stats = module_data(df, metric, dataset).set_index(["family", "targets"])
    fams = _families(fin)
    tgts = [t for t in TARGETS if t in set(fin["targets"])]
    width = 0.8 / len(tgts)
    fig, axes = _new_figure(profile, height_scale=1.1)
    ax = axes[0][0]
    for j, tgt in enumerate(tgts):
        here = stats.reindex([(f, tgt) for f in fams])  # NaN bar where a family lacks this set
        mean, lo, hi = (here[c].to_numpy(dtype=float) for c in ("mean", "min", "max"))
        x = np.arange(len(fams)) + (j - (len(tgts) - 1) / 2) * width
        ax.bar(x, mean, width * 0.95, label=TARGET_LABELS[tgt], yerr=[mean - lo, hi - mean], capsize=3,
               error_kw={"elinewidth": 0.8, "ecolor": "0.2"})
        for xi, fam in zip(x, fams):
            vals = fin[(fin["family"] == fam) & (fin["targets"] == tgt)]["value"]
            ax.scatter(np.full(len(vals), xi), vals, s=9, color="0.15", zorder=3, label="_rank")
    ax.set_xticks(np.arange(len(fams)), [FAMILY_LABELS[f] for f in fams])
    ax.set_xlabel("base model family")
    ax.set_ylabel(f"{metric_label(metric, dataset)}, final checkpoint")
    ranks = ", ".join(str(r) for r in sorted(fin["rank"].unique()))
    ax.set_title(f"bars: mean over LoRA ranks {{{ranks}}}; whiskers: min-max; dots: one per rank",
                 fontsize="medium")
    ax.legend(title="adapted modules", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"MHA vs MLP vs both: {metric_label(metric, dataset)} ({profile})")
    return fig


# --------------------------------------------------------------------------- (d) ablation heatmap
def heatmap_data(df: pd.DataFrame, metric: str, dataset: str) -> dict[str, pd.DataFrame]:
    """delta_full per ablated config, for ``metric`` on ``dataset``: from ``cell`` rows a
    layer x projection table per config (columns: the family's LoRA target modules, NaN where
    this config has no LoRA); without cell rows, ``{"variants": config x variant}``
    (the ``full`` variant, always 0, left out)."""
    sel = _select(df, metric, dataset)
    cells = sel[sel["kind"] == "cell"]
    if cells.empty:
        rest = sel[~sel["kind"].isin(["full", "first_stage"])].assign(_k=lambda d: d["kind"].map(ABLATION_KINDS.index))
        order = list(dict.fromkeys(rest.sort_values(["_k", "variant"], kind="stable")["variant"]))
        table = rest.pivot_table(index="config", columns="variant", values="delta_full", aggfunc="first")
        return {"variants": table.reindex(columns=order)}
    from .rerank.targets import MODULES, target_modules

    # every config of a family gets all the family's LoRA targets as columns, attention first
    # (the project's target table); a projection this config does not adapt stays NaN
    def columns(family: str, seen: Iterable[str]) -> list[str]:
        known = target_modules(family, "all") if family in MODULES else []
        return known + sorted(set(seen) - set(known))

    projections = {fam: columns(fam, g["projections"]) for fam, g in cells.groupby("family")}
    bad = ~cells["layers"].str.fullmatch(r"[0-9]+")
    if bad.any():
        raise FigureInputError(f"{df.attrs.get('source', 'table')}: cell variant {cells['variant'][bad].iat[0]!r} "
                               f"has layers {cells['layers'][bad].iat[0]!r}; a cell is one layer")
    out = {}
    for cfg, g in cells.groupby("config", sort=False):
        table = g.assign(layer=g["layers"].astype(int)).pivot_table(
            index="layer", columns="projections", values="delta_full", aggfunc="first")
        out[cfg] = table.sort_index().reindex(columns=projections[g["family"].iat[0]])
    return out


def ablation_heatmap(df: pd.DataFrame, metric: str, dataset: str, profile: str) -> Figure:
    """(d) change of ``metric`` against the full adapter when the LoRA update of one projection in
    one layer is switched off (layer x projection per config, diverging colours centred at 0);
    without ``cell`` rows, one config x variant heatmap."""
    tables = heatmap_data(df, metric, dataset)
    finite = np.concatenate([t.to_numpy(dtype=float).ravel() for t in tables.values()])
    finite = finite[np.isfinite(finite)]
    vmax = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1e-3
    norm = mcolors.Normalize(vmin=-vmax, vmax=vmax)
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="0.85")
    fallback = "variants" in tables  # config names are never "variants"
    ncols = 1 if fallback else min(3, len(tables))
    nrows = math.ceil(len(tables) / ncols)
    widest = max(t.shape[1] for t in tables.values())
    annotate = widest * ncols <= 14 and max(t.shape[0] for t in tables.values()) * nrows <= 20
    fig, axes = _new_figure(profile, nrows, ncols, height_scale=max(1.0, 0.6 * nrows + 0.4))
    flat = axes.ravel()
    image = None
    for k, (ax, (title, table)) in enumerate(zip(flat, tables.items())):
        values = table.to_numpy(dtype=float)
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(values.shape[1]), [str(c) for c in table.columns], rotation=45, ha="right",
                      rotation_mode="anchor")
        ax.set_yticks(range(values.shape[0]), [str(i) for i in table.index])
        ax.grid(False)
        if annotate:
            for (i, j), v in np.ndenumerate(values):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:+.3f}", ha="center", va="center", fontsize="x-small",
                            color="white" if abs(v) > 0.6 * vmax else "black")
        if fallback:
            ax.set_xlabel("ablation variant (LoRA switched off)")
            ax.set_ylabel("config")
        else:
            ax.set_title(title)
            ax.set_xlabel("projection")
            ax.set_ylabel("layer" if k % ncols == 0 else "")
    for ax in flat[len(tables):]:
        ax.set_visible(False)
    cbar = fig.colorbar(image, ax=list(flat[:len(tables)]), shrink=0.9)
    cbar.set_label(f"Δ {metric_label(metric, dataset)} vs full adapter")
    what = "each variant's LoRA modules" if fallback else "one projection's LoRA update in one layer"
    fig.suptitle("\n".join(textwrap.wrap(f"Ablation ({profile}): change in {metric_label(metric, dataset)} "
                                          f"with {what} switched off", 75)))
    return fig


# --------------------------------------------------------------------------- (e) report table
FAIL_COLOR = "#f4b6b6"
OK_COLOR = "#d9ead3"


def report_table(rows: pd.DataFrame, notes: Mapping[int, str], profile: str) -> Figure:
    """(e) the reproduction report's table as a figure: one row per reference number, FAIL
    rows highlighted red (OK rows green), the n/a reasons as numbered notes below."""
    from .report import REPORT_COLUMNS

    n_ok = int((rows["status"] == "OK").sum())
    n_fail = int((rows["status"] == "FAIL").sum())
    note_lines = [line for k, reason in sorted(notes.items())
                  for line in textwrap.wrap(f"[{k}] {reason}", 115, subsequent_indent="     ")]
    height = matplotlib.rcParams["figure.figsize"][1]
    table_h, notes_h = 0.24 * (len(rows) + 1), 0.16 * len(note_lines)
    axes_h = table_h + notes_h + 0.1
    fig, axes = _new_figure(profile, height_scale=(axes_h + 0.8 + (0.45 if profile == "mini" else 0)) / height)
    ax = axes[0][0]
    ax.axis("off")
    bottom = (notes_h + 0.1) / axes_h
    text = rows[list(REPORT_COLUMNS)].to_numpy().tolist()
    table = ax.table(cellText=text, colLabels=list(REPORT_COLUMNS), cellLoc="left", colLoc="left",
                     bbox=(0.0, bottom, 1.0, 1.0 - bottom))
    table.auto_set_font_size(False)
    table.set_fontsize(matplotlib.rcParams["font.size"] - 1.5)
    chars = [max(len(str(r[j])) for r in [REPORT_COLUMNS, *text]) + 3 for j in range(len(REPORT_COLUMNS))]
    for (_, j), cell in table.get_celld().items():  # widths by text length; bbox rescales to fit
        cell.set_width(chars[j] / sum(chars))
    for j in range(len(REPORT_COLUMNS)):
        table[0, j].set_text_props(weight="bold")
        table[0, j].set_facecolor("0.9")
    for i, status in enumerate(rows["status"], start=1):
        color = FAIL_COLOR if status == "FAIL" else OK_COLOR if status == "OK" else None
        for j in range(len(REPORT_COLUMNS)):
            if color:
                table[i, j].set_facecolor(color)
            if status == "FAIL":
                table[i, j].set_text_props(weight="bold")
    if note_lines:
        ax.text(0.0, 0.0, "\n".join(note_lines), transform=ax.transAxes, va="bottom", ha="left",
                fontsize=matplotlib.rcParams["font.size"] - 2.5)
    ax.set_title(f"{n_ok} OK, {n_fail} FAIL of {len(rows)} reference numbers "
                 "(OK: |measured - expected| <= tolerance)", fontsize="medium")
    fig.suptitle(f"Reproduction report (profile: {profile}): measured vs published numbers")
    return fig


# --------------------------------------------------------------------------- (f) SynTOD graph vs naive
def load_syntod(path: str | os.PathLike) -> pd.DataFrame:
    """Load syntod-collect's tidy TSV (domain method test_set scorer metric value n); an empty
    value (a metric undefined for that test set) becomes NaN. Adds ``panel`` =
    ``<scorer>/<metric>``, the key the SynTOD figure functions select by."""
    df = _read_tsv(path, SYNTOD_COLUMNS)
    df["panel"] = df["scorer"] + "/" + df["metric"]
    df["value"] = _numeric(df, "value", path, allow_empty=True)
    df["n"] = _numeric(df, "n", path, integer=True)
    log.info("loaded %d SynTOD rows (%d domains, %d methods) from %s", len(df), df["domain"].nunique(),
             df["method"].nunique(), path)
    return df


def syntod_label(panel: str) -> str:
    """Axis label of a ``<scorer>/<metric>`` panel, e.g. "intent accuracy (original)"."""
    scorer, _, metric = panel.rpartition("/")
    return f"{SYNTOD_LABELS.get(metric, metric)} ({scorer or 'strict'})"


def _syntod_metrics(df: pd.DataFrame, metric: str | Sequence[str]) -> list[str]:
    """The requested panels as ``<scorer>/<metric>`` (a bare metric means the strict scorer's)."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    metrics = [m if "/" in m else f"strict/{m}" for m in metrics]
    missing = [m for m in metrics if m not in set(df["panel"])]
    if missing or not metrics:
        raise FigureInputError(f"{df.attrs.get('source', 'table')}: no rows for metric(s) {missing or metrics}; "
                               f"metrics {sorted(df['panel'].unique())}")
    return metrics


def syntod_data(df: pd.DataFrame, metric: str | Sequence[str] = SYNTOD_METRICS) -> pd.DataFrame:
    """The plotted numbers: one row per (domain, test set), one column per (panel, method)
    (panel = ``<scorer>/<metric>``)."""
    metrics = _syntod_metrics(df, metric)
    sel = df[df["panel"].isin(metrics)].rename(columns={"metric": "metric_name", "panel": "metric"})
    table = sel.pivot_table(index=["domain", "test_set"], columns=["metric", "method"], values="value",
                            aggfunc="first", dropna=False, sort=False)
    methods = [m for m in SYNTOD_METHODS if m in set(sel["method"])] + sorted(set(sel["method"]) - set(SYNTOD_METHODS))
    return table.reindex(columns=pd.MultiIndex.from_product([metrics, methods], names=["metric", "method"]))


def syntod_comparison(df: pd.DataFrame, metric: str | Sequence[str], profile: str) -> Figure:
    """(f) graph vs naive SynTOD TOD models: grouped bars (one per method) per test set, one row
    of panels per ``<scorer>/<metric>`` (e.g. :data:`SYNTOD_METRICS`; scorers ``strict`` and
    ``original``), one column per domain; the bar labels give the number of scored turns /
    judged responses. A missing value leaves a gap."""
    metrics = _syntod_metrics(df, metric)
    table = syntod_data(df, metrics)
    counts = df[df["panel"].isin(metrics)].set_index(["domain", "test_set", "panel", "method"])["n"]
    domains = list(dict.fromkeys(table.index.get_level_values("domain")))
    methods = list(dict.fromkeys(table.columns.get_level_values("method")))
    width = 0.8 / len(methods)
    fig, axes = _new_figure(profile, len(metrics), len(domains), height_scale=0.3 + 0.55 * len(metrics),
                            note=SYNTOD_MINI_NOTE)
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(metrics):
        for j, domain in enumerate(domains):
            ax = axes[i][j]
            part = table.loc[domain]
            x = np.arange(len(part))
            for k, method in enumerate(methods):
                values = part[(m, method)].to_numpy(dtype=float)
                bars = ax.bar(x + (k - (len(methods) - 1) / 2) * width, values, width * 0.95,
                              color=cycle[k % len(cycle)], label=SYNTOD_METHOD_LABELS.get(method, method))
                labels = [f"n={counts.get((domain, ts, m, method), 0)}" if np.isfinite(v) else ""
                          for ts, v in zip(part.index, values)]
                ax.bar_label(bars, labels, fontsize="xx-small", padding=1)
            ax.set_xticks(x, [str(ts).replace("_", "\n") for ts in part.index])
            ax.set_xlabel("test set")
            ax.set_ylabel(syntod_label(m))
            ax.set_title(f"{domain}: {syntod_label(m)}")
            top = 2.0 if m.endswith("/relevance_mean") else 1.0
            ax.set_ylim(0, top * 1.12)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", title="training data\ngenerator", fontsize="small")
    fig.suptitle(f"SynTOD: TOD models trained on graph vs naive conversations ({profile})")
    return fig


# --------------------------------------------------------------------------- papermill
_TIMING_KEYS = ("start_time", "end_time", "duration")


def _move_timings_to_sidecar(nb) -> None:
    """Same inputs, same bytes: drop the run's clock readings from the executed notebook
    (papermill's start/end/duration per notebook and cell, nbclient's ``execution``
    timestamps) and record them in the run sidecar's ``notebook`` section instead; name the
    injected parameters cell ``injected-parameters`` instead of papermill's random id."""
    from . import sidecar

    pm_meta = nb.metadata.get("papermill", {})
    timings = {"notebook": {k: pm_meta.pop(k, None) for k in _TIMING_KEYS}, "cells": []}
    for cell in nb.cells:
        cell_pm = cell.get("metadata", {}).get("papermill", {})
        timings["cells"].append({k: cell_pm.pop(k, None) for k in _TIMING_KEYS})
        cell.get("metadata", {}).pop("execution", None)
        # papermill gives the cell it injects a random id (the notebook's own cells keep theirs)
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []) and "id" in cell:
            cell["id"] = "injected-parameters"
    sidecar.record("notebook", timings)


def run_notebook(notebook: str | os.PathLike, out_notebook: str | os.PathLike, parameters: Mapping,
                 kernel_name: str = "irrepro", cwd: str | os.PathLike | None = None) -> Path:
    """Execute ``notebook`` with papermill on the named kernel; write the executed notebook to
    ``out_notebook`` atomically, only if every cell succeeded. A failing cell raises
    RuntimeError carrying papermill's message and the cell's exception."""
    import nbformat
    import papermill as pm
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise RuntimeError(f"Jupyter kernel {kernel_name!r} is not installed (make setup installs it with "
                           f"`python -m ipykernel install --sys-prefix --name {kernel_name}`)") from None
    if not Path(notebook).is_file():
        raise FileNotFoundError(f"{notebook}: no such notebook")
    out = Path(out_notebook)
    log.info("papermill %s -> %s (kernel %s, %d parameters)", notebook, out, kernel_name, len(parameters))
    try:  # executed in memory (output_path None): nothing is written unless every cell succeeds
        nb = pm.execute_notebook(str(notebook), None, parameters=dict(parameters), kernel_name=kernel_name,
                                 cwd=str(cwd or os.getcwd()), progress_bar=False, log_output=True)
    except pm.PapermillExecutionError as exc:
        raise RuntimeError(f"{notebook}: cell {exc.exec_count} failed: {exc.ename}: {exc.evalue}\n"
                           f"papermill: {str(exc).strip()}") from exc
    nb.metadata.papermill["output_path"] = str(out)
    _move_timings_to_sidecar(nb)
    with atomic_path(out) as tmp:
        nbformat.write(nb, str(tmp))
    log.info("executed notebook written to %s", out)
    return out
