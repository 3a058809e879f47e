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


rule base:
    input:
        code("study1/bases.py", "tiny.py"),
        corpus=CORPUS,
    output:
        directory(BASE),
    params:
        profile=PROFILE,
        model=lambda w: P["models"][w.family],
        tiny=P["tiny"],
    threads: 1
    log:
        f"{LOGS}/base/{{family}}.log",
    resources:
        mem_mb=40000 if ROUTE == "paper" else 2000,
        runtime=runtime("base"),
    conda:
        ENV
    shell:
        "irrepro base --profile {params.profile} --family {wildcards.family} --corpus {input.corpus}"
        " --out {output} --log {log}"


rule train_groups:
    input:
        code("study1/training.py", "rerank/data.py"),
        raw=RAW,
        runs=BM25_RUNS,
        corpus=CORPUS,
    output:
        TRAIN_GROUPS,
    params:
        profile=PROFILE,
        train_data=P["train_data"],
    log:
        f"{LOGS}/train_groups.log",
    resources:
        mem_mb=16000 if ROUTE == "paper" else 2000,
        runtime=runtime("train_groups"),
    conda:
        ENV
    shell:
        "irrepro train-groups --profile {params.profile} --raw {input.raw} --runs {input.runs}"
        " --corpus {input.corpus} --out {output} --log {log}"


rule finetune:
    input:
        code("study1/training.py", "rerank/train.py", "rerank/model.py", "rerank/data.py", "rerank/targets.py", "rerank/inputs.py",
             "rerank/precision.py", "cards.py"),
        base=BASE,
        groups=TRAIN_GROUPS,
    output:
        directory(LORA),
    params:
        profile=PROFILE,
        train=TRAIN_KNOBS,
    threads: 1 if ROUTE == "mini" else 8
    log:
        f"{LOGS}/finetune/{{family}}-r{{rank}}-{{targets}}.log",
    resources:
        mem_mb=80000 if ROUTE == "paper" else 3000,
        runtime=runtime("finetune"),
        gpu=GPU * P["finetune"]["nproc_per_node"],
    conda:
        ENV
    shell:
        "irrepro finetune --profile {params.profile} --family {wildcards.family} --rank {wildcards.rank}"
        " --targets {wildcards.targets} --base {input.base} --groups {input.groups} --out {output} --log {log}"


rule rerank_eval:
    input:
        code("study1/reranking.py", "rerank/evaluate.py", "rerank/score.py", "rerank/hub.py", "rerank/inputs.py",
             "rerank/train.py", "rerank/precision.py"),
        base=BASE,
        adapters=LORA,
        raw=RAW,
        runs=BM25_RUNS,
        corpus=CORPUS,
    output:
        directory(f"{RERANK_RUNS}/{{family}}-r{{rank}}-{{targets}}"),
    params:
        profile=PROFILE,
        rerank=P["rerank"],
        passage_max_len=P["finetune"]["passage_max_len"],
    threads: 1 if ROUTE == "mini" else 8
    log:
        f"{LOGS}/rerank_eval/{{family}}-r{{rank}}-{{targets}}.log",
    resources:
        mem_mb=40000 if ROUTE == "paper" else 3000,
        runtime=runtime("rerank_eval"),
        gpu=GPU,
    conda:
        ENV
    shell:
        "irrepro rerank-eval --profile {params.profile} --config {wildcards.family}-r{wildcards.rank}-{wildcards.targets}"
        " --base {input.base} --adapters {input.adapters} --raw {input.raw} --runs {input.runs}"
        " --corpus {input.corpus} --out {output} --log {log}"


rule collect:
    input:
        code("study1/collect.py", "study1/reranking.py", "evaluate.py", "significance.py"),
        raw=RAW,
        runs=BM25_RUNS,
        rerank_runs=expand(f"{RERANK_RUNS}/{{config}}", config=CONFIGS),
    output:
        tsv=CHECKPOINTS_TSV,
        json=METRICS_RERANK,
        md=SIGNIFICANCE,
        tex=SIGNIFICANCE_TEX,
        plot=FINAL_PLOT,
    params:
        profile=PROFILE,
        rerank=P["rerank"],
        evaluate=P["evaluate"],
        checkpoint_steps=[P["finetune"]["max_steps"], P["finetune"]["save_steps"]],
        rerank_runs=lambda w, input: os.path.dirname(input.rerank_runs[0]),
    log:
        f"{LOGS}/collect.log",
    resources:
        mem_mb=4000,
        runtime=runtime("collect"),
    conda:
        ENV
    shell:
        "irrepro collect --profile {params.profile} --raw {input.raw}"
        " --runs {input.runs} --rerank-runs {params.rerank_runs} --out-tsv {output.tsv}"
        " --out-json {output.json} --out-md {output.md} --out-tex {output.tex} --out-plot {output.plot} --log {log}"
