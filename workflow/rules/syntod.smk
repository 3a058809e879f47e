# Study 2: SynTOD. Walks on the state graph (BM25 result pages over the catalog) -> generated
# conversations (graph-guided | naive) -> LoRA TOD model per (domain, method) -> teacher-forced
# evaluation on the published test conversations and on held-out generated ones -> one table.


rule syntod_items:
    input:
        code("syntod/items.py", "syntod/format.py"),
        raw=RAW,
    output:
        catalogs=directory(SYN_ITEMS),
        stats=SYN_ITEM_STATS,
    params:
        profile=PROFILE,
        item_split=P["syntod"]["item_split"],
        train_catalog=P["syntod"]["train_catalog"],
    log:
        f"{LOGS}/syntod_items/{{domain}}.log",
    resources:
        mem_mb=4000,
        runtime=runtime("syntod_items"),
    conda:
        ENV
    shell:
        "irrepro syntod-items --profile {params.profile} --domain {wildcards.domain} --raw {input.raw}"
        " --out-dir {output.catalogs} --metrics {output.stats} --log {log}"


rule syntod_base:
    input:
        code("syntod/stages.py", "study1/bases.py", "tiny.py", "syntod/format.py", "syntod/graph.py",
             "resources/syntod/cooking.yaml", "resources/syntod/ecommerce.yaml", "syntod/items.py"),
        raw=RAW,
    output:
        directory(SYN_BASE),
    params:
        profile=PROFILE,
        base=P["syntod"]["base"],
        tiny=P["tiny"],
        # the tiny base's corpus holds only the training items of each domain (the split of
        # syntod_items, recomputed in-process), never a test item
        item_split=P["syntod"]["item_split"],
        train_catalog=P["syntod"]["train_catalog"],
    threads: 1
    log:
        f"{LOGS}/syntod_base.log",
    resources:
        mem_mb=40000 if ROUTE == "paper" else 2000,
        runtime=runtime("syntod_base"),
    conda:
        ENV
    shell:
        "irrepro syntod-base --profile {params.profile} --raw {input.raw} --out {output} --log {log}"


rule syntod_walks:
    input:
        code("syntod/stages.py", "syntod/graph.py", "syntod/generate.py", "resources/syntod/{domain}.yaml", "bm25.py"),
        catalogs=SYN_ITEMS,
    output:
        walks=SYN_WALKS,
        stats=SYN_WALK_STATS,
    params:
        profile=PROFILE,
        n=P["syntod"]["n_conversations"],
        seed=P["syntod"]["seed"],
    log:
        f"{LOGS}/syntod_walks/{{domain}}.log",
    resources:
        mem_mb=4000,
        runtime=runtime("syntod_walks"),
    conda:
        ENV
    shell:
        "irrepro syntod-gen-walks --profile {params.profile} --domain {wildcards.domain} --seeds {input.catalogs}/train.jsonl"
        " --out {output.walks} --stats {output.stats} --log {log}"


rule syntod_generate:
    input:
        code("syntod/stages.py", "syntod/generate.py", "syntod/llm.py", "syntod/cache.py", "syntod/format.py",
             "resources/syntod/prompts.yaml"),
        catalogs=SYN_ITEMS,
        walks=SYN_WALKS,
    output:
        directory(SYN_GEN),
    params:
        profile=PROFILE,
        syntod={k: P["syntod"][k] for k in ("n_conversations", "heldout_fraction", "seed", "llm")},
    log:
        f"{LOGS}/syntod_generate/{{domain}}-{{method}}.log",
    resources:
        mem_mb=4000,
        runtime=runtime("syntod_generate"),
    conda:
        ENV
    shell:
        "irrepro syntod-generate --profile {params.profile} --domain {wildcards.domain} --method {wildcards.method}"
        " --walks {input.walks} --seeds {input.catalogs}/train.jsonl --out-dir {output} --log {log}"


rule finetune_tod:
    input:
        code("syntod/stages.py", "syntod/tod.py", "rerank/train.py", "rerank/model.py", "rerank/targets.py",
             "rerank/precision.py", "cards.py"),
        base=SYN_BASE,
        train=SYN_GEN,
    output:
        directory(TOD),
    params:
        profile=PROFILE,
        finetune=P["syntod"]["finetune"],
        train=lambda w, input: f"{input.train}/train.jsonl",
    threads: 1 if ROUTE == "mini" else 8
    log:
        f"{LOGS}/finetune_tod/{{domain}}-{{method}}.log",
    resources:
        mem_mb=80000 if ROUTE == "paper" else 3000,
        runtime=runtime("finetune_tod"),
        gpu=GPU,
    conda:
        ENV
    shell:
        "irrepro finetune --task tod --profile {params.profile} --base {input.base} --train {params.train}"
        " --out {output} --log {log}"


rule evaluate_tod:
    input:
        code("syntod/evaluation.py", "syntod/tod.py", "syntod/metrics.py", "syntod/format.py", "syntod/judge.py",
             "syntod/items.py", "syntod/metrics_original.py", "resources/syntod/judge_prompts.yaml"),
        base=SYN_BASE,
        adapter=TOD,
        raw=RAW,
        generated=SYN_GEN,
        catalogs=SYN_ITEMS,
    output:
        json=SYN_EVAL,
        predictions=SYN_PRED,
    params:
        profile=PROFILE,
        eval=P["syntod"]["eval"],
        judge=P["syntod"]["judge"],
        human_labels=P["syntod"]["human_labels"],
        item_split=P["syntod"]["item_split"],
        heldout=lambda w, input: f"{input.generated}/heldout.jsonl",
    threads: 1 if ROUTE == "mini" else 8
    log:
        f"{LOGS}/evaluate_tod/{{domain}}-{{method}}.log",
    resources:
        mem_mb=40000 if ROUTE == "paper" else 3000,
        runtime=runtime("evaluate_tod"),
        gpu=GPU,
    conda:
        ENV
    shell:
        "irrepro syntod-evaluate --profile {params.profile} --domain {wildcards.domain} --method {wildcards.method}"
        " --base {input.base} --adapter {input.adapter} --raw {input.raw} --heldout {params.heldout}"
        " --out {output.json} --predictions {output.predictions} --items {input.catalogs} --log {log}"


rule syntod_collect:
    input:
        code("syntod/evaluation.py"),
        results=expand(SYN_EVAL, domain=P["syntod"]["domains"], method=P["syntod"]["methods"]),
    output:
        tsv=SYN_TSV,
        json=SYN_METRICS,
        md=SYN_MD,
    params:
        profile=PROFILE,
        results_dir=lambda w, input: os.path.dirname(input.results[0]),
    log:
        f"{LOGS}/syntod_collect.log",
    resources:
        mem_mb=1000,
        runtime=runtime("syntod_collect"),
    conda:
        ENV
    shell:
        "irrepro syntod-collect --profile {params.profile} --results-dir {params.results_dir} --out-tsv {output.tsv}"
        " --out-json {output.json} --out-md {output.md} --log {log}"
