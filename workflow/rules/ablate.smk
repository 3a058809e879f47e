# Study 1 ablations: one job per ablated config (base and adapter loaded once, every variant
# toggled in memory), then one ranx process scores every variant run.


dvc_over("ablate", family="ablate.families", rank="ablate.ranks", targets="ablate.targets")


rule ablate:
    input:
        stage_code(
            "ablate",
            "stages/_shared.py",
            "study1/ablation.py",
            "study1/reranking.py",
            "rerank/ablate.py",
            "rerank/evaluate.py",
            "rerank/score.py",
            "rerank/hub.py",
            "rerank/inputs.py",
            "rerank/targets.py",
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
        directory(f"{ABLATE_RUNS}/{{family}}-r{{rank}}-{{targets}}"),
    log:
        f"{LOGS}/ablate/{{family}}-r{{rank}}-{{targets}}.log",
    benchmark:
        f"{LOGS}/benchmarks/ablate/{{family}}-r{{rank}}-{{targets}}.tsv"
    conda:
        ENV
    threads: threads_of("ablate")
    resources:
        **resources_of("ablate"),
    params:
        profile=PROFILE,
        knobs=keys(
            *ABLATE_KEYS, "rerank.batch_size", "rerank.dtype", "finetune.query_max_len", "finetune.passage_max_len"
        ),
    shell:
        "irrepro ablate --profile {params.profile} --config {wildcards.family}-r{wildcards.rank}-{wildcards.targets}"
        " --base {input.base} --adapters {input.adapters} --raw {input.raw} --runs {input.runs}"
        " --corpus {input.corpus} --out {output} --log {log}"


rule ablate_collect:
    input:
        stage_code(
            "ablate_collect",
            "stages/_shared.py",
            "study1/ablation.py",
            "study1/reranking.py",
            "evaluate.py",
            "trec.py",
            "datasets.py",
            "download.py",
            "significance.py",
            "study1/bases.py",
        ),
        raw=RAW,
        runs=BM25_RUNS,
        ablate_runs=in_dir(expand(f"{ABLATE_RUNS}/{{config}}", config=ABLATE_CONFIGS)),
    output:
        tsv=ABLATION_TSV,
        json=target(metric(METRICS_ABLATION)),
    log:
        f"{LOGS}/ablate_collect.log",
    conda:
        ENV
    resources:
        **resources_of("ablate_collect"),
    params:
        profile=PROFILE,
        knobs=keys("evaluate.metrics", "evaluate.rel_level", "ablate.metric", "ablate.depth", "ablate.datasets"),
        ablate_runs=lambda w, input: os.path.dirname(input.ablate_runs[0]),
    shell:
        "irrepro ablate-collect --profile {params.profile} --raw {input.raw} --runs {input.runs}"
        " --ablate-runs {params.ablate_runs} --out-tsv {output.tsv} --out-json {output.json} --log {log}"
