"""End to end: the mini pipeline under both runners, and the state they share.

Runs the real workflow (download from the ../shared/data mirror, pyserini, tiny bases,
LoRA fine-tuning, reranking, ranx) in a scratch copy of the project whose grid is cut to
one config and whose tiny bases get a shorter warm-up, so a whole run takes 2-3 minutes
on 2 cores. `make run` covers the full mini grid.
"""

import re
import shutil

import pytest
import yaml

pytestmark = pytest.mark.slow


from conftest import make_scratch_project, run


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


def test_snakemake_run_is_recorded_in_dvc_and_param_change_reruns_downstream(project):
    run(["snakemake", "--cores", "2"], project)
    assert_reference_rows_ok(project)
    for log in ("download", "corpus", "index", "bm25", "evaluate", "train_groups", "base/llama",
                "finetune/llama-r2-mha", "rerank_eval/llama-r2-mha", "collect", "report"):
        assert (project / "logs" / "mini" / f"{log}.log").stat().st_size > 0, f"{log} wrote no log"
    assert "rerank-llama-r2-mha" in (project / "results" / "mini" / "report.md").read_text()
    assert "Nothing to be done" in run(["snakemake", "-n"], project)
    assert "up to date" in run(["dvc", "status"], project)
    assert "Running stage" not in run(["dvc", "repro"], project)

    # bm25.k1 feeds bm25 and what follows it; download, corpus and index are kept.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["bm25"]["k1"] = 1.2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dry = run(["snakemake", "-n"], project)
    assert "rule bm25:" in dry and "rule evaluate:" in dry and "rule report:" in dry
    assert "rule download:" not in dry and "rule index:" not in dry and "rule corpus:" not in dry
    assert "rule base:" not in dry
    assert "up to date" not in run(["dvc", "status"], project)
    out = run(["dvc", "repro", "evaluate"], project)
    assert "Running stage 'bm25'" in out and "Running stage 'evaluate'" in out
    assert "Running stage 'index'" not in out and "Running stage 'download'" not in out


def test_dvc_repro_then_snakemake_has_nothing_to_do(project):
    out = run(["dvc", "repro"], project)
    assert "Running stage 'report'" in out
    assert_reference_rows_ok(project)
    assert "Running stage" not in run(["dvc", "repro"], project)
    assert "up to date" in run(["dvc", "status"], project)
    assert "Nothing to be done" in run(["snakemake", "-n"], project)


def test_paper_dry_run_lists_paper_jobs_offline(project, root):
    shutil.copy(root / "params.yaml", project / "params.yaml")  # the full grid
    out = run(["snakemake", "-n", "--config", "profile=paper"], project)
    for rule in ("download", "corpus", "index", "bm25", "evaluate", "report", "base", "train_groups",
                 "finetune", "rerank_eval", "collect"):
        assert f"rule {rule}:" in out
    stats = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if re.match(r"^\w+\s+\d+$", line)}
    assert stats["finetune"] == 36 and stats["rerank_eval"] == 36 and stats["base"] == 3
    assert "data/paper/raw" in out and "results/paper/report.md" in out
    finetune_block = out[out.index("rule finetune:"):][:1500]
    assert re.search(r"resources: .*mem_mb=80000.*gpu=1", finetune_block) or (
        "gpu=1" in finetune_block and "mem_mb=80000" in finetune_block and "runtime=720" in finetune_block
    ), finetune_block
    assert not (project / "data").exists(), "a dry run must not touch anything"


def test_snakemake_lint_is_clean(project):
    out = run(["snakemake", "--lint"], project, check=False)
    assert "Congratulations, your workflow is in a good condition!" in out, out
