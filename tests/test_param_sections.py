"""The typed params sections (irrepro.param_sections) mirror the schema and round-trip the
resolved params of every profile."""

import dataclasses
import json
import typing
from collections.abc import Mapping

import pytest

from irrepro.param_sections import (FinetuneParams, LoraTrainingParams, Params, PlanParams, Section, SyntodParams,
                                    TodFinetuneParams, typed)
from irrepro.params import ParamsError, load_params, load_schema
from irrepro.vocab import PROFILES


@pytest.fixture(scope="module", params=PROFILES)
def resolved(request, root):
    return load_params(root / "params.yaml", request.param)


def test_every_profile_builds_and_round_trips(resolved):
    T = typed(resolved)
    assert T.profile == resolved["profile"] and T.route == ("mini" if T.profile == "mini" else "paper")
    # the same keys, values and key order as the dicts it was built from (so a consumer that
    # serialises the section writes the same bytes)
    assert json.dumps(T.to_dict()) == json.dumps(resolved)
    assert json.dumps(T.finetune.to_dict()) == json.dumps(resolved["finetune"])
    assert T.finetune.lr == resolved["finetune"]["lr"]
    assert T.syntod.finetune.max_len == resolved["syntod"]["finetune"]["max_len"]
    assert T.models["pythia"].id == resolved["models"]["pythia"]["id"]
    assert T.syntod.llm["kind"] == resolved["syntod"]["llm"]["kind"]


def test_a_section_reads_like_its_dict(resolved):
    F = typed(resolved).finetune
    assert isinstance(F, Mapping) and list(F) == list(resolved["finetune"])
    assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in F.items()} == resolved["finetune"]
    assert F["ranks"] == tuple(resolved["finetune"]["ranks"]) and F.get("nope") is None
    with pytest.raises(KeyError):
        F["nope"]
    S = typed(resolved).syntod.base  # optional keys not given are None, and not keys
    assert ("seq_len" in S) == ("seq_len" in resolved["syntod"]["base"])


def test_sections_are_read_only(resolved):
    T = typed(resolved)
    with pytest.raises(dataclasses.FrozenInstanceError):
        T.finetune.lr = 1.0
    with pytest.raises(TypeError):
        T.evaluate.rel_level["dl19"] = 1
    with pytest.raises(TypeError):
        T.syntod.llm["model"] = "other"
    assert isinstance(T.finetune.families, tuple)


def schema_of(schema: dict, node: dict) -> dict:
    return schema["$defs"][node["$ref"].split("/")[-1]] if "$ref" in node else node


def section_schemas(schema: dict, cls: type, node: dict, where: str):
    """(where, section class, its schema node) of ``cls`` and every section nested in it: a field
    typed as a section, a tuple of sections (schema ``items``) or a mapping of sections (schema
    ``additionalProperties``, or one property per key, e.g. ``models`` by family)."""
    yield where, cls, node
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in node["properties"]:
            continue  # reported by the caller
        hint, sub = hints[f.name], schema_of(schema, node["properties"][f.name])
        if typing.get_origin(hint) is typing.Union:
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if isinstance(hint, type) and issubclass(hint, Section):
            yield from section_schemas(schema, hint, sub, f"{where}.{f.name}")
        elif origin is tuple and isinstance(args[0], type) and issubclass(args[0], Section):
            yield from section_schemas(schema, args[0], schema_of(schema, sub["items"]), f"{where}.{f.name}[]")
        elif origin is Mapping and isinstance(args[1], type) and issubclass(args[1], Section):
            values = sub["properties"] if "properties" in sub else {"*": sub["additionalProperties"]}
            for key, value in values.items():
                yield from section_schemas(schema, args[1], schema_of(schema, value), f"{where}.{f.name}.{key}")


def test_every_schema_key_is_a_field_and_required_keys_have_no_default():
    schema = load_schema()
    seen = set()
    for where, cls, node in section_schemas(schema, Params, schema, "params"):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(fields) == set(node["properties"]), f"{where} ({cls.__name__}): fields differ from the schema keys"
        required = set(node.get("required", ()))
        no_default = {n for n, f in fields.items() if f.default is dataclasses.MISSING}
        assert no_default == required, f"{where} ({cls.__name__}): required keys {required} != fields without default"
        seen.add(cls)
    # every section class of the module is reached from Params, or is the base of one that is (its
    # fields checked there): none is left unchecked
    import irrepro.param_sections as mod
    unseen = {c for c in vars(mod).values() if isinstance(c, type) and issubclass(c, Section) and c is not Section} - seen
    assert all(any(issubclass(s, c) for s in seen) for c in unseen), unseen
    assert LoraTrainingParams in unseen and {FinetuneParams, TodFinetuneParams} <= seen
    assert {FinetuneParams, TodFinetuneParams, SyntodParams, PlanParams} <= seen


def test_unknown_and_missing_keys_are_named(resolved):
    bad = json.loads(json.dumps(resolved))
    bad["finetune"]["lr_typo"] = 1
    del bad["syntod"]["eval"]["batch_size"]
    with pytest.raises(ParamsError, match=r"finetune: unknown key\(s\) \['lr_typo'\]"):
        typed(bad)
    del bad["finetune"]["lr_typo"]
    with pytest.raises(ParamsError, match=r"syntod\.eval: missing \['batch_size'\]"):
        typed(bad)
    bad["syntod"]["eval"]["batch_size"] = 1
    del bad["syntod"]["finetune"]["seed"], bad["syntod"]["finetune"]["max_len"]
    # named in sorted order, whichever of them the LoRA base section declares
    with pytest.raises(ParamsError, match=r"syntod\.finetune: missing \['max_len', 'seed'\]$"):
        typed(bad)
