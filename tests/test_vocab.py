"""Each enumeration has one home (irrepro.vocab): the params schema's enums, the rules'
wildcard_constraints and the tables keyed by family / target / domain / method agree with it."""

import copy

import pytest

from irrepro import vocab
from irrepro.params import load_schema

TUPLES = {name: getattr(vocab, name) for name in
          ("FAMILIES", "TARGETS", "DATASETS", "TRAIN_SOURCES", "DOMAINS", "METHODS", "PROFILES")}

# Every place the schema spells an enumeration (dotted path inside `properties`) -> its vocab tuple.
SCHEMA_ENUMS = {
    "profile": "PROFILES",
    "datasets.items": "DATASETS",
    "train_data.source": "TRAIN_SOURCES",
    "finetune.families.items": "FAMILIES",
    "finetune.targets.items": "TARGETS",
    "rerank.checkpoint_datasets.items": "DATASETS",
    "rerank.final_datasets.items": "DATASETS",
    "ablate.families.items": "FAMILIES",
    "ablate.targets.items": "TARGETS",
    "ablate.datasets.items": "DATASETS",
    "figures.dataset": "DATASETS",
    "published.adapters.items.family": "FAMILIES",
    "syntod.domains.items": "DOMAINS",
    "syntod.methods.items": "METHODS",
    "syntod.base.family": "FAMILIES",
    "syntod.finetune.targets": "TARGETS",
}
# Sections whose keys are an enumeration (one entry per family / domain / dataset).
SCHEMA_KEYS = {"models": "FAMILIES", "syntod.train_catalog": "DOMAINS", "evaluate.rel_level": "DATASETS"}


def nodes(schema, path=()):
    """(dotted path, node) of every object schema, `properties` and `items` levels folded."""
    yield ".".join(path), schema
    for key, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict):
            yield from nodes(sub, path + (key,))
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], path + ("items",))


def enum_drift(schema) -> list[str]:
    """Problems: a listed enum that differs from its vocab tuple, or any other enum sharing two
    or more names with a vocab tuple without being one (a new hand-written copy that drifted)."""
    found = dict(nodes(schema))
    problems = []
    for path, name in SCHEMA_ENUMS.items():
        enum = found.get(path, {}).get("enum")
        if tuple(enum or ()) != TUPLES[name]:
            problems.append(f"{path}: enum {enum} is not vocab.{name} {list(TUPLES[name])}")
    for path, node in found.items():
        enum = tuple(node.get("enum") or ())
        if path in SCHEMA_ENUMS or not enum:
            continue
        if any(len(set(enum) & set(t)) >= 2 for t in TUPLES.values()) and enum not in TUPLES.values():
            problems.append(f"{path}: enum {list(enum)} spells part of a vocab tuple; use the whole tuple")
    for path, name in SCHEMA_KEYS.items():
        node = found[path]
        keys = tuple(node["properties"])
        if keys != TUPLES[name] or tuple(node.get("required", keys)) != TUPLES[name]:
            problems.append(f"{path}: keys {list(keys)} / required {node.get('required')} are not vocab.{name}")
    return problems


def test_schema_enums_are_the_vocab_tuples():
    assert enum_drift(load_schema()) == []


@pytest.mark.parametrize("path, value", [
    ("finetune.families.items", ["llama", "mistral", "pythia", "qwen"]),  # a listed enum grows
    ("syntod.base.family", ["mistral", "llama", "pythia"]),               # reordered
    ("bm25.corpus", ["llama", "pythia"]),                                 # a new partial copy
])
def test_enum_drift_is_found(path, value):
    schema = copy.deepcopy(load_schema())
    node = dict(nodes(schema))[path]
    node["enum"] = value
    problems = enum_drift(schema)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: enum {value}")


def test_schema_keyed_sections_drift_is_found():
    schema = copy.deepcopy(load_schema())
    dict(nodes(schema))["models"]["properties"]["qwen"] = {"$ref": "#/$defs/model"}
    assert enum_drift(schema) == [
        "models: keys ['llama', 'mistral', 'pythia', 'qwen'] / required ['llama', 'mistral', 'pythia'] "
        "are not vocab.FAMILIES"]


@pytest.fixture(scope="module")
def workflow(root):
    """The parsed Snakemake workflow of the committed rules (mini profile)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        wf_api = api.workflow(snakefile=root / "Snakefile", workdir=root, resource_settings=ResourceSettings(cores=1),
                              config_settings=ConfigSettings(config={"profile": "mini"}),
                              storage_settings=StorageSettings())
        yield wf_api._workflow


def test_wildcard_constraints_are_the_vocab_regexes(workflow):
    assert workflow.modifier.wildcard_constraints == vocab.WILDCARDS
    # no rule overrides them: every constrained wildcard in an output carries vocab's regex
    checked = 0
    for rule in workflow.rules:
        for out in rule.output:
            for name, regex in vocab.WILDCARDS.items():
                if f"(?P<{name}>" in out.regex().pattern:
                    assert f"(?P<{name}>{regex})" in out.regex().pattern, (rule.name, str(out))
                    checked += 1
    assert checked >= 6


def test_wildcards_accept_the_names_and_nothing_else(workflow):
    out = workflow.get_rule("finetune").output[0]
    for family in vocab.FAMILIES:
        for targets in vocab.TARGETS:
            assert out.regex().match(f"models/mini/lora/{family}-r8-{targets}")
    assert not out.regex().match("models/mini/lora/qwen-r8-mha")
    assert not out.regex().match("models/mini/lora/llama-r8-qv")
    gen = next(o for r in workflow.rules for o in r.output if "(?P<method>" in o.regex().pattern)
    assert not gen.regex().match(str(gen.file).replace("{domain}", "cooking").replace("{method}", "random"))


def test_config_names_parse_back():
    for family in vocab.FAMILIES:
        for targets in vocab.TARGETS:
            m = vocab.CONFIG_RE.match(vocab.config_name(family, 32, targets))
            assert m.group("family", "rank", "targets") == (family, "32", targets)
    assert vocab.CONFIG_RE.match("llama-r8-mha-x") is None
    assert vocab.CONFIG_RE.match("gemma-r8-mha") is None


def test_tables_keyed_by_an_enumeration_cover_it():
    from irrepro import figures, plan
    from irrepro.rerank import targets
    from irrepro.syntod import evaluation, graph, stages

    assert set(targets.MODULES) == set(vocab.FAMILIES) == set(targets.FAMILY_OF_MODEL_TYPE.values())
    assert set(plan.KIND_OF_FAMILY) == set(vocab.FAMILIES) == set(figures.FAMILY_LABELS)
    assert set(figures.TARGET_LABELS) == set(figures.TARGET_STYLES) == set(vocab.TARGETS)
    assert set(figures.SYNTOD_METHOD_LABELS) == set(vocab.METHODS)
    assert set(evaluation.PUBLISHED) == set(stages.SEED_SOURCES) == set(plan.SYNTOD_TESTS) == set(vocab.DOMAINS)
    for domain in vocab.DOMAINS:
        assert graph.graph_path(domain).is_file()
    # each target set names modules of every family ("all" = both halves)
    for family in vocab.FAMILIES:
        mha, mlp = targets.target_modules(family, "mha"), targets.target_modules(family, "mlp")
        assert mha and mlp and targets.target_modules(family, "all") == mha + mlp
