"""The SLURM profile (workflow/profiles/slurm): a paper-scale dry run through it.

The dry run parses every profile key against Snakemake's and the slurm executor
plugin's options (an unknown key or a missing plugin is an argument error), and prints
each job's resources after the profile's defaults and per-rule overrides are applied.
"""

import re
import shutil

from conftest import make_scratch_project, run
from irrepro.plan import load_runtimes

PROFILE = ["--profile", "workflow/profiles/slurm", "--config", "profile=paper"]


def job_resources(dry_run: str) -> dict[str, list[dict[str, str]]]:
    """rule name -> the `resources:` of each of its jobs, as printed by `snakemake -n`."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"^\[.*\]\n", dry_run, flags=re.M):
        rule = re.search(r"^(?:local)?rule (\w+):$", block, re.M)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if rule and res:
            pairs = (kv.split("=", 1) for kv in res.group(1).split(", "))
            jobs.setdefault(rule.group(1), []).append(dict(pairs))
    return jobs


def test_slurm_profile_dry_run_puts_gpu_stages_on_gpu_nodes(root, tmp_path):
    project = make_scratch_project(root, tmp_path)
    shutil.copy(root / "params.yaml", project / "params.yaml")  # the full grid
    before = sorted(p.relative_to(project) for p in project.rglob("*") if ".git" not in p.parts)
    out = run(["snakemake", "-n", *PROFILE], project)
    assert "Using profile workflow/profiles/slurm" in out
    jobs = job_resources(out)
    paper_runtime = {rule: v["paper"] for rule, v in load_runtimes().items()}

    assert len(jobs["finetune"]) == 36 and len(jobs["rerank_eval"]) == 36
    for res in jobs["finetune"]:  # the profile's GPU request on top of the rule's own sizes
        assert res["slurm_partition"] == "gpu" and res["gpu"] == "1" and res["cpus_per_task"] == "8", res
        assert res["mem_mb"] == "80000" and res["runtime"] == str(paper_runtime["finetune"]), res
    for res in jobs["rerank_eval"] + jobs.get("ablate", []):
        assert res["slurm_partition"] == "gpu" and res["gpu"] == "1", res
    for rule in ("download", "corpus", "index", "bm25", "base", "train_groups", "collect", "report"):
        for res in jobs[rule]:
            assert res["slurm_partition"] == "cpu" and res.get("gpu", "0") == "0", (rule, res)
    assert jobs["index"][0]["mem_mb"] == "16000"  # the rule's paper value, not the profile default

    after = sorted(p.relative_to(project) for p in project.rglob("*") if ".git" not in p.parts and ".snakemake" not in p.parts)
    assert after == before, "a dry run must not create or change files"
