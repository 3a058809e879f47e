"""End to end: the mini pipeline under both runners, and the state they share.

Runs the real workflow (download from the ../shared/data mirror, pyserini, tiny bases,
LoRA fine-tuning, reranking, ranx) in scratch copies of the project whose grid is cut to
one config with few steps (pipeline_fixtures.smallest_grid): the session's Snakemake run and
its `dvc repro` run, each a few minutes on 2 cores and shared with test_dvc_remote,
test_verify and test_rerun_identical. `make run` covers the full mini grid.
"""

import json
import re
import shutil

import pytest
import yaml
from conftest import make_scratch_project, run
from pipeline_fixtures import CANARY, copy_project

pytestmark = pytest.mark.slow


FIGURES = ("checkpoint_curves", "rank_comparison", "module_comparison", "ablation_heatmap", "reproduction_report",
           "syntod_comparison")
STUDY1_FIGURES = FIGURES[:5]


@pytest.fixture
def project(root, shared_data, tmp_path, monkeypatch):
    """A scratch copy of the workflow definition in a new git + DVC repository."""
    monkeypatch.setenv("IRREPRO_DATA_MIRROR", str(shared_data))
    return make_scratch_project(root, tmp_path)


def assert_reference_rows_ok(project):
    report = (project / "results" / "mini" / "report.md").read_text()
    assert "| bm25-published-rankllm | dl19 | ndcg@10 | 0.5058 | 0.5058 | 0.0005 | OK |" in report
    assert "| bm25-published-rankllm | dl20 | ndcg@10 | 0.4796 | 0.4796 | 0.0005 | OK |" in report
    assert "0 FAIL" in report


def dry_run_jobs(project) -> dict:
    """``{rule: count}`` from the job-stats table of ``snakemake -n``."""
    out = run(["snakemake", "-n"], project)
    if "Nothing to be done" in out:
        return {}
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M) if m.group(1) not in ("total", "all")}


def dvc_changed_stages(project) -> set:
    """Stage names (matrix/foreach suffix dropped) that `dvc status` reports as changed."""
    import json

    out = run(["dvc", "status", "--json"], project)
    return {name.split("@")[0] for name in json.loads(out[out.index("{"):])}


def edit_params(project, change):
    params = yaml.safe_load((project / "params.yaml").read_text())
    change(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def assert_no_canary(project):
    """No file of the run (outputs, logs, dvc.lock, executed notebooks, caches) holds the key."""
    needle = CANARY.encode()
    for path in project.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert needle not in path.read_bytes(), f"the API key leaked into {path}"


def test_snakemake_run_then_partial_reruns_in_both_runners(snakemake_run, shared_data, tmp_path, monkeypatch):
    # the session's run had a key in the environment (the paper backends read it from there):
    # it must never be written anywhere
    project = snakemake_run.project
    assert_no_canary(project)
    assert_reference_rows_ok(project)
    for log in ("download", "corpus", "index", "bm25", "evaluate", "train_groups", "base/llama",
                "finetune/llama-r2-mha", "rerank_eval/llama-r2-mha", "collect", "report", "ablate/llama-r2-mha",
                "ablate_collect", *(f"figures/{n}" for n in FIGURES), "syntod_base", "syntod_walks/cooking",
                "syntod_generate/cooking-graph", "syntod_generate/cooking-naive", "finetune_tod/cooking-graph",
                "evaluate_tod/cooking-naive", "syntod_collect", "plot_data"):
        assert (project / "logs" / "mini" / f"{log}.log").stat().st_size > 0, f"{log} wrote no log"
    for name in FIGURES:
        assert (project / "results" / "mini" / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (project / "results" / "mini" / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
        assert (project / "results" / "mini" / "notebooks" / f"{name}.ipynb").stat().st_size > 0
    assert "rerank-llama-r2-mha" in (project / "results" / "mini" / "report.md").read_text()
    # the model jobs forked from the run's warm worker (irrepro.warm_worker), which has stopped; the
    # first ones may run cold while it preloads, these come later in the DAG
    worker_log = (project / "logs" / "mini" / "warm-worker.log").read_text()
    for job in ("irrepro rerank-eval ", "irrepro evaluate-tod "):
        assert re.search(rf"^exit 0 after [0-9.]+s: {job}", worker_log, flags=re.M), (job, worker_log)
    assert "stopped after" in worker_log
    assert json.loads((project / "logs/mini/rerank_eval/llama-r2-mha.run.json").read_text())["warm_worker"] is True
    # everything below runs tools in the project: a private copy of the session's run
    monkeypatch.setenv("IRREPRO_DATA_MIRROR", str(shared_data))
    project = copy_project(project, tmp_path / "project")
    assert "Nothing to be done" in run(["snakemake", "-n"], project)
    assert "up to date" in run(["dvc", "status"], project)
    assert "Running stage" not in run(["dvc", "repro"], project)
    assert "llama-r2-mha" in run(["dvc", "metrics", "show"], project)
    run(["dvc", "plots", "show", "-o", "dvc_plots"], project)
    html = (project / "dvc_plots" / "index.html").read_text()
    assert all(f"{n}.png" in html for n in FIGURES) and "rerank_final" in html
    assert "learning_curves.csv" in html and "train_loss.csv" in html and "syntod_confusion" in html
    # `make report`: the result pages + provenance, then Snakemake's HTML report
    run(["snakemake", "--cores", "2", "report_pages"], project, env={"OPENAI_API_KEY": CANARY, "HF_TOKEN": CANARY})
    run(["snakemake", "--report", "results/mini/report.html", "report_pages"], project)
    report_html = (project / "results" / "mini" / "report.html").read_text()
    assert all(f"{n}.png" in report_html for n in FIGURES) and "provenance.html" in report_html
    provenance_page = (project / "results" / "mini" / "report_pages" / "provenance.html").read_text()
    assert "finetune/llama-r2-mha" in provenance_page and "lucene" in provenance_page
    assert_no_canary(project)
    assert "Nothing to be done" in run(["snakemake", "-n"], project)

    # A figure style knob reruns the figures and nothing else, in both runners.
    edit_params(project, lambda p: p["figures"].update(dpi=110))
    assert dry_run_jobs(project) == {f"figure_{n}": 1 for n in FIGURES}
    assert dvc_changed_stages(project) == {f"figure_{n}" for n in FIGURES}
    before = (project / "results" / "mini" / "figures" / "checkpoint_curves.png").read_bytes()
    run(["snakemake", "--cores", "2"], project)
    assert (project / "results" / "mini" / "figures" / "checkpoint_curves.png").read_bytes() != before
    assert "up to date" in run(["dvc", "status"], project)

    # A new LoRA rank: only the new config's training and reranking, then collect, report and
    # the figures that read the checkpoint table (the ablated configs are unchanged).
    edit_params(project, lambda p: p["finetune"].update(ranks=[2, 1]))
    jobs = dry_run_jobs(project)
    assert jobs == {"finetune": 1, "rerank_eval": 1, "collect": 1, "report": 1, "plot_data": 1,
                    **{f"figure_{n}": 1 for n in STUDY1_FIGURES if n != "ablation_heatmap"}}, jobs
    dry = run(["snakemake", "-n"], project)
    assert "models/mini/lora/llama-r1-mha" in dry and "models/mini/lora/llama-r2-mha\n" not in dry
    assert "rule figure_ablation_heatmap" not in dry
    changed = dvc_changed_stages(project)
    # DVC lists the two new stages; collect, report and the figures follow once their runs exist
    assert changed == {"finetune", "rerank_eval"}, changed
    assert not changed & {"download", "bm25", "base", "train_groups", "ablate", "ablate_collect",
                          "figure_ablation_heatmap", "syntod_generate", "finetune_tod", "figure_syntod_comparison"}, changed
    edit_params(project, lambda p: p["finetune"].update(ranks=[2]))
    assert "Nothing to be done" in run(["snakemake", "-n"], project)

    # bm25.k1 feeds bm25 and what follows it; download, corpus and index are kept.
    edit_params(project, lambda p: p["bm25"].update(k1=1.2))
    jobs = dry_run_jobs(project)
    assert {"bm25", "evaluate", "train_groups", "finetune", "rerank_eval", "collect", "ablate", "ablate_collect",
            "report", *(f"figure_{n}" for n in STUDY1_FIGURES)} <= set(jobs), jobs
    # SynTOD's catalog BM25 does not read bm25.k1 (its own syntod.bm25 defaults)
    assert not set(jobs) & {"download", "corpus", "index", "base", "syntod_walks", "syntod_generate", "finetune_tod",
                            "figure_syntod_comparison"}, jobs
    assert "up to date" not in run(["dvc", "status"], project)
    out = run(["dvc", "repro", "evaluate"], project)
    assert "Running stage 'bm25'" in out and "Running stage 'evaluate'" in out
    assert "Running stage 'index'" not in out and "Running stage 'download'" not in out


def test_dvc_repro_then_snakemake_has_nothing_to_do(dvc_run, tmp_path):
    out = dvc_run.output  # the session's `dvc repro` of an empty project
    assert "Running stage 'report'" in out
    assert_reference_rows_ok(dvc_run.project)
    project = copy_project(dvc_run.project, tmp_path / "project")
    assert "Running stage" not in run(["dvc", "repro"], project)
    assert "up to date" in run(["dvc", "status"], project)
    assert "Nothing to be done" in run(["snakemake", "-n"], project)


def test_paper_dry_run_lists_paper_jobs_offline(project, root):
    shutil.copy(root / "params.yaml", project / "params.yaml")  # the full grid
    out = run(["snakemake", "-n", "--config", "profile=paper"], project)
    for rule in ("download", "corpus", "index", "bm25", "evaluate", "report", "base", "train_groups",
                 "finetune", "rerank_eval", "collect", "ablate", "ablate_collect", "figure_checkpoint_curves",
                 "syntod_base", "syntod_walks", "syntod_generate", "finetune_tod", "evaluate_tod", "syntod_collect"):
        assert f"rule {rule}:" in out
    stats = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if re.match(r"^\w+\s+\d+$", line)}
    assert stats["finetune"] == 36 and stats["rerank_eval"] == 36 and stats["base"] == 3
    assert stats["ablate"] == 9 and all(stats[f"figure_{n}"] == 1 for n in FIGURES)
    assert stats["syntod_generate"] == 4 and stats["finetune_tod"] == 4 and stats["evaluate_tod"] == 4
    from irrepro.params import load_params

    S = load_params(project / "params.yaml", "paper")["syntod"]
    assert S["llm"]["kind"] == "openai" and S["llm"]["api_key_env"] == "OPENAI_API_KEY" and "api_key" not in S["llm"]
    assert "irrepro syntod-generate --profile paper" in run(["snakemake", "-n", "-p", "--config", "profile=paper"], project)
    assert "data/paper/raw" in out and "results/paper/report.md" in out
    finetune_block = out[out.index("rule finetune:"):][:1500]
    runtime = yaml.safe_load((root / "workflow/resources.yaml").read_text())["finetune"]["runtime"]["paper"]
    assert "gpu=1" in finetune_block and "mem_mb=80000" in finetune_block and f"runtime={runtime}" in finetune_block, (
        finetune_block
    )
    assert not (project / "data").exists(), "a dry run must not touch anything"


def test_snakemake_lint_is_clean(project):
    out = run(["snakemake", "--lint"], project, check=False)
    assert "Congratulations, your workflow is in a good condition!" in out, out
