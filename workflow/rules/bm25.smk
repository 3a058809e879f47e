rule index:
    input:
        code("bm25.py", "java.py"),
        corpus=CORPUS,
    output:
        directory(INDEX),
    params:
        profile=PROFILE,
        threads=P["bm25"]["threads"],
    threads: P["bm25"]["threads"]
    log:
        f"{LOGS}/index.log",
    resources:
        mem_mb=16000 if ROUTE == "paper" else 2000,
        runtime=runtime("index"),
    conda:
        ENV
    shell:
        "irrepro index --profile {params.profile} --corpus {input.corpus} --out {output} --log {log}"


rule bm25:
    input:
        code("bm25.py", "java.py", "trec.py", "datasets.py"),
        index=INDEX,
        raw=RAW,
    output:
        directory(BM25_RUNS),
    params:
        profile=PROFILE,
        bm25=P["bm25"],
        datasets=P["datasets"],
    threads: P["bm25"]["threads"]
    log:
        f"{LOGS}/bm25.log",
    resources:
        mem_mb=16000 if ROUTE == "paper" else 2000,
        runtime=runtime("bm25"),
    conda:
        ENV
    shell:
        "irrepro bm25 --profile {params.profile} --index {input.index} --raw {input.raw} --out {output} --log {log}"
