rule evaluate:
    input:
        code("evaluate.py", "trec.py", "datasets.py"),
        raw=RAW,
        runs=BM25_RUNS,
    output:
        json=METRICS_BM25,
        perquery=PERQUERY_BM25,
    params:
        profile=PROFILE,
        evaluate=P["evaluate"],
        datasets=P["datasets"],
    log:
        f"{LOGS}/evaluate.log",
    resources:
        mem_mb=2000,
        runtime=runtime("evaluate"),
    conda:
        ENV
    shell:
        "irrepro evaluate --profile {params.profile} --raw {input.raw} --runs {input.runs}"
        " --out {output.json} --perquery {output.perquery} --log {log}"


rule report:
    input:
        code("report.py", "study1/collect.py", "resources/references.yaml", "deviations.py", "resources/deviations.yaml",
             "study1/published.py"),
        "workflow/schemas/deviations.schema.yaml",
        metrics=[METRICS_BM25, METRICS_RERANK],
        checkpoints=CHECKPOINTS_TSV,
        published=PUBLISHED_TSV,
    output:
        REPORT,
    params:
        profile=PROFILE,
        on_fail=P["evaluate"]["on_fail"],
    log:
        f"{LOGS}/report.log",
    resources:
        mem_mb=1000,
        runtime=runtime("report"),
    conda:
        ENV
    shell:
        "irrepro report --profile {params.profile} --metrics {input.metrics}"
        " --checkpoints {input.checkpoints} --published {input.published} --out {output} --log {log}"
