"""Stage drivers of Study 1: crash-safe fine-tuning output, checkpoint discovery, curves,
the evaluation schedule (curves on some datasets, the final checkpoint only on others)."""

from pathlib import Path

import pytest

from irrepro.params import load_params
from irrepro.study1 import config_name, grid
from irrepro.study1 import training
from irrepro.study1.collect import curves_markdown
from irrepro.study1.reranking import checkpoints

from conftest import TOY_BASE_PASSAGES, TOY_TOPICS, write_topics_qrels


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


def _adapter_only(path, step):
    """What a pruned checkpoint holds: the adapter and trainer_state.json (no resume state)."""
    path.mkdir()
    (path / "adapter_config.json").write_text("{}")
    (path / "adapter_model.safetensors").write_bytes(b"x")
    (path / "trainer_state.json").write_text(f'{{"global_step": {step}}}')


def test_checkpoints_sorted_numerically_and_missing_is_an_error(tmp_path):
    for step in (10, 5, 100):
        _adapter_only(tmp_path / f"checkpoint-{step}", step)
    (tmp_path / "final").mkdir()
    assert [s for s, _ in checkpoints(tmp_path)] == [5, 10, 100]
    with pytest.raises(FileNotFoundError, match="no checkpoint-<step>"):
        checkpoints(tmp_path / "final")
    # an adapter saved by other code (no trainer_state.json) counts
    other = tmp_path / "checkpoint-7"
    other.mkdir()
    (other / "adapter_config.json").write_text("{}")
    (other / "adapter_model.bin").write_bytes(b"x")
    assert [s for s, _ in checkpoints(tmp_path)] == [5, 7, 10, 100]


@pytest.mark.parametrize("damage", ["no_weights", "wrong_step", "empty"])
def test_a_broken_checkpoint_is_an_error_and_kept(tmp_path, damage):
    _adapter_only(tmp_path / "checkpoint-5", 5)
    bad = tmp_path / "checkpoint-10"
    if damage == "empty":
        bad.mkdir()
    else:
        _adapter_only(bad, 10 if damage == "no_weights" else 15)
    if damage == "no_weights":
        (bad / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"checkpoint-10: not a complete adapter"):
        checkpoints(tmp_path)
    assert bad.is_dir()


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


# ----------------------------------------------------------------------------- evaluation schedule
TOY_PASSAGES = {**TOY_BASE_PASSAGES, "d5": "lorem ipsum dolor sit amet consectetur adipiscing elit", "d6": "paris"}
TOY_QRELS = {"q1": {"d1": 3, "d2": 0}, "q2": {"d3": 2, "d6": 3}, "q3": {"d2": 2}}


def _toy_inputs(tmp_path):
    """raw/ laid out as the download stage writes it (dl19 and dl20 files), BM25 runs, a corpus."""
    import json

    from irrepro.datasets import get
    from irrepro.download import load_sources
    from irrepro.trec import write_run

    dest = {s.name: s.dest for s in load_sources()}
    raw, runs = tmp_path / "raw", tmp_path / "bm25"
    for name in ("dl19", "dl20"):
        topics, qrels = raw / dest[get(name).topics], raw / dest[get(name).qrels]
        write_topics_qrels(topics, qrels, TOY_TOPICS, TOY_QRELS)
        docs = sorted(TOY_PASSAGES) if name == "dl19" else sorted(TOY_PASSAGES, reverse=True)
        write_run({q: {d: float(10 - i) for i, d in enumerate(docs)} for q in TOY_TOPICS}, runs / f"{name}.trec", tag="bm25")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": d, "contents": t}) + "\n" for d, t in TOY_PASSAGES.items()))
    return str(raw), str(runs), str(corpus)


def _toy_groups(path):
    from irrepro.rerank.data import write_groups

    docs = list(TOY_PASSAGES.items())
    records = [{"query_id": q, "query": t,
                "positive_passages": [{"docid": d, "title": "", "text": TOY_PASSAGES[d]}
                                      for d, g in TOY_QRELS[q].items() if g >= 2],
                "negative_passages": [{"docid": d, "title": "", "text": x} for d, x in docs if d not in TOY_QRELS[q]]}
               for q, t in TOY_TOPICS.items()]
    write_groups(records, path)
    return path


@pytest.fixture
def schedule_P(P):
    """mini params on a one-config grid: curves on dl19, dl20 reranked with the final checkpoint only."""
    import copy

    Q = copy.deepcopy(P)
    # max_steps / save_steps as the adapters below are trained (collect checks every checkpoint has its run)
    Q["finetune"].update(families=["llama"], ranks=[2], targets=["all"], passage_max_len=32, query_max_len=16,
                         max_steps=4, save_steps=2)
    Q["rerank"].update(checkpoint_datasets=["dl19"], final_datasets=["dl20"], depth=5, batch_size=8)
    return Q


def test_schedule_scores_pruned_checkpoints_and_the_final_one_only_on_final_sets(schedule_P, tiny_base_dir, tmp_path):
    """Real training (its older checkpoints pruned to the adapter), then rerank-eval and collect:
    dl19 at every checkpoint, dl20 at the final step only, everywhere downstream."""
    import csv
    import json

    from irrepro.evaluate import evaluate_run
    from irrepro.lora.checkpoints import is_complete_adapter, is_complete_checkpoint
    from irrepro.rerank.train import finetune
    from irrepro.study1.collect import collect
    from irrepro.study1.reranking import rerank_config, schedule
    from irrepro.trec import read_qrels, read_run

    P = schedule_P
    raw, runs, corpus = _toy_inputs(tmp_path)
    base = tiny_base_dir("llama")
    lora = tmp_path / "lora" / "llama-r2-all"
    finetune(base, _toy_groups(tmp_path / "groups.jsonl"), lora, rank=2, targets="all", lr=1e-3, max_steps=4,
             queries_per_device=3, grad_accum=1, group_size=3, qmax=16, pmax=32, save_steps=2, warmup_ratio=0.0,
             seed=1, threads=1)
    assert not is_complete_checkpoint(lora / "checkpoint-2") and is_complete_adapter(lora / "checkpoint-2")
    assert is_complete_checkpoint(lora / "checkpoint-4")
    assert [s for s, _ in checkpoints(lora)] == [2, 4]  # the pruned checkpoint is scored
    assert schedule(P, [4, 2]) == {"dl19": [2, 4], "dl20": [4]}

    out = tmp_path / "rerank" / "llama-r2-all"
    curves_everywhere = {**P, "rerank": {**P["rerank"], "checkpoint_datasets": ["dl19", "dl20"], "final_datasets": []}}
    rerank_config(curves_everywhere, "llama-r2-all", str(base), str(lora), raw, runs, corpus, str(out))
    assert sorted(p.name for p in (out / "dl20").glob("*.trec")) == ["step-2.trec", "step-4.trec"]
    kept = (out / "dl20" / "step-4.trec").stat().st_mtime_ns
    # dl20 moves to the final-only list: its run of step 2 is dropped, the final one reused
    rerank_config(P, "llama-r2-all", str(base), str(lora), raw, runs, corpus, str(out))
    assert sorted(p.name for p in (out / "dl19").glob("*.trec")) == ["step-2.trec", "step-4.trec"]
    assert sorted(p.name for p in (out / "dl20").glob("*.trec")) == ["step-4.trec"]
    assert (out / "dl20" / "step-4.trec").stat().st_mtime_ns == kept

    res = tmp_path / "results"
    tsv, js, md, plot = res / "ckpt.tsv", res / "rerank.json", res / "sig.md", res / "final.csv"
    collect(P, raw, runs, str(tmp_path / "rerank"), str(tsv), str(js), str(md), str(plot), str(res / "sig.tex"))
    assert "Benjamini-Hochberg-adjusted p-values" in md.read_text() and P["rerank"]["p_adjust"] == "bh"
    assert "\\label{tab:significance-dl19}" in (res / "sig.tex").read_text()
    with open(tsv, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    steps = {ds: sorted({int(r["step"]) for r in rows if r["dataset"] == ds}) for ds in ("dl19", "dl20")}
    assert steps == {"dl19": [2, 4], "dl20": [4]}
    final = json.loads(js.read_text())["rerank-llama-r2-all"]
    assert set(final) == {"dl19", "dl20"}
    qrels = read_qrels(Path(raw) / "trec-dl/qrels.dl20-passage.txt")
    want, _ = evaluate_run(qrels, read_run(out / "dl20" / "step-4.trec"), P["evaluate"]["metrics"], 2)
    judged = sum(1 for docs in qrels.values() if docs)
    assert final["dl20"] == {m: round(v, 4) for m, v in want.items()} | {"judged_queries": {"found": judged,
                                                                                           "expected": judged}}
    assert "## dl19" in md.read_text() and "## dl20" in md.read_text()
    assert "llama-r2-all dl20" in plot.read_text()
    md_curves = curves_markdown(str(tsv))
    assert "Learning curves: ndcg@10 on dl19" in md_curves and "Final checkpoint only: ndcg@10 on dl20" in md_curves

    # a final-only set with a run at another step does not follow the schedule: refused, naming the folder
    (out / "dl20" / "step-2.trec").write_text((out / "dl20" / "step-4.trec").read_text())
    with pytest.raises(ValueError, match=r"dl20: runs at steps \[2, 4\], expected only the final step 4"):
        collect(P, raw, runs, str(tmp_path / "rerank"), str(tsv), str(js), str(md), str(plot))
