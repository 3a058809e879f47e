# The authors' published adapters (params `published.adapters`; mini: none): pin each repo's
# revision, base and adapter folders once (like `base` pins a hub model), then rerank and score
# every published checkpoint like our own; the report prints the final ones beside ours.
# (paths PUBLISHED_* in common.smk: the report reads the table)


rule published_fetch:
    input:
        stage_code("published_fetch", "study1/published.py"),
    output:
        PUBLISHED_PINS,
    log:
        f"{LOGS}/published_fetch.log",
    conda:
        ENV
    resources:
        **resources_of("published_fetch"),
    params:
        profile=PROFILE,
        knobs=keys("published"),
    shell:
        "irrepro published-fetch --profile {params.profile} --out {output} --log {log}"


rule published_eval:
    input:
        stage_code(
            "published_eval",
            "stages/_shared.py",
            "study1/published.py",
            "study1/reranking.py",
            "rerank/evaluate.py",
            "rerank/score.py",
            "rerank/hub.py",
            "rerank/inputs.py",
            "datasets.py",
            "download.py",
            "evaluate.py",
            "lora/model.py",
            "lora/precision.py",
            "rerank/precision.py",
            "significance.py",
            "study1/bases.py",
            "trec.py",
        ),
        pins=PUBLISHED_PINS,
        raw=RAW,
        runs=BM25_RUNS,
        corpus=CORPUS,
    output:
        runs=directory(PUBLISHED_RUNS),
        tsv=PUBLISHED_TSV,
    log:
        f"{LOGS}/published_eval.log",
    conda:
        ENV
    threads: threads_of("published_eval")
    resources:
        **resources_of("published_eval"),
    params:
        profile=PROFILE,
        knobs=keys("rerank", "evaluate", "finetune.query_max_len", "finetune.passage_max_len"),
    shell:
        "irrepro published-eval --profile {params.profile} --pins {input.pins} --raw {input.raw}"
        " --runs {input.runs} --corpus {input.corpus} --out-runs {output.runs} --out-tsv {output.tsv} --log {log}"
