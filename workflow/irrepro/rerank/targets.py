"""Which modules LoRA adapts, per architecture family: the one table of the project.

``mha`` = attention projections, ``mlp`` = feed-forward projections, ``all`` = both.
An architecture that is not in the table is an error, never a silently empty adapter.
"""

from __future__ import annotations

from ..vocab import TARGETS as TARGET_SETS

# model_type (transformers config) -> family name used in params and paths
FAMILY_OF_MODEL_TYPE = {"llama": "llama", "mistral": "mistral", "gpt_neox": "pythia"}

MODULES = {
    "llama": {
        "mha": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "mlp": ["gate_proj", "up_proj", "down_proj"],
    },
    "mistral": {
        "mha": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "mlp": ["gate_proj", "up_proj", "down_proj"],
    },
    "pythia": {
        "mha": ["query_key_value", "dense"],
        "mlp": ["dense_h_to_4h", "dense_4h_to_h"],
    },
}


class UnknownArchitecture(ValueError):
    pass


def family_of(model_type: str) -> str:
    try:
        return FAMILY_OF_MODEL_TYPE[model_type]
    except KeyError:
        raise UnknownArchitecture(
            f"no LoRA target table for model_type {model_type!r}; known: "
            f"{sorted(FAMILY_OF_MODEL_TYPE)} (add it to irrepro/rerank/targets.py)"
        ) from None


def target_modules(family: str, targets: str) -> list[str]:
    """Module names for ``targets`` in {mha, mlp, all} of ``family`` (llama, mistral, pythia)."""
    if family not in MODULES:
        raise UnknownArchitecture(f"unknown model family {family!r}; known: {sorted(MODULES)}")
    if targets not in TARGET_SETS:
        raise ValueError(f"unknown LoRA target set {targets!r}; allowed: {list(TARGET_SETS)}")
    table = MODULES[family]
    return table["mha"] + table["mlp"] if targets == "all" else list(table[targets])


def check_modules_exist(model, names: list[str]) -> None:
    """Raise if any of ``names`` matches no module of ``model`` (peft would adapt nothing)."""
    leaves = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [n for n in names if n not in leaves]
    if missing:
        raise ValueError(
            f"LoRA target module(s) {missing} not found in {type(model).__name__}; "
            f"its linear layers are named {sorted(leaves & _linear_names(model))}"
        )


def _linear_names(model) -> set[str]:
    import torch

    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
