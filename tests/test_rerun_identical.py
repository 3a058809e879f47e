"""Same inputs, same bytes: every stage family, run twice on the same machine, records the
same output hashes in dvc.lock (the Lucene index excepted: its segment ids change on every
build, while the BM25 runs it produces must not).

A scratch project with the grid cut to one config, one SynTOD method and a handful of steps;
`dvc repro` then `dvc repro --force` (every stage again), and the two dvc.lock files compared
output by output. A difference is named down to the file (DVC's .dir manifests).
"""

import pytest
import yaml

from conftest import make_scratch_project, run

pytestmark = pytest.mark.slow

NONDETERMINISTIC = {"data/mini/index"}


def _shrink(params: dict) -> None:
    """Fewer steps everywhere: the test is about bytes, not about learning."""
    params["tiny"]["warmup_steps"] = 10
    params["finetune"].update(max_steps={"mini": 4, "paper": -1}, save_steps={"mini": 2, "paper": 50})
    params["ablate"].update(cells=False, depth={"mini": 5, "paper": 100})
    S = params["syntod"]  # both domains (the SynTOD base reads both catalogs), one method
    S.update(domains=["cooking", "ecommerce"], methods=["graph"], n_conversations={"mini": 6, "paper": 5000})
    S["base"]["warmup_steps"] = {"mini": 4, "paper": 0}
    S["finetune"]["max_steps"] = {"mini": 2, "paper": -1}
    S["finetune"]["save_steps"] = {"mini": 1, "paper": 200}
    S["eval"]["max_conversations"] = {"mini": 1, "paper": None}
    S["eval"]["responses_per_conversation"] = {"mini": 1, "paper": None}


def _outs(lock: dict) -> dict[tuple[str, str], str]:
    return {(stage, o["path"]): o["md5"] for stage, entry in lock["stages"].items() for o in entry.get("outs") or []}


def _manifest(project, md5: str) -> dict[str, str]:
    import json

    from irrepro.verify import _Cache

    return {e["relpath"]: e["md5"] for e in json.loads(_Cache(project).path(md5).read_text())}


def _explain(project, first: str, second: str) -> str:
    if not first.endswith(".dir"):
        return "file differs"
    a, b = _manifest(project, first), _manifest(project, second)
    return "files differ: " + ", ".join(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))


@pytest.fixture
def project(root, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("IRREPRO_DATA_MIRROR", str(shared_data))
    project = make_scratch_project(root, tmp_path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    _shrink(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def test_every_stage_rerun_gives_identical_output_hashes(project):
    run(["dvc", "repro"], project)
    (project / "dvc.lock.first").write_text((project / "dvc.lock").read_text())  # kept for a look afterwards
    first = _outs(yaml.safe_load((project / "dvc.lock").read_text()))
    # Snakemake's directory markers are not part of an output (.dvcignore)
    for (_, path), md5 in first.items():
        if md5.endswith(".dir"):
            (project / path / ".snakemake_timestamp").write_text("")
    assert "up to date" in run(["dvc", "status"], project)

    run(["dvc", "repro", "--force"], project)
    second = _outs(yaml.safe_load((project / "dvc.lock").read_text()))
    assert set(first) == set(second)
    changed = {key: _explain(project, first[key], second[key]) for key in first
               if first[key] != second[key] and key[1] not in NONDETERMINISTIC}
    assert not changed, "outputs that changed on a rerun:\n" + "\n".join(f"{s} {p}: {why}" for (s, p), why in changed.items())
    stages = {stage.split("@")[0] for stage, _ in first}
    assert {"bm25", "base", "finetune", "rerank_eval", "collect", "ablate", "syntod_base", "syntod_generate",
            "finetune_tod", "evaluate_tod", "figure_checkpoint_curves", "report"} <= stages
    # the timings moved to the run sidecars beside the logs, outside every output
    assert (project / "logs" / "mini" / "finetune" / "llama-r2-mha.run.json").is_file()
