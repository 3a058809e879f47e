"""Every bad input gets a one-line answer (issue 12), table-driven over the stage commands.

Each case builds one malformed input in a scratch directory, runs the command in-process
(``irrepro.cli.main``) with ``--log``, and asserts: the exit code (2 bad input, 1 failure),
that the error line ``irrepro <command>: ...`` is one line naming the file and line (or the
key), that the rule log holds the same line (and the traceback stays out of stderr), and
that no output was left in place. Cases fail fast, before any model is loaded.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from irrepro.cli import main

ROOT = Path(__file__).resolve().parents[1]
CANARY = "sk-CANARY-h15-0123456789abcdef"


@dataclass
class P:
    """A scratch project: params copy, raw data, log path."""

    tmp: Path
    raw: Path
    params: Path
    log: Path

    def file(self, rel: str, text: str) -> Path:
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def edit_params(self, old: str, new: str) -> None:
        text = self.params.read_text()
        assert old in text, old
        self.params.write_text(text.replace(old, new, 1))

    def common(self) -> list[str]:
        return ["--params", str(self.params), "--log", str(self.log)]


@dataclass
class Case:
    id: str
    build: Callable[[P], list[str]]  # returns the argv after the command name
    command: str
    code: int = 2
    names: tuple[str, ...] = ()      # substrings the error line must hold (file:line, key)
    outputs: tuple[str, ...] = ()    # paths (relative to tmp) that must not exist afterwards
    secret: str | None = None        # must appear nowhere


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("raw") / "raw"
    assert main(["download", "--params", str(ROOT / "params.yaml"), "--out", str(out)]) == 0
    return out


@pytest.fixture
def proj(tmp_path, raw_dir, monkeypatch):
    # the previous case's handlers write to its (closed) captured stderr; builders log before main()
    for handler in logging.getLogger().handlers[:]:
        logging.getLogger().removeHandler(handler)
        handler.close()
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    return P(tmp_path, raw_dir, params, tmp_path / "logs" / "rule.log")


def _raw_copy(p: P) -> Path:
    """A writable copy of the raw directory (for cases that damage a raw file)."""
    dest = p.tmp / "raw"
    if not dest.exists():
        shutil.copytree(p.raw, dest)
    return dest


def _run_file(p: P, name: str, lines: list[str]) -> Path:
    return p.file(f"runs/{name}", "".join(line + "\n" for line in lines))


def _bm25_runs(p: P, edit: Callable[[list[str]], list[str]] | None = None) -> Path:
    """BM25-like runs for every mini dataset, from the published top-100 runs."""
    runs = p.tmp / "runs"
    runs.mkdir(exist_ok=True)
    for ds in ("dl19", "dl20"):
        lines = (p.raw / "bm25-top100" / f"trec_results_{ds}.txt").read_text().splitlines()
        lines = [" ".join(line.split()[:5] + ["bm25"]) for line in lines if line.strip()]
        if edit and ds == "dl19":
            lines = edit(lines)
        (runs / f"{ds}.trec").write_text("".join(f"{line}\n" for line in lines))
    return runs


def _corpus(p: P, extra: list[str] | None = None, broken_line: int | None = None) -> Path:
    lines = [json.dumps({"id": str(i), "contents": f"passage {i} about fleas"}) for i in range(1, 6)]
    lines += extra or []
    if broken_line:
        lines.insert(broken_line - 1, '{"id": "9", "contents": "unterminated')
    return p.file("corpus/corpus.jsonl", "\n".join(lines) + "\n")


def _groups(p: P, records: list[dict], broken_line: int | None = None) -> Path:
    lines = [json.dumps(r) for r in records]
    if broken_line:
        lines.insert(broken_line - 1, '{"query_id": "1", "query": ')
    return p.file("train/groups.jsonl", "\n".join(lines) + "\n")


def _group(qid: str, n_neg: int = 15) -> dict:
    return {"query_id": qid, "query": f"query {qid}", "positive_passages": [{"docid": "p", "text": "pos"}],
            "negative_passages": [{"docid": f"n{i}", "text": f"neg {i}"} for i in range(n_neg)]}


def _finetune(p: P, groups: str, base: str | None = None) -> list[str]:
    base = base or str(p.tmp / "base")
    return ["--family", "llama", "--rank", "2", "--targets", "mha", "--base", base, "--groups", groups,
            "--out", str(p.tmp / "lora/llama-r2-mha")]


def _conv(p: P, mutate: Callable[[dict], None] | None = None) -> Path:
    """A structured conversation file (a published recipe conversation, converted); ``mutate``
    edits the first human turn of the first record."""
    from irrepro.syntod.format import read_jsonl, write_jsonl

    path = p.tmp / "conv.jsonl"
    write_jsonl(read_jsonl(p.raw / "syntod" / "recipe_test_gemini_v3.jsonl")[:2], path)
    if mutate:
        lines = path.read_text().splitlines()
        rec = json.loads(lines[0])
        mutate(next(t for t in rec["turns"] if t["role"] == "human"))
        lines[0] = json.dumps(rec)
        path.write_text("\n".join(lines) + "\n")
    return path


def _set_intent(intent):
    def mutate(turn):
        turn.update(intent=intent, annotation=None, slots=None if intent is None else {})
    return mutate


def _graph_yaml(p: P, dup: bool) -> Path:
    text = (ROOT / "workflow/irrepro/resources/syntod/cooking.yaml").read_text()
    if dup:
        text = text.replace("page_size: 3\n", "page_size: 3\npage_size: 4\n", 1)
    return p.file("graph.yaml", text)


def _base(p: P, damage: Callable[[Path], None]) -> Path:
    """A tiny llama base (real config, weights and tokenizer) with ``damage`` done to it."""
    from conftest import TINY_TEXTS, save_tiny_base
    from irrepro.tiny import train_tokenizer

    base = save_tiny_base(p.tmp / "base", "llama", train_tokenizer(TINY_TEXTS, vocab_size=300))
    damage(base)
    return base


def _truncate_tokenizer(base: Path) -> None:
    (base / "tokenizer.json").write_text((base / "tokenizer.json").read_text()[:1000])


def _foreign_tokenizer(base: Path) -> None:
    """Valid JSON the tokenizers library cannot read (it names no file: 'untagged enum ModelUntagged')."""
    doc = json.loads((base / "tokenizer.json").read_text())
    doc["model"]["type"] = "NoSuchModel"
    (base / "tokenizer.json").write_text(json.dumps(doc))


def _full_corpus(p: P) -> str:
    """The mini corpus (every passage of the published top-100 runs), as the corpus stage writes it."""
    from irrepro.bm25 import write_corpus_from_rankllm

    out = p.tmp / "corpus" / "full.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_corpus_from_rankllm([str(p.raw / "bm25-top100" / f"retrieve_results_{ds}.json") for ds in ("dl19", "dl20")],
                              str(out))
    return str(out)


def _rerank_eval(p: P, adapters: str, base: str | None = None, corpus: str | None = None) -> list[str]:
    return ["--config", "llama-r2-mha", "--base", base or str(p.tmp / "base"), "--adapters", adapters,
            "--raw", str(p.raw), "--runs", str(_bm25_runs(p)), "--corpus", corpus or str(_corpus(p)),
            "--out", str(p.tmp / "rr/llama-r2-mha")]


def _fake_index(p: P) -> str:
    """A directory that looks like a Lucene index (the cases fail before searching it)."""
    (p.tmp / "index").mkdir(exist_ok=True)
    (p.tmp / "index" / "segments_1").write_bytes(b"")
    return str(p.tmp / "index")


def _topics_bad(p: P) -> Path:
    raw = _raw_copy(p)
    topics = raw / "trec-dl" / "topics.dl19-passage.txt"
    lines = topics.read_text().splitlines()
    lines[2] = lines[2].replace("\t", " ")
    topics.write_text("\n".join(lines) + "\n")
    return raw


def _qrels_bad(p: P) -> Path:
    raw = _raw_copy(p)
    qrels = raw / "trec-dl" / "qrels.dl19-passage.txt"
    lines = qrels.read_text().splitlines()
    lines[4] = lines[4] + " extra"
    qrels.write_text("\n".join(lines) + "\n")
    return raw


def _evaluate(p: P, raw: Path | None = None, edit=None) -> list[str]:
    return ["--raw", str(raw or p.raw), "--runs", str(_bm25_runs(p, edit)), "--out", str(p.tmp / "m/bm25.json"),
            "--perquery", str(p.tmp / "m/bm25_perquery.tsv")]


def _collect(p: P, steps: dict[str, list[int]]) -> list[str]:
    """Rerank runs of one config: ``{dataset: [steps]}``, each a copy of the BM25 run."""
    runs = _bm25_runs(p)
    for ds, ss in steps.items():
        for s in ss:
            d = p.tmp / "rr" / "llama-r2-mha" / ds
            d.mkdir(parents=True, exist_ok=True)
            shutil.copy(runs / f"{ds}.trec", d / f"step-{s}.trec")
    return ["--raw", str(p.raw), "--runs", str(runs), "--rerank-runs", str(p.tmp / "rr"),
            "--out-tsv", str(p.tmp / "res/ck.tsv"), "--out-json", str(p.tmp / "res/rerank.json"),
            "--out-md", str(p.tmp / "res/sig.md")]


def _truncate(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 4]))


def _one_config_params(p: P) -> None:
    """Fine-tuning grid cut to llama-r2-mha, 15 steps with checkpoints every 5 (what _collect builds)."""
    import yaml

    P_ = yaml.safe_load(p.params.read_text())
    P_["finetune"].update(families=["llama"], ranks=[2], targets=["mha"])
    P_["finetune"]["max_steps"]["mini"] = 15
    P_["finetune"]["save_steps"]["mini"] = 5
    P_["ablate"].update(families=["llama"], ranks=[2], targets=["mha"])
    p.params.write_text(yaml.safe_dump(P_, sort_keys=False))


def _collect_missing_final(p: P) -> list[str]:
    _one_config_params(p)
    # the run of the final checkpoint (15) is missing
    return _collect(p, {"dl19": [5, 10]})


CASES = [
    # ---------------------------------------------------------------- params (every command)
    Case("params-duplicate-key", lambda p: (p.edit_params("  k1: 0.9\n", "  k1: 0.9\n  k1: 1.2\n"), [])[1],
         "check-params", names=("params.yaml:", "duplicate key 'k1'", "first at line")),
    Case("params-duplicate-key-bm25", lambda p: (p.edit_params("  b: 0.4\n", "  b: 0.4\n  b: 0.5\n"),
                                                 ["--raw", str(p.raw), "--index", "x", "--out", "runs"])[1],
         "bm25", names=("params.yaml:", "duplicate key 'b'", "first at line"), outputs=("runs",)),
    Case("params-not-yaml", lambda p: (p.params.write_text(p.params.read_text() + "bm25: [\n"), [])[1],
         "check-params", names=("params.yaml:", "not valid YAML")),
    Case("params-missing", lambda p: (p.params.unlink(), [])[1], "check-params", names=("params.yaml", "not found")),
    Case("params-schema-value", lambda p: (p.edit_params("    mini: rankllm-top100", "    mini: wiki"), [])[1],
         "check-params", names=("params.yaml", "bm25.corpus", "wiki")),
    Case("params-top-level-list", lambda p: (p.params.write_text("- 1\n- 2\n"), [])[1], "check-params",
         names=("params.yaml", "mapping")),
    Case("params-api-key", lambda p: (p.edit_params("    api_key_env: OPENAI_API_KEY\n",
                                                    f"    api_key_env: OPENAI_API_KEY\n    api_key: {CANARY}\n"), [])[1],
         "check-params", names=("params.yaml", "syntod.llm", "api_key"), secret=CANARY),
    Case("params-api-key-generate", lambda p: (p.edit_params("    api_key_env: OPENAI_API_KEY\n",
                                                             f"    api_key_env: OPENAI_API_KEY\n    token: {CANARY}\n"),
                                               ["--domain", "cooking", "--method", "naive", "--raw", str(p.raw),
                                                "--out-dir", "gen"])[1],
         "syntod-generate", names=("params.yaml", "syntod.llm", "token"), outputs=("gen",), secret=CANARY),
    Case("params-per-profile-half", lambda p: (p.edit_params("  k1: 0.9\n", "  k1: {mini: 0.9}\n"), [])[1],
         "check-params", names=("params.yaml", "bm25.k1")),
    # ---------------------------------------------------------------- corpus / index / bm25
    Case("corpus-raw-empty", lambda p: ["--raw", str(p.tmp / "empty"), "--out", "c/corpus.jsonl"], "corpus",
         names=("retrieve_results_dl19.json", "missing"), outputs=("c/corpus.jsonl",)),
    Case("corpus-json-broken", lambda p: (lambda raw: ((raw / "bm25-top100/retrieve_results_dl19.json").write_text('[{"query": 1,\n "hits": [}\n'),
                                                       ["--raw", str(raw), "--out", "c/corpus.jsonl"])[1])(_raw_copy(p)),
         "corpus", names=("retrieve_results_dl19.json:2",), outputs=("c/corpus.jsonl",)),
    Case("index-corpus-missing", lambda p: ["--corpus", "nope/corpus.jsonl", "--out", "idx"], "index",
         names=("corpus.jsonl", "not found"), outputs=("idx",)),
    Case("index-corpus-broken-line", lambda p: ["--corpus", str(_corpus(p, broken_line=3)), "--out", "idx"], "index",
         names=("corpus.jsonl:3",), outputs=("idx",)),
    Case("index-corpus-duplicate-id", lambda p: ["--corpus", str(_corpus(p, extra=[json.dumps({"id": "2", "contents": "again"})])),
                                                 "--out", "idx"], "index",
         names=("corpus.jsonl:6", "duplicate", "'2'"), outputs=("idx",)),
    Case("bm25-raw-empty", lambda p: ["--raw", str(p.tmp / "empty"), "--index", _fake_index(p), "--out", "runs/bm25"], "bm25",
         names=("topics.dl19-passage.txt", "missing"), outputs=("runs/bm25",)),
    Case("bm25-topics-no-tab", lambda p: ["--raw", str(_topics_bad(p)), "--index", _fake_index(p), "--out", "runs/bm25"],
         "bm25", names=("topics.dl19-passage.txt:3", "tab"), outputs=("runs/bm25",)),
    Case("bm25-index-missing", lambda p: ["--raw", str(p.raw), "--index", str(p.tmp / "noindex"), "--out", "runs/bm25"],
         "bm25", names=("noindex",), outputs=("runs/bm25",)),
    # Lucene's exception through pyjnius: the index directory and the Java class, not the JVM's stack
    Case("bm25-index-unreadable", lambda p: ["--raw", str(p.raw), "--index", _fake_index(p), "--out", "runs/bm25"],
         "bm25", names=("index: not a readable Lucene index", "Exception"), outputs=("runs/bm25",)),
    # ---------------------------------------------------------------- evaluate
    Case("evaluate-run-missing", lambda p: ["--raw", str(p.raw), "--runs", str(p.tmp / "none"), "--out", "m/bm25.json",
                                            "--perquery", "m/pq.tsv"], "evaluate",
         names=("dl19.trec",), outputs=("m/bm25.json", "m/pq.tsv")),
    Case("evaluate-run-bad-line", lambda p: _evaluate(p, edit=lambda ls: ls[:2] + ["1 Q0 x one 1.0 t"] + ls[2:]),
         "evaluate", names=("dl19.trec:3", "rank"), outputs=("m/bm25.json",)),
    Case("evaluate-run-empty", lambda p: _evaluate(p, edit=lambda ls: []), "evaluate",
         names=("dl19.trec", "judged queries"), outputs=("m/bm25.json",)),
    Case("evaluate-run-unjudged", lambda p: _evaluate(p, edit=lambda ls: [f"x{line}" for line in ls]), "evaluate",
         names=("dl19.trec", "0 of 43 judged queries"), outputs=("m/bm25.json",)),
    Case("evaluate-run-truncated", lambda p: _evaluate(p, edit=lambda ls: ls[: len(ls) // 3]), "evaluate",
         names=("dl19.trec", "of 43 judged queries"), outputs=("m/bm25.json",)),
    Case("evaluate-qrels-bad", lambda p: _evaluate(p, raw=_qrels_bad(p)), "evaluate",
         names=("qrels.dl19-passage.txt:5", "columns"), outputs=("m/bm25.json",)),
    # ---------------------------------------------------------------- train-groups
    Case("train-groups-corpus-broken", lambda p: ["--raw", str(p.raw), "--runs", str(_bm25_runs(p)),
                                                  "--corpus", str(_corpus(p, broken_line=2)), "--out", "g.jsonl"],
         "train-groups", names=("corpus.jsonl:2", "JSON"), outputs=("g.jsonl",)),
    Case("train-groups-corpus-duplicate-id", lambda p: ["--raw", str(p.raw), "--runs", str(_bm25_runs(p)),
                                                        "--corpus", str(_corpus(p, extra=[json.dumps({"id": "3", "contents": "x"})])),
                                                        "--out", "g.jsonl"],
         "train-groups", names=("corpus.jsonl:6", "duplicate"), outputs=("g.jsonl",)),
    Case("train-groups-run-missing", lambda p: ["--raw", str(p.raw), "--runs", str(p.tmp / "none"),
                                                "--corpus", str(_corpus(p)), "--out", "g.jsonl"],
         "train-groups", names=("dl20.trec",), outputs=("g.jsonl",)),
    Case("train-groups-corpus-missing", lambda p: ["--raw", str(p.raw), "--runs", str(_bm25_runs(p)),
                                                   "--corpus", str(p.tmp / "none.jsonl"), "--out", "g.jsonl"],
         "train-groups", names=("none.jsonl",), outputs=("g.jsonl",)),
    # ---------------------------------------------------------------- finetune
    Case("finetune-groups-missing", lambda p: _finetune(p, str(p.tmp / "nogroups.jsonl")), "finetune",
         names=("nogroups.jsonl",), outputs=("lora/llama-r2-mha", "lora/llama-r2-mha.partial")),
    Case("finetune-groups-broken", lambda p: _finetune(p, str(_groups(p, [_group("1"), _group("2")], broken_line=2))),
         "finetune", names=("groups.jsonl:2", "JSON"), outputs=("lora/llama-r2-mha", "lora/llama-r2-mha.partial")),
    Case("finetune-groups-duplicate-qid", lambda p: _finetune(p, str(_groups(p, [_group("1"), _group("2"), _group("1")]))),
         "finetune", names=("groups.jsonl:3", "duplicate query_id '1'"),
         outputs=("lora/llama-r2-mha", "lora/llama-r2-mha.partial")),
    Case("finetune-group-without-negatives", lambda p: _finetune(p, str(_groups(p, [_group("1", 0), _group("2", 3)]))),
         "finetune", names=("groups.jsonl:1", "group_size"), outputs=("lora/llama-r2-mha", "lora/llama-r2-mha.partial")),
    Case("finetune-base-empty", lambda p: ((p.tmp / "base").mkdir(), _finetune(p, str(_groups(p, [_group("1")]))))[1],
         "finetune", names=("base", "config.json"), outputs=("lora/llama-r2-mha", "lora/llama-r2-mha.partial")),
    Case("finetune-base-tokenizer-truncated", lambda p: _finetune(p, str(_groups(p, [_group("1")])),
                                                                  base=str(_base(p, _truncate_tokenizer))),
         "finetune", names=("base/tokenizer.json:", "not valid JSON"),
         outputs=("lora/llama-r2-mha", "lora/llama-r2-mha.partial")),
    Case("finetune-base-missing", lambda p: _finetune(p, str(_groups(p, [_group("1")])), base=str(p.tmp / "nobase")),
         "finetune", names=("nobase",), outputs=("lora/llama-r2-mha", "lora/llama-r2-mha.partial")),
    Case("finetune-tod-train-missing", lambda p: ["--base", str(p.tmp / "base"), "--train",
                                                  str(p.tmp / "notrain.jsonl"), "--out", "tod"], "finetune-tod",
         names=("notrain.jsonl",), outputs=("tod", "tod.partial")),
    Case("finetune-tod-train-broken", lambda p: ["--base", str(p.tmp / "base"), "--train",
                                                 str(p.file("train.jsonl", '{"text": "a"}\n{"text": \n')), "--out", "tod"],
         "finetune-tod", names=("train.jsonl:2",), outputs=("tod", "tod.partial")),
    # ---------------------------------------------------------------- rerank-eval / ablate
    Case("rerank-eval-adapters-missing", lambda p: _rerank_eval(p, str(p.tmp / "noadapters")), "rerank-eval",
         names=("noadapters",), outputs=("rr/llama-r2-mha",)),
    Case("rerank-eval-no-checkpoints", lambda p: ((p.tmp / "ad").mkdir(), _rerank_eval(p, str(p.tmp / "ad")))[1],
         "rerank-eval", names=("ad", "checkpoint"), outputs=("rr/llama-r2-mha",)),
    Case("rerank-eval-truncated-adapter", lambda p: _rerank_eval(p, str(_truncated_adapter(p))), "rerank-eval",
         names=("checkpoint-5", "adapter_model.safetensors"), outputs=("rr/llama-r2-mha",)),
    Case("rerank-eval-adapter-missing-config", lambda p: _rerank_eval(p, str(_truncated_adapter(p, drop_config=True))),
         "rerank-eval", names=("checkpoint-5", "adapter_config.json"), outputs=("rr/llama-r2-mha",)),
    Case("rerank-eval-base-tokenizer-truncated", lambda p: _rerank_eval(p, str(_truncated_adapter(p, bad=None)),
                                                                        base=str(_base(p, _truncate_tokenizer))),
         "rerank-eval", names=("base/tokenizer.json:", "not valid JSON"), outputs=("rr/llama-r2-mha",)),
    Case("rerank-eval-base-tokenizer-foreign", lambda p: _rerank_eval(p, str(_truncated_adapter(p, bad=None)),
                                                                      base=str(_base(p, _foreign_tokenizer)),
                                                                      corpus=_full_corpus(p)),
         "rerank-eval", names=("base: cannot load the tokenizer",), outputs=("rr/llama-r2-mha",)),
    Case("ablate-truncated-adapter", lambda p: ["--config", "llama-r2-mha", "--base", str(p.tmp / "b"), "--adapters",
                                                str(_truncated_adapter(p, bad=10)), "--raw", str(p.raw), "--runs",
                                                str(_bm25_runs(p)), "--corpus", str(_corpus(p)), "--out", "ab/llama-r2-mha"],
         "ablate", names=("checkpoint-10/adapter_model.safetensors", "truncated"), outputs=("ab/llama-r2-mha",)),
    Case("ablate-adapters-missing", lambda p: ["--config", "llama-r2-mha", "--base", "b", "--adapters",
                                               str(p.tmp / "noadapters"), "--raw", str(p.raw), "--runs", str(_bm25_runs(p)),
                                               "--corpus", str(_corpus(p)), "--out", "ab/llama-r2-mha"],
         "ablate", names=("noadapters",), outputs=("ab/llama-r2-mha",)),
    # ---------------------------------------------------------------- collect / ablate-collect / report
    Case("collect-curve-point-missing", lambda p: (_one_config_params(p), _collect(p, {"dl19": [5, 15]}))[1], "collect",
         names=("step-10.trec",), outputs=("res/ck.tsv",)),
    Case("collect-run-truncated", lambda p: (_one_config_params(p), _collect(p, {"dl19": [5, 10, 15]}),
                                             _truncate(p.tmp / "rr/llama-r2-mha/dl19/step-10.trec"))[1], "collect",
         names=("step-10.trec", "judged queries"), outputs=("res/ck.tsv",)),
    Case("collect-config-missing", lambda p: (_one_config_params(p), _collect(p, {}))[1], "collect",
         names=("llama-r2-mha",), outputs=("res/ck.tsv", "res/rerank.json", "res/sig.md")),
    Case("collect-final-missing", _collect_missing_final, "collect",
         names=("dl19", "step-15", "finetune.max_steps"), outputs=("res/ck.tsv", "res/rerank.json", "res/sig.md")),
    Case("collect-bad-run-line", lambda p: (_one_config_params(p), _collect(p, {"dl19": [5, 10, 15]}),
                                            (p.tmp / "rr/llama-r2-mha/dl19/step-5.trec").write_text("1 Q0 d 1 nan t\n"))[1],
         "collect", names=("step-5.trec:1", "finite"), outputs=("res/ck.tsv",)),
    Case("ablate-collect-runs-missing", lambda p: (_one_config_params(p),
                                                   ["--raw", str(p.raw), "--runs", str(_bm25_runs(p)), "--ablate-runs",
                                                    str(p.tmp / "noab"), "--out-tsv", "a.tsv", "--out-json", "a.json"])[1],
         "ablate-collect", names=("noab",), outputs=("a.tsv", "a.json")),
    Case("report-metrics-missing", lambda p: ["--metrics", str(p.tmp / "nometrics.json"), "--out", "report.md"], "report",
         names=("nometrics.json",), outputs=("report.md",)),
    Case("report-metrics-broken", lambda p: ["--metrics", str(p.file("m.json", '{"bm25":\n {"dl19": }\n')), "--out", "report.md"],
         "report", names=("m.json:2", "JSON"), outputs=("report.md",)),
    # ---------------------------------------------------------------- SynTOD
    Case("syntod-check-missing", lambda p: ["--inputs", str(p.tmp / "no.jsonl"), "--out", "chk.json"], "tools syntod-check",
         names=("no.jsonl",), outputs=("chk.json",)),
    Case("syntod-check-broken-line", lambda p: ["--inputs", str(p.file("c.jsonl", _conv(p).read_text() + "{\"id\": \n")), "--out", "chk.json"],
         "tools syntod-check", names=("c.jsonl:3",), outputs=("chk.json",)),
    Case("syntod-check-unknown-intent", lambda p: ["--strict", "--inputs", str(_conv(p, _set_intent("fly_to_moon"))),
                                                   "--out", "chk.json"],
         "tools syntod-check", names=("conv.jsonl:1", "fly_to_moon"), outputs=("chk.json",)),
    Case("syntod-check-turn-without-intent", lambda p: ["--strict", "--inputs", str(_conv(p, _set_intent(None))),
                                                        "--out", "chk.json"],
         "tools syntod-check", names=("conv.jsonl:1", "intent"), outputs=("chk.json",)),
    Case("syntod-walks-graph-duplicate-key", lambda p: ["--graph", str(_graph_yaml(p, dup=True)), "--seeds",
                                                        str(p.raw / "syntod/recipe_seed_test_set.jsonl"), "--n", "2",
                                                        "--out", "w.jsonl"],
         "tools syntod-walks", names=("graph.yaml:40", "duplicate key 'page_size'", "first at line 39"), outputs=("w.jsonl",)),
    Case("syntod-walks-graph-missing", lambda p: ["--graph", str(p.tmp / "nograph.yaml"), "--seeds", "s", "--n", "2",
                                                  "--out", "w.jsonl"], "tools syntod-walks",
         names=("nograph.yaml", "not found"), outputs=("w.jsonl",)),
    Case("syntod-walks-seeds-missing", lambda p: ["--domain", "cooking", "--seeds", str(p.tmp / "noseeds.jsonl"), "--n", "2",
                                                  "--out", "w.jsonl"], "tools syntod-walks",
         names=("noseeds.jsonl",), outputs=("w.jsonl",)),
    Case("syntod-walks-seeds-broken", lambda p: ["--domain", "cooking", "--seeds", str(p.file("s.jsonl", "\n{\"x\n")),
                                                 "--n", "2", "--out", "w.jsonl"], "tools syntod-walks",
         names=("s.jsonl:2",), outputs=("w.jsonl",)),
    Case("syntod-walks-stage-no-seeds", lambda p: ["--domain", "cooking", "--out", "w.jsonl", "--stats", "ws.json"],
         "syntod-walks", names=("--raw",), outputs=("w.jsonl", "ws.json")),
    Case("syntod-walks-stage-seeds-missing", lambda p: ["--domain", "cooking", "--seeds", str(p.tmp / "noseeds.jsonl"),
                                                      "--out", "w.jsonl", "--stats", "ws.json"],
         "syntod-walks", names=("noseeds.jsonl",), outputs=("w.jsonl", "ws.json")),
    Case("syntod-generate-walks-missing", lambda p: ["--domain", "cooking", "--method", "graph", "--raw", str(p.raw),
                                                     "--walks", str(p.tmp / "nowalks.jsonl"), "--out-dir", "gen"],
         "syntod-generate", names=("nowalks.jsonl",), outputs=("gen", "gen.partial")),
    Case("syntod-generate-walks-broken", lambda p: ["--domain", "cooking", "--method", "graph", "--raw", str(p.raw),
                                                    "--walks", str(p.file("w.jsonl", "{\"id\": \n")), "--out-dir", "gen"],
         "syntod-generate", names=("w.jsonl:1",), outputs=("gen", "gen.partial")),
    Case("syntod-generate-graph-without-walks", lambda p: ["--domain", "cooking", "--method", "graph", "--raw", str(p.raw),
                                                           "--out-dir", "gen"],
         "syntod-generate", names=("walks",), outputs=("gen", "gen.partial")),
    Case("syntod-items-raw-empty", lambda p: ["--domain", "cooking", "--raw", str(p.tmp / "empty"), "--out-dir", "items",
                                             "--metrics", "items.json"], "syntod-items",
         names=("recipe_seed_test_set.jsonl",), outputs=("items", "items.json")),
    Case("syntod-base-raw-empty", lambda p: ["--raw", str(p.tmp / "empty"), "--out", "sbase"], "syntod-base",
         names=("recipe_seed_test_set.jsonl",), outputs=("sbase",)),
    Case("evaluate-tod-heldout-missing", lambda p: ["--domain", "cooking", "--method", "graph", "--base", str(p.tmp / "b"),
                                                       "--adapter", str(p.tmp / "a"), "--raw", str(p.raw), "--heldout",
                                                       str(p.tmp / "noheld.jsonl"), "--out", "r.json", "--predictions", "pr.jsonl"],
         "evaluate-tod", names=("noheld.jsonl",), outputs=("r.json", "pr.jsonl")),
    Case("evaluate-tod-base-tokenizer-truncated",
         lambda p: ["--domain", "cooking", "--method", "graph", "--base", str(_base(p, _truncate_tokenizer)),
                    "--adapter", str(_truncated_adapter(p, bad=None) / "checkpoint-10"), "--raw", str(p.raw),
                    "--heldout", str(_conv(p)), "--out", "r.json", "--predictions", "pr.jsonl"],
         "evaluate-tod", names=("base/tokenizer.json:", "not valid JSON"), outputs=("r.json", "pr.jsonl")),
    Case("evaluate-tod-adapter-missing", lambda p: ["--domain", "cooking", "--method", "graph", "--base", str(p.tmp / "b"),
                                                       "--adapter", str(p.tmp / "noadapter"), "--raw", str(p.raw), "--heldout",
                                                       str(_conv(p)), "--out", "r.json",
                                                       "--predictions", "pr.jsonl"],
         "evaluate-tod", names=("noadapter",), outputs=("r.json", "pr.jsonl")),
    Case("syntod-collect-results-missing", lambda p: ["--results", str(p.tmp / "nores.json"), "--out-tsv", "t.tsv",
                                                      "--out-json", "t.json", "--out-md", "t.md"], "syntod-collect",
         names=("nores.json",), outputs=("t.tsv", "t.json", "t.md")),
    Case("syntod-collect-results-broken", lambda p: ["--results", str(p.file("res.json", "{\n\"rows\": [}\n")),
                                                     "--out-tsv", "t.tsv", "--out-json", "t.json", "--out-md", "t.md"],
         "syntod-collect", names=("res.json:2",), outputs=("t.tsv", "t.json", "t.md")),
    Case("syntod-collect-results-dir-missing", lambda p: ["--results-dir", str(p.tmp / "nodir"), "--out-tsv", "t.tsv",
                                                          "--out-json", "t.json", "--out-md", "t.md"], "syntod-collect",
         names=("nodir", "cooking-graph.json"), outputs=("t.tsv", "t.json", "t.md")),
    # ---------------------------------------------------------------- figures, published, LLM check
    Case("figure-notebook-missing", lambda p: ["--name", "f", "--notebook", str(p.tmp / "no.ipynb"), "--input", "a=b",
                                               "--out-dir", "figs", "--out-notebook", "nb.ipynb"], "figure",
         names=("no.ipynb",), outputs=("nb.ipynb",)),
    Case("figure-duplicate-input", lambda p: ["--name", "f", "--notebook", str(p.tmp / "no.ipynb"), "--input", "a=b",
                                              "--input", "a=c", "--out-dir", "figs", "--out-notebook", "nb.ipynb"],
         "figure", names=("--input", "'a'"), outputs=("nb.ipynb",)),
    Case("published-eval-pins-missing", lambda p: ["--pins", str(p.tmp / "nopins.json"), "--raw", str(p.raw), "--runs",
                                                   str(p.tmp), "--corpus", "c", "--out-runs", "pr", "--out-tsv", "p.tsv"],
         "published-eval", names=("nopins.json",), outputs=("pr", "p.tsv")),
    Case("published-eval-pins-broken", lambda p: ["--pins", str(p.file("pins.json", "{\n\"adapters\": \n")), "--raw",
                                                  str(p.raw), "--runs", str(p.tmp), "--corpus", "c", "--out-runs", "pr",
                                                  "--out-tsv", "p.tsv"],
         "published-eval", names=("pins.json:3",), outputs=("pr", "p.tsv")),
    Case("llm-check-basic-auth-unreachable", lambda p: ["--kind", "openai", "--model", "m", "--base-url-env", "H15_URL",
                                                        "--timeout", "2", "--max-retries", "0"],
         "tools syntod-llm-check", code=1, names=("127.0.0.1:9",), secret="h15pass-secret"),
]


def _truncated_adapter(p: P, drop_config: bool = False, bad: int | None = 5) -> Path:
    """An adapter directory whose checkpoint-``bad`` lost the end of its weights (or checkpoint-5
    its config); ``bad=None``: both checkpoints complete."""
    ad = p.tmp / "adapters"
    for step in (5, 10):
        ck = ad / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        (ck / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
        # a safetensors header that promises 4096 bytes of data that are not there
        header = json.dumps({"w": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}).encode()
        (ck / "adapter_model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header
                                                       + (b"\0" * (100 if step == bad else 4096)))
    if drop_config:
        (ad / "checkpoint-5" / "adapter_config.json").unlink()
        header = json.dumps({"w": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}).encode()
        (ad / "checkpoint-5" / "adapter_model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4096)
    return ad


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line(case: Case, proj: P, capsys, monkeypatch):
    monkeypatch.setenv("H15_URL", "http://h15user:h15pass-secret@127.0.0.1:9/v1")
    argv = [*case.command.split(), *case.build(proj), *proj.common()]  # "tools <name>": a developer tool
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith(f"irrepro {case.command}: ")]
    assert code == case.code, f"exit {code}, stderr:\n{err[-3000:]}"
    assert len(lines) == 1, f"expected one error line, stderr:\n{err[-3000:]}"
    line = lines[0]
    for name in case.names:
        assert name in line, f"{name!r} not in {line!r}"
    assert "Traceback" not in err, "the traceback belongs in the log file (or --debug)"
    logged = proj.log.read_text()
    assert line in logged and "Traceback" in logged
    for rel in case.outputs:
        assert not (proj.tmp / rel).exists(), f"{rel} left in place"
    if case.secret:
        assert case.secret not in out + err + logged


def test_missing_required_argument_is_refused_by_the_parser(capsys):
    """The stage spec's required arguments are argparse's: exit 2 naming them, before any work."""
    with pytest.raises(SystemExit) as exc:
        main(["finetune", "--base", "b", "--groups", "g", "--out", "lora/x"])
    assert exc.value.code == 2
    assert "irrepro finetune: error: the following arguments are required: --family" in capsys.readouterr().err


def test_debug_prints_the_traceback(proj, capsys):
    code = main(["check-params", *proj.common(), "--debug", "--params", str(proj.tmp / "missing.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err


def test_evaluate_flags_judged_coverage_above_the_threshold(proj, capsys):
    """A run missing two judged queries (41 of 43 >= evaluate.min_judged_fraction 0.9) is scored,
    with a warning in the log and the counts in the metrics JSON beside the metrics."""
    from irrepro.trec import read_qrels

    judged = sorted(q for q, docs in read_qrels(proj.raw / "trec-dl" / "qrels.dl19-passage.txt").items() if docs)
    gone = set(judged[:2])
    code = main(["evaluate", *_evaluate(proj, edit=lambda ls: [x for x in ls if x.split()[0] not in gone]), *proj.common()])
    assert code == 0, capsys.readouterr().err[-2000:]
    result = json.loads((proj.tmp / "m/bm25.json").read_text())
    assert result["bm25"]["dl19"]["judged_queries"] == {"found": len(judged) - 2, "expected": len(judged)}
    assert result["bm25"]["dl20"]["judged_queries"]["found"] == result["bm25"]["dl20"]["judged_queries"]["expected"]
    assert list(result["bm25"]["dl19"])[-1] == "judged_queries"  # after the metrics, in their order
    assert f"answers {len(judged) - 2} of {len(judged)} judged queries" in proj.log.read_text()


def test_case_count_by_stage():
    """The table covers every stage command with a bad input (issue 12 asks for >= 60 cases)."""
    by_stage: dict[str, int] = {}
    for c in CASES:
        by_stage[c.command] = by_stage.get(c.command, 0) + 1
    assert len(CASES) >= 60, by_stage
