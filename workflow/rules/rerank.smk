# Study 1: LoRA rerankers. One finetune job and one reranking job per config
# (family x rank x targets); each reranking job loads the base once for all checkpoints,
# and `collect` scores every run with ranx in one process.
# Evaluation schedule (params rerank.*): every checkpoint on rerank.checkpoint_datasets (the
# learning curves), only the final checkpoint on rerank.final_datasets (paper: dev-small),
# both in the one rerank_eval job of a config. Printed once per invocation (also by `snakemake -n`)
# rather than as a rule `message:`, which would hide each job's resources in dry runs.
print(
    f"evaluation schedule ({PROFILE}): rerank_eval scores every checkpoint on "
    f"[{', '.join(P['rerank']['checkpoint_datasets'])}] and only the final checkpoint on "
    f"[{', '.join(P['rerank']['final_datasets']) or 'none'}]",
    file=sys.stderr,
)


dvc_over("base", family="finetune.families")


rule base:
    input:
        stage_code("base", "study1/bases.py", "tiny.py"),
        corpus=CORPUS,
    output:
        directory(BASE),
    log:
        f"{LOGS}/base/{{family}}.log",
    conda:
        ENV
    threads: threads_of("base")
    resources:
        **resources_of("base"),
    params:
        profile=PROFILE,
        knobs=keys("models", "tiny"),
    shell:
        "irrepro base --profile {params.profile} --family {wildcards.family} --corpus {input.corpus}"
        " --out {output} --log {log}"


rule train_groups:
    input:
        stage_code(
            "train_groups",
            "study1/training.py",
            "rerank/data.py",
            "datasets.py",
            "download.py",
            "evaluate.py",
            "lora/precision.py",
            "rerank/evaluate.py",
            "rerank/hub.py",
            "rerank/inputs.py",
            "rerank/precision.py",
            "rerank/score.py",
            "significance.py",
            "study1/bases.py",
            "trec.py",
        ),
        raw=RAW,
        runs=BM25_RUNS,
        corpus=CORPUS,
    output:
        TRAIN_GROUPS,
    log:
        f"{LOGS}/train_groups.log",
    conda:
        ENV
    resources:
        **resources_of("train_groups"),
    params:
        profile=PROFILE,
        knobs=keys("train_data"),
    shell:
        "irrepro train-groups --profile {params.profile} --raw {input.raw} --runs {input.runs}"
        " --corpus {input.corpus} --out {output} --log {log}"


dvc_over("finetune", family="finetune.families", rank="finetune.ranks", targets="finetune.targets")


rule finetune:
    input:
        stage_code(
            "finetune",
            "study1/training.py",
            "rerank/train.py",
            "rerank/model.py",
            "rerank/data.py",
            "rerank/targets.py",
            "rerank/inputs.py",
            "rerank/precision.py",
            "cards.py",
            "lora/config.py",
            "lora/run.py",
            "lora/checkpoints.py",
            "lora/trainer.py",
            "lora/model.py",
            "lora/precision.py",
            "datasets.py",
            "download.py",
            "launch.py",
            "stages/_shared.py",
            "study1/bases.py",
            "study1/finetune_inputs.py",
        ),
        base=BASE,
        groups=TRAIN_GROUPS,
    output:
        directory(LORA),
    log:
        f"{LOGS}/finetune/{{family}}-r{{rank}}-{{targets}}.log",
    benchmark:
        f"{LOGS}/benchmarks/finetune/{{family}}-r{{rank}}-{{targets}}.tsv"
    conda:
        ENV
    threads: threads_of("finetune")
    resources:
        **resources_of("finetune", processes=P["finetune"]["nproc_per_node"]),
    params:
        profile=PROFILE,
        knobs=keys(*TRAIN_KEYS),
    shell:
        "irrepro finetune --profile {params.profile} --family {wildcards.family} --rank {wildcards.rank}"
        " --targets {wildcards.targets} --base {input.base} --groups {input.groups} --out {output} --log {log}"


dvc_over("rerank_eval", family="finetune.families", rank="finetune.ranks", targets="finetune.targets")


rule rerank_eval:
    """every checkpoint on rerank.checkpoint_datasets (curves), the final checkpoint only on rerank.final_datasets"""
    input:
        stage_code(
            "rerank_eval",
            "stages/_shared.py",
            "study1/reranking.py",
            "rerank/evaluate.py",
            "rerank/score.py",
            "rerank/hub.py",
            "rerank/inputs.py",
            "rerank/precision.py",
            "lora/checkpoints.py",
            "lora/model.py",
            "lora/precision.py",
            "datasets.py",
            "download.py",
            "evaluate.py",
            "launch.py",
            "significance.py",
            "study1/bases.py",
            "trec.py",
        ),
        base=BASE,
        adapters=LORA,
        raw=RAW,
        runs=BM25_RUNS,
        corpus=CORPUS,
    output:
        directory(f"{RERANK_RUNS}/{{family}}-r{{rank}}-{{targets}}"),
    log:
        f"{LOGS}/rerank_eval/{{family}}-r{{rank}}-{{targets}}.log",
    benchmark:
        f"{LOGS}/benchmarks/rerank_eval/{{family}}-r{{rank}}-{{targets}}.tsv"
    conda:
        ENV
    threads: threads_of("rerank_eval")
    resources:
        **resources_of("rerank_eval"),
    params:
        profile=PROFILE,
        knobs=keys("rerank", "finetune.query_max_len", "finetune.passage_max_len"),
    shell:
        "irrepro rerank-eval --profile {params.profile} --config {wildcards.family}-r{wildcards.rank}-{wildcards.targets}"
        " --base {input.base} --adapters {input.adapters} --raw {input.raw} --runs {input.runs}"
        " --corpus {input.corpus} --out {output} --log {log}"


rule collect:
    input:
        stage_code(
            "collect",
            "stages/_shared.py",
            "study1/collect.py",
            "study1/reranking.py",
            "evaluate.py",
            "significance.py",
            "datasets.py",
            "download.py",
            "lora/precision.py",
            "rerank/evaluate.py",
            "rerank/hub.py",
            "rerank/inputs.py",
            "rerank/precision.py",
            "rerank/score.py",
            "study1/bases.py",
            "trec.py",
        ),
        raw=RAW,
        runs=BM25_RUNS,
        rerank_runs=in_dir(expand(f"{RERANK_RUNS}/{{config}}", config=CONFIGS)),
    output:
        tsv=CHECKPOINTS_TSV,
        json=metric(METRICS_RERANK),
        md=SIGNIFICANCE,
        tex=SIGNIFICANCE_TEX,
        plot=plot(
            FINAL_PLOT,
            template="bar_horizontal_sorted",
            x="ndcg@10",
            y="run",
            title="Final checkpoint of every config",
            x_label="nDCG@10",
            y_label="config and dataset",
        ),
    log:
        f"{LOGS}/collect.log",
    conda:
        ENV
    resources:
        **resources_of("collect"),
    params:
        profile=PROFILE,
        knobs=keys("rerank", "evaluate", "finetune.max_steps", "finetune.save_steps"),
        rerank_runs=lambda w, input: os.path.dirname(input.rerank_runs[0]),
    shell:
        "irrepro collect --profile {params.profile} --raw {input.raw}"
        " --runs {input.runs} --rerank-runs {params.rerank_runs} --out-tsv {output.tsv}"
        " --out-json {output.json} --out-md {output.md} --out-tex {output.tex} --out-plot {output.plot} --log {log}"
