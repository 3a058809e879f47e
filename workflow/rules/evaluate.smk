rule evaluate:
    input:
        stage_code("evaluate", "evaluate.py", "trec.py", "datasets.py", "download.py", "significance.py"),
        raw=RAW,
        runs=BM25_RUNS,
    output:
        json=metric(METRICS_BM25),
        perquery=PERQUERY_BM25,
    log:
        f"{LOGS}/evaluate.log",
    conda:
        ENV
    resources:
        **resources_of("evaluate"),
    params:
        profile=PROFILE,
        knobs=keys("evaluate", "datasets"),
    shell:
        "irrepro evaluate --profile {params.profile} --raw {input.raw} --runs {input.runs}"
        " --out {output.json} --perquery {output.perquery} --log {log}"


rule report:
    input:
        stage_code(
            "report",
            "report.py",
            "study1/collect.py",
            "study1/published.py",
            "resources/references.yaml",
            "deviations.py",
            "resources/deviations.yaml",
            "datasets.py",
            "download.py",
            "rehearsal/check.py",
            "study1/bases.py",
            "study1/reranking.py",
        ),
        "workflow/schemas/deviations.schema.yaml",
        metrics=[METRICS_BM25, METRICS_RERANK],
        checkpoints=CHECKPOINTS_TSV,
        published=PUBLISHED_TSV,
    output:
        target(REPORT),
    log:
        f"{LOGS}/report.log",
    conda:
        ENV
    resources:
        **resources_of("report"),
    params:
        profile=PROFILE,
        knobs=keys("evaluate.on_fail"),
    shell:
        "irrepro report --profile {params.profile} --metrics {input.metrics}"
        " --checkpoints {input.checkpoints} --published {input.published} --out {output} --log {log}"
