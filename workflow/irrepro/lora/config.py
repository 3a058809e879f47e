"""The training settings of the two LoRA trainers, taken from their typed params sections.

:class:`RerankTraining` takes params ``finetune`` (:class:`~irrepro.param_sections.FinetuneParams`;
the reranker's rank and targets come from the config name, ``llama-r8-mha``), :class:`TodTraining`
params ``syntod.finetune`` (:class:`~irrepro.param_sections.TodFinetuneParams`, the SynTOD TOD
model). The section classes are the one list of the knobs: every key of the section is a keyword
argument of its trainer (:func:`irrepro.rerank.train.finetune`, :func:`irrepro.syntod.tod.finetune_tod`),
under the name :data:`PARAM_KEYS` gives where the two differ (``lora_alpha`` -> ``alpha``),
except the keys a class names in ``NOT_TRAINER_ARGS`` (the grid, the launcher: left to their
stages). A key the section does not give (an optional one, ``loss_on``) is not passed, so the
trainer's default applies. Values are passed on as they are: the schema has checked them, and
the trainers record them in their run config as given.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, TypeVar

from ..param_sections import FinetuneParams, Section, TodFinetuneParams

__all__ = ["RerankTraining", "TodTraining", "PARAM_KEYS", "LoraRecipe"]

R = TypeVar("R", bound="LoraRecipe")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoraRecipe:
    """The knobs both LoRA trainers take: the adapter (``rank`` on the ``targets`` module set,
    ``alpha``, ``dropout``), the optimiser schedule (``lr``, ``epochs``, or ``max_steps`` > 0
    instead, ``grad_accum``, ``warmup_ratio``), ``save_steps`` between checkpoints, ``bf16``
    mixed precision, activation checkpointing, the ``seed``, CPU ``threads`` and a log entry
    every ``logging_steps``. Each trainer's recipe subclasses this with its own knobs and
    defaults (:class:`irrepro.rerank.train.RerankRecipe`, :class:`irrepro.syntod.tod.TodRecipe`);
    its trainer takes the recipe whole or its fields as keyword arguments
    (:meth:`from_arguments`)."""

    rank: int
    targets: str
    alpha: float
    dropout: float = 0.1
    lr: float
    epochs: float = 1
    max_steps: int = -1
    grad_accum: int = 4
    save_steps: int = 50
    warmup_ratio: float
    bf16: bool = False
    gradient_checkpointing: bool = False
    seed: int = 42
    threads: int | None = None
    logging_steps: int = 1

    @classmethod
    def from_arguments(cls: type[R], recipe: R | None, knobs: Mapping[str, Any]) -> R:
        """A trainer's recipe: ``recipe`` with ``knobs`` replacing its fields, or one built from
        ``knobs`` alone (an unknown knob is a ``TypeError`` naming it)."""
        if recipe is None:
            return cls(**knobs)
        if not isinstance(recipe, cls):
            raise TypeError(f"expected a {cls.__name__}, got {type(recipe).__name__}")
        return dataclasses.replace(recipe, **knobs)

# params key -> trainer argument, where the two differ
PARAM_KEYS = {"lora_alpha": "alpha", "lora_dropout": "dropout", "query_max_len": "qmax", "passage_max_len": "pmax"}


class _Training:
    """A trainer's keyword arguments from its params section (``SECTION``)."""

    SECTION: ClassVar[type[Section]]
    NOT_TRAINER_ARGS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, kwargs: Mapping[str, Any]):
        self._kwargs = MappingProxyType(dict(kwargs))

    @classmethod
    def from_params(cls, section: Mapping[str, Any] | None, where: str):
        """The settings from a params section (``where``: its name in messages, e.g. ``syntod.finetune``);
        a missing or unknown key is a :class:`~irrepro.params.ParamsError` naming it."""
        typed = cls.SECTION.from_mapping(section, where)
        return cls({PARAM_KEYS.get(key, key): typed[key] for key in typed if key not in cls.NOT_TRAINER_ARGS})

    def kwargs(self) -> dict:
        """The settings as keyword arguments of the trainer."""
        return dict(self._kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self._kwargs)!r})"


class RerankTraining(_Training):
    """params ``finetune``: the arguments of :func:`irrepro.rerank.train.finetune` besides
    base, groups, output, rank and targets."""

    SECTION = FinetuneParams
    # the grid (a config's rank and targets come from its name) and how processes are started
    NOT_TRAINER_ARGS = frozenset({"families", "ranks", "targets", "launcher", "nproc_per_node"})


class TodTraining(_Training):
    """params ``syntod.finetune``: the arguments of :func:`irrepro.syntod.tod.finetune_tod`
    besides base, training file and output."""

    SECTION = TodFinetuneParams
