"""SynTOD generation end to end on the real seed catalogs: BM25 result pages, graph-guided
conversations (offline simulator and a real HTTP chat-completions server), resume after a
crash, the naive baseline, splits and the relevance judge.

Independent references: result pages are checked against a direct pyserini LuceneSearcher
query (and a hand-checked query); conversations are re-read with the SynTOD parser; user
annotations are compared with the walks they came from; resume is checked byte for byte and
by counting backend calls on a fresh cache.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from irrepro.syntod.cache import CachedBackend
from irrepro.syntod.format import header_for, parse, read_jsonl, render
from irrepro.syntod.generate import (
    BM25Pager,
    GenerationError,
    PromptError,
    Prompts,
    build_catalog_index,
    catalog_text,
    generate_conversations,
    generate_naive,
    item_query,
    load_finished,
    load_prompts,
    split_train_heldout,
)
from irrepro.syntod.graph import load_graph, load_items, read_walks, sample_walks, write_walks
from irrepro.syntod.judge import HeuristicJudge, judge_relevance, load_human_labels, load_judge_prompts, make_judge
from irrepro.syntod.llm import OfflineSimulator, make_backend
from irrepro.syntod.metrics import relevance_agreement

from conftest import send_json

SEEDS = {"cooking": "syntod/recipe_seed_test_set.jsonl", "ecommerce": "syntod/ecommerce_product_catalog_test.jsonl"}
N_WALKS = 10
CANARY = "sk-canary-generate-5e1d9b7c3a"


def strings(value) -> list[str]:
    """A slot value as the pieces an utterance must contain (dicts as ``key: value``)."""
    if isinstance(value, dict):
        return [f"{k}: {', '.join(strings(v))}" for k, v in value.items()]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [str(value)]


@pytest.fixture(scope="module")
def domains(shared_data, tmp_path_factory):
    """Per domain: graph, items, catalog index, BM25 pager and 10 walks (seed 0)."""
    out = {}
    for domain, rel in SEEDS.items():
        graph = load_graph(domain)
        items = load_items(graph, shared_data / rel)
        index = build_catalog_index(items, tmp_path_factory.mktemp(f"cat-{domain}"))
        pager = BM25Pager(items, index)
        walks = sample_walks(graph, N_WALKS, 0, items, pager)
        out[domain] = {"graph": graph, "items": items, "by_id": {i.id: i for i in items}, "index": index,
                       "pager": pager, "walks": walks}
    return out


@pytest.fixture(scope="module")
def generated(domains, tmp_path_factory):
    """The offline generation of both domains, on a fresh cache each."""
    out = {}
    for domain, d in domains.items():
        tmp = tmp_path_factory.mktemp(f"gen-{domain}")
        backend = make_backend({"kind": "offline"}, tmp / "cache")
        stats = generate_conversations(d["walks"], d["graph"], d["items"], backend, tmp / "conv.jsonl")
        out[domain] = {"dir": tmp, "stats": stats, "convs": read_jsonl(tmp / "conv.jsonl")}
    return out


# --------------------------------------------------------------------------- BM25 pages


def test_catalog_index_and_a_hand_checked_query(domains):
    d = domains["cooking"]
    crumble = d["by_id"]["81829"]  # Baked Pear Crumble
    assert item_query(crumble) == "baked pear crumble"
    text = catalog_text(crumble)
    assert "Baked Pear Crumble" in text and "vegan" in text and "flax seed" in text
    assert next(iter(d["pager"].runs["81829"])) == "81829"  # its own title ranks it first
    p = domains["ecommerce"]["by_id"]["B0100Z4CB2"]
    assert "Shoes" in catalog_text(p) and "Cityclassified" in catalog_text(p) and "manmade material" in catalog_text(p)
    assert build_catalog_index(d["items"], d["index"].parent) == d["index"]  # up to date: reused, not rebuilt


@pytest.mark.parametrize("domain", ["cooking", "ecommerce"])
def test_result_pages_are_the_bm25_ranking_with_the_target_at_the_selection(domains, domain):
    from irrepro.java import import_pyserini

    d = domains[domain]
    searcher = import_pyserini("pyserini.search.lucene").LuceneSearcher(str(d["index"]))
    searcher.set_bm25(0.9, 0.4)
    checked = 0
    for w in d["walks"]:
        if not w.pages:
            continue
        target = d["by_id"][w.target]
        query = item_query(target)
        assert set(query.split()) <= set(re.findall(r"[a-z0-9']+", target.title.lower()))
        # the first query's pages (later e-commerce queries look for other items: Walk.targets)
        query_of = {s.state["page"]: s.state["query"] for s in w.steps if s.node in ("show_results", "show_suggestions")}
        first = {p for p, q in query_of.items() if q == min(query_of.values())}
        assert w.targets[min(query_of.values()) - 1] == w.target
        shown = [i for p in sorted(first) for i in w.pages[p]]
        assert len(shown) == len(set(shown)) and shown.count(w.target) == 1
        hits = [h.docid for h in searcher.search(query, k=len(d["items"])) if h.docid not in w.targets]
        others = [i for i in shown if i != w.target]
        if len(hits) >= len(others):
            assert others == hits[: len(others)], w.id
            checked += 1
        first_select = next((s for s in w.steps if s.intent == "select_i"), None)
        if first_select is not None:
            page = w.pages[first_select.state["page"]]
            assert page[first_select.slots["selection"] - 1] == w.target == first_select.state["selected"]
    assert checked >= 3
    assert d["pager"].stats()["retrieved"] > 0


# --------------------------------------------------------------------------- graph-guided generation


@pytest.mark.parametrize("domain", ["cooking", "ecommerce"])
def test_offline_conversations_follow_their_walks(domains, generated, domain):
    d, g = domains[domain], generated[domain]
    convs, walks = g["convs"], d["walks"]
    assert g["stats"]["failed"] == 0 and g["stats"]["conversations"] == N_WALKS
    assert g["stats"]["user_turns_missing_slots"] == 0
    texts = [json.loads(line)["text"] for line in (g["dir"] / "conv.txt.jsonl").read_text().splitlines()]
    assert [c.id for c in convs] == [w.id for w in walks]
    slot_names = {k: set(v["slots"]) for k, v in d["graph"].intents.items()}
    for conv, walk, text in zip(convs, walks, texts):
        assert render(conv) == text
        again = parse(text, strict=True)
        assert again.turns == conv.turns and again.intents == list(d["graph"].header_intents)
        assert again.header == conv.header == header_for(domain, d["graph"].header_intents)  # the published header
        human = [t for t in conv.turns if t.role == "human"]
        assert [t.intent for t in human] == [s.intent for s in walk.user_steps()]
        for t, s in zip(human, walk.user_steps()):
            assert set(t.slots) == slot_names[s.intent]
            for name, value in t.slots.items():
                assert value not in (None, "", {}), (conv.id, name)
                if s.slots.get(name) is not None:
                    assert value == s.slots[name]  # what the walk fixed is kept
                for piece in strings(value):
                    assert piece.lower() in t.text.lower(), (conv.id, name, piece, t.text)
        # every RESULTS block lists the walk's page, in order, by title
        pages = [p for p in walk.pages]
        blocks = [t for t in conv.turns if t.role == "results"]
        assert len(blocks) == len(pages)
        for block, page in zip(blocks, pages):
            lines = block.text.split("\n")
            assert len(lines) == len(page)
            for pos, (line, item_id) in enumerate(zip(lines, page), 1):
                assert line.startswith(f"id: {pos}, ")
                assert d["by_id"][item_id].title.split()[0] in line
        if domain == "cooking" and any(s.node == "option_selected" for s in walk.steps):
            recipe = next(t for t in conv.turns if t.role == "recipe")
            assert recipe.text.startswith(f"title: {d['by_id'][walk.target].title}")
        if any(s.node == "show_suggestions" for s in walk.steps):
            assert any(t.role == "suggestions" for t in conv.turns)
        if walk.stop_reason == "end":
            assert conv.turns[-1].role == "assistant"


def test_system_turns_carry_their_grounding_and_annotations(domains, generated):
    for domain in ("cooking", "ecommerce"):
        d = domains[domain]
        for conv, walk in zip(generated[domain]["convs"], d["walks"]):
            assistant = [t for t in conv.turns if t.role == "assistant"]
            system_steps = [s for s in walk.steps if s.role == "system" and s.node != d["graph"].end]
            assert len(assistant) == len(system_steps)
            for t, s in zip(assistant, system_steps):
                ann = d["graph"].nodes[s.node].annotation or {}
                assert t.intent == ann.get("intent") and (t.slots or {}) == s.slots
                if s.node == "show_step":
                    recipe = d["by_id"][s.state["selected"]]
                    assert f"Step {s.state['step']}: " in t.text
                    assert recipe.steps[s.state["step"] - 1].split()[0] in t.text
                if s.node == "shown_cart":
                    for pid in s.state["cart"]:
                        assert d["by_id"][pid].title.split()[0] in t.text


def test_generation_is_deterministic(domains, generated, tmp_path):
    d = domains["ecommerce"]
    again = sample_walks(d["graph"], N_WALKS, 0, d["items"], BM25Pager(d["items"], d["index"]))
    assert [w.to_dict() for w in again] == [w.to_dict() for w in d["walks"]]
    write_walks(again, tmp_path / "walks.jsonl")
    backend = make_backend({"kind": "offline"}, tmp_path / "cache")
    generate_conversations(read_walks(tmp_path / "walks.jsonl"), d["graph"], d["items"], backend, tmp_path / "c.jsonl")
    first = generated["ecommerce"]["dir"]
    assert (tmp_path / "c.jsonl").read_bytes() == (first / "conv.jsonl").read_bytes()
    assert (tmp_path / "c.txt.jsonl").read_bytes() == (first / "conv.txt.jsonl").read_bytes()


def test_resume_after_a_crash_redoes_only_the_missing_conversations(domains, generated, tmp_path, caplog):
    d, g = domains["cooking"], generated["cooking"]
    full = (g["dir"] / "conv.jsonl").read_bytes()
    lines = full.splitlines(keepends=True)
    k = 4
    out = tmp_path / "conv.jsonl"
    out.write_bytes(b"".join(lines[:k]) + lines[k][: len(lines[k]) // 2])  # killed while writing record k+1
    backend = make_backend({"kind": "offline"}, tmp_path / "fresh-cache")
    with caplog.at_level(logging.WARNING):
        stats = generate_conversations(d["walks"], d["graph"], d["items"], backend, out)
    assert "incomplete last record" in caplog.text
    assert out.read_bytes() == full
    assert (tmp_path / "conv.txt.jsonl").read_bytes() == (g["dir"] / "conv.txt.jsonl").read_bytes()
    missing = g["convs"][k:]
    expected_calls = sum(t.role in ("human", "assistant") for c in missing for t in c.turns)
    assert stats["resumed"] == k and stats["generated"] == N_WALKS - k
    assert backend.stats() == {"hits": 0, "misses": expected_calls, "calls": expected_calls}
    # finished: a rerun calls nothing; another generator set-up redoes everything
    again = make_backend({"kind": "offline"}, tmp_path / "fresh-cache-2")
    assert generate_conversations(d["walks"], d["graph"], d["items"], again, out)["resumed"] == N_WALKS
    assert again.stats()["calls"] == 0 and out.read_bytes() == full
    other = CachedBackend(OfflineSimulator(seed=1), tmp_path / "cache-seed1")
    stats = generate_conversations(d["walks"][:2], d["graph"], d["items"], other, out)
    assert stats["resumed"] == 0 and stats["generated"] == 2 and len(read_jsonl(out)) == 2


def test_a_corrupt_line_before_the_end_is_an_error(generated, tmp_path):
    lines = (generated["cooking"]["dir"] / "conv.jsonl").read_text().splitlines(keepends=True)
    bad = tmp_path / "c.jsonl"
    bad.write_text(lines[0] + "{not json\n" + lines[1])
    with pytest.raises(GenerationError, match=r"c\.jsonl:2: not a conversation record"):
        load_finished(bad)
    assert len(load_finished(tmp_path / "absent.jsonl")) == 0


# --------------------------------------------------------------------------- prompts


def test_prompts_cover_both_graphs_and_reject_unknown_fields(domains, tmp_path):
    prompts = load_prompts()
    for d in domains.values():
        prompts.check_graph(d["graph"])
    data = json.loads(json.dumps(prompts.data))
    data["cooking"]["user"]["select_i"] = "Pick number {selection_number}."
    with pytest.raises(PromptError, match=r"cooking\.user\.select_i: unknown field \{selection_number\}"):
        Prompts(data, "prompts.yaml")
    data = json.loads(json.dumps(prompts.data))
    del data["ecommerce"]["system"]["shown_cart"]
    with pytest.raises(PromptError, match=r"missing template\(s\).*ecommerce\.system\.shown_cart"):
        Prompts(data, "prompts.yaml").check_graph(domains["ecommerce"]["graph"])
    data = json.loads(json.dumps(prompts.data))
    data["naive"] = 'Reply {"intent": 1}'
    with pytest.raises(PromptError, match=r"naive: .*literal braces"):
        Prompts(data, "prompts.yaml")
    with pytest.raises(PromptError, match=r"naive: no value for field \{n_turns\}"):
        prompts.render("naive", {k: "x" for k in prompts.fields["naive"] - {"n_turns"}})


def test_generation_prompts_hold_no_judge_prompt(domains):
    """The conversations' generator fingerprint hashes the whole generation prompts file, so a
    judge prompt there would regenerate every conversation when edited: it is refused; the
    judge's prompts live in judge_prompts.yaml only."""
    prompts = load_prompts()
    assert not {k for k in prompts.data if "judge" in k}
    data = json.loads(json.dumps(prompts.data))
    data["judge"] = "Score {candidate} against {reference}."
    with pytest.raises(PromptError, match=r"unknown top-level key\(s\) \['judge'\].*judge_prompts\.yaml"):
        Prompts(data, "prompts.yaml")
    judge_file = json.dumps(load_judge_prompts(), sort_keys=True)
    assert "Reference response" in judge_file and "Reference response" not in json.dumps(prompts.data)


# --------------------------------------------------------------------------- naive baseline and splits


# The graph's hard constraints a naive conversation can break (the graph never does).
def graph_violations(intents: list[str]) -> int:
    seen, bad = set(), 0
    for i in intents:
        if i == "select_i" and not seen & {"search_recipe", "suggest_recipe", "more_results"}:
            bad += 1
        if i in ("next_step", "done_step", "acknowledge_step", "goto_step") and not seen & {"begin_task", "acknowledge_task"}:
            bad += 1
        bad += i in ("search_recipe", "suggest_recipe") and bool(seen & {"search_recipe", "suggest_recipe"})
        seen.add(i)
    return bad


def test_naive_baseline_is_parseable_deterministic_and_unconstrained(domains, generated, tmp_path):
    d = domains["cooking"]
    stats = generate_naive(8, "cooking", d["graph"], d["items"], make_backend({"kind": "offline"}, tmp_path / "c"),
                           tmp_path / "naive.jsonl", seed=3)
    assert stats["conversations"] == 8 and stats["failed"] == 0 and stats["rejected_replies"] == 0
    convs = read_jsonl(tmp_path / "naive.jsonl")
    for c, line in zip(convs, (tmp_path / "naive.txt.jsonl").read_text().splitlines()):
        text = json.loads(line)["text"]
        parsed = parse(text, strict=True)
        assert parsed.turns == c.turns and c.meta["method"] == "naive"
        assert all(t.intent in d["graph"].intents for t in c.turns if t.role == "human")
        assert not any(t.role in ("results", "recipe", "suggestions") for t in c.turns)  # no retrieval
    naive_bad = sum(graph_violations([t.intent for t in c.turns if t.role == "human"]) for c in convs)
    graph_bad = sum(graph_violations([t.intent for t in c.turns if t.role == "human"]) for c in generated["cooking"]["convs"])
    assert graph_bad == 0 and naive_bad > 0
    generate_naive(8, "cooking", d["graph"], d["items"], make_backend({"kind": "offline"}, tmp_path / "c2"),
                   tmp_path / "again.jsonl", seed=3)
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "naive.jsonl").read_bytes()


def test_split_is_deterministic_by_conversation_id(generated):
    convs = generated["cooking"]["convs"] + generated["ecommerce"]["convs"]
    train, held = split_train_heldout(convs, 0.2, seed=0)
    assert len(held) == 4 and len(train) == 16 and not {c.id for c in train} & {c.id for c in held}
    assert [c.id for c in train] == [c.id for c in convs if c not in held]  # order kept
    train2, held2 = split_train_heldout(list(reversed(convs)), 0.2, seed=0)
    assert {c.id for c in held2} == {c.id for c in held}
    assert {c.id for c in split_train_heldout(convs, 0.2, seed=1)[1]} != {c.id for c in held}
    assert split_train_heldout(convs, 0.0, 0)[1] == []
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_train_heldout(convs, 1.0, 0)


# --------------------------------------------------------------------------- judge


def test_heuristic_judge_on_hand_cases(tmp_path):
    judge = HeuristicJudge()
    ctx = "USER: How long do I bake the pear crumble?"
    ref = "Bake the pear crumble for 35 minutes until golden."
    assert judge(ctx, ref, ref) == 2
    assert judge(ctx, ref, "The stock market closed higher on Tuesday.") == 0
    assert judge(ctx, ref, "The crumble needs more time in the oven.") == 1  # related, worse
    assert judge(ctx, ref, "") == 0
    items = [(ctx, ref, ref), (ctx, ref, "Quantum chromodynamics explains quarks."), (ctx, ref, "Bake it for a while.")]
    assert judge_relevance(judge, items) == [judge(*x) for x in items] == [2, 0, 1]
    # junk earns nothing although its characters occur in the context / reference
    listing = "RESULTS: id: 1, Baked Pear Crumble\nid: 2, Pear Tart\nUSER: I'll take 1."
    assert judge(listing, ref, "1.") == 0  # a number (the old rule gave 1: "1" is in the context)
    assert judge(listing, ref, "1. 2. 3.") == 0
    assert judge(ctx, ref, "?!") == 0 and judge(ctx, ref, "the a of") == 0  # punctuation, stop words
    assert judge(ctx, ref, "pear") == 0 and judge(ctx, ref, "pear pear pear pear") == 0  # < 2 distinct words
    # context credit needs >= 2 distinct content words of the candidate in the context
    assert judge(ctx, ref, "Not long, how nice.") == 1  # "how", "long" from the question; nothing of ref
    assert judge(ctx, ref, "Long story, friend.") == 0  # only "long" is in the context
    # short references: the bar is the reference's own size; an exact copy (case, spaces) scores 2
    assert judge("USER: thanks", "Okay.", "  okay. ") == 2
    assert judge("USER: thanks", "Okay.", "Sure.") == 0
    assert judge.describe()["min_tokens"] == 2 and judge.model == "token-overlap-judge-v2"
    assert HeuristicJudge(min_tokens=1)(ctx, ref, "pear") == 1  # the threshold is a parameter
    with pytest.raises(ValueError, match="min_tokens"):
        HeuristicJudge(min_tokens=0)
    assert judge.describe()["note"].startswith("transparent") and "not an LLM" in judge.describe()["note"]
    # one params spec for both profiles: the LLM keys are ignored by the heuristic kind
    made = make_judge({"kind": "heuristic", "good": 0.6, "model": "gpt-x", "api_key_env": "OPENAI_API_KEY"})
    assert isinstance(made, HeuristicJudge) and made.good == 0.6
    assert make_judge({"kind": "heuristic", "min_tokens": 3}).min_tokens == 3
    with pytest.raises(ValueError, match="related <= good"):
        HeuristicJudge(good=0.1, related=0.5)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['gud'\]"):
        make_judge({"kind": "heuristic", "gud": 1})
    with pytest.raises(ValueError, match="kind must be heuristic"):
        make_judge({"kind": "offline"})


def test_human_labels_and_agreement(tmp_path):
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("conversation_id\tturn\tlabel\nc1\t1\t2\nc1\t3\t0\nc2\t1\t1\n")
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text('{"id": "c1", "turn_index": 1, "label": 2}\n\n{"id": "c1", "turn_index": 3, "label": 0}\n'
                     '{"id": "c2", "turn_index": 1, "label": 1}\n')
    human = load_human_labels(tsv)
    assert human == load_human_labels(jsonl) == {("c1", 1): 2, ("c1", 3): 0, ("c2", 1): 1}
    judge = {("c1", 1): 2, ("c1", 3): 1, ("c2", 1): 1}
    keys = sorted(human)
    agree = relevance_agreement([judge[k] for k in keys], [human[k] for k in keys])
    assert agree["n"] == 3 and agree["exact_agreement"] == pytest.approx(2 / 3)
    (tmp_path / "bad.tsv").write_text("conversation_id\tturn\tlabel\nc1\t1\t3\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:2: label must be 0, 1 or 2"):
        load_human_labels(tmp_path / "bad.tsv")
    (tmp_path / "dup.jsonl").write_text('{"id": "c", "turn": 1, "label": 1}\n{"id": "c", "turn": 1, "label": 2}\n')
    with pytest.raises(ValueError, match=r"dup\.jsonl:2: .*labelled twice"):
        load_human_labels(tmp_path / "dup.jsonl")


# --------------------------------------------------------------------------- a real HTTP endpoint


class ChatHandler(BaseHTTPRequestHandler):
    """A tiny scripted OpenAI-compatible server: replies built from the request's prompt."""

    requests: list

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"auth": self.headers.get("Authorization"), "body": body})
        msgs = body["messages"]
        prompt = msgs[-1]["content"] if msgs[-1]["role"] == "user" else ""
        first = msgs[0]["content"]
        if first.startswith("You simulate the USER"):
            slots = json.loads(re.search(r"values verbatim: (\{.*\})\n", msgs[1]["content"]).group(1))
            text = "Well, " + "; ".join(s for v in slots.values() for s in strings(v)) if slots else "Okay, go on."
            content = "Sure! " + json.dumps({"text": text}) + " Hope that helps."  # prose around: repaired locally
        elif first.startswith("Write a complete conversation"):
            if len(msgs) == 1:
                content = "I would rather not."  # no turn markers: rejected and re-asked
            else:
                content = ('Here it is:\n### ASSISTANT: Hi, what shall we cook? ### HUMAN: Find me a pear crumble. '
                           '## {"intent": "search_recipe", "query": "pear crumble"} ### ASSISTANT: Here you go.')
        elif "Candidate response:" in prompt:
            content = json.dumps({"score": "2"})
        else:
            content = json.dumps({"text": "Happy to help with that."})
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
        send_json(self, 200, reply)


@pytest.fixture
def endpoint(monkeypatch):
    handler = type("H", (ChatHandler,), {"requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    monkeypatch.setenv("TEST_LLM_KEY", CANARY)
    monkeypatch.setenv("TEST_LLM_URL", f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    try:
        yield handler.requests
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_generation_through_an_openai_compatible_server(domains, endpoint, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    d = domains["cooking"]
    spec = {"kind": "openai", "model": "m", "api_key_env": "TEST_LLM_KEY", "base_url_env": "TEST_LLM_URL",
            "max_retries": 0, "timeout_s": 10}
    backend = make_backend(spec, tmp_path / "cache")
    walks = d["walks"][:2]
    stats = generate_conversations(walks, d["graph"], d["items"], backend, tmp_path / "out" / "c.jsonl")
    assert stats["conversations"] == 2 and stats["user_turns_missing_slots"] == 0
    convs = read_jsonl(tmp_path / "out" / "c.jsonl")
    assert [t.intent for t in convs[0].turns if t.role == "human"] == [s.intent for s in walks[0].user_steps()]
    assert any(t.text == "Happy to help with that." for t in convs[0].turns if t.role == "assistant")
    n_turns = sum(t.role in ("human", "assistant") for c in convs for t in c.turns)
    assert len(endpoint) == n_turns == backend.stats()["calls"]
    sent = endpoint[1]["body"]["messages"]
    assert sent[0]["role"] == "system" and "MarunaChef" in sent[0]["content"]
    assert endpoint[1]["body"]["response_format"] == {"type": "json_object"}
    # the naive baseline re-asks a reply it cannot read, and skips after the bound
    naive = generate_naive(2, "cooking", d["graph"], d["items"], backend, tmp_path / "out" / "naive.jsonl", seed=0)
    assert naive["conversations"] == 2 and naive["rejected_replies"] == 2
    assert read_jsonl(tmp_path / "out" / "naive.jsonl")[0].turns[1].slots == {"query": "pear crumble"}
    skipped = generate_naive(2, "cooking", d["graph"], d["items"], make_backend(spec), tmp_path / "out" / "n0.jsonl",
                             seed=0, max_repairs=0)
    assert skipped["conversations"] == 0 and skipped["failed"] == 2
    assert judge_relevance(make_judge(spec), [("USER: hi", "Hello!", "Hi there!")]) == [2]
    # the key reached the server and nothing else
    assert all(r["auth"] == f"Bearer {CANARY}" for r in endpoint)
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert CANARY.encode() not in f.read_bytes(), f
    assert CANARY not in caplog.text and CANARY not in json.dumps(stats, default=str)


# --------------------------------------------------------------------------- stage drivers


def test_stage_drivers(shared_data, tmp_path, capsys, root):
    from irrepro.cli import main
    from irrepro.syntod.stages import SEED_SOURCES, generate_stage, walks_stage

    assert set(SEED_SOURCES) == {"cooking", "ecommerce"}
    P = {"syntod": {"domains": ["cooking", "ecommerce"], "methods": ["graph", "naive"], "n_conversations": 5,
                    "heldout_fraction": 0.2, "seed": 0, "cache_dir": str(tmp_path / "cache"),
                    "llm": {"kind": "offline", "model": "gpt-x", "api_key_env": "OPENAI_API_KEY", "timeout_s": 60,
                            "temperature": 0.7, "max_tokens": 512, "seed": 0}}}
    seeds = str(shared_data / SEEDS["ecommerce"])
    wstats = walks_stage(P, "ecommerce", seeds, str(tmp_path / "w.jsonl"), str(tmp_path / "w.json"))
    assert wstats["n"] == 5 and wstats["pager"]["kind"] == "bm25"
    assert json.loads((tmp_path / "w.json").read_text()) == wstats
    assert not list(tmp_path.glob(".catalog-*"))  # the temporary index is gone
    for method in ("graph", "naive"):
        out = tmp_path / method
        stats = generate_stage(P, "ecommerce", method, str(tmp_path / "w.jsonl"), seeds, str(out))
        assert stats["conversations"] == 5 and stats["split"] == {"train": 4, "heldout": 1, "heldout_fraction": 0.2,
                                                                  "seed": 0}
        train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
        assert len(train) == 4 and all(set(r) == {"text"} for r in train)
        held = read_jsonl(out / "heldout.jsonl")
        assert len(held) == 1 and held[0].meta["method"] == method
        assert json.loads((out / "stats.json").read_text())["summary"]["conversations"] == 5
    with pytest.raises(ValueError, match=r"syntod\.llm: unknown key\(s\) \['api_key'\]"):
        generate_stage({"syntod": {**P["syntod"], "llm": {"kind": "offline", "api_key": CANARY}}}, "ecommerce",
                       "naive", None, seeds, str(tmp_path / "x"))
    with pytest.raises(ValueError, match="syntod lacks cache_dir"):
        generate_stage({"syntod": {k: v for k, v in P["syntod"].items() if k != "cache_dir"}}, "ecommerce", "naive",
                       None, seeds, str(tmp_path / "x"))
    if "syntod:" not in (root / "params.yaml").read_text():  # the CLI wiring, until the lead adds the section
        rc = main(["syntod-generate", "--params", str(root / "params.yaml"), "--domain", "ecommerce", "--method",
                   "naive", "--seeds", seeds, "--out-dir", str(tmp_path / "cli")])
        assert rc == 2 and "section syntod is missing" in capsys.readouterr().err


def test_generation_prompts_and_temperatures_follow_the_release(domains, endpoint, tmp_path):
    """Recipe/datagen_multiple_llm.py generate_response: temperature 1.0 unless set (show_results
    0.0, next_step 0.0, more_results 1.2); show_step and in-task answers see the whole recipe;
    suggestion queries are keyword-style and do not name the dish."""
    d = domains["cooking"]
    spec = {"kind": "openai", "model": "m", "api_key_env": "TEST_LLM_KEY", "base_url_env": "TEST_LLM_URL",
            "max_retries": 0, "timeout_s": 10, "temperature": 1.0, "max_tokens": 2000}
    walks = sample_walks(d["graph"], 12, 3, d["items"], d["pager"])
    generate_conversations(walks, d["graph"], d["items"], make_backend(spec), tmp_path / "c.jsonl")
    seen: dict[str, set] = {}
    for req in endpoint:
        body = req["body"]
        ask = body["messages"][1]["content"]
        m = re.search(r"^Intent: (\w+) ", ask, re.M) or re.search(r"^Your task \((\w+)\)", ask, re.M)
        seen.setdefault(m.group(1), set()).add(body["temperature"])
        assert body["max_tokens"] == 2000
        if m.group(1) in ("show_step", "task_response"):
            recipe = next(r for r in d["items"] if f"title: {r.title}," in ask)
            assert all(step.split()[0] in ask for step in recipe.steps)  # every step of the recipe is there
            assert "ingredients: [" in ask
    assert seen["show_results"] == {0.0} and seen["next_step"] == {0.0}
    assert seen.get("more_results", {1.2}) == {1.2}
    assert seen["show_step"] == {1.0} and seen["select_i"] == {1.0}
    for conv in read_jsonl(tmp_path / "c.jsonl"):
        target = d["by_id"][conv.meta["target"]]
        for t in conv.turns:
            if t.intent == "suggest_recipe":
                words = set(re.findall(r"[a-z0-9']+", t.slots["query"].lower()))
                assert words and not words & set(re.findall(r"[a-z0-9']+", target.title.lower())), t.slots
            if t.intent == "search_recipe" and target.raw.get("query"):
                assert t.slots["query"] == target.raw["query"]
