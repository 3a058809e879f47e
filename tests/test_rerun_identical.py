"""Same inputs, same bytes: every stage family, run twice on the same machine, records the
same output hashes in dvc.lock (the Lucene index excepted: its segment ids change on every
build, while the BM25 runs it produces must not).

The two runs are the session's (pipeline_fixtures): the smallest grid (one config, one SynTOD
domain, a handful of steps) run from empty projects once by Snakemake (outputs recorded by its
`dvc-commit`) and once by `dvc repro`; the two dvc.lock files are compared output by output.
A difference is named down to the file (DVC's .dir manifests).
"""

import pytest
import yaml

from conftest import run
from pipeline_fixtures import copy_project

pytestmark = pytest.mark.slow

NONDETERMINISTIC = {"data/mini/index"}


def _outs(lock: dict) -> dict[tuple[str, str], str]:
    return {(stage, o["path"]): o["md5"] for stage, entry in lock["stages"].items() for o in entry.get("outs") or []}


def _manifest(project, md5: str) -> dict[str, str]:
    import json

    from irrepro.verify import _Cache

    return {e["relpath"]: e["md5"] for e in json.loads(_Cache(project).path(md5).read_text())}


def _explain(first_project, second_project, first: str, second: str) -> str:
    if not first.endswith(".dir"):
        return "file differs"
    a, b = _manifest(first_project, first), _manifest(second_project, second)
    return "files differ: " + ", ".join(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))


def test_every_stage_rerun_gives_identical_output_hashes(dvc_run, snakemake_run, tmp_path):
    project = copy_project(dvc_run.project, tmp_path / "project")  # the markers below are written into it
    first = _outs(yaml.safe_load((project / "dvc.lock").read_text()))
    # Snakemake's directory markers are not part of an output (.dvcignore)
    for (_, path), md5 in first.items():
        if md5.endswith(".dir"):
            (project / path / ".snakemake_timestamp").write_text("")
    assert "up to date" in run(["dvc", "status"], project)

    rerun = snakemake_run.project  # every stage again, in another project
    second = _outs(yaml.safe_load((rerun / "dvc.lock").read_text()))
    assert set(first) == set(second)
    changed = {key: _explain(project, rerun, first[key], second[key]) for key in first
               if first[key] != second[key] and key[1] not in NONDETERMINISTIC}
    assert not changed, "outputs that changed on a rerun:\n" + "\n".join(f"{s} {p}: {why}" for (s, p), why in changed.items())
    stages = {stage.split("@")[0] for stage, _ in first}
    assert {"bm25", "base", "finetune", "rerank_eval", "collect", "ablate", "syntod_base", "syntod_generate",
            "finetune_tod", "evaluate_tod", "figure_checkpoint_curves", "report"} <= stages
    # the timings moved to the run sidecars beside the logs, outside every output
    assert (project / "logs" / "mini" / "finetune" / "llama-r2-mha.run.json").is_file()
