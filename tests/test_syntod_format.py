"""SynTOD conversation format: every published test conversation, round trips, irregular input."""

import json
import random
import re

import pytest

from irrepro.syntod.format import (
    Conversation,
    SynTODFormatError,
    Turn,
    header_domain,
    header_for,
    header_intents,
    parse,
    parse_completion,
    read_jsonl,
    render,
    summarize,
    system_turn_examples,
    to_text_jsonl,
    user_turn_examples,
    write_jsonl,
)

# Measured once on the published files (pinned by sha256 in the data mirror).
PUBLISHED = {
    "recipe_test_gemini_v3.jsonl": dict(conversations=95, human_turns=1418, assistant=1482, grounding=275),
    "recipe_test_llama_v3.jsonl": dict(conversations=95, human_turns=1379, assistant=1443, grounding=251),
    "ecommerce_test_gemini_v3.jsonl": dict(conversations=103, human_turns=1174, assistant=1230, grounding=238),
    "ecommerce_test_llama_v3.jsonl": dict(conversations=100, human_turns=1097, assistant=1158, grounding=219),
}
COOKING_HEADER_INTENTS = ["search_recipe", "suggest_recipe", "more_results", "select", "show_ingredients", "begin",
                          "next_step", "goto_step", "finish", "open_domain_qa", "in_task_qa", "chitchat", "set_timer"]


@pytest.fixture(scope="module", params=sorted(PUBLISHED))
def published(request, shared_data):
    path = shared_data / "syntod" / request.param
    if not path.exists():
        pytest.skip(f"{path} absent")
    lines = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln.strip()]
    return path, [json.loads(ln)["text"] for ln in lines], read_jsonl(path)


def test_published_counts(published):
    path, texts, convs = published
    want = PUBLISHED[path.name]
    s = summarize(convs)
    assert s["conversations"] == len(texts) == want["conversations"]
    # Independent reference: marker counts in the raw strings.
    assert s["human_turns"] == sum(t.count("### HUMAN:") for t in texts) == want["human_turns"]
    assert s["turns"]["assistant"] == sum(t.count("### ASSISTANT:") for t in texts) == want["assistant"]
    grounding = sum(s["turns"].get(r, 0) for r in ("results", "suggestions", "recipe"))
    assert grounding == sum(len(re.findall(r"### (RESULTS|SUGGESTIONS|RECIPE):", t)) for t in texts) == want["grounding"]
    assert s["annotated_human_turns"] == want["human_turns"]
    assert s["missing_annotations"] == s["unreadable_annotations"] == s["warnings"] == 0
    assert all(c.meta["source"] == f"{path.name}:{i}" for i, c in enumerate(convs, 1))


def test_published_annotations_match_independent_extraction(published):
    path, texts, convs = published
    for text, conv in zip(texts, convs):
        # Independent reference: every human segment's "## {...}" tail, decoded by json.
        segments = re.split(r"### (?:ASSISTANT|HUMAN|RESULTS|SUGGESTIONS|RECIPE):", text)[1:]
        markers = re.findall(r"### (ASSISTANT|HUMAN|RESULTS|SUGGESTIONS|RECIPE):", text)
        gold = [json.loads(seg.split("## ", 1)[1]) for m, seg in zip(markers, segments) if m == "HUMAN"]
        got = [t.annotation for t in conv.turns if t.role == "human"]
        assert got == gold
        assert all(isinstance(t.intent, str) for t in conv.turns if t.role == "human")


def test_published_byte_identical_round_trip(published, tmp_path):
    path, texts, convs = published
    assert [render(c) for c in convs] == texts
    assert all(parse(render(c), c.meta["source"], meta={"id": c.id}) == c for c in convs)
    out = tmp_path / path.name
    assert to_text_jsonl(convs, out) == len(texts)
    assert out.read_bytes() == path.read_bytes()


def test_published_structured_jsonl_round_trip(published, tmp_path):
    path, texts, convs = published
    out = tmp_path / "structured.jsonl"
    write_jsonl(convs, out)
    rec = json.loads(out.read_text().split("\n")[0])
    assert {"id", "domain", "source", "intents", "turns", "header"} <= set(rec)
    assert rec["domain"] == ("cooking" if path.name.startswith("recipe") else "ecommerce")
    back = read_jsonl(out)
    assert back == convs
    assert [render(c) for c in back] == texts


def test_published_teacher_forcing(published):
    path, texts, convs = published
    n_user = n_sys = 0
    for text, conv in zip(texts, convs):
        users, systems = user_turn_examples(conv), system_turn_examples(conv)
        n_user += len(users)
        n_sys += len(systems)
        for ex in users:
            assert ex.prompt.endswith("## ") and text.startswith(ex.prompt + ex.target)
            assert "intent" in json.loads(ex.target)
        for ex in systems:
            assert ex.prompt.endswith(tuple(["### ASSISTANT: ", "### ASSISTANT:   "]))
            assert text.startswith(ex.prompt + ex.target)
    assert n_user == PUBLISHED[path.name]["human_turns"]
    assert n_sys == PUBLISHED[path.name]["assistant"]


def test_published_headers(published):
    path, texts, convs = published
    for conv in convs:
        domain = "cooking" if path.name.startswith("recipe") else "ecommerce"
        assert conv.domain == header_domain(conv.header) == domain
        assert conv.header == header_for(domain, conv.intents)  # byte for byte
        if domain == "cooking":
            assert conv.intents == COOKING_HEADER_INTENTS
        # what our generator writes (the graph's header_intents) is the published header
        from irrepro.syntod.graph import load_graph

        assert conv.header == header_for(domain, load_graph(domain).header_intents)


SMALL = ('Conversation between human and AI that helps with recipes, allowed user intents are; '
         'search_recipe, select: ### ASSISTANT: Hi! ### HUMAN: Find pasta. ## {"intent": "search_recipe", '
         '"query": "pasta"} ### RESULTS: id: 1, Pasta ### ASSISTANT: Found one. ## {"selected_ids": [1]} '
         '### HUMAN: The first. ## {"intent": "select_i", "selection": 1}')


def test_small_conversation_fields_and_views():
    conv = parse(SMALL, "small.jsonl:1")
    assert conv.intents == ["search_recipe", "select"]
    assert [t.role for t in conv.turns] == ["assistant", "human", "results", "assistant", "human"]
    assert conv.turns[1] == Turn("human", "Find pasta.", "search_recipe", {"query": "pasta"},
                                 '{"intent": "search_recipe", "query": "pasta"}', (" ", " ", " "))
    assert conv.turns[3].intent is None and conv.turns[3].slots == {"selected_ids": [1]}
    assert conv.turns[4].ws == (" ", " ", "")
    users = user_turn_examples(conv)
    assert users[0].prompt == SMALL.split('{"intent": "search_recipe"')[0]
    assert users[0].target == '{"intent": "search_recipe", "query": "pasta"}'
    assert users[1].target == '{"intent": "select_i", "selection": 1}'
    systems = system_turn_examples(conv)
    assert [s.target for s in systems] == ["Hi!", "Found one."]
    assert systems[1].prompt == SMALL.split("Found one.")[0]
    assert render(conv) == SMALL


def test_made_turns_render_in_published_layout():
    conv = Conversation(header_for("cooking", ["search_recipe", "select"]), ["search_recipe", "select"], [
        Turn.make("assistant", "Hi!"),
        Turn.make("human", "Find pasta.", "search_recipe", {"query": "pasta"}),
        Turn.make("results", "id: 1, Pasta"),
        Turn.make("assistant", "Found one.", slots={"selected_ids": [1]}),
        Turn.make("human", "The first.", "select_i", {"selection": 1}),
    ])
    conv.turns[-1].ws = (" ", " ", "")
    assert render(conv) == SMALL
    assert parse(render(conv)).turns == conv.turns


def _warnings(text, source="x.jsonl:7"):
    return parse(text, source).meta["warnings"]


@pytest.mark.parametrize("body,expected", [
    ("### ASSISTANT: Hi ### HUMAN: pasta please", "x.jsonl:7: human turn 1: no annotation"),
    ('### ASSISTANT: Hi ### HUMAN: pasta ## {"intent": "search_recipe", query: pasta}',
     "x.jsonl:7: human turn 1: annotation is not JSON: Expecting property name"),
    ('### ASSISTANT: Hi ### HUMAN: a ### HUMAN: b ## {"intent": "x"} thanks',
     "x.jsonl:7: human turn 2: trailing text after the annotation JSON: 'thanks'"),
    ('### ASSISTANT: Hi ### HUMAN: pasta ## {"query": "pasta"}', "x.jsonl:7: human turn 1: annotation has no intent"),
    ('### ASSISTANT: Hi ### HUMAN: pasta ## {"intent": 3}', "x.jsonl:7: human turn 1: intent is not a string: 3"),
    ("### ASSISTANT: Hi ### SYSTEM: x", "x.jsonl:7: system turn 1: unknown marker '### SYSTEM:'"),
    ("no markers at all", "x.jsonl:7: no '### ASSISTANT:' / '### HUMAN:' turn markers"),
])
def test_irregular_input_is_read_with_warnings_and_round_trips(body, expected):
    text = "Chat, allowed user intents are; a, b: " + body
    warnings = _warnings(text)
    assert any(w.startswith(expected) for w in warnings), warnings
    conv = parse(text, "x.jsonl:7")
    assert render(conv) == text
    assert parse(render(conv), "x.jsonl:7") == conv
    with pytest.raises(SynTODFormatError, match=re.escape(warnings[0][:40])):
        parse(text, "x.jsonl:7", strict=True)


def test_malformed_annotation_keeps_raw_text():
    text = '### ASSISTANT: Hi ### HUMAN: pasta  ## {"intent": "search_recipe", "query": "pas'
    conv = parse(text)
    human = conv.turns[1]
    assert human.raw_annotation == '{"intent": "search_recipe", "query": "pas'
    assert human.intent is None and human.slots is None and human.annotation is None
    assert human.ws == (" ", "  ", "")
    assert summarize([conv])["unreadable_annotations"] == 1
    assert "header lists no intents" in conv.meta["warnings"][0]


def test_whitespace_variants_and_markdown_headings_round_trip():
    text = ("H, allowed user intents are; a:  ### ASSISTANT:   ## Ingredients\n- x\n  ### HUMAN:"
            ' ## {"intent": "a"}\n ### ASSISTANT:\tok ## not json ## {"selected_ids": []}   ### RECIPE:   ')
    conv = parse(text)
    assert conv.turns[0].text == "## Ingredients\n- x" and conv.turns[0].raw_annotation is None
    assert conv.turns[1].text == "" and conv.turns[1].intent == "a" and conv.turns[1].ws == (" ", "", "\n ")
    assert conv.turns[2].text == "ok ## not json" and conv.turns[2].slots == {"selected_ids": []}
    assert conv.turns[3].text == "" and conv.turns[3].ws[0] == "   "
    assert render(conv) == text
    assert parse(render(conv)) == conv


def test_random_splices_round_trip():
    rng = random.Random(0)
    pieces = ["### ASSISTANT:", "### HUMAN:", "### RESULTS:", "### RECIPE:", "### SUGGESTIONS:", "### X_Y:",
              "## ", '## {"intent": "a", "q": "b"}', "## {broken", " ", "  ", "\n", "text", "#", "##", ":",
              '{"k": 1}', "é😊", "\t"]
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        conv = parse(text)
        assert render(conv) == text
        assert parse(render(conv)) == conv


def test_read_jsonl_errors_name_file_and_line(tmp_path):
    good = json.dumps({"text": SMALL})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(f"{good}\n\n{{not json\n")
    with pytest.raises(SynTODFormatError, match=r"^bad\.jsonl:3: line is not JSON"):
        read_jsonl(bad)
    bad.write_text(f"{good}\n{json.dumps({'txt': 'x'})}\n")
    with pytest.raises(SynTODFormatError, match=r"^bad\.jsonl:2: record has neither"):
        read_jsonl(bad)
    broken = SMALL.replace('"query": "pasta"}', '"query": pasta}')
    bad.write_text(f"{good}\n{json.dumps({'text': broken})}\n")
    convs = read_jsonl(bad)
    assert convs[1].meta["warnings"][0].startswith("bad.jsonl:2: human turn 1: annotation is not JSON")
    with pytest.raises(SynTODFormatError, match=r"^bad\.jsonl:2: human turn 1: annotation is not JSON"):
        read_jsonl(bad, strict=True)


def test_structured_records_are_validated(tmp_path):
    path = tmp_path / "conv.jsonl"
    write_jsonl([parse(SMALL, "s:1")], path)
    rec = json.loads(path.read_text())

    def check(mutate, pattern):
        r = json.loads(json.dumps(rec))
        mutate(r)
        path.write_text(json.dumps(r) + "\n")
        with pytest.raises(SynTODFormatError, match=pattern):
            read_jsonl(path)

    check(lambda r: r.pop("header"), r"conv\.jsonl:1: missing key 'header'")
    check(lambda r: r["turns"][1].pop("text"), r"conv\.jsonl:1: turns\[1\]: missing key 'text'")
    check(lambda r: r["turns"][1].update(intent=["x"]), r"turns\[1\]: key 'intent' has type list")
    check(lambda r: r["turns"][1].update(ws=[" ", "x", " "]), r"turns\[1\]: key 'ws' must be three")
    check(lambda r: r["turns"][1].update(intent="other"), r"turns\[1\]: intent/slots disagree")
    with pytest.raises(ValueError, match="fmt must be"):
        write_jsonl([], path, fmt="csv")


def test_parse_completion():
    assert parse_completion('{"intent": "next_step"} ### ASSISTANT: ok') == {"intent": "next_step"}
    assert parse_completion(' {"intent": "search_recipe", "query": "pa') == {"intent": "search_recipe"}
    assert parse_completion("no idea") is None
    assert header_intents("no list here") == [] and header_domain("something else") is None
    with pytest.raises(ValueError, match="unknown SynTOD domain"):
        header_for("travel", [])


def test_check_file_and_cli_flag_turns_that_do_not_round_trip(tmp_path, root):
    from irrepro.cli import main
    from irrepro.syntod.format import check_file

    good = parse(SMALL, "s:1")
    leaky = parse(SMALL, "s:2")
    leaky.turns[0].text = "Hi! ### HUMAN: a marker inside a turn"
    path = tmp_path / "ours.jsonl"
    write_jsonl([good, leaky], path)
    report = check_file(path)
    assert report["conversations"] == 2 and report["round_trip_mismatches"] == 1
    out = tmp_path / "check.json"
    argv = ["tools", "syntod-check", "--params", str(root / "params.yaml"), "--inputs", str(path), "--out", str(out)]
    assert main(argv) == 1
    assert json.loads(out.read_text())["ours.jsonl"]["round_trip_mismatches"] == 1
    write_jsonl([good], path)
    assert main(argv) == 0
