import copy

import pytest
import yaml

from irrepro.params import ParamsError, check_and_resolve, load_params, resolve


@pytest.fixture
def raw(root):
    with open(root / "params.yaml") as fh:
        return yaml.safe_load(fh)


def test_committed_params_are_valid_for_both_profiles(root):
    mini = load_params(root / "params.yaml", "mini")
    paper = load_params(root / "params.yaml", "paper")
    assert mini["profile"] == "mini" and paper["profile"] == "paper"
    assert mini["bm25"]["topk"] == 100 and paper["bm25"]["topk"] == 1000
    assert mini["datasets"] == ["dl19", "dl20"] and "dev" in paper["datasets"]
    # values shared by both profiles are defined once
    assert mini["bm25"]["k1"] == paper["bm25"]["k1"] == 0.9


def test_resolve_picks_profile_values_recursively():
    raw = {"a": {"mini": 1, "paper": 2}, "b": [{"c": {"mini": "x", "paper": "y"}}], "d": 3}
    assert resolve(raw, "paper") == {"a": 2, "b": [{"c": "y"}], "d": 3}


def test_per_profile_value_must_name_both_profiles(raw):
    raw["bm25"]["topk"] = {"mini": 100}
    with pytest.raises(ParamsError, match=r"bm25\.topk.*missing \['paper'\]"):
        check_and_resolve(raw)


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda r: r.__setitem__("profile", "huge"), r"profile: 'huge' is not one of \['mini', 'paper', 'rehearsal'\]"),
        (lambda r: r["bm25"].__setitem__("k1", "high"), r"bm25\.k1: 'high' is not of type 'number'"),
        (lambda r: r["bm25"].__setitem__("b", 1.5), r"bm25\.b: 1\.5 is greater than the maximum of 1"),
        (lambda r: r["bm25"].__setitem__("corpus", "wiki"), r"bm25\.corpus: 'wiki' is not one of"),
        (lambda r: r.__setitem__("datasets", {"mini": ["dl21"], "paper": ["dl19"]}), r"datasets\.0: 'dl21' is not one of \['dl19', 'dl20', 'dev'\]"),
        (lambda r: r["bm25"].__setitem__("k_1", 1.0), r"bm25: Additional properties are not allowed \('k_1' was unexpected\)"),
        (lambda r: r["evaluate"].__setitem__("on_fail", "ignore"), r"evaluate\.on_fail: 'ignore' is not one of \['fail', 'warn'\]"),
        (lambda r: r["bm25"].pop("k1"), r"bm25: 'k1' is a required property"),
    ],
)
def test_schema_violations_name_the_key(raw, mutate, pattern):
    mutate(raw)
    with pytest.raises(ParamsError, match=pattern) as exc:
        check_and_resolve(raw, source="params.yaml")
    assert "params.yaml" in str(exc.value)


def test_bad_paper_value_fails_a_mini_run(raw):
    raw["bm25"]["topk"] = {"mini": 100, "paper": -5}
    with pytest.raises(ParamsError, match=r"bm25\.topk: -5 is less than the minimum of 1 \(profile paper\)"):
        check_and_resolve(raw, "mini")


def test_profile_override_does_not_touch_input(raw):
    before = copy.deepcopy(raw)
    assert check_and_resolve(raw, "paper")["profile"] == "paper"
    assert raw == before


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ParamsError, match="nope.yaml: not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: [mini\n")
    with pytest.raises(ParamsError, match=r"bad.yaml:2: not valid YAML"):
        load_params(bad)


def test_cli_rejects_bad_params_with_exit_2(tmp_path, raw, capsys):
    from irrepro.cli import main

    raw["bm25"]["k1"] = -1
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    assert main(["check-params", "--params", str(p)]) == 2
    assert "bm25.k1" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["checkpoint_datasets", "final_datasets"])
def test_training_set_must_not_be_an_evaluation_set(raw, key):
    raw["rerank"][key]["mini"] = raw["rerank"][key]["mini"] + ["dl20"]  # dl20 trains the mini rerankers
    with pytest.raises(ParamsError, match=r"train_data\.source: 'dl20' is also an evaluation set.*\(profile mini\)"):
        check_and_resolve(raw)


def test_rerank_datasets_need_a_first_stage_run(raw):
    raw["datasets"] = {"mini": ["dl20"], "paper": ["dl19", "dl20", "dev"]}
    with pytest.raises(ParamsError, match=r"rerank\.checkpoint_datasets: \['dl19'\] have no BM25 run"):
        check_and_resolve(raw)
    raw["datasets"] = {"mini": ["dl19", "dl20"], "paper": ["dl19", "dl20"]}
    with pytest.raises(ParamsError, match=r"rerank\.final_datasets: \['dev'\] have no BM25 run.*\(profile paper\)"):
        check_and_resolve(raw)


def test_evaluation_schedule_split(raw):
    """Curves on the checkpoint datasets, the final checkpoint only on the final ones; no dataset in both."""
    paper = check_and_resolve(raw, "paper")["rerank"]
    assert paper["checkpoint_datasets"] == ["dl19", "dl20"] and paper["final_datasets"] == ["dev"]
    assert check_and_resolve(raw, "mini")["rerank"]["final_datasets"] == []
    raw["rerank"]["final_datasets"] = {"mini": [], "paper": ["dev", "dl20"]}
    with pytest.raises(ParamsError, match=r"rerank\.final_datasets: \['dl20'\] also in rerank\.checkpoint_datasets"
                                          r".*\(profile paper\)"):
        check_and_resolve(raw)
    raw["rerank"]["final_datasets"] = {"mini": [], "paper": ["dev"]}
    raw["rerank"]["checkpoint_datasets"] = {"mini": [], "paper": ["dl19"]}
    with pytest.raises(ParamsError, match=r"rerank\.checkpoint_datasets: \[\] should be non-empty"):
        check_and_resolve(raw)
    raw["rerank"]["checkpoint_datasets"] = {"mini": ["dl19"], "paper": ["dl19", "dl20"]}
    raw["figures"]["dataset"] = "dev"
    raw["datasets"]["mini"] = ["dl19", "dl20", "dev"]
    raw["rerank"]["final_datasets"]["mini"] = ["dev"]
    with pytest.raises(ParamsError, match=r"figures\.dataset: 'dev' has no checkpoint curve"):
        check_and_resolve(raw)
    raw["figures"]["dataset"] = "dl19"
    raw["ablate"]["datasets"] = {"mini": ["dev"], "paper": ["dev"]}  # final-only datasets can be ablated
    check_and_resolve(raw)
