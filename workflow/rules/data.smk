rule download:
    input:
        stage_code("download", "download.py", "resources/sources.yaml"),
    output:
        directory(RAW),
    log:
        f"{LOGS}/download.log",
    conda:
        ENV
    resources:
        **resources_of("download"),
    params:
        profile=PROFILE,
        knobs=keys("data"),
    shell:
        "irrepro download --profile {params.profile} --out {output} --log {log}"


rule corpus:
    input:
        stage_code("corpus", "bm25.py", "datasets.py", "download.py", "java.py"),
        raw=RAW,
    output:
        CORPUS,
    log:
        f"{LOGS}/corpus.log",
    conda:
        ENV
    resources:
        **resources_of("corpus"),
    params:
        profile=PROFILE,
        knobs=keys("bm25.corpus"),
    shell:
        "irrepro corpus --profile {params.profile} --raw {input.raw} --out {output} --log {log}"
