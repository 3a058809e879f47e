"""`make report`: the Snakemake HTML report with the figures, the result pages and provenance."""

import base64
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import run
from irrepro.reportpages import markdown_page, provenance_html


def _data_uri_text(html: str, filename: str) -> str:
    m = re.search(rf"data:text/html;charset=utf8;filename={re.escape(filename)};base64,([A-Za-z0-9+/=]+)", html)
    assert m, f"{filename} is not embedded in the report"
    return base64.b64decode(m.group(1)).decode()


@pytest.fixture
def project(root, tmp_path):
    """The workflow definition in a git repo, with the report's inputs in place (tiny real PNG
    figures, the markdown results); the compute stages are not run."""
    for name in ("Snakefile", "params.yaml"):
        shutil.copy(root / name, tmp_path / name)
    for folder in ("workflow", "envs", "notebooks"):
        shutil.copytree(root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = tmp_path / "results" / "mini"
    (res / "figures").mkdir(parents=True)
    for name in ("checkpoint_curves", "rank_comparison", "module_comparison", "ablation_heatmap",
                 "reproduction_report", "syntod_comparison"):
        fig = plt.figure(figsize=(1, 1))
        plt.plot([0, 1], [0, 1])
        fig.savefig(res / "figures" / f"{name}.png")
        plt.close(fig)
    (res / "report.md").write_text("# Reproduction report (mini)\n\n| number | ref | ours | status |\n|---|---|---|---|\n"
                                   "| DL19 nDCG@10 | 0.5058 | 0.5058 | OK |\n\n## Deviation registry\n\n"
                                   "| id | ours |\n|---|---|\n| study1-example | x |\n")
    (res / "rerank_significance.md").write_text("| config | p |\n|---|---|\n| llama-r2-mha | 0.01 |\n")
    (res / "syntod_comparison.md").write_text("| domain | graph | naive |\n|---|---|---|\n| cooking | 0.6 | 0.2 |\n")
    return tmp_path


def test_report_builds_with_figures_captions_pages_and_provenance(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["profile"] == "mini"
    res = "results/mini"
    # the report_pages rule's command (the compute stages are not needed for the pages)
    run(["irrepro", "report-pages", "--profile", "mini", "--report", f"{res}/report.md",
         "--significance", f"{res}/rerank_significance.md", "--syntod", f"{res}/syntod_comparison.md",
         "--out-dir", f"{res}/report_pages", "--log", "logs/mini/report_pages.log"], project)
    run(["snakemake", "--report", f"{res}/report.html", "report_pages"], project)
    html = (project / res / "report.html").read_text()
    for name in ("checkpoint_curves", "ablation_heatmap", "syntod_comparison"):
        assert f"{name}.png" in html
    assert "Learning curves: the evaluation metric" in html  # a figure's caption
    assert "Reproduction of two studies" in html  # the workflow description
    page = _data_uri_text(html, "reproduction.html")
    assert "<table>" in page and "Deviation registry" in page and "study1-example" in page
    assert "cooking" in _data_uri_text(html, "syntod_comparison.html")
    assert "llama-r2-mha" in _data_uri_text(html, "significance.html")
    prov = _data_uri_text(html, "provenance.html")
    assert "report_pages" in prov and "lucene" in prov and "packages.pyserini" in prov and "hardware.cpu" in prov


def test_provenance_page_shows_mixed_environments_and_missing_inputs_are_named(tmp_path):
    recs = [{"job": "index", "command": "index", "git": {"commit": "a" * 40, "dirty": False}, "python": "3.11.7",
             "packages": {"torch": "2.13.0"}},
            {"job": "finetune/llama-r8-mha", "command": "finetune", "git": {"commit": "b" * 40, "dirty": True},
             "python": "3.11.7", "packages": {"torch": "2.12.0"}}]
    body = provenance_html(recs)
    assert "2 distinct commit(s), 1 job(s) run from a work tree with uncommitted changes" in body
    assert "<td>python</td><td><code>3.11.7</code></td><td>all</td>" in body
    assert "<td>packages.torch</td><td><code>2.12.0</code></td><td>finetune/llama-r8-mha</td>" in body
    with pytest.raises(FileNotFoundError, match="nowhere.md"):
        markdown_page(tmp_path / "nowhere.md", tmp_path / "x.html", "x")
