# Reproduction workflow (Snakemake): the one declaration of the DAG. dvc.yaml is generated from
# these rules (python -m irrepro.dvcgen); tests/test_dvcgen.py fails when it is stale.
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
# first: dvc.yaml (generated from the rules, in their order) then lists plot_data first, so that
# `dvc exp show` puts the headline numbers of summary.json before the other metrics
include: "workflow/rules/report.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/bm25.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/rerank.smk"
include: "workflow/rules/published.smk"
include: "workflow/rules/ablate.smk"
include: "workflow/rules/syntod.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        # the outputs the rules mark target(...) (common.smk), then those with wildcards
        TARGETS,
        expand(SYN_WALK_STATS, domain=P["syntod"]["domains"]),


onstart:
    # Jobs fork from one warm worker that has imported torch/transformers/peft (irrepro.warm_worker),
    # started when the run has model jobs (rules with a GPU resource), with their threads in its
    # environment as Snakemake gives them to the jobs (OMP_NUM_THREADS, ...).
    model_threads = [job.threads for job in workflow.dag.needrun_jobs() if job.rule.name in MODEL_RULES]
    if len(model_threads) >= 2:
        warm_worker.start_for_run(
            f"logs/{PROFILE}/warm-worker.log", max(set(model_threads), key=model_threads.count)
        )


onerror:
    warm_worker.stop_for_run()


onsuccess:
    warm_worker.stop_for_run()
    # Record the outputs in DVC so `dvc status` is clean and `dvc repro` has nothing to do.
    # A failure here is reported (logs/<profile>/dvc-commit.log) but does not undo the run.
    shell("irrepro tools dvc-commit --profile {PROFILE} --log logs/{PROFILE}/dvc-commit.log || true")
