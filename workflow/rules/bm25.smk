rule index:
    input:
        stage_code("index", "bm25.py", "java.py"),
        corpus=CORPUS,
    output:
        directory(INDEX),
    log:
        f"{LOGS}/index.log",
    conda:
        ENV
    threads: P["bm25"]["threads"]
    resources:
        **resources_of("index"),
    params:
        profile=PROFILE,
        knobs=keys("bm25.threads"),
    shell:
        "irrepro index --profile {params.profile} --corpus {input.corpus} --out {output} --log {log}"


rule bm25:
    input:
        stage_code("bm25", "bm25.py", "java.py", "trec.py", "datasets.py", "download.py"),
        index=INDEX,
        raw=RAW,
    output:
        directory(BM25_RUNS),
    log:
        f"{LOGS}/bm25.log",
    conda:
        ENV
    threads: P["bm25"]["threads"]
    resources:
        **resources_of("bm25"),
    params:
        profile=PROFILE,
        knobs=keys("bm25", "datasets"),
    shell:
        "irrepro bm25 --profile {params.profile} --index {input.index} --raw {input.raw} --out {output} --log {log}"
