# Reproduction workflow (Snakemake). The same stages, commands and files are described
# for DVC in dvc.yaml; tests/test_dag_agreement.py checks that the two agree.
#
#   snakemake --cores 2                          # the mini study (params.yaml: profile)
#   snakemake -n --config profile=paper          # what the paper run would do
#
# All knobs live in params.yaml; only `profile` may be overridden with --config.

from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


# `make report` = snakemake --report results/<profile>/report.html report_pages (rules/report.smk)
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/bm25.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/rerank.smk"
include: "workflow/rules/published.smk"
include: "workflow/rules/ablate.smk"
include: "workflow/rules/syntod.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        REPORT,
        METRICS_ABLATION,
        SYN_METRICS,
        expand(SYN_WALK_STATS, domain=P["syntod"]["domains"]),
        FIGURES,
        SUMMARY,
    default_target: True


onsuccess:
    # Record the outputs in DVC so `dvc status` is clean and `dvc repro` has nothing to do.
    # A failure here is reported (logs/<profile>/dvc-commit.log) but does not undo the run.
    shell("irrepro dvc-commit --profile {PROFILE} --log logs/{PROFILE}/dvc-commit.log || true")
