# Shared set-up: params validated by the package's schema, the chosen profile, and paths.
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from irrepro.params import check_and_resolve, route
from irrepro.plan import check_runtimes, load_runtimes


P = check_and_resolve(config, config.get("profile"), source="params.yaml (+ --config)")
PROFILE = P["profile"]
# mini | paper: the code route (the rehearsal profile runs the paper route); every scale branch uses it
ROUTE = route(PROFILE)
# Declared `runtime` (minutes) of each rule for each profile come from one table
# (workflow/runtimes.yaml), also read
# by `irrepro check-params`. A profile whose estimated job time (`irrepro plan`) exceeds a rule's
# runtime is refused here, before any job runs; the error names the rule and both numbers.
RUNTIMES = load_runtimes()
check_runtimes(P, RUNTIMES)

RAW = f"data/{PROFILE}/raw"
CORPUS = f"data/{PROFILE}/corpus/corpus.jsonl"
INDEX = f"data/{PROFILE}/index"
BM25_RUNS = f"runs/{PROFILE}/bm25"
METRICS_BM25 = f"results/{PROFILE}/metrics/bm25.json"
PERQUERY_BM25 = f"results/{PROFILE}/metrics/bm25_perquery.tsv"
REPORT = f"results/{PROFILE}/report.md"

# Study 1
TRAIN_GROUPS = f"data/{PROFILE}/train/groups.jsonl"
BASE = f"models/{PROFILE}/base/{{family}}"
LORA = f"models/{PROFILE}/lora/{{family}}-r{{rank}}-{{targets}}"
RERANK_RUNS = f"runs/{PROFILE}/rerank"
CHECKPOINTS_TSV = f"results/{PROFILE}/rerank_checkpoints.tsv"
METRICS_RERANK = f"results/{PROFILE}/metrics/rerank.json"
SIGNIFICANCE = f"results/{PROFILE}/rerank_significance.md"
SIGNIFICANCE_TEX = f"results/{PROFILE}/rerank_significance.tex"
FINAL_PLOT = f"results/{PROFILE}/plots/rerank_final.csv"
# The authors' published adapters (rules/published.smk)
PUBLISHED_PINS = f"models/{PROFILE}/published/PUBLISHED.json"
PUBLISHED_RUNS = f"runs/{PROFILE}/published"
PUBLISHED_TSV = f"results/{PROFILE}/published_checkpoints.tsv"
GRID = [
    dict(family=f, rank=r, targets=t)
    for f in P["finetune"]["families"]
    for r in P["finetune"]["ranks"]
    for t in P["finetune"]["targets"]
]
CONFIGS = [f"{g['family']}-r{g['rank']}-{g['targets']}" for g in GRID]
# Training knobs without the grid lists: adding a rank must not retrain the other configs.
# report_to only says where TensorBoard events go (logs/), not how to train.
TRAIN_KNOBS = {k: v for k, v in P["finetune"].items() if k not in ("families", "ranks", "targets", "report_to")}
GPU = 1 if ROUTE == "paper" else 0

# Ablations: the configs of params `ablate` (a subset of the grid), at one checkpoint each.
ABLATE_RUNS = f"runs/{PROFILE}/ablate"
ABLATE_CONFIGS = [
    f"{f}-r{r}-{t}" for f in P["ablate"]["families"] for r in P["ablate"]["ranks"] for t in P["ablate"]["targets"]
]
ABLATION_TSV = f"results/{PROFILE}/ablation.tsv"
METRICS_ABLATION = f"results/{PROFILE}/metrics/ablation.json"
# What an ablation job's results depend on (not the lists: a new config must not rerun the rest).
ABLATE_KNOBS = {k: v for k, v in P["ablate"].items() if k not in ("families", "ranks", "targets", "metric")}

# Study 2: SynTOD, one walk set per domain, one generation / TOD model / evaluation per (domain, method).
# The items the generator may use (train.jsonl) and the held-out test items (test.jsonl).
SYN_ITEMS = f"data/{PROFILE}/syntod/{{domain}}/items"
SYN_ITEM_STATS = f"results/{PROFILE}/metrics/syntod_items_{{domain}}.json"
SYN_WALKS = f"data/{PROFILE}/syntod/{{domain}}/walks.jsonl"
SYN_WALK_STATS = f"results/{PROFILE}/metrics/syntod_walks_{{domain}}.json"
SYN_GEN = f"data/{PROFILE}/syntod/{{domain}}/{{method}}"
SYN_BASE = f"models/{PROFILE}/syntod_base"
TOD = f"models/{PROFILE}/tod/{{domain}}-{{method}}"
SYN_EVAL = f"results/{PROFILE}/syntod/{{domain}}-{{method}}.json"
SYN_PRED = f"results/{PROFILE}/syntod/{{domain}}-{{method}}.predictions.jsonl"
SYN_TSV = f"results/{PROFILE}/syntod_metrics.tsv"
SYN_METRICS = f"results/{PROFILE}/metrics/syntod.json"
SYN_MD = f"results/{PROFILE}/syntod_comparison.md"

# Figures: one papermill notebook per figure, notebooks/<name>.ipynb, with its inputs.
FIGURES_DIR = f"results/{PROFILE}/figures"
NOTEBOOKS_OUT = f"results/{PROFILE}/notebooks"
FIGURE_INPUTS = {
    "checkpoint_curves": {"checkpoints": CHECKPOINTS_TSV},
    "rank_comparison": {"checkpoints": CHECKPOINTS_TSV},
    "module_comparison": {"checkpoints": CHECKPOINTS_TSV},
    "ablation_heatmap": {"ablation": ABLATION_TSV},
    "reproduction_report": {"bm25": METRICS_BM25, "rerank": METRICS_RERANK},
    "syntod_comparison": {"syntod": SYN_TSV},
}
# Package modules each figure's notebook uses (besides irrepro.figures).
FIGURE_CODE = {name: ["figures.py"] for name in FIGURE_INPUTS}
FIGURE_CODE["reproduction_report"] += ["report.py", "resources/references.yaml", "deviations.py", "resources/deviations.yaml"]
FIGURES = [f"{FIGURES_DIR}/{name}.{fmt}" for name in FIGURE_INPUTS for fmt in P["figures"]["formats"]]


wildcard_constraints:
    family="llama|mistral|pythia",
    rank=r"\d+",
    targets="mha|mlp|all",
    config=r"(llama|mistral|pythia)-r\d+-(mha|mlp|all)",
    domain="cooking|ecommerce",
    method="graph|naive",
LOGS = f"logs/{PROFILE}"

PKG = "workflow/irrepro"
# For `snakemake --sdm conda`: the same pinned set as the venv (relative to the rule files).
ENV = "../../envs/environment.yaml"


def code(*modules):
    """Package modules a rule depends on (DVC lists the same files as deps)."""
    return [f"{PKG}/{m}" for m in modules]


def runtime(rule):
    """The rule's declared runtime in minutes for this profile (workflow/runtimes.yaml)."""
    return RUNTIMES[rule][ROUTE]
