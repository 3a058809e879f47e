"""TOD metrics against hand-computed examples and direct sklearn/scipy calls."""

import pytest
from scipy.stats import kendalltau, spearmanr
from sklearn.metrics import cohen_kappa_score, f1_score

from irrepro.syntod.metrics import (
    attribute_pairs,
    duration_seconds,
    intent_scores,
    prf,
    relevance_agreement,
    slot_counts,
    slot_scores,
    tod_scores,
)

approx = pytest.approx


def test_intent_scores_hand_example():
    gold = ["a", "a", "b", "c"]
    pred = ["a", "b", "b", None]
    s = intent_scores(gold, pred)
    assert s["n"] == 4 and s["labels"] == ["a", "b", "c"]
    assert s["accuracy"] == 0.5
    # a: P 1, R 1/2 -> 2/3; b: P 1/2, R 1 -> 2/3; c: 0 -> macro 4/9.
    assert s["per_intent"] == {"a": approx(2 / 3), "b": approx(2 / 3), "c": 0.0}
    assert s["macro_f1"] == approx(4 / 9)
    # micro over the labels: tp 2, fp 1, fn 2 -> P 2/3, R 1/2, F1 4/7 (the None is a miss only).
    assert s["micro_f1"] == approx(4 / 7)
    y_pred = ["a", "b", "b", "<none>"]
    assert s["macro_f1"] == approx(f1_score(gold, y_pred, labels=["a", "b", "c"], average="macro"))
    assert s["micro_f1"] == approx(f1_score(gold, y_pred, labels=["a", "b", "c"], average="micro"))
    assert intent_scores(["x", "y"], ["x", "y"])["micro_f1"] == 1.0
    with pytest.raises(ValueError, match="2 gold intents but 1"):
        intent_scores(["a", "b"], ["a"])


def test_slot_rules_hand_examples():
    # free text: tokens {light, fluffy, vanilla, topping} vs {fluffy, vanilla, cream}
    assert slot_counts("query", "Light fluffy vanilla topping", "fluffy, Vanilla cream") == (2, 3, 4)
    assert slot_counts("query", ["boxer shorts", "fun"], "fun boxer") == (2, 2, 3)
    assert slot_counts("address", {"country": "South Africa"}, "south africa") == (2, 2, 2)
    assert slot_counts("query", "a a b", "a") == (1, 1, 3)  # multiset overlap
    # exact
    assert slot_counts("selection", 3, "3") == (1, 1, 1)
    assert slot_counts("selection", 3, 2) == (0, 1, 1)
    assert slot_counts("selection", 3, None) == (0, 0, 1)
    assert slot_counts("selection", None, 1) == (0, 1, 0)
    # id sets
    assert slot_counts("product_ids", [1, 2], ["2", 3]) == (1, 2, 2)
    assert slot_counts("list_of_products", ["Key Notes", "Happy Day"], ["key  notes"]) == (1, 1, 2)
    # attribute pairs in the published forms
    gold = [{"Style": "Ankle Bootie"}, {"size": "10"}]
    pred = [{"name": "style", "value": "ankle bootie"}, {"heel": "wedge"}]
    assert attribute_pairs(gold) == {"style:ankle bootie", "size:10"}
    assert attribute_pairs([{"Finish": "Satin", "Type": "Pull"}]) == {"finish:satin", "type:pull"}
    assert attribute_pairs([{"type": "Product Type", "value": "Dictionary"}]) == {"product type:dictionary"}
    assert slot_counts("attributes_list", gold, pred) == (1, 2, 2)
    # durations
    assert duration_seconds("1 hour, 23 minutes, and 45 seconds") == 5025
    assert duration_seconds("43:22") == 2602 and duration_seconds("1:02:03") == 3723
    assert duration_seconds("15 min") == 900 and duration_seconds("five minutes") == 300
    assert duration_seconds("half an hour") == 1800 and duration_seconds(90) == 90
    assert duration_seconds("soon") is None
    assert slot_counts("duration", "15 minutes", "900") == (1, 1, 1)
    assert slot_counts("duration", "an hour", "1 hour 30 min") == (0, 1, 1)
    # unknown keys by value type
    assert slot_counts("colour", "dark red", "red") == (1, 1, 2)
    assert slot_counts("ids", [1], [1]) == (1, 1, 1)


def test_slot_scores_pool_counts_over_turns():
    gold = [{"intent": "search", "query": "vegan pasta bake"}, {"intent": "select_i", "selection": 2},
            {"intent": "next_step"}, {"intent": "x", "product_ids": [1, 2]}]
    pred = [{"intent": "search", "query": "pasta bake"}, {"intent": "select_i", "selection": 1},
            {"intent": "next_step", "query": "more"}, None]
    s = slot_scores(gold, pred)
    # query: (2,2,3) + (0,1,0); selection: (0,1,1); product_ids: (0,0,2)
    assert (s["tp"], s["n_pred"], s["n_gold"], s["instances"]) == (2, 4, 6, 4)
    assert s["precision"] == approx(0.5) and s["recall"] == approx(1 / 3) and s["f1"] == approx(0.4)
    q = s["per_slot"]["query"]
    assert (q["tp"], q["n_pred"], q["n_gold"]) == (2, 3, 3) and q["f1"] == approx(2 / 3)
    assert s["per_slot"]["selection"]["f1"] == 0.0 and s["per_slot"]["product_ids"]["recall"] == 0.0
    assert s["macro_f1"] == approx((2 / 3 + 0 + 0) / 3)
    assert s["mean_instance_f1"] == approx(prf(2, 2, 3)["f1"] / 4)
    assert slot_scores([{"query": None}], [{}])["instances"] == 0


def test_tod_scores_fold_acknowledgements():
    gold = [{"intent": "acknowledge_step"}, {"intent": "done_step"}, {"intent": "acknowledge_task"},
            {"intent": "search_recipe", "query": "soup"}]
    pred = [{"intent": "next_step"}, {"intent": "next_step"}, {"intent": "begin_task"}, {"intent": 5}]
    s = tod_scores(gold, pred)
    assert s["intent"]["accuracy"] == 0.75 and s["intent"]["labels"] == ["begin_task", "next_step", "search_recipe"]
    assert s["slots"]["recall"] == 0.0 and s["slots"]["n_gold"] == 1
    assert tod_scores(gold, pred, fold=None)["intent"]["accuracy"] == 0.0


def test_relevance_agreement_hand_and_reference():
    judge, human = [0, 1, 2, 2], [0, 2, 2, 1]
    a = relevance_agreement(judge, human)
    # po = 1/2, pe = (1*1 + 1*1 + 2*2) / 16 = 3/8 -> kappa = (1/2 - 3/8) / (5/8) = 1/5
    assert a["n"] == 4 and a["cohen_kappa"] == approx(0.2) and a["exact_agreement"] == 0.5
    # quadratic: observed disagreement 1/8, expected 11/32 -> 1 - 4/11 = 7/11
    assert relevance_agreement(judge, human, weights="quadratic")["cohen_kappa"] == approx(7 / 11)
    assert a["spearman"] == approx(spearmanr(judge, human).statistic)
    assert a["kendall_tau"] == approx(kendalltau(judge, human).statistic)
    assert a["kendall_p"] == approx(kendalltau(judge, human).pvalue)
    j = [2, 1, 0, 2, 2, 1, 0, 1, 2, 0, 1, 2]
    h = [2, 2, 0, 1, 2, 1, 0, 0, 2, 1, 1, 2]
    b = relevance_agreement(j + [None, 1], h + [2, None], weights="linear")
    assert b["n"] == 12 and b["kappa_weights"] == "linear"
    assert b["cohen_kappa"] == approx(cohen_kappa_score(j, h, weights="linear"))
    assert b["spearman"] == approx(spearmanr(j, h).statistic)


def test_relevance_agreement_degenerate_and_invalid():
    c = relevance_agreement([2, 2, 2], [2, 1, 2])
    assert c["n"] == 3 and c["spearman"] is None and c["kendall_tau"] is None
    assert c["cohen_kappa"] == approx(0.0)
    assert relevance_agreement([], [])["n"] == 0
    same = relevance_agreement([2, 2], [2, 2])
    assert same["exact_agreement"] == 1.0 and same["cohen_kappa"] is None
    with pytest.raises(ValueError, match="relevance labels must be in"):
        relevance_agreement([3], [2])
    with pytest.raises(ValueError):
        relevance_agreement([1, 2], [1])
