"""Stage drivers of Study 1: crash-safe fine-tuning output, checkpoint discovery, curves."""

import pytest

from irrepro.params import load_params
from irrepro.study1 import config_name, grid
from irrepro.study1 import training
from irrepro.study1.collect import curves_markdown
from irrepro.study1.reranking import checkpoints


@pytest.fixture
def P(root):
    return load_params(root / "params.yaml", "mini")


def test_grid_is_the_full_cross_product(P):
    g = grid(P)
    assert len(g) == 36 and len(set(g)) == 36
    assert config_name("llama", 8, "mha") == "llama-r8-mha"


def test_finetune_keeps_checkpoints_across_a_crash_and_moves_them_on_success(P, tmp_path, monkeypatch):
    out = tmp_path / "lora" / "llama-r2-mha"
    calls = []

    def fake_finetune(base, groups, work, **kw):
        calls.append(work)
        work.mkdir(parents=True, exist_ok=True)
        (work / f"checkpoint-{5 * len(calls)}").mkdir()
        if len(calls) == 1:
            raise RuntimeError("killed")
        return {"steps": 10}

    monkeypatch.setattr("irrepro.rerank.train.finetune", fake_finetune)
    with pytest.raises(RuntimeError):
        training.finetune(P, "llama", 2, "mha", str(tmp_path / "base"), "groups.jsonl", str(out))
    assert not out.exists(), "a crashed run must not look finished"
    assert (tmp_path / "lora" / "llama-r2-mha.partial" / "checkpoint-5").is_dir(), "checkpoints survive"
    training.finetune(P, "llama", 2, "mha", str(tmp_path / "base"), "groups.jsonl", str(out))
    assert calls[0] == calls[1], "the rerun trains in the same work directory (resume)"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-10", "checkpoint-5"]
    assert not (tmp_path / "lora" / "llama-r2-mha.partial").exists()


def test_checkpoints_sorted_numerically_and_missing_is_an_error(tmp_path):
    for step in (10, 5, 100):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "final").mkdir()
    assert [s for s, _ in checkpoints(tmp_path)] == [5, 10, 100]
    with pytest.raises(FileNotFoundError, match="no checkpoint-<step>"):
        checkpoints(tmp_path / "final")


def test_curves_table(tmp_path):
    tsv = tmp_path / "c.tsv"
    tsv.write_text(
        "config\tstep\tdataset\tmetric\tvalue\n"
        "a\t5\tdl19\tndcg@10\t0.1\na\t10\tdl19\tndcg@10\t0.2\nb\t5\tdl19\tndcg@10\t0.3\n"
        "a\t5\tdl19\tmap\t0.9\n"
    )
    md = curves_markdown(str(tsv))
    assert "| config | step 5 | step 10 |" in md
    assert "| a | 0.1000 | 0.2000 |" in md and "| b | 0.3000 | - |" in md
    assert "0.9" not in md
