# Study 2: SynTOD. Walks on the state graph (BM25 result pages over the catalog) -> generated
# conversations (graph-guided | naive) -> LoRA TOD model per (domain, method) -> teacher-forced
# evaluation on the published test conversations and on held-out generated ones -> one table.


dvc_over("syntod_items", domain="syntod.domains")


rule syntod_items:
    input:
        stage_code(
            "syntod_items",
            "syntod/items.py",
            "syntod/format.py",
            "datasets.py",
            "download.py",
            "lora/config.py",
            "lora/model.py",
            "lora/precision.py",
            "syntod/cache.py",
            "syntod/evaluation.py",
            "syntod/judge.py",
            "syntod/llm/base.py",
            "syntod/llm/http.py",
            "syntod/llm/local.py",
            "syntod/llm/replies.py",
            "syntod/llm/simulator.py",
            "resources/syntod/simulator_templates.yaml",
            "syntod/llm/spec.py",
            "syntod/metrics.py",
            "syntod/stages.py",
            "syntod/tod.py",
        ),
        raw=RAW,
    output:
        catalogs=directory(SYN_ITEMS),
        stats=metric(SYN_ITEM_STATS),
    log:
        f"{LOGS}/syntod_items/{{domain}}.log",
    conda:
        ENV
    resources:
        **resources_of("syntod_items"),
    params:
        profile=PROFILE,
        knobs=keys("syntod.item_split", "syntod.train_catalog"),
    shell:
        "irrepro syntod-items --profile {params.profile} --domain {wildcards.domain} --raw {input.raw}"
        " --out-dir {output.catalogs} --metrics {output.stats} --log {log}"


rule syntod_base:
    input:
        stage_code(
            "syntod_base",
            "syntod/stages.py",
            "study1/bases.py",
            "tiny.py",
            "syntod/format.py",
            "syntod/graph.py",
            "resources/syntod/cooking.yaml",
            "resources/syntod/ecommerce.yaml",
            "syntod/items.py",
            "datasets.py",
            "download.py",
            "stages/_shared.py",
        ),
        raw=RAW,
    output:
        directory(SYN_BASE),
    log:
        f"{LOGS}/syntod_base.log",
    priority: LONG_JOB_PRIORITY
    conda:
        ENV
    threads: threads_of("syntod_base")
    resources:
        **resources_of("syntod_base"),
    params:
        profile=PROFILE,
        # the tiny base's corpus holds only the training items of each domain (the split of
        # syntod_items, recomputed in-process), never a test item: hence item_split and train_catalog
        knobs=keys("syntod.base", "tiny", "syntod.item_split", "syntod.train_catalog"),
    shell:
        "irrepro syntod-base --profile {params.profile} --raw {input.raw} --out {output} --log {log}"


dvc_over("syntod_walks", domain="syntod.domains")


rule syntod_walks:
    input:
        stage_code(
            "syntod_walks",
            "syntod/stages.py",
            "syntod/graph.py",
            "syntod/generate.py",
            "resources/syntod/{domain}.yaml",
            "bm25.py",
            "datasets.py",
            "download.py",
            "java.py",
            "stages/_shared.py",
            "syntod/cache.py",
            "syntod/format.py",
            "syntod/llm/base.py",
            "syntod/llm/http.py",
            "syntod/llm/local.py",
            "syntod/llm/replies.py",
            "syntod/llm/simulator.py",
            "resources/syntod/simulator_templates.yaml",
            "syntod/llm/spec.py",
        ),
        catalogs=SYN_ITEMS,
    output:
        walks=SYN_WALKS,
        stats=metric(SYN_WALK_STATS),
    log:
        f"{LOGS}/syntod_walks/{{domain}}.log",
    conda:
        ENV
    resources:
        **resources_of("syntod_walks"),
    params:
        profile=PROFILE,
        knobs=keys("syntod.n_conversations", "syntod.seed"),
    shell:
        "irrepro syntod-walks --profile {params.profile} --domain {wildcards.domain} --seeds {input.catalogs}/train.jsonl"
        " --out {output.walks} --stats {output.stats} --log {log}"


dvc_over("syntod_generate", domain="syntod.domains", method="syntod.methods")


rule syntod_generate:
    input:
        stage_code(
            "syntod_generate",
            "syntod/stages.py",
            "syntod/generate.py",
            "syntod/format.py",
            "resources/syntod/prompts.yaml",
            "syntod/cache.py",
            "syntod/llm/__init__.py",
            "syntod/llm/base.py",
            "syntod/llm/http.py",
            "syntod/llm/local.py",
            "syntod/llm/replies.py",
            "syntod/llm/simulator.py",
            "resources/syntod/simulator_templates.yaml",
            "syntod/llm/spec.py",
            "datasets.py",
            "download.py",
            "stages/_shared.py",
            "syntod/graph.py",
        ),
        catalogs=SYN_ITEMS,
        walks=SYN_WALKS,
    output:
        directory(SYN_GEN),
    log:
        f"{LOGS}/syntod_generate/{{domain}}-{{method}}.log",
    benchmark:
        f"{LOGS}/benchmarks/syntod_generate/{{domain}}-{{method}}.tsv"
    conda:
        ENV
    resources:
        **resources_of("syntod_generate"),
    params:
        profile=PROFILE,
        knobs=keys("syntod.n_conversations", "syntod.heldout_fraction", "syntod.seed", "syntod.llm"),
    shell:
        "irrepro syntod-generate --profile {params.profile} --domain {wildcards.domain} --method {wildcards.method}"
        " --walks {input.walks} --seeds {input.catalogs}/train.jsonl --out-dir {output} --log {log}"


dvc_over("finetune_tod", domain="syntod.domains", method="syntod.methods")


rule finetune_tod:
    input:
        stage_code(
            "finetune_tod",
            "syntod/stages.py",
            "syntod/tod.py",
            "rerank/targets.py",
            "cards.py",
            "lora/config.py",
            "lora/run.py",
            "lora/checkpoints.py",
            "lora/trainer.py",
            "lora/model.py",
            "lora/precision.py",
            "launch.py",
            "stages/_shared.py",
            "study1/bases.py",
            "study1/finetune_inputs.py",
        ),
        base=SYN_BASE,
        train=SYN_GEN,
    output:
        directory(TOD),
    log:
        f"{LOGS}/finetune_tod/{{domain}}-{{method}}.log",
    benchmark:
        f"{LOGS}/benchmarks/finetune_tod/{{domain}}-{{method}}.tsv"
    priority: LONG_JOB_PRIORITY
    conda:
        ENV
    threads: threads_of("finetune_tod")
    resources:
        **resources_of("finetune_tod"),
    params:
        profile=PROFILE,
        knobs=keys("syntod.finetune"),
        train=lambda w, input: f"{input.train}/train.jsonl",
    shell:
        "irrepro finetune-tod --profile {params.profile} --base {input.base} --train {params.train}"
        " --out {output} --log {log}"


dvc_over("evaluate_tod", domain="syntod.domains", method="syntod.methods")


rule evaluate_tod:
    input:
        stage_code(
            "evaluate_tod",
            "syntod/evaluation.py",
            "syntod/tod.py",
            "syntod/metrics.py",
            "syntod/format.py",
            "syntod/judge.py",
            "syntod/items.py",
            "syntod/stages.py",
            "syntod/metrics_original.py",
            "resources/syntod/judge_prompts.yaml",
            "lora/config.py",
            "lora/model.py",
            "syntod/cache.py",
            "syntod/llm/__init__.py",
            "syntod/llm/base.py",
            "syntod/llm/http.py",
            "syntod/llm/local.py",
            "syntod/llm/replies.py",
            "syntod/llm/simulator.py",
            "resources/syntod/simulator_templates.yaml",
            "syntod/llm/spec.py",
            "datasets.py",
            "download.py",
            "lora/precision.py",
            "study1/bases.py",
        ),
        base=SYN_BASE,
        adapter=TOD,
        raw=RAW,
        generated=SYN_GEN,
        catalogs=SYN_ITEMS,
    output:
        json=SYN_EVAL,
        predictions=SYN_PRED,
    log:
        f"{LOGS}/evaluate_tod/{{domain}}-{{method}}.log",
    benchmark:
        f"{LOGS}/benchmarks/evaluate_tod/{{domain}}-{{method}}.tsv"
    priority: LONG_JOB_PRIORITY
    conda:
        ENV
    threads: threads_of("evaluate_tod")
    resources:
        **resources_of("evaluate_tod"),
    params:
        profile=PROFILE,
        knobs=keys("syntod.eval", "syntod.judge", "syntod.human_labels", "syntod.item_split"),
        heldout=lambda w, input: f"{input.generated}/heldout.jsonl",
    shell:
        "irrepro evaluate-tod --profile {params.profile} --domain {wildcards.domain} --method {wildcards.method}"
        " --base {input.base} --adapter {input.adapter} --raw {input.raw} --heldout {params.heldout}"
        " --out {output.json} --predictions {output.predictions} --items {input.catalogs} --log {log}"


rule syntod_collect:
    input:
        stage_code(
            "syntod_collect",
            "syntod/evaluation.py",
            "lora/config.py",
            "lora/model.py",
            "lora/precision.py",
            "syntod/cache.py",
            "syntod/format.py",
            "syntod/judge.py",
            "syntod/llm/base.py",
            "syntod/llm/http.py",
            "syntod/llm/local.py",
            "syntod/llm/replies.py",
            "syntod/llm/simulator.py",
            "resources/syntod/simulator_templates.yaml",
            "syntod/llm/spec.py",
            "syntod/metrics.py",
            "syntod/tod.py",
        ),
        results=in_dir(expand(SYN_EVAL, domain=P["syntod"]["domains"], method=P["syntod"]["methods"])),
    output:
        tsv=SYN_TSV,
        json=target(metric(SYN_METRICS)),
        md=SYN_MD,
    log:
        f"{LOGS}/syntod_collect.log",
    conda:
        ENV
    resources:
        **resources_of("syntod_collect"),
    params:
        profile=PROFILE,
        results_dir=lambda w, input: os.path.dirname(input.results[0]),
    shell:
        "irrepro syntod-collect --profile {params.profile} --results-dir {params.results_dir} --out-tsv {output.tsv}"
        " --out-json {output.json} --out-md {output.md} --log {log}"
