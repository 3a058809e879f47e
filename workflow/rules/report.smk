# Curves as data and the HTML report.
#   plot_data     (both runners) tidy plot files for `dvc plots` + the headline summary.json
#   report_pages  (Snakemake only, not in `all`) HTML views of the markdown results and of
#                 every job's provenance, for `make report` = snakemake --report (these are
#                 views with dates, not results, so DVC does not track them)

PLOTS_DIR = f"results/{PROFILE}/plots"
CONFUSION_DIR = f"{PLOTS_DIR}/syntod_confusion"
SUMMARY = f"results/{PROFILE}/metrics/summary.json"
REPORT_PAGES = f"results/{PROFILE}/report_pages"
# what `make report` builds the HTML report for: everything of `all` plus the pages
REPORT_HTML = f"results/{PROFILE}/report.html"


rule plot_data:
    input:
        stage_code("plot_data", "plotdata.py"),
        checkpoints=CHECKPOINTS_TSV,
        lora=in_dir([LORA.format(**g) for g in GRID]),
        ablation=ABLATION_TSV,
        predictions=in_dir(expand(SYN_PRED, domain=P["syntod"]["domains"], method=P["syntod"]["methods"])),
        bm25=METRICS_BM25,
        rerank=METRICS_RERANK,
        syntod=SYN_METRICS,
    output:
        # `dvc plots show|diff` (templates in .dvc/plots/)
        learning_curves=plot(
            f"{PLOTS_DIR}/learning_curves.csv",
            template="lines_by_config",
            x="step",
            y="${figures.metric}",
            title="Learning curves (every checkpoint)",
            x_label="optimizer step",
        ),
        train_loss=plot(
            f"{PLOTS_DIR}/train_loss.csv",
            template="lines_by_config",
            x="step",
            y="loss",
            title="Training loss (LCE) per config",
            x_label="optimizer step",
            y_label="training loss",
        ),
        ablation_deltas=plot(
            f"{PLOTS_DIR}/ablation_deltas.csv",
            template="bar_horizontal_sorted",
            x="delta_full",
            y="variant",
            title="Ablation, change vs the full adapter (${ablate.metric})",
            x_label="change of ${ablate.metric}",
            y_label="config and variant",
        ),
        confusion=plot(
            directory(CONFUSION_DIR),
            template="confusion",
            x="actual",
            y="predicted",
            title="SynTOD intents, gold vs predicted",
        ),
        summary=target(metric(SUMMARY)),
    log:
        f"{LOGS}/plot_data.log",
    conda:
        ENV
    resources:
        **resources_of("plot_data"),
    params:
        profile=PROFILE,
        knobs=keys("figures.metric", "ablate.metric", "rerank.checkpoint_datasets", "rerank.final_datasets"),
        lora=lambda w, input: os.path.dirname(input.lora[0]),
        syntod_results=lambda w, input: os.path.dirname(input.predictions[0]),
        out_dir=lambda w, output: os.path.dirname(output.learning_curves),
    shell:
        "irrepro plot-data --profile {params.profile} --checkpoints {input.checkpoints} --lora {params.lora}"
        " --ablation {input.ablation} --syntod-results {params.syntod_results} --bm25 {input.bm25}"
        " --rerank {input.rerank} --syntod {input.syntod} --out-dir {params.out_dir} --summary {output.summary}"
        " --log {log}"


rule report_pages:
    input:
        # everything `rule all` builds, so that the report covers the whole run
        REPORT,
        METRICS_ABLATION,
        SYN_METRICS,
        expand(SYN_WALK_STATS, domain=P["syntod"]["domains"]),
        FIGURES,
        SUMMARY,
        stage_code("report_pages", "reportpages.py", "provenance.py"),
        report=REPORT,
        significance=SIGNIFICANCE,
        syntod=SYN_MD,
    output:
        reproduction=report(
            f"{REPORT_PAGES}/reproduction.html",
            caption="../report/reproduction_page.rst",
            category="Results",
            labels={"page": "Reproduction report"},
        ),
        significance=report(
            f"{REPORT_PAGES}/significance.html",
            caption="../report/significance_page.rst",
            category="Results",
            labels={"page": "Significance vs BM25"},
        ),
        syntod=report(
            f"{REPORT_PAGES}/syntod_comparison.html",
            caption="../report/syntod_page.rst",
            category="Results",
            labels={"page": "SynTOD comparison"},
        ),
        provenance=report(
            f"{REPORT_PAGES}/provenance.html",
            caption="../report/provenance_page.rst",
            category="Provenance",
            labels={"page": "Provenance of every job"},
        ),
    log:
        f"{LOGS}/report_pages.log",
    localrule: True
    conda:
        ENV
    params:
        profile=PROFILE,
        out_dir=lambda w, output: os.path.dirname(output.reproduction),
    shell:
        "irrepro report-pages --profile {params.profile} --report {input.report}"
        " --significance {input.significance} --syntod {input.syntod} --out-dir {params.out_dir} --log {log}"
