"""Train items are never test items: the item split, the items of a conversation (on the
published test files), the training-catalog route, the unseen test subsets in the evaluation,
and a generation run whose training conversations never mention a test item.

Independent references: conversation items are checked against direct regular expressions over
the raw published text and against hand-read conversations; the split against a by-hand
ranking; the leakage check reads the generated ``train.jsonl`` text itself.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from irrepro.params import load_params
from irrepro.syntod.format import Conversation, parse, read_jsonl
from irrepro.syntod.graph import load_graph, load_items
from irrepro.syntod.items import (
    TEST_FILE,
    TRAIN_FILE,
    add_unseen_sets,
    conversation_items,
    item_split_params,
    items_stage,
    norm_title,
    read_records,
    split_items,
    training_catalog,
    unseen_counts,
)

CATALOGS = {"cooking": "syntod/recipe_seed_test_set.jsonl", "ecommerce": "syntod/ecommerce_product_catalog_test.jsonl"}
PUBLISHED = {"cooking": ["syntod/recipe_test_gemini_v3.jsonl", "syntod/recipe_test_llama_v3.jsonl"],
             "ecommerce": ["syntod/ecommerce_test_gemini_v3.jsonl", "syntod/ecommerce_test_llama_v3.jsonl"]}


def titles(records) -> frozenset[str]:
    return frozenset(norm_title(r["title"]) for r in records)


@pytest.fixture(scope="module")
def raw(shared_data, tmp_path_factory):
    """A raw directory as the download stage leaves it (only the SynTOD files)."""
    out = tmp_path_factory.mktemp("raw")
    shutil.copytree(shared_data / "syntod", out / "syntod")
    return out


@pytest.fixture(scope="module")
def P(root):
    return load_params(root / "params.yaml", "mini")


# --------------------------------------------------------------------------- the split


def test_split_is_seeded_by_id_not_by_file_order(shared_data):
    recs = read_records(shared_data / CATALOGS["cooking"])
    train, test = split_items(recs, 0.3, 0)
    assert (len(train), len(test)) == (70, 30)
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in test})
    import hashlib

    by_hand = sorted(recs, key=lambda r: hashlib.sha256(f"0:{r['id']}".encode()).hexdigest())[:30]
    assert {r["id"] for r in test} == {r["id"] for r in by_hand}
    train2, test2 = split_items(list(reversed(recs)), 0.3, 0)
    assert {r["id"] for r in test2} == {r["id"] for r in test}
    assert {r["id"] for r in split_items(recs, 0.3, 1)[1]} != {r["id"] for r in test}
    with pytest.raises(ValueError, match="test_fraction 0.001 leaves 0 of 100"):
        split_items(recs, 0.001, 0)


def test_item_split_params_name_the_key():
    with pytest.raises(ValueError, match="syntod.item_split is missing"):
        item_split_params({"syntod": {}})
    with pytest.raises(ValueError, match="syntod.item_split lacks items_of"):
        item_split_params({"syntod": {"item_split": {"test_fraction": 0.3, "seed": 0}}})
    with pytest.raises(ValueError, match="test_fraction must be in"):
        item_split_params({"syntod": {"item_split": {"test_fraction": 1.0, "seed": 0, "items_of": "selected"}}})
    with pytest.raises(ValueError, match="items_of must be one of"):
        item_split_params({"syntod": {"item_split": {"test_fraction": 0.3, "seed": 0, "items_of": "all"}}})


# --------------------------------------------------------------------------- items of a conversation


def test_every_published_recipe_block_is_an_item(shared_data):
    cat = titles(read_records(shared_data / CATALOGS["cooking"]))
    block = re.compile(r"### RECIPE: title: (.*?), description: ")
    differ = []
    for rel in PUBLISHED["cooking"]:
        lines = (shared_data / rel).read_text(encoding="utf-8").splitlines()
        convs = read_jsonl(shared_data / rel)
        for line, conv in zip(lines, convs, strict=True):
            expected = {norm_title(t) for t in block.findall(json.loads(line)["text"])}
            assert expected <= cat  # the published recipe blocks are all test-seed recipes
            selected = conversation_items(conv, cat, "selected")
            assert expected <= selected <= conversation_items(conv, cat, "mentioned"), conv.meta["source"]
            if selected != expected:
                differ.append((conv.meta["source"], sorted(selected - expected)))
    # read by hand: gemini line 7 selects "Baked Pear Crumble" (select_i 2 on the pear page) but its
    # RECIPE block is Hainanese Chicken Rice, an inconsistency of the release; both are its items
    assert ("recipe_test_gemini_v3.jsonl:7", ["baked pear crumble"]) in differ and len(differ) == 10, differ


def test_hand_read_conversations(shared_data):
    cat = titles(read_records(shared_data / CATALOGS["ecommerce"]))
    first = read_jsonl(shared_data / PUBLISHED["ecommerce"][0])[0]
    # read by hand: the first page shows three products, `more_results` a second page, and
    # "select_i 1" picks its first line, "Lugz Men's Chukka Boot"
    picked = conversation_items(first, cat, "selected")
    assert norm_title("Lugz Men's Chukka Boot") in picked
    assert picked <= conversation_items(first, cat, "mentioned")
    recipe = read_jsonl(shared_data / PUBLISHED["cooking"][0])[0]
    assert conversation_items(recipe, titles(read_records(shared_data / CATALOGS["cooking"])), "selected") \
        == {"whipped cream"}


def test_titles_with_commas_and_longest_match():
    text = ("hdr: ### ASSISTANT: Hi ### HUMAN: soup please ## {\"intent\": \"search_recipe\", \"query\": \"soup\"} "
            "### RESULTS: id: 1, Soup, Hearty, 20 minutes, rating: 4 (2), nice\nid: 2, Soup, 5 minutes, plain "
            "### ASSISTANT: two soups ### HUMAN: the first ## {\"intent\": \"select_i\", \"selection\": 1} "
            "### ASSISTANT: ok")
    conv = parse(text)
    cat = frozenset({"soup", "soup, hearty"})
    assert conversation_items(conv, cat, "mentioned") == {"soup, hearty", "soup"}
    assert conversation_items(conv, cat, "selected") == {"soup, hearty"}
    with pytest.raises(ValueError, match="items_of must be one of"):
        conversation_items(conv, cat, "every")


def test_unseen_counts_of_the_mini_split_are_non_empty_everywhere(shared_data, P):
    """The counts the README and params comment quote; every published set keeps at least
    ``syntod.eval.max_conversations`` unseen conversations at mini."""
    spec = item_split_params(P)
    k = P["syntod"]["eval"]["max_conversations"]
    expected = {"recipe_test_gemini_v3.jsonl": 30, "recipe_test_llama_v3.jsonl": 26,
                "ecommerce_test_gemini_v3.jsonl": 25, "ecommerce_test_llama_v3.jsonl": 26}
    for domain, rel in CATALOGS.items():
        recs = read_records(shared_data / rel)
        train, test, _ = training_catalog(domain, recs, None, spec)
        for pub in PUBLISHED[domain]:
            counts = unseen_counts(read_jsonl(shared_data / pub), titles(train), titles(recs))
            name = pub.split("/")[-1]
            assert counts[f"unseen_{spec['items_of']}"] == expected[name] >= k, (name, counts)
            assert 0 < counts["unseen_mentioned"] <= counts["unseen_selected"]


# --------------------------------------------------------------------------- the paper route


def test_training_catalog_drops_test_items_and_normalizes(shared_data, tmp_path):
    test = read_records(shared_data / CATALOGS["cooking"])[:3]
    corpus = [
        {"id": 1, "title": "Tomato Soup", "steps": ["Chop.", "Boil."], "ingredients": ["tomato", "salt"], "minutes": 20},
        {"id": test[0]["id"], "title": "Other title, same id", "steps": ["x"]},
        {"id": 2, "title": "  " + test[1]["title"].upper() + " ", "steps": ["x"]},  # same title
        {"id": 3, "title": "No steps", "steps": []},
        {"id": 4, "steps": ["x"]},
        {"id": 1, "title": "Tomato Soup again", "steps": ["y"]},
        {"id": 5, "title": "Bread", "steps": [{"text": "Knead."}, {"stepNum": 9, "text": "Bake."}]},
    ]
    train, held, stats = training_catalog("cooking", test, corpus, {"test_fraction": 0.3, "seed": 0})
    assert [r["id"] for r in train] == [1, 5] and held == test
    assert stats["removed_test_items"] == 2 and stats["duplicates"] == 1
    assert stats["skipped"] == {"no steps": 1, "no title": 1}
    assert train[1]["steps"] == [{"stepNum": 1, "text": "Knead."}, {"stepNum": 2, "text": "Bake."}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in train))
    items = load_items(load_graph("cooking"), path)  # the walkers read the normalized records
    assert [i.title for i in items] == ["Tomato Soup", "Bread"] and items[0].ingredients == ["tomato", "salt"]
    products = [{"asin": "B01", "title": "Kettle"}, {"asin": test[0]["id"], "title": "x"}]
    ptrain, _, _ = training_catalog("ecommerce", [{"id": "B9", "title": "Mug"}], products, {})
    assert [r["id"] for r in ptrain] == ["B01", str(test[0]["id"])]
    with pytest.raises(ValueError, match="no usable training catalog record"):
        training_catalog("cooking", test, [{"id": 9}], {})


# --------------------------------------------------------------------------- the stage


def test_items_stage_writes_disjoint_catalogs_and_counts(raw, P, tmp_path):
    out = tmp_path / "items"
    m = items_stage(P, "ecommerce", raw, out, tmp_path / "m.json")
    train, test = read_records(out / TRAIN_FILE), read_records(out / TEST_FILE)
    assert (len(train), len(test), m["train_items"], m["test_items"]) == (76, 32, 76, 32)
    assert titles(train).isdisjoint(titles(test))
    assert json.loads((tmp_path / "m.json").read_text()) == m
    assert m["published"]["published_gemini"]["unseen_selected"] == 25 and m["mode"] == "split"
    paper_like = {"syntod": {**P["syntod"], "train_catalog": {"cooking": None, "ecommerce": "syntod_no_such"}}}
    with pytest.raises(KeyError, match="syntod_no_such"):
        items_stage(paper_like, "ecommerce", raw, tmp_path / "x", tmp_path / "x.json")


# --------------------------------------------------------------------------- evaluation subsets


def test_unseen_sets_keep_the_evaluation_keys(shared_data):
    recs = read_records(shared_data / CATALOGS["cooking"])
    train, _ = split_items(recs, 0.3, 0)
    convs = read_jsonl(shared_data / PUBLISHED["cooking"][0])
    sets = add_unseen_sets({"published_gemini": convs, "heldout": convs[:2]}, ["published_gemini"],
                           titles(train), titles(recs), "selected")
    assert list(sets) == ["published_gemini", "published_gemini_unseen", "heldout"]
    from irrepro.syntod.evaluation import conversation_key

    assert [c.id for c in sets["published_gemini"]] == [conversation_key(c, i) for i, c in enumerate(convs)]
    anonymous = [Conversation(c.header, c.intents, c.turns, {}) for c in convs[:3]]  # no id: the key by place
    assert [c.id for c in add_unseen_sets({"x": anonymous}, [], set(), set(), "selected")["x"]] == ["#0", "#1", "#2"]
    unseen = sets["published_gemini_unseen"]
    assert len(unseen) == 30 and {c.id for c in unseen} <= {c.id for c in sets["published_gemini"]}
    for c in unseen:
        assert not conversation_items(c, titles(recs), "selected") & titles(train)


# --------------------------------------------------------------------------- no leakage


def test_training_conversations_never_mention_a_test_item(raw, P, tmp_path):
    """Walks, graph and naive generation from the stage's train.jsonl (offline simulator): no
    test item's id appears in the generated train.jsonl texts, no test title stands where a
    title stands (RECIPE blocks, result lines), and no test title of four or more words appears
    anywhere (short ones such as "Whipped Cream" legitimately occur as ingredients)."""
    from irrepro.syntod.stages import generate_stage, walks_stage

    S = {**P["syntod"], "n_conversations": 12, "cache_dir": str(tmp_path / "cache")}
    PP = {**P, "syntod": S}
    for domain in ("cooking", "ecommerce"):
        items = tmp_path / domain / "items"
        items_stage(PP, domain, raw, items, tmp_path / f"{domain}.json")
        test = read_records(items / TEST_FILE)
        seeds = str(items / TRAIN_FILE)
        walks_stage(PP, domain, seeds, str(tmp_path / domain / "walks.jsonl"), str(tmp_path / domain / "w.json"))
        for method in ("graph", "naive"):
            out = tmp_path / domain / method
            generate_stage(PP, domain, method, str(tmp_path / domain / "walks.jsonl"), seeds, str(out))
            texts = [json.loads(x)["text"] for x in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
            assert texts
            body = norm_title("\n".join(texts))
            for r in test:
                t = norm_title(r["title"])
                if len(t.split()) >= 4:
                    assert t not in body, (domain, method, r["title"])
                assert f"title: {t}," not in body and not re.search(rf"id: \d+, (product_title: )?{re.escape(t)},", body), \
                    (domain, method, r["title"])
                assert not re.search(rf"(?<![\w-]){re.escape(str(r['id']).casefold())}(?![\w-])", body), \
                    (domain, method, r["id"])
            # and the structured view: every recipe block / result page item is a training item
            train_t, all_t = titles(read_records(items / TRAIN_FILE)), titles(read_records(items / TRAIN_FILE) + test)
            for conv in read_jsonl(out / "conversations.jsonl"):
                assert conversation_items(conv, all_t, "mentioned") <= train_t


def test_evaluation_scores_each_published_set_and_its_unseen_subset(raw, P, tiny_base_dir, tmp_path):
    """evaluate_stage with the items directory: `<name>_unseen` rows next to every published
    set, scored only on unseen conversations; a conversation in both sets has the same key and
    the same completions (generated once); the collected tables carry both labels."""
    from irrepro.syntod.evaluation import collect_stage, evaluate_stage

    items = tmp_path / "items"
    items_stage(P, "cooking", raw, items, tmp_path / "m.json")
    E = {**P["syntod"]["eval"], "max_conversations": 3, "responses_per_conversation": 1, "max_new_tokens_intent": 3,
         "max_new_tokens_response": 3, "max_len": 96, "scorers": ["strict"]}
    PP = {**P, "syntod": {**P["syntod"], "eval": E, "cache_dir": str(tmp_path / "cache")}}
    doc = evaluate_stage(PP, "cooking", "graph", str(tiny_base_dir("llama")), None, str(raw), None,
                         str(tmp_path / "r.json"), str(tmp_path / "p.jsonl"), str(items))
    sets = list(dict.fromkeys(r["test_set"] for r in doc["rows"]))
    assert sets == ["published_gemini", "published_gemini_unseen", "published_llama", "published_llama_unseen"]
    conv_rows = {r["test_set"]: r["value"] for r in doc["rows"] if r["metric"] == "conversations"}
    assert conv_rows == dict.fromkeys(sets, 3.0)
    preds = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    train_t = titles(read_records(items / TRAIN_FILE))
    all_t = train_t | titles(read_records(items / TEST_FILE))
    published = {c.id: c for c in read_jsonl(raw / PUBLISHED["cooking"][0])}
    for p in preds:
        if p["test_set"] == "published_gemini_unseen":
            assert not conversation_items(published[p["conversation"]], all_t, "selected") & train_t
    by_key = {}
    for p in preds:
        by_key.setdefault((p["test_set"].removesuffix("_unseen"), p["conversation"], p["turn"], p["kind"]),
                          set()).add(p["predicted"])
    assert all(len(v) == 1 for v in by_key.values())
    assert doc["item_split"]["items_of"] == "selected"
    collect_stage(PP, [str(tmp_path / "r.json")], str(tmp_path / "t.tsv"), str(tmp_path / "m2.json"),
                  str(tmp_path / "c.md"))
    assert "published_gemini_unseen" in (tmp_path / "t.tsv").read_text()
    assert "published_llama_unseen" in json.loads((tmp_path / "m2.json").read_text())["cooking"]["graph"]
    assert "| published_gemini_unseen |" in (tmp_path / "c.md").read_text()
