rule download:
    input:
        code("download.py", "resources/sources.yaml"),
    output:
        directory(RAW),
    params:
        profile=PROFILE,
        data=P["data"],
    log:
        f"{LOGS}/download.log",
    resources:
        mem_mb=1000,
        runtime=runtime("download"),
    conda:
        ENV
    shell:
        "irrepro download --profile {params.profile} --out {output} --log {log}"


rule corpus:
    input:
        code("bm25.py"),
        raw=RAW,
    output:
        CORPUS,
    params:
        profile=PROFILE,
        corpus=P["bm25"]["corpus"],
    log:
        f"{LOGS}/corpus.log",
    resources:
        mem_mb=4000,
        runtime=runtime("corpus"),
    conda:
        ENV
    shell:
        "irrepro corpus --profile {params.profile} --raw {input.raw} --out {output} --log {log}"
