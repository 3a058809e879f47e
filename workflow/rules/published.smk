# The authors' published adapters (params `published.adapters`; mini: none): pin each repo's
# revision, base and adapter folders once (like `base` pins a hub model), then rerank and score
# every published checkpoint like our own; the report prints the final ones beside ours.
# (paths PUBLISHED_* in common.smk: the report reads the table)


rule published_fetch:
    input:
        code("study1/published.py"),
    output:
        PUBLISHED_PINS,
    params:
        profile=PROFILE,
        published=P["published"],
    log:
        f"{LOGS}/published_fetch.log",
    resources:
        mem_mb=2000,
        runtime=runtime("published_fetch"),
    conda:
        ENV
    shell:
        "irrepro published-fetch --profile {params.profile} --out {output} --log {log}"


rule published_eval:
    input:
        code("study1/published.py", "study1/reranking.py", "rerank/evaluate.py", "rerank/score.py", "rerank/hub.py",
             "rerank/inputs.py"),
        pins=PUBLISHED_PINS,
        raw=RAW,
        runs=BM25_RUNS,
        corpus=CORPUS,
    output:
        runs=directory(PUBLISHED_RUNS),
        tsv=PUBLISHED_TSV,
    params:
        profile=PROFILE,
        rerank=P["rerank"],
        evaluate=P["evaluate"],
        lengths=[P["finetune"]["query_max_len"], P["finetune"]["passage_max_len"]],
    threads: 1 if ROUTE == "mini" else 8
    log:
        f"{LOGS}/published_eval.log",
    resources:
        mem_mb=80000 if ROUTE == "paper" else 2000,
        runtime=runtime("published_eval"),
        gpu=GPU,
    conda:
        ENV
    shell:
        "irrepro published-eval --profile {params.profile} --pins {input.pins} --raw {input.raw}"
        " --runs {input.runs} --corpus {input.corpus} --out-runs {output.runs} --out-tsv {output.tsv} --log {log}"
