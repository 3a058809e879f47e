"""What several stage modules share: the arguments of the Study 1 stages that read the first
stage, ``KEY=PATH`` values, the SynTOD seed file, the launch of a training run. (Argument
choices come from :mod:`irrepro.vocab`.)"""

from __future__ import annotations

import argparse
import logging

from ..commands import In, Opt
from ..errors import InputError

log = logging.getLogger("irrepro")

# the raw data (topics, qrels) and the first-stage runs: what the reranking and collecting
# stages of Study 1 read
FIRST_STAGE_ARGS = (In("--raw"), In("--runs", "first-stage runs directory"))

# one config's checkpoints reranking the first stage (stages rerank_eval and ablate)
RERANK_CONFIG_ARGS = (
    Opt("--config", "config name, e.g. llama-r8-mha", required=True),
    In("--base"),
    In("--adapters", "directory of checkpoint-<step> adapters, or hf:<repo>@<commit>[:subfolder]"),
    *FIRST_STAGE_ARGS,
    In("--corpus"),
)


def key_path(text: str) -> tuple[str, str]:
    """argparse type of a ``KEY=PATH`` value."""
    key, sep, path = text.partition("=")
    if not sep or not key.isidentifier() or not path:
        raise argparse.ArgumentTypeError(f"expected KEY=PATH (KEY a Python identifier), got {text!r}")
    return key, path


def seeds_file(a) -> str:
    """The domain's seed file: --seeds, or where the download stage put it under --raw."""
    if a.seeds:
        return a.seeds
    if not a.raw:
        raise InputError("give --raw (the download stage's directory) or --seeds", key="--raw")
    from ..datasets import source_path
    from ..syntod.stages import SEED_SOURCES

    return str(source_path(a.raw, SEED_SOURCES[a.domain]))


def launched_training(a, P: dict, task: str, train) -> int:
    """Check the inputs of a fine-tuning stage, prepare its ``.partial`` work directory, then
    ``train()`` here or in the processes of params ``finetune.launcher`` (the output lock is
    already held: :class:`irrepro.commands.Command`)."""
    from ..launch import in_distributed_child, relaunch
    from ..study1.finetune_inputs import prepare_finetune

    if in_distributed_child():  # the launcher's parent holds the lock and prepared the work directory
        train()
        return 0
    a.task = task  # what prepare_finetune checks: "rerank" (groups) or "tod" (text JSONL)
    prepare_finetune(P, a)()  # inputs checked (fast) before any model loading
    F = P["finetune"]
    code = relaunch(a.argv, F["launcher"], F["nproc_per_node"])  # multi-GPU: torchrun / accelerate
    if code is not None:
        return code
    train()
    return 0
