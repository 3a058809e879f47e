# Study 1 ablations: one job per ablated config (base and adapter loaded once, every variant
# toggled in memory), then one ranx process scores every variant run.


rule ablate:
    input:
        code("study1/ablation.py", "study1/reranking.py", "rerank/ablate.py", "rerank/evaluate.py", "rerank/score.py",
             "rerank/hub.py", "rerank/inputs.py", "rerank/targets.py", "rerank/precision.py", "rerank/train.py"),
        base=BASE,
        adapters=LORA,
        raw=RAW,
        runs=BM25_RUNS,
        corpus=CORPUS,
    output:
        directory(f"{ABLATE_RUNS}/{{family}}-r{{rank}}-{{targets}}"),
    params:
        profile=PROFILE,
        ablate=ABLATE_KNOBS,
        batch_size=P["rerank"]["batch_size"],
        dtype=P["rerank"]["dtype"],
        query_max_len=P["finetune"]["query_max_len"],
        passage_max_len=P["finetune"]["passage_max_len"],
    threads: 1 if ROUTE == "mini" else 8
    log:
        f"{LOGS}/ablate/{{family}}-r{{rank}}-{{targets}}.log",
    resources:
        mem_mb=40000 if ROUTE == "paper" else 3000,
        runtime=runtime("ablate"),
        gpu=GPU,
    conda:
        ENV
    shell:
        "irrepro ablate --profile {params.profile} --config {wildcards.family}-r{wildcards.rank}-{wildcards.targets}"
        " --base {input.base} --adapters {input.adapters} --raw {input.raw} --runs {input.runs}"
        " --corpus {input.corpus} --out {output} --log {log}"


rule ablate_collect:
    input:
        code("study1/ablation.py", "study1/reranking.py", "evaluate.py", "trec.py"),
        raw=RAW,
        runs=BM25_RUNS,
        ablate_runs=expand(f"{ABLATE_RUNS}/{{config}}", config=ABLATE_CONFIGS),
    output:
        tsv=ABLATION_TSV,
        json=METRICS_ABLATION,
    params:
        profile=PROFILE,
        metrics=P["evaluate"]["metrics"],
        rel_level=P["evaluate"]["rel_level"],
        metric=P["ablate"]["metric"],
        depth=P["ablate"]["depth"],
        datasets=P["ablate"]["datasets"],
        ablate_runs=lambda w, input: os.path.dirname(input.ablate_runs[0]),
    log:
        f"{LOGS}/ablate_collect.log",
    resources:
        mem_mb=4000,
        runtime=runtime("ablate_collect"),
    conda:
        ENV
    shell:
        "irrepro ablate-collect --profile {params.profile} --raw {input.raw} --runs {input.runs}"
        " --ablate-runs {params.ablate_runs} --out-tsv {output.tsv} --out-json {output.json} --log {log}"
