rule download:
    input:
        code("download.py", "resources/sources.yaml"),
    output:
        directory(RAW),
    params:
        data=P["data"],
    log:
        f"{LOGS}/download.log",
    resources:
        mem_mb=1000,
        runtime=120 if PROFILE == "paper" else 10,
    shell:
        "irrepro download --profile {PROFILE} --out {output} --log {log}"


rule corpus:
    input:
        code("bm25.py"),
        raw=RAW,
    output:
        CORPUS,
    params:
        corpus=P["bm25"]["corpus"],
    log:
        f"{LOGS}/corpus.log",
    resources:
        mem_mb=4000,
        runtime=60 if PROFILE == "paper" else 10,
    shell:
        "irrepro corpus --profile {PROFILE} --raw {input.raw} --out {output} --log {log}"
