"""Multi-process launch of a training command (``torchrun`` or ``accelerate launch``).

The rules call ``irrepro finetune ...`` like every other command; when params ask for more
than one process per node (``finetune.launcher`` + ``finetune.nproc_per_node``), the command
re-executes itself under the launcher, which starts that many copies with the distributed
environment set (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``). The Hugging Face ``Trainer``
then runs data-parallel (NCCL on GPUs, gloo on CPU), as in Tevatron. Inside a launched
process (``LOCAL_RANK`` set) nothing is re-executed.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Sequence

log = logging.getLogger("irrepro.launch")

LAUNCHERS = ("none", "torchrun", "accelerate")


def in_distributed_child() -> bool:
    return "LOCAL_RANK" in os.environ


def is_main_process() -> bool:
    """True outside a distributed launch and on global rank 0 inside one."""
    return int(os.environ.get("RANK", "0")) == 0


def launch_command(argv: Sequence[str], launcher: str, nproc: int, python: str = sys.executable) -> list[str] | None:
    """The command that runs ``python -m irrepro <argv>`` under ``launcher`` with ``nproc``
    processes, or ``None`` when no launcher is needed (one process, or already launched)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"finetune.launcher: {launcher!r} is not one of {list(LAUNCHERS)}")
    if launcher == "none" or nproc <= 1 or in_distributed_child():
        return None
    if launcher == "torchrun":
        # "--": without it the launcher's argparse reads our options as its own abbreviations
        # (`--log` is ambiguous with torchrun's --log-dir/--logs-specs and the launch fails; found by
        # the rehearsal); both launchers drop the "--" before the module's arguments
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "irrepro", "--", *argv]
    return [python, "-m", "accelerate.commands.launch", "--multi_gpu" if _has_cuda() else "--cpu",
            f"--num_processes={nproc}", "--num_machines=1", "-m", "irrepro", "--", *argv]


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available() and torch.cuda.device_count() > 1
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def relaunch(argv: Sequence[str], launcher: str, nproc: int) -> int | None:
    """Run ``argv`` under the launcher and return its exit code; ``None`` if not needed."""
    cmd = launch_command(argv, launcher, nproc)
    if cmd is None:
        return None
    log.info("launching %d processes: %s", nproc, " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode
