"""Typed, read-only views of the resolved params: one frozen dataclass per section.

``params.check_and_resolve`` validates params.yaml once, at the boundary; :func:`typed` turns
its result into :class:`Params`, whose attributes are the sections (``typed(P).finetune.lr``,
``typed(P).syntod.eval.batch_size``). A stage that takes a section gets a :class:`FinetuneParams`
instead of the whole dict, and a misspelt key is an ``AttributeError`` at the line that reads it.

Each section is also a read-only ``Mapping`` of the keys params.yaml gave, in params.yaml's order,
so code written for the plain dicts (``F["lr"]``, ``F.items()``, ``F.get(k)``) accepts a section
unchanged and sees the same keys in the same order. Lists become tuples and nested mappings
read-only; :meth:`Section.to_dict` gives the plain dict back, equal to the section it was built
from (serialise that, not the section: JSON and YAML dumpers take no read-only mappings).

Fields mirror ``workflow/schemas/params.schema.yaml``: a required key is a field without a
default, an optional key a field defaulting to ``None`` (= not given: the consumer's own default
applies). ``tests/test_param_sections.py`` fails when a schema key has no field or a field no
schema key. Open mappings whose keys belong to another module (the LLM specs
``syntod.llm`` / ``syntod.judge``, read by ``irrepro.syntod``) stay plain read-only mappings.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Union

from .params import ParamsError, route

__all__ = [
    "Section", "Params", "typed", "DataParams", "Bm25Params", "EvaluateParams", "ModelParams", "TinyParams",
    "TrainDataParams", "LoraTrainingParams", "FinetuneParams", "RerankParams", "AblateParams", "FiguresParams",
    "PublishedAdapter", "PublishedParams", "ItemSplitParams", "SyntodBaseParams", "TodFinetuneParams", "SyntodEvalParams",
    "SyntodParams", "VerifyParams", "PlanArch", "PlanSyntodParams", "PlanThroughput", "PlanParams",
]


class Section(Mapping):
    """Base of the section dataclasses: ``from_mapping`` builds one from a resolved params
    section, and the instance reads like that mapping (keys given, in their order)."""

    # the keys params.yaml gave, in its order (not a field: schema keys only)
    _given: tuple = ()

    @classmethod
    def from_mapping(cls, data: Any, where: str):
        if not isinstance(data, Mapping):
            raise ParamsError(f"params: {where}: expected a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in data if k not in fields]
        # sorted: a section's fields start with its base's (LoraTrainingParams), not in the schema's order
        missing = sorted(n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING)
        if unknown or missing:
            raise ParamsError(f"params: {where}: " + "; ".join(
                ([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing {missing}"] if missing else [])))
        obj = cls(**{k: _build(hints[k], v, f"{where}.{k}") for k, v in data.items()})
        object.__setattr__(obj, "_given", tuple(data))
        return obj

    def to_dict(self) -> dict:
        """The section as the plain dict it was built from (lists, dicts; same key order)."""
        return {k: _plain(getattr(self, k)) for k in self._given}

    def __getitem__(self, key: str) -> Any:
        if key not in self._given:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._given)

    def __len__(self) -> int:
        return len(self._given)


def _build(hint: Any, value: Any, where: str) -> Any:
    """``value`` as the type ``hint`` says: sections built, lists as tuples, mappings read-only."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        kinds = [a for a in args if a is not type(None)]
        return _build(kinds[0], value, where) if len(kinds) == 1 else value
    if isinstance(hint, type) and issubclass(hint, Section):
        return hint.from_mapping(value, where)
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is Mapping and isinstance(value, Mapping):
        return types.MappingProxyType({k: _build(args[1], v, f"{where}.{k}") for k, v in value.items()})
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


section = dataclass(frozen=True, eq=True, repr=True)


# ---------------------------------------------------------------------------- shared
@section
class DataParams(Section):
    mirrors: tuple[str, ...]
    allow_network: bool
    timeout_s: float
    sources: Optional[str] = None


@section
class Bm25Params(Section):
    k1: float
    b: float
    topk: int
    threads: int
    corpus: str
    prebuilt_index: Optional[str]


@section
class EvaluateParams(Section):
    metrics: tuple[str, ...]
    rel_level: Mapping[str, int]
    on_fail: str
    min_judged_fraction: float


# ---------------------------------------------------------------------------- Study 1
@section
class ModelParams(Section):
    id: str
    revision: Optional[str]


@section
class TinyParams(Section):
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int
    warmup_steps: int
    seq_len: int
    batch_size: int
    lr: float
    seed: int


@section
class TrainDataParams(Section):
    source: str
    min_grade: int
    n_negatives: int
    seed: int


@section
class LoraTrainingParams(Section):
    """The knobs both LoRA fine-tuning sections have (``finetune``, ``syntod.finetune``): the
    adapter's alpha and dropout and the shared harness's schedule (:mod:`irrepro.lora`)."""

    lora_alpha: float
    lora_dropout: float
    lr: float
    epochs: float
    max_steps: int
    grad_accum: int
    save_steps: int
    warmup_ratio: float
    bf16: bool
    gradient_checkpointing: bool
    seed: int
    threads: Optional[int]


@section
class FinetuneParams(LoraTrainingParams):
    """params ``finetune``: the reranker grid (families x ranks x targets) and its training knobs."""

    families: tuple[str, ...]
    ranks: tuple[int, ...]
    targets: tuple[str, ...]
    group_size: int
    queries_per_device: int
    query_max_len: int
    passage_max_len: int
    base_dtype: str
    head_labels: int
    launcher: str
    nproc_per_node: int
    report_to: str


@section
class RerankParams(Section):
    checkpoint_datasets: tuple[str, ...]
    final_datasets: tuple[str, ...]
    depth: int
    batch_size: int
    dtype: str
    stat_test: str
    max_p: float
    p_adjust: str


@section
class AblateParams(Section):
    families: tuple[str, ...]
    ranks: tuple[int, ...]
    targets: tuple[str, ...]
    checkpoint: Union[str, int]  # "final" or a step
    datasets: tuple[str, ...]
    depth: int
    band_size: int
    cells: bool
    metric: str


@section
class FiguresParams(Section):
    metric: str
    dataset: str
    formats: tuple[str, ...]
    dpi: int
    font_size: float
    width_in: float
    height_in: float
    palette: str


@section
class PublishedAdapter(Section):
    repo: str
    family: str
    base: str
    revision: Optional[str]
    base_revision: Optional[str] = None


@section
class PublishedParams(Section):
    adapters: tuple[PublishedAdapter, ...]


# ---------------------------------------------------------------------------- Study 2
@section
class ItemSplitParams(Section):
    test_fraction: float
    seed: int
    items_of: str


@section
class SyntodBaseParams(Section):
    family: str
    id: str
    revision: Optional[str]
    max_positions: int
    warmup_steps: int
    seq_len: Optional[int] = None
    batch_size: Optional[int] = None


@section
class TodFinetuneParams(LoraTrainingParams):
    """params ``syntod.finetune``: LoRA causal-LM fine-tuning of the TOD model."""

    rank: int
    targets: str
    batch_size: int
    max_len: int
    lr_scheduler: str
    max_grad_norm: float
    group_by_length: bool
    loss_on: Optional[str] = None


@section
class SyntodEvalParams(Section):
    max_conversations: Optional[int]
    responses_per_conversation: Optional[int]
    max_new_tokens_intent: int
    max_new_tokens_response: int
    batch_size: int
    max_len: int
    threads: Optional[int]
    scorers: tuple[str, ...]
    original_max_tokens: Optional[int]


@section
class SyntodParams(Section):
    domains: tuple[str, ...]
    methods: tuple[str, ...]
    n_conversations: int
    heldout_fraction: float
    seed: int
    item_split: ItemSplitParams
    train_catalog: Mapping[str, Optional[str]]
    llm: Mapping[str, Any]  # an LLM spec: its keys are irrepro.syntod's (make_backend)
    cache_dir: str
    judge: Mapping[str, Any]  # a judge spec (irrepro.syntod)
    human_labels: Optional[str]
    base: SyntodBaseParams
    finetune: TodFinetuneParams
    eval: SyntodEvalParams


# ---------------------------------------------------------------------------- read by no stage
@section
class VerifyParams(Section):
    stages: tuple[str, ...]
    tolerance: Mapping[str, float]
    run_metrics: tuple[str, ...]
    nondeterministic: tuple[str, ...]


@section
class PlanArch(Section):
    params: int
    hidden: int
    layers: int
    intermediate: int
    kv_dim: int


@section
class PlanSyntodParams(Section):
    walk_length: float
    prompt_tokens: int
    naive_prompt_tokens: int
    judge_prompt_tokens: int
    turn_chars: float
    chars_per_token: float
    annotation_tokens: int
    response_tokens: int


@section
class PlanThroughput(Section):
    ref_params: float
    train_tokens_s: float
    score_tokens_s: float
    decode_tokens_s: float
    job_overhead_s: float


@section
class PlanParams(Section):
    gpu: str
    train_queries: int
    score_tokens_per_pair: float
    data_disk_gb: float
    syntod: PlanSyntodParams
    throughput: Mapping[str, PlanThroughput]
    archs: Optional[Mapping[str, PlanArch]] = None


# ---------------------------------------------------------------------------- the whole file
@section
class Params(Section):
    """The resolved params of one profile, every section typed."""

    profile: str
    data: DataParams
    datasets: tuple[str, ...]
    bm25: Bm25Params
    evaluate: EvaluateParams
    models: Mapping[str, ModelParams]  # by family (irrepro.vocab.FAMILIES)
    tiny: TinyParams
    train_data: TrainDataParams
    finetune: FinetuneParams
    rerank: RerankParams
    ablate: AblateParams
    figures: FiguresParams
    published: PublishedParams
    syntod: SyntodParams
    verify: Optional[VerifyParams] = None
    plan: Optional[PlanParams] = None

    @property
    def route(self) -> str:
        """``mini`` or ``paper``: the code route of the profile (``rehearsal`` runs paper's)."""
        return route(self.profile)


def typed(P: Mapping[str, Any]) -> Params:
    """The typed view of ``P``, a params dict as :func:`irrepro.params.check_and_resolve` returns
    it (validated: this only re-checks the key names)."""
    return Params.from_mapping(P, "params.yaml")
