# Shared set-up: params validated by the package's schema, the chosen profile, and paths.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from irrepro.params import check_and_resolve


P = check_and_resolve(config, config.get("profile"), source="params.yaml (+ --config)")
PROFILE = P["profile"]

RAW = f"data/{PROFILE}/raw"
CORPUS = f"data/{PROFILE}/corpus/corpus.jsonl"
INDEX = f"data/{PROFILE}/index"
BM25_RUNS = f"runs/{PROFILE}/bm25"
METRICS_BM25 = f"results/{PROFILE}/metrics/bm25.json"
PERQUERY_BM25 = f"results/{PROFILE}/metrics/bm25_perquery.tsv"
REPORT = f"results/{PROFILE}/report.md"
LOGS = f"logs/{PROFILE}"

PKG = "workflow/irrepro"
# For `snakemake --sdm conda`: the same pinned set as the venv (relative to the rule files).
ENV = "../../envs/environment.yaml"


def code(*modules):
    """Package modules a rule depends on (DVC lists the same files as deps)."""
    return [f"{PKG}/{m}" for m in modules]
