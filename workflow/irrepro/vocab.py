"""The project's enumerations, each written once: model families, LoRA target sets, evaluation
datasets, SynTOD domains and generation methods, profiles and code routes, and the Snakemake
wildcard patterns built from them.

Everything else reads these names: the package (``from irrepro.vocab import FAMILIES``), the
rules (``workflow/rules/common.smk`` sets ``wildcard_constraints`` from :data:`WILDCARDS`) and
the command line's ``choices``. The params schema is YAML and cannot import them;
``tests/test_vocab.py`` fails when one of its enums differs from the tuple here. The order of a
tuple is the order of tables, figures and wildcard alternatives.

Tables keyed by these names (the LoRA modules per family in ``rerank/targets.py``, the model sizes
per family in ``plan.py``) keep their own keys; the test checks those keys against the tuples too.
"""

from __future__ import annotations

import re

# Study 1: architecture families of the rerankers (params `models`, `finetune.families`) ...
FAMILIES = ("llama", "mistral", "pythia")
# ... and the modules LoRA adapts: attention projections, feed-forward projections, both.
TARGETS = ("mha", "mlp", "all")
# Evaluation topic sets: TREC DL 2019 / 2020 passage, MS MARCO dev-small.
DATASETS = ("dl19", "dl20", "dev")
# Where the training groups come from: a judged TREC DL set (mini) or the Tevatron groups (paper).
TRAIN_SOURCES = ("dl19", "dl20", "tevatron")

# Study 2: SynTOD domains and the two ways of generating conversations (state-graph walks, one prompt).
DOMAINS = ("cooking", "ecommerce")
METHODS = ("graph", "naive")

# Scales. A route is a code path and the key of a per-profile value ({mini: x, paper: y}); a
# profile is what a run is called: `rehearsal` runs the paper route with shrunk sizes.
ROUTES = ("mini", "paper")
PROFILES = ("mini", "paper", "rehearsal")


def alternatives(names: tuple[str, ...]) -> str:
    """A regex matching exactly one of ``names`` (``"llama|mistral|pythia"``)."""
    return "|".join(re.escape(n) for n in names)


# Snakemake's wildcard_constraints (common.smk). A fine-tuning config is named
# ``{family}-r{rank}-{targets}`` in paths, DVC stage names and result tables.
WILDCARDS = {
    "family": alternatives(FAMILIES),
    "rank": r"\d+",
    "targets": alternatives(TARGETS),
    "config": rf"({alternatives(FAMILIES)})-r\d+-({alternatives(TARGETS)})",
    "domain": alternatives(DOMAINS),
    "method": alternatives(METHODS),
}
# A config name with its parts as named groups (the tables' `config` column).
CONFIG_RE = re.compile(
    rf"^(?P<family>{alternatives(FAMILIES)})-r(?P<rank>[0-9]+)-(?P<targets>{alternatives(TARGETS)})$"
)


def config_name(family: str, rank: int, targets: str) -> str:
    """``llama-r8-mha``: the name of one fine-tuning config."""
    return f"{family}-r{rank}-{targets}"
