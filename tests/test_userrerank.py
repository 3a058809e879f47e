"""`irrepro rerank` / `irrepro eval`: any first stage, any corpus format, the pipeline's numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from irrepro import userrerank as U  # noqa: E402
from irrepro.bm25 import write_corpus_from_rankllm  # noqa: E402
from irrepro.rerank.evaluate import evaluate_checkpoints, load_passages  # noqa: E402
from irrepro.trec import TrecFormatError, read_qrels, read_run, read_topics, write_run  # noqa: E402

from conftest import make_lora_adapter as make_adapter  # noqa: E402
from test_rerank_eval import toy_dataset  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def _write_corpus_files(tmp: Path, passages: dict) -> dict[str, Path]:
    """The same passages as pyserini JSONL, Tevatron JSONL and TSV."""
    files = {"jsonl": tmp / "corpus.jsonl", "tevatron": tmp / "tevatron.jsonl", "tsv": tmp / "corpus.tsv"}
    files["jsonl"].write_text("".join(json.dumps({"id": d, "contents": t}) + "\n" for d, t in passages.items()))
    files["tevatron"].write_text("".join(json.dumps({"docid": d, "text": t}) + "\n" for d, t in passages.items()))
    files["tsv"].write_text("".join(f"{d}\t{t}\n" for d, t in passages.items()))
    return files


@pytest.fixture
def toy(tmp_path, tiny_base_dir):
    base = tiny_base_dir("llama")
    adapter = make_adapter(base, tmp_path / "adapter", seed=11, family="llama")
    datasets, passages, topics, first = toy_dataset(tmp_path)
    return base, adapter, datasets["toy"], passages, topics, first


def test_rerank_equals_the_pipelines_run_for_every_corpus_format(toy, tmp_path):
    base, adapter, ds, passages, topics, first = toy
    # the pipeline's path: evaluate_checkpoints on the same first stage, as rerank_config calls it
    evaluate_checkpoints(base, [("cfg", 7, adapter)], {"toy": {**ds, "metrics": []}}, passages, 4, [],
                         tmp_path / "pipeline", None, 3, qmax=32, pmax=64, dtype="auto")
    expected = read_run(tmp_path / "pipeline" / "toy" / "step-7.trec")
    files = _write_corpus_files(tmp_path, passages)
    for kind, corpus in files.items():
        out = tmp_path / f"user-{kind}.trec"
        got = U.rerank_any(base, adapter, out, run=ds["run"], topics=ds["topics"], corpus=corpus, depth=4,
                           batch_size=3, qmax=32, pmax=64, tag="mine")
        assert got == expected, kind
        assert read_run(out) == expected and out.read_text().split("\n", 1)[0].endswith(" mine")
    # candidates JSONL carrying query and text (no topics, no corpus); file order is the first stage
    cand = tmp_path / "cands.jsonl"
    with open(cand, "w") as fh:
        for q in sorted(first):
            for d, _ in sorted(first[q].items(), key=lambda kv: -kv[1]):
                fh.write(json.dumps({"qid": q, "query": topics[q], "docid": d, "text": passages[d]}) + "\n")
    assert U.rerank_any(base, adapter, tmp_path / "c.trec", candidates=cand, depth=4, batch_size=3, qmax=32,
                        pmax=64) == expected


def test_hand_made_topics_rerank_and_eval_with_hand_computed_ndcg(toy, tmp_path):
    """A hand-made topic set; eval's nDCG@3 against a hand computation of the reranked order."""
    base, adapter, ds, passages, _, first = toy
    topics = tmp_path / "mine.tsv"
    topics.write_text("t1\tflea life cycle\nt2\tcapital city of france\n")
    run = tmp_path / "mine.trec"
    write_run({"t1": {"d1": 3.0, "d6": 2.0, "d2": 1.0}, "t2": {"d3": 3.0, "d7": 2.0, "d4": 1.0}}, run, tag="hand")
    qrels = tmp_path / "mine.qrels"
    qrels.write_text("t1 0 d1 2\nt1 0 d6 1\nt2 0 d7 3\nt2 0 d3 1\n")
    out = tmp_path / "reranked.trec"
    reranked = U.rerank_any(base, adapter, out, run=run, topics=topics, corpus=_write_corpus_files(tmp_path, passages)["tsv"],
                            depth=3)
    grades = {q: {d: g for d, g in read_qrels(qrels)[q].items()} for q in ("t1", "t2")}

    def ndcg3(q):
        order = [d for d, _ in sorted(reranked[q].items(), key=lambda kv: (kv[1], kv[0]), reverse=True)][:3]
        dcg = sum(grades[q].get(d, 0) / math.log2(i + 2) for i, d in enumerate(order))
        ideal = sorted(grades[q].values(), reverse=True)[:3]
        return dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))

    res = U.evaluate_any({"mine": out}, qrels, ["ndcg@3"], rel_level=2)
    assert res["scores"]["mine"]["ndcg@3"] == pytest.approx((ndcg3("t1") + ndcg3("t2")) / 2, abs=1e-9)
    assert res["comparison"] is None and res["n_judged"] == 2
    assert "relevance level 2" in U.scores_table(res)


def test_real_dl19_subset(shared_data, tiny_base_dir, tmp_path):
    """Five real DL19 queries, the published BM25 top-10, the real passages; the user path equals
    the pipeline path and the BM25 input evaluates to the pipeline's figure for that run."""
    base = tiny_base_dir("pythia")
    adapter = make_adapter(base, tmp_path / "adapter", seed=5, family="pythia")
    corpus = tmp_path / "corpus.jsonl"
    write_corpus_from_rankllm([str(shared_data / "bm25-top100/retrieve_results_dl19.json")], str(corpus))
    topics_all = read_topics(shared_data / "trec-dl/topics.dl19-passage.txt")
    qrels_all = read_qrels(shared_data / "trec-dl/qrels.dl19-passage.txt")
    published = read_run(shared_data / "bm25-top100/trec_results_dl19.txt")
    qids = sorted(q for q in published if q in qrels_all)[:5]
    first = {q: dict(sorted(published[q].items(), key=lambda kv: -kv[1])[:10]) for q in qids}
    run = tmp_path / "bm25.trec"
    write_run(first, run, tag="bm25")
    ds = {"topics": topics_all, "qrels": qrels_all, "run": first, "rel_level": 2, "metrics": []}
    passages = load_passages(corpus, {d for q in first for d in first[q]})
    evaluate_checkpoints(base, [("cfg", 3, adapter)], {"dl19": ds}, passages, 10, [], tmp_path / "pipe", None, 8,
                         qmax=32, pmax=64)
    out = tmp_path / "user.trec"
    user = U.rerank_any(base, adapter, out, run=run, topics=shared_data / "trec-dl/topics.dl19-passage.txt",
                        corpus=corpus, depth=10, batch_size=8, qmax=32, pmax=64)
    assert user == read_run(tmp_path / "pipe" / "dl19" / "step-3.trec")
    assert len(user) == 5 and all(len(d) == 10 for d in user.values())
    res = U.evaluate_any({"bm25": run}, shared_data / "trec-dl/qrels.dl19-passage.txt", ["ndcg@10", "map"], 2)
    from irrepro.evaluate import evaluate_run

    ref, _ = evaluate_run({q: qrels_all[q] for q in qrels_all}, first, ["ndcg@10", "map"], 2)
    assert res["scores"]["bm25"] == pytest.approx(ref)


def test_pyserini_index_as_corpus(toy, tmp_path):
    from irrepro.bm25 import build_index

    base, adapter, ds, passages, _, _ = toy
    files = _write_corpus_files(tmp_path, passages)
    build_index(str(files["jsonl"]), str(tmp_path / "index"), threads=1)
    a = U.rerank_any(base, adapter, tmp_path / "a.trec", run=ds["run"], topics=ds["topics"], corpus=tmp_path / "index",
                     depth=3)
    b = U.rerank_any(base, adapter, tmp_path / "b.trec", run=ds["run"], topics=ds["topics"], corpus=files["jsonl"],
                     depth=3)
    assert a == b


def test_finetune_output_dir_means_its_final_checkpoint(toy, tmp_path):
    import shutil

    base, adapter, ds, passages, _, _ = toy
    out = tmp_path / "lora"
    for step, seed in ((2, 1), (10, 11), (6, 3)):
        make_adapter(base, out / f"checkpoint-{step}", seed=seed, family="llama")
    assert U.resolve_user_adapter(out) == (10, str(out / "checkpoint-10"))
    shutil.rmtree(adapter)
    make_adapter(base, adapter, seed=11, family="llama")
    corpus = _write_corpus_files(tmp_path, passages)["tsv"]
    kw = dict(run=ds["run"], topics=ds["topics"], corpus=corpus, depth=3)
    assert U.rerank_any(base, out, tmp_path / "x.trec", **kw) == U.rerank_any(base, adapter, tmp_path / "y.trec", **kw)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs_name_file_and_line(toy, tmp_path):
    base, adapter, ds, passages, topics, first = toy
    files = _write_corpus_files(tmp_path, passages)
    kw = dict(depth=3)
    # a run query without topic text: the run's line
    short = tmp_path / "short.tsv"
    short.write_text("q1\tflea\nq2\tfrance\n")
    with pytest.raises(TrecFormatError, match=r"run\.trec:\d+: query q3 has no topic text"):
        U.rerank_any(base, adapter, tmp_path / "o.trec", run=ds["run"], topics=short, corpus=files["tsv"], **kw)
    # a candidate not in the corpus: the run's line naming the docid and the corpus
    partial = tmp_path / "partial.tsv"
    partial.write_text("".join(f"{d}\t{t}\n" for d, t in passages.items() if d != "d2"))
    with pytest.raises(TrecFormatError, match=r"run\.trec:\d+: docid d2 .* not in the corpus .*partial\.tsv"):
        U.rerank_any(base, adapter, tmp_path / "o.trec", run=ds["run"], topics=ds["topics"], corpus=partial, **kw)
    # malformed corpus lines
    bad_tsv = tmp_path / "bad.tsv"
    bad_tsv.write_text("d1\ttext\nd2\ta\tb\tc\n")
    with pytest.raises(TrecFormatError, match=r"bad\.tsv:2: expected 'docid<TAB>text'"):
        U.read_corpus(bad_tsv)
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"id": "d1", "contents": "x"}\n{"id": "d2", "contents": \n')
    with pytest.raises(TrecFormatError, match=r"bad\.jsonl:2: not valid JSON .*; expected one JSON object per line"):
        U.read_corpus(bad_jsonl)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "d1", "contents": "x"}\n\n{"id": "d1", "contents": "y"}\n')
    with pytest.raises(TrecFormatError, match=r"dup\.jsonl:3: duplicate docid d1 \(first on line 1\)"):
        U.read_corpus(dup)
    with pytest.raises(TrecFormatError, match=r"corpus\.csv:0: unknown corpus format"):
        (tmp_path / "corpus.csv").write_text("x")
        U.read_corpus(tmp_path / "corpus.csv")
    # candidates JSONL problems
    cand = tmp_path / "c.jsonl"
    for text, msg in [
        ('{"qid": "q1", "docid": "d1", "query": "a"}\n{"qid": "q1", "query": "a"}\n', r"c\.jsonl:2: missing key 'docid'"),
        ('{"qid": "q1", "docid": "d1", "query": "a"}\n{"qid": "q1", "docid": "d2", "query": "b"}\n',
         r"c\.jsonl:2: qid q1 has another query than on line 1"),
        ('{"qid": "q1", "docid": "d1", "query": "a", "score": "high"}\n', r"c\.jsonl:1: 'score' must be a finite"),
        ('{"qid": "q1", "docid": "d1"}\n', r"c\.jsonl:1: missing key 'query'"),
        ('["q1", "d1"]\n', r"c\.jsonl:1: expected a JSON object"),
    ]:
        cand.write_text(text)
        with pytest.raises(TrecFormatError, match=msg):
            U.read_candidates_jsonl(cand)
    # a run file error is the TREC reader's file:line error
    broken = tmp_path / "broken.trec"
    broken.write_text("q1 Q0 d1 1 1.0 x\nq1 Q0 d2 two 0.5 x\n")
    with pytest.raises(TrecFormatError, match=r"broken\.trec:2: expected an integer rank"):
        U.rerank_any(base, adapter, tmp_path / "o.trec", run=broken, topics=ds["topics"], corpus=files["tsv"], **kw)
    with pytest.raises(TrecFormatError, match=r"nowhere:0: adapter not found"):
        U.resolve_user_adapter(tmp_path / "nowhere")
    # eval: qrels that judge none of the run's queries
    other = tmp_path / "other.qrels"
    other.write_text("x1 0 d1 1\n")
    with pytest.raises(TrecFormatError, match=r"run\.trec:0: none of its 3 queries is judged"):
        U.evaluate_any({"run": ds["run"]}, other, ["ndcg@10"], 2)
    with pytest.raises(ValueError, match="unknown metric"):
        U.evaluate_any({"run": ds["run"]}, ds["qrels"], ["ndcg@x"], 2)


def test_run_names():
    assert U.run_names(["a/bm25.trec", "x=a/bm25.trec", "b/run.txt"]) == {"bm25": "a/bm25.trec", "x": "a/bm25.trec",
                                                                           "run": "b/run.txt"}
    with pytest.raises(ValueError, match="NAME=PATH"):
        U.run_names(["a/bm25.trec", "b/bm25.trec"])


# ----------------------------------------------------------------------------- the commands
def test_rerank_and_eval_commands(toy, tmp_path, root, capsys):
    from irrepro.cli import main

    base, adapter, ds, passages, topics, first = toy
    corpus = _write_corpus_files(tmp_path, passages)["jsonl"]
    params = str(root / "params.yaml")
    out = tmp_path / "cli" / "reranked.trec"
    assert main(["rerank", "--params", params, "--base", str(base), "--adapter", str(adapter), "--topics",
                 ds["topics"], "--run", ds["run"], "--corpus", str(corpus), "--out", str(out), "--depth", "4",
                 "--tag", "cli"]) == 0
    assert U.rerank_any(base, adapter, tmp_path / "api.trec", run=ds["run"], topics=ds["topics"], corpus=corpus,
                        depth=4, batch_size=64, qmax=32, pmax=64) == read_run(out)  # params' mini batch/qmax/pmax
    capsys.readouterr()
    tex, js = tmp_path / "cmp.tex", tmp_path / "cmp.json"
    assert main(["eval", "--params", params, "--qrels", ds["qrels"], "--rel-level", "2", "--metrics", "ndcg@10", "map",
                 "--run", f"mine={out}", "--run", f"bm25={ds['run']}", "--latex", str(tex), "--out-json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert "| mine |" in printed and "| bm25 |" in printed and "Benjamini-Hochberg" in printed
    doc = json.loads(js.read_text())
    assert doc["comparison"]["correction"] == "bh" and doc["comparison"]["family_size"] == {"ndcg@10": 1, "map": 1}
    assert doc["scores"]["mine"]["ndcg@10"] == pytest.approx(
        U.evaluate_any({"m": out}, ds["qrels"], ["ndcg@10"], 2)["scores"]["m"]["ndcg@10"])
    assert "\\begin{table*}" in tex.read_text() and "MAP-l2" in tex.read_text()
    # bad input: exit 2, one line naming the file and the line
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 1.0 x\nq1 Q0 d2 1\n")
    assert main(["eval", "--params", params, "--qrels", ds["qrels"], "--run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: expected 6 whitespace-separated columns" in err and "Traceback" not in err
    assert main(["eval", "--params", params, "--qrels", ds["qrels"], "--run", str(out), "--latex", str(tex)]) == 2
    assert "--latex needs two or more --run" in capsys.readouterr().err
