# Shared set-up: params validated by the package's schema, the chosen profile, and paths.
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from irrepro import dvcgen, warm_worker
from irrepro.dvcgen import in_dir, metric, plot
from irrepro.params import check_and_resolve, route
from irrepro.plan import check_runtimes, load_resources
from irrepro.vocab import WILDCARDS

# params.yaml is the one place for every knob: `--config`/`--configfile` may only pick the profile
# (another override would change what a job does without DVC or the outputs' records seeing it).
_OVERRIDES = sorted(set(workflow.config_settings.overwrite_config) - {"profile"})
if _OVERRIDES:
    raise ValueError(
        f"--config/--configfile may only set `profile`, not {', '.join(_OVERRIDES)}: edit params.yaml instead "
        "(every knob lives there, validated by workflow/schemas/params.schema.yaml)"
    )
P = check_and_resolve(config, config.get("profile"), source="params.yaml (+ --config)")
PROFILE = P["profile"]
# mini | paper: the code route (the rehearsal profile runs the paper route); every scale branch uses it
ROUTE = route(PROFILE)
# Resources (runtime, mem_mb, threads, gpu) of each rule for each route come from one table
# (workflow/resources.yaml), whose runtimes `irrepro check-params` reads too. A profile whose
# estimated job time (`irrepro plan`) exceeds a rule's runtime is refused here, before any job
# runs; the error names the rule and both numbers.
RESOURCES = {rule: per_route[ROUTE] for rule, per_route in load_resources().items()}
# the rules whose jobs fork from the run's warm worker (Snakefile onstart)
MODEL_RULES = {rule for rule, res in RESOURCES.items() if "gpu" in res}
check_runtimes(P, {rule: {ROUTE: r["runtime"]} for rule, r in RESOURCES.items()})

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
TRAIN_KEYS = [f"finetune.{k}" for k in P["finetune"] if k not in ("families", "ranks", "targets", "report_to")]

# Ablations: the configs of params `ablate` (a subset of the grid), at one checkpoint each.
ABLATE_RUNS = f"runs/{PROFILE}/ablate"
ABLATE_CONFIGS = [
    f"{f}-r{r}-{t}" for f in P["ablate"]["families"] for r in P["ablate"]["ranks"] for t in P["ablate"]["targets"]
]
ABLATION_TSV = f"results/{PROFILE}/ablation.tsv"
METRICS_ABLATION = f"results/{PROFILE}/metrics/ablation.json"
# What an ablation job's results depend on (not the lists: a new config must not rerun the rest).
ABLATE_KEYS = [f"ablate.{k}" for k in P["ablate"] if k not in ("families", "ranks", "targets", "metric")]

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
FIGURE_CODE["reproduction_report"] += [
    "report.py",
    "resources/references.yaml",
    "deviations.py",
    "resources/deviations.yaml",
]
FIGURES = [f"{FIGURES_DIR}/{name}.{fmt}" for name in FIGURE_INPUTS for fmt in P["figures"]["formats"]]


# family, rank, targets, config, domain, method: built from the enumerations' one home
wildcard_constraints:
    **WILDCARDS,


LOGS = f"logs/{PROFILE}"

PKG = "workflow/irrepro"
# For `snakemake --sdm conda`: the same pinned set as the venv (relative to the rule files).
ENV = "../../envs/environment.yaml"


def stage_code(stage, *modules):
    """The code a job depends on (DVC lists the same files as deps), i.e. its stage module
    (irrepro/stages/<stage>.py, the rule's name; ``figure`` for the figure_<name> rules) and the
    package modules and resources that module uses. tests/test_dvcgen.py checks that the list
    covers the stage module's import closure."""
    return [f"{PKG}/stages/{stage}.py", *(f"{PKG}/{m}" for m in modules)]


def keys(*names):
    """The params keys a rule depends on, declared once. Snakemake's params get their values
    (a change reruns the job), dvc.yaml lists the keys (irrepro.dvcgen)."""
    return dvcgen.keys(P, *names)


# dvc.yaml is generated from these rules (python -m irrepro.dvcgen). What they cannot say is set here:
# the params list each wildcard ranges over (DVC's foreach/matrix), set with dvc_over() above the
# rule, and the rules DVC does not run. Outputs marked metric()/plot() and inputs marked in_dir()
# (DVC depends on their directory) are the other DVC-only facts, written in the rules.
DVC_OVER = {}
SNAKEMAKE_ONLY = {"report_pages"}


# What the default target (the Snakefile's `all`) builds: the results nothing else reads, each
# declared in the rule that writes it with target(...), so that a new stage's result is built
# without editing the Snakefile.
TARGETS = []


def target(path):
    """``path`` (an output without wildcards) is built by ``snakemake`` with no target given."""
    if "{" in str(path):
        raise ValueError(f"target({path!r}): a path with wildcards; list its expansion in `rule all`")
    TARGETS.append(str(path))
    return path


def dvc_over(rule, **lists):
    """``wildcard="params.key"`` of the list each wildcard of ``rule`` ranges over (in this order)."""
    DVC_OVER[rule] = lists


# Snakemake priority of the SynTOD chain's long single jobs (syntod_base, finetune_tod, evaluate_tod;
# 30-60 s each at mini): started as soon as they can run, the many short Study 1 jobs fill the other
# core around them; left to the default order, the run ended on one of them with a core idle.
LONG_JOB_PRIORITY = 10


def resources_of(rule, processes=1):
    """The rule's runtime, mem_mb and gpu for this route (workflow/resources.yaml); ``processes``
    GPU processes of one job (a multi-GPU launch) multiply its gpu count."""
    res = {k: v for k, v in RESOURCES[rule].items() if k != "threads"}
    if "gpu" in res:
        res["gpu"] *= processes
    return res


def threads_of(rule):
    """The rule's threads for this route (workflow/resources.yaml; 1 if not given)."""
    return RESOURCES[rule].get("threads", 1)
