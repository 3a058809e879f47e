"""SynTOD evaluation: the scoring path against an oracle and hand-made predictions, one real
evaluation stage (tiny llama + a LoRA adapter trained for a few steps, real published and
synthetic conversations, the heuristic judge, human-label agreement), collect's outputs, CLI."""

import csv
import json
import random
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from irrepro.cli import make_parser  # noqa: E402
from irrepro.syntod import evaluation as E  # noqa: E402
from irrepro.syntod import tod  # noqa: E402
from irrepro.syntod.format import parse, read_jsonl, write_jsonl  # noqa: E402
from irrepro.syntod.judge import HeuristicJudge, load_human_labels  # noqa: E402
from irrepro.syntod.metrics import relevance_agreement  # noqa: E402

from conftest import cooking_conversation, save_tiny_base  # noqa: E402

PUBLISHED_FILES = {"published_gemini": "recipe_test_gemini_v3.jsonl", "published_llama": "recipe_test_llama_v3.jsonl"}
N_PUBLISHED = 3  # lines of each published file used


_rng = random.Random(0)
SYNTHETIC = [cooking_conversation(_rng) for _ in range(8)]


def synthetic_convs():
    return [parse(t, f"syn:{k}", meta={"id": f"syn-{k}", "domain": "cooking"}) for k, t in enumerate(SYNTHETIC)]


def published_convs(shared_data, name):
    return read_jsonl(shared_data / "syntod" / PUBLISHED_FILES[name])[:N_PUBLISHED]


def human_annotations(text: str) -> list[dict]:
    """The gold annotations of the human turns with an intent, by regex on the raw text
    (independent of irrepro.syntod.format)."""
    out = []
    for seg in re.split(r"### (?=[A-Z]+:)", text)[1:]:
        if seg.startswith("HUMAN:"):
            i = seg.rfind("## {")
            if i >= 0:
                value, _ = json.JSONDecoder().raw_decode(seg[i + 3:])
                if isinstance(value, dict) and isinstance(value.get("intent"), str):
                    out.append(value)
    return out


# ---------------------------------------------------------------------------- scoring path


def _metric(rows, name):
    (row,) = [r for r in rows if r["metric"] == name]
    return row


def test_oracle_completions_score_perfectly(shared_data):
    convs = published_convs(shared_data, "published_gemini") + synthetic_convs()
    tasks = E.tasks_for("mix", convs)
    intent = [t for t in tasks if t.kind == "intent"]
    texts = [json.loads(line)["text"] for line in
             (shared_data / "syntod" / PUBLISHED_FILES["published_gemini"]).read_text().splitlines()[:N_PUBLISHED]]
    gold = [a for text in texts + SYNTHETIC for a in human_annotations(text)]
    assert [t.gold for t in intent] == gold  # every annotated human turn, in order
    records = E.judge_records(E.records_for(tasks, [t.target for t in tasks]), tasks, HeuristicJudge())
    rows = E.score_records("mix", records, len(convs))
    assert [r["metric"] for r in rows] == list(E.METRICS)
    for name in ("intent_acc", "intent_macro_f1", "intent_micro_f1", "slot_p", "slot_r", "slot_f1", "json_valid_rate"):
        assert _metric(rows, name)["value"] == 1.0 and _metric(rows, name)["n"] == len(gold), name
    n_resp = len(tasks) - len(intent)
    assert _metric(rows, "relevance_mean") == {"test_set": "mix", "scorer": "strict", "metric": "relevance_mean",
                                               "value": 2.0, "n": n_resp}
    assert _metric(rows, "relevance_2")["value"] == 1.0 and _metric(rows, "relevance_unscored")["value"] == 0
    assert _metric(rows, "conversations")["value"] == len(convs)


def test_wrong_and_broken_completions_lower_the_scores():
    convs = synthetic_convs()[:4]  # 16 user turns: 4 per intent; 4 carry a query slot
    tasks = [t for t in E.tasks_for("syn", convs) if t.kind == "intent"]
    completions = []
    for k, t in enumerate(tasks):
        if k % 4 == 0:
            completions.append('chitchat"')  # after the forced '{"intent": "': truncated JSON, invalid, wrong
        elif k % 4 == 1:
            completions.append('next_step"}')  # valid, right only for next_step turns
        else:
            completions.append(t.target)
    records = E.records_for(tasks, completions)
    rows = E.score_records("syn", records, len(convs))
    right = sum(1 for k, t in enumerate(tasks) if k % 4 >= 2 or (k % 4 == 1 and t.gold["intent"] == "next_step"))
    assert _metric(rows, "intent_acc")["value"] == pytest.approx(right / len(tasks))
    assert _metric(rows, "json_valid_rate")["value"] == pytest.approx(0.75)
    # slots: the query of a search_recipe turn is lost when its completion was replaced
    lost = sum(1 for k, t in enumerate(tasks) if k % 4 < 2 and "query" in t.gold)
    queries = sum(1 for t in tasks if "query" in t.gold)
    assert _metric(rows, "slot_r")["value"] == pytest.approx((queries - lost) / queries)
    assert _metric(rows, "slot_p")["value"] == 1.0
    assert [r["ok"] for r in records] == [k % 4 != 0 for k in range(len(tasks))]
    assert records[1]["predicted"] == '{"intent": "next_step"}'  # the forced prefix + the completion
    assert _metric(rows, "relevance_mean")["value"] is None and _metric(rows, "relevance_mean")["n"] == 0


def test_subsample_and_response_cap_are_deterministic():
    convs = synthetic_convs()
    a = E.subsample(convs, 3, seed=1)
    assert [c.id for c in a] == [c.id for c in E.subsample(list(reversed(convs)), 3, seed=1)][::-1]
    assert [c.id for c in a] == [c.id for c in convs if c in a]  # file order kept
    assert E.subsample(convs, None, 0) == convs and E.subsample(convs, 99, 0) == convs
    capped = [t for t in E.tasks_for("syn", convs, responses_per_conversation=2, seed=0) if t.kind == "response"]
    again = [t for t in E.tasks_for("syn", convs, responses_per_conversation=2, seed=0) if t.kind == "response"]
    assert capped == again
    per_conv = {}
    for t in capped:
        per_conv.setdefault(t.conversation, []).append(t.turn)
    assert all(len(v) == 2 for v in per_conv.values()) and len(per_conv) == len(convs)
    assert all(0 not in v for v in per_conv.values())  # the opening greeting answers nobody
    full = [t for t in E.tasks_for("syn", convs) if t.kind == "response"]
    assert len(full) == 4 * len(convs)
    t = full[0]
    assert t.gold == convs[0].turns[t.turn].text and t.context.splitlines()[-1].startswith("HUMAN: ")


# ---------------------------------------------------------------------------- a real evaluation


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    """Training and TODModel(threads=1) set torch's thread count for the process; give it back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, shared_data):
    """(base, finetune output): a random tiny llama with a tokenizer trained on synthetic and
    published conversations, and a LoRA adapter trained for 60 steps on the synthetic ones
    (one thread: by far the fastest on shared cores)."""
    from irrepro.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("tod-eval")
    published = [json.loads(line)["text"] for name in PUBLISHED_FILES.values()
                 for line in (shared_data / "syntod" / name).read_text().splitlines()[:N_PUBLISHED]]
    tok = train_tokenizer(SYNTHETIC + published, vocab_size=500)
    base = save_tiny_base(root / "base", "llama", tok, hidden=64, intermediate=128, max_positions=512)
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t}) + "\n" for t in SYNTHETIC))
    tod.finetune_tod(base, train, root / "run", rank=8, targets="all", dropout=0.0, lr=1e-2, max_steps=60,
                     batch_size=8, grad_accum=1, max_len=256, save_steps=60, warmup_ratio=0.0, seed=0, threads=1,
                     logging_steps=20)
    return base, root / "run"


def _params(tmp_path, human_labels=None, profile="mini"):
    return {"profile": profile, "syntod": {
        "seed": 0, "cache_dir": str(tmp_path / "cache"),
        "llm": {"kind": "offline", "model": "template-simulator", "api_key_env": "OPENAI_API_KEY"},
        "judge": {"kind": "heuristic", "good": 0.5, "related": 0.15, "context": 0.3, "model": "gpt-x", "prompt": "original",
                  "api_key_env": "OPENAI_API_KEY"},  # other kinds' keys are ignored
        "eval": {"max_conversations": 2, "max_new_tokens_intent": 24, "max_new_tokens_response": 12,
                 "batch_size": 16, "max_len": 192, "responses_per_conversation": 2, "threads": 1,
                 "scorers": ["strict", "original"], "original_max_tokens": None},
        **({"human_labels": str(human_labels)} if human_labels else {})}}


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory, shared_data, model_dirs):
    """One evaluate_stage run: raw dir with the first published conversations at their
    download destinations, our held-out file (structured), human labels for the judged turns."""
    tmp = tmp_path_factory.mktemp("stage")
    raw = tmp / "raw"
    (raw / "syntod").mkdir(parents=True)
    for name in PUBLISHED_FILES.values():
        lines = (shared_data / "syntod" / name).read_text().splitlines()[:N_PUBLISHED]
        (raw / "syntod" / name).write_text("\n".join(lines) + "\n")
    heldout = tmp / "heldout.jsonl"
    write_jsonl(synthetic_convs()[:4], heldout)
    # human labels (alternating 2, 0) for the responses the stage will judge (same subsample)
    labels = tmp / "human.tsv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(["conversation_id", "turn", "label"])
        k = 0
        for name, convs in E.load_test_sets("cooking", raw, heldout).items():
            for t in E.tasks_for(name, E.subsample(convs, 2, 0), 2, 0):
                if t.kind == "response":
                    w.writerow([t.conversation, t.turn, 2 if k % 2 == 0 else 0])
                    k += 1
    P = _params(tmp, labels)
    base, run = model_dirs
    out, pred = tmp / "out" / "cooking-graph.json", tmp / "out" / "cooking-graph.predictions.jsonl"
    doc = E.evaluate_stage(P, "cooking", "graph", str(base), str(run), str(raw), str(heldout), str(out), str(pred))
    return doc, out, pred, raw, heldout


def test_stage_rows_have_every_metric_with_the_right_n(stage_run):
    doc, out, pred, raw, heldout = stage_run
    assert json.loads(out.read_text()) == doc
    labels = load_human_labels(doc["human_labels"])
    predictions = [json.loads(line) for line in pred.read_text().splitlines()]
    by_set, original = {}, {}
    for r in doc["rows"]:
        (by_set if r["scorer"] == "strict" else original).setdefault(r["test_set"], {})[r["metric"]] = r
    assert list(by_set) == ["published_gemini", "published_llama", "heldout"]
    for name, convs in E.load_test_sets("cooking", raw, heldout).items():
        picked = E.subsample(convs, 2, 0)
        mine = [p for p in predictions if p["test_set"] == name]
        intents = [p for p in mine if p["kind"] == "intent"]
        responses = [p for p in mine if p["kind"] == "response"]
        expected_turns = sum(1 for c in picked for t in c.turns if t.role == "human" and isinstance(t.intent, str))
        assert len(intents) == expected_turns > 0
        assert {p["conversation"] for p in mine} == {c.id for c in picked}
        assert len(responses) == 2 * len(picked)  # responses_per_conversation
        rows = by_set[name]
        assert set(rows) == set(E.METRICS) | set(E.AGREEMENT_METRICS.values())
        assert list(original[name]) == list(E.ORIGINAL_METRICS)
        assert original[name]["conversations"]["value"] == 2 and original[name]["conversations_skipped"]["value"] == 0
        assert 0 <= original[name]["intent_acc"]["value"] <= 1
        assert rows["conversations"]["value"] == 2
        for m in ("intent_acc", "intent_macro_f1", "slot_f1", "json_valid_rate"):
            assert rows[m]["n"] == len(intents) and 0 <= rows[m]["value"] <= 1
        assert all(p["relevance"] in (0, 1, 2) for p in responses)
        assert rows["relevance_mean"]["value"] == pytest.approx(sum(p["relevance"] for p in responses) / len(responses))
        assert rows["relevance_mean"]["n"] == len(responses)
        # intent accuracy recomputed from the predictions file, acknowledgements folded
        fold = {"acknowledge_task": "begin_task", "acknowledge_step": "next_step", "done_step": "next_step"}
        acc = sum(fold.get(i, i) == fold.get(g, g) for i, g in
                  (((p["parsed"] or {}).get("intent"), p["gold"]["intent"]) for p in intents)) / len(intents)
        assert rows["intent_acc"]["value"] == pytest.approx(acc)
        assert rows["json_valid_rate"]["value"] == pytest.approx(sum(p["ok"] for p in intents) / len(intents))
        # agreement with the human labels, recomputed
        human = [labels[(p["conversation"], p["turn"])] for p in responses]
        assert set(human) == {0, 2}
        ref = relevance_agreement([p["relevance"] for p in responses], human)
        assert rows["judge_human_exact"]["value"] == pytest.approx(ref["exact_agreement"])
        assert rows["judge_human_kappa"]["value"] == ref["cohen_kappa"] and rows["judge_human_kappa"]["n"] == ref["n"]


def test_the_trained_adapter_beats_the_base_on_its_own_conversations(stage_run, model_dirs):
    """The held-out set follows the training pattern: a few LoRA steps teach the JSON form and
    most intents (the random base gets neither)."""
    doc = stage_run[0]
    held = {r["metric"]: r["value"] for r in doc["rows"] if r["test_set"] == "heldout"}
    base, _ = model_dirs
    convs = E.subsample(read_jsonl(stage_run[4]), 2, 0)
    tasks = [t for t in E.tasks_for("heldout", convs) if t.kind == "intent"]
    plain = tod.TODModel(base, threads=1).complete([t.prompt for t in tasks], max_new_tokens=24, max_len=192)
    parsed = [tod.parse_prediction(t.forced + p) for t, p in zip(tasks, plain)]
    base_valid = sum(ok for _, _, ok in parsed) / len(tasks)
    base_acc = sum(intent == t.gold["intent"] for (intent, _, _), t in zip(parsed, tasks)) / len(tasks)
    assert held["json_valid_rate"] > base_valid and held["json_valid_rate"] >= 0.75
    assert held["intent_acc"] > base_acc and held["intent_acc"] >= 0.5


def test_max_len_is_capped_at_the_model_positions(model_dirs, caplog):
    base, run = model_dirs
    convs = {"syn": synthetic_convs()[:1]}
    with caplog.at_level("WARNING", logger="irrepro.syntod.evaluation"):
        rows, preds = E.evaluate_model(base, E.resolve_adapter(run), convs, judge=HeuristicJudge(),
                                       max_new_tokens_intent=8, max_new_tokens_response=4, max_len=100_000,
                                       threads=1)
    assert "max_len 100000 exceeds the model's 512 positions: using 512" in caplog.text
    assert len(preds) == 4 + 4 and _metric(rows, "intent_acc")["n"] == 4
    assert E.resolve_adapter(run) == str(run / "final") and E.resolve_adapter(run / "final") == str(run / "final")


def test_outputs_name_the_heuristic_judge_and_generator(stage_run, tmp_path):
    doc, out, *_ = stage_run
    assert doc["judge"]["kind"] == "heuristic" and "not an LLM" in doc["judge"]["note"]
    assert "NOT an LLM" in doc["judge"]["label"]
    assert doc["generator"] == {"kind": "offline", "model": "template-simulator",
                                "label": "offline template simulator (deterministic templates, no LLM)"}
    assert doc["eval"]["max_conversations"] == 2 and doc["domain"] == "cooking" and doc["method"] == "graph"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    md = tmp_path / "syntod.md"
    E.collect_stage({"profile": "mini"}, [out], tmp_path / "t.tsv", tmp_path / "m.json", md)
    text = md.read_text()
    assert "offline template simulator" in text and "heuristic token-overlap judge (NOT an LLM" in text


def test_stage_rejects_missing_knobs_and_unknown_method(tmp_path):
    P = _params(tmp_path)
    del P["syntod"]["eval"]["max_len"]
    with pytest.raises(ValueError, match="syntod.eval lacks max_len"):
        E.evaluate_stage(P, "cooking", "graph", "b", "a", "r", None, "o.json", "p.jsonl")
    with pytest.raises(ValueError, match="method must be one of"):
        E.evaluate_stage(_params(tmp_path), "cooking", "walks", "b", "a", "r", None, "o.json", "p.jsonl")


# ---------------------------------------------------------------------------- collect


def _result(domain, method, values, judge=None):
    rows = []
    for ts, metrics in values.items():
        rows += [{"test_set": ts, "scorer": m.split("/")[0] if "/" in m else "strict", "metric": m.split("/")[-1],
                  "value": v, "n": n} for m, (v, n) in metrics.items()]
    return {"domain": domain, "method": method,
            "judge": judge or {"kind": "heuristic", "model": "token-overlap-judge-v1", "good": 0.5, "related": 0.15,
                               "context": 0.3, "note": "transparent token-overlap heuristic, not an LLM"},
            "generator": E.generator_info({"kind": "offline"}), "rows": rows}


def test_collect_writes_tsv_metrics_and_markdown(tmp_path):
    docs = [
        _result("cooking", "graph", {"heldout": {"intent_acc": (0.812345, 40), "slot_f1": (0.5, 40),
                                                 "relevance_mean": (1.25, 8), "json_valid_rate": (0.9, 40),
                                                 "original/intent_acc": (0.85, 38),
                                                 "original/slot_macro_f1": (0.7, 12)},
                                     "published_llama": {"intent_acc": (0.4, 30), "slot_f1": (None, 30)}}),
        _result("cooking", "naive", {"heldout": {"intent_acc": (0.6, 38), "slot_f1": (0.25, 38),
                                                 "relevance_mean": (1.0, 8)},
                                     "published_llama": {"intent_acc": (0.3, 30), "slot_f1": (0.1, 30)}}),
        _result("ecommerce", "graph", {"heldout": {"intent_acc": (0.7, 20)}}),
    ]
    paths = []
    for d in docs:
        paths.append(tmp_path / f"{d['domain']}-{d['method']}.json")
        paths[-1].write_text(json.dumps(d))
    tsv, mj, md = tmp_path / "syntod.tsv", tmp_path / "metrics" / "syntod.json", tmp_path / "syntod.md"
    ns = make_parser().parse_args(["syntod-collect", "--results", *map(str, paths), "--out-tsv", str(tsv),
                                    "--out-json", str(mj), "--out-md", str(md)])
    assert ns.spec(ns, {"profile": "mini"}) == 0
    with open(tsv, newline="") as fh:
        table = list(csv.DictReader(fh, delimiter="\t"))
    assert list(table[0]) == list(E.TSV_COLUMNS)
    assert len(table) == sum(len(d["rows"]) for d in docs)
    assert table[0] == {"domain": "cooking", "method": "graph", "test_set": "heldout", "scorer": "strict",
                        "metric": "intent_acc", "value": "0.812345", "n": "40"}
    assert [r["value"] for r in table if r["metric"] == "slot_f1" and r["test_set"] == "published_llama"] == ["", "0.1"]
    metrics = json.loads(mj.read_text())
    assert metrics["cooking"]["graph"]["heldout"] == {
        "strict": {"intent_acc": 0.8123, "slot_f1": 0.5, "relevance_mean": 1.25},
        "original": {"intent_acc": 0.85, "slot_macro_f1": 0.7}}
    assert metrics["cooking"]["graph"]["published_llama"] == {"strict": {"intent_acc": 0.4, "slot_f1": None}}
    assert metrics["ecommerce"] == {"graph": {"heldout": {"strict": {"intent_acc": 0.7}}}}
    text = md.read_text()
    assert "offline template simulator (deterministic templates, no LLM)" in text
    assert "heuristic token-overlap judge (NOT an LLM" in text and "mini profile" in text
    assert "| heldout | strict | intent_acc | 0.8123 (n=40) | 0.6000 (n=38) | +0.2123 |" in text
    assert "| heldout | strict | relevance_mean | 1.2500 (n=8) | 1.0000 (n=8) | +0.2500 |" in text
    assert "| heldout | original | intent_acc | 0.8500 (n=38) | - | - |" in text
    assert "| published_llama | strict | slot_f1 | n/a (n=30) | 0.1000 (n=30) | - |" in text
    assert "## ecommerce" in text and "| heldout | strict | intent_acc | 0.7000 (n=20) |" in text
    # an LLM judge is named as such
    llm = _result("cooking", "graph", {"heldout": {"intent_acc": (0.5, 4)}},
                  judge={"kind": "openai", "model": "gpt-4o"})
    paths[0].write_text(json.dumps(llm))
    E.collect_stage({"profile": "paper"}, paths[:1], tsv, mj, md)
    assert "LLM judge: openai model gpt-4o" in md.read_text() and "mini profile" not in md.read_text()


def test_collect_rejects_duplicates_and_bad_files(tmp_path):
    a, b, bad = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "bad.json"
    doc = _result("cooking", "graph", {"heldout": {"intent_acc": (0.5, 4)}})
    a.write_text(json.dumps(doc))
    b.write_text(json.dumps(doc))
    outs = [tmp_path / "t.tsv", tmp_path / "m.json", tmp_path / "m.md"]
    with pytest.raises(ValueError, match=r"b.json: cooking/graph already given by .*a.json"):
        E.collect_stage({}, [a, b], *outs)
    bad.write_text(json.dumps({**doc, "rows": [{"test_set": "x", "metric": "m"}]}))
    with pytest.raises(ValueError, match=r"bad.json: rows\[0\] lacks \['scorer', 'value', 'n'\]"):
        E.collect_stage({}, [bad], *outs)
    bad.write_text(json.dumps({"domain": "cooking", "method": "graph", "rows": []}))
    with pytest.raises(ValueError, match="bad.json: key 'judge' missing"):
        E.collect_stage({}, [bad], *outs)
    assert not any(p.exists() for p in outs)


def test_evaluate_cli_arguments():
    ns = make_parser().parse_args(
        ["evaluate-tod", "--profile", "mini", "--domain", "cooking", "--method", "naive", "--base", "b",
         "--adapter", "a", "--raw", "r", "--heldout", "h.jsonl", "--out", "o.json", "--predictions", "p.jsonl",
         "--log", "l.log"])
    assert (ns.domain, ns.method, ns.base, ns.adapter, ns.raw, ns.heldout, ns.out, ns.predictions) == \
        ("cooking", "naive", "b", "a", "r", "h.jsonl", "o.json", "p.jsonl")
    assert ns.command == "evaluate-tod" and ns.spec.outputs(ns) == ["o.json", "p.jsonl"]
    with pytest.raises(SystemExit):
        make_parser().parse_args(["evaluate-tod", "--domain", "travel"])
