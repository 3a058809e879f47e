"""The run directory of a LoRA training: settings checked on resume, resume point, publishing.

Layout of a run directory (``out``)::

    finetune_config.json      the arguments that shape the result (checked on resume)
    checkpoint-{step}/        every ``save_steps`` optimiser steps (:mod:`irrepro.lora.checkpoints`)
    final/                    the adapter after the last step (+ tokenizer, model card)
    train_summary.json        written LAST: the completion marker (results only: steps, losses,
                              config, versions; timings and resume details go to the job's run
                              sidecar, :mod:`irrepro.sidecar`)

Same inputs, same bytes: every file above is byte-identical when the run is repeated on the
same machine.

A stage trains in ``<out>.partial`` (:func:`train_in_work_dir`), kept across crashes so a rerun
resumes from its newest complete checkpoint, and moves it onto ``out`` when finished: runners
that delete a job's outputs before rerunning it (Snakemake) never delete what a resume needs.

A trainer uses these in order: :func:`finished_summary` (done: return it), :func:`start_run`
(create the directory, record or check the settings, find the resume point), build model and
``Trainer``, :func:`train_and_publish`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import sidecar
from ..cards import write_model_card
from ..launch import is_main_process
from ..rundir import publish_work_dir, work_dir
from ..utils import atomic_path
from .checkpoints import canonical_adapter_config, list_checkpoints, resume_point

log = logging.getLogger("irrepro")

__all__ = ["SUMMARY_NAME", "FINAL_NAME", "CONFIG_NAME", "CIRCUMSTANCES", "run_label", "check_same", "record_config",
           "finished_summary", "RunStart", "start_run", "train_and_publish", "publish_run", "train_in_work_dir"]

SUMMARY_NAME = "train_summary.json"
FINAL_NAME = "final"
CONFIG_NAME = "finetune_config.json"
# what publish_run returns beside the summary but never writes into it (they differ per invocation)
CIRCUMSTANCES = ("wall_time_s", "train_time_s", "sec_per_step", "resumed_from", "resumed_from_step")


def run_label(out: str | os.PathLike) -> str:
    """The run's name in messages: the directory's name without ``.partial``."""
    return Path(out).name.removesuffix(".partial")


def check_same(out: Path, old: dict, config: dict) -> None:
    """Refuse to continue a run in ``out`` made with other settings (``old``: its recorded config)."""
    diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
    if diff:
        raise ValueError(
            f"{out} holds a fine-tuning run with other settings {diff} (old, new); "
            "delete the directory to start over"
        )


def record_config(out: Path, config: dict) -> None:
    """Check ``config`` against ``out/finetune_config.json``, or write it there (main process)."""
    path = out / CONFIG_NAME
    if path.exists():
        check_same(out, json.loads(path.read_text()), config)
    elif is_main_process():
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def finished_summary(out: Path, config: dict, what: str) -> dict | None:
    """The summary of a finished run in ``out`` made with ``config`` (None: not finished; other
    settings: an error). ``what`` names the trainer in the log."""
    summary_path = out / SUMMARY_NAME
    if not summary_path.exists():
        return None
    done = json.loads(summary_path.read_text())
    check_same(out, done.get("config", {}), config)
    log.info("%s: %s exists; nothing to do", what, summary_path)
    return done


@dataclass(frozen=True)
class RunStart:
    """Where a run starts: its directory and settings, when it started, where it resumes."""

    out: Path
    config: dict
    t0: float
    resume: Path | None
    resume_step: int


def start_run(out: Path, config: dict, t0: float | None = None) -> RunStart:
    """Create ``out``, record or check its settings and find the resume point
    (:func:`irrepro.lora.checkpoints.resume_point`). ``t0``: when the invocation started."""
    t0 = time.time() if t0 is None else t0
    out.mkdir(parents=True, exist_ok=True)
    record_config(out, config)
    resume, resume_step = resume_point(out)
    return RunStart(out, config, t0, resume, resume_step)


def train_and_publish(trainer, run: RunStart, extra: dict) -> dict:
    """``trainer.train`` from the resume point, then :func:`publish_run`."""
    t_train = time.time()
    result = trainer.train(resume_from_checkpoint=str(run.resume) if run.resume else None)
    return publish_run(trainer, result, run.out, t0=run.t0, train_time=time.time() - t_train, resume=run.resume,
                       resume_step=run.resume_step, config=run.config, extra=extra)


def publish_run(trainer, result, out: Path, *, t0: float, train_time: float, resume: Path | None,
                resume_step: int, config: dict, extra: dict) -> dict:
    """After ``trainer.train``: save the final adapter to ``out/final`` and write the summary
    (``extra`` adds run-specific entries) to ``out/train_summary.json`` last. The file holds
    results only; the circumstances of this invocation (:data:`CIRCUMSTANCES`: wall and training
    time, seconds per step, where it resumed) go to the run sidecar's ``train`` section. Returns
    both together (the summary dict plus those keys)."""
    import torch
    import transformers

    # final adapter: every rank joins save_model (sharded setups gather), rank 0 publishes
    tmp_final = out / f".{FINAL_NAME}.tmp"
    if trainer.is_world_process_zero() and tmp_final.exists():
        shutil.rmtree(tmp_final)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp_final))
    if trainer.is_world_process_zero():
        canonical_adapter_config(tmp_final)
    trainer.accelerator.wait_for_everyone()

    state = trainer.state
    losses = [
        {k: e[k] for k in ("step", "loss", "learning_rate", "grad_norm", "epoch") if k in e}
        for e in state.log_history if "loss" in e
    ]
    steps_run = state.global_step - resume_step
    circumstances = {
        "wall_time_s": round(time.time() - t0, 3),
        "train_time_s": round(train_time, 3),
        "sec_per_step": round(train_time / steps_run, 4) if steps_run > 0 else None,
        "resumed_from": resume.name if resume else None,
        "resumed_from_step": resume_step,
    }
    summary = {
        "steps": state.global_step,
        "epochs": state.epoch,
        "losses": losses,
        "train_loss": result.training_loss,
        "checkpoints": [p.name for _, p in list_checkpoints(out)],
        "final": FINAL_NAME,
        **extra,
        "world_size": trainer.args.world_size,
        "config": config,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": __import__("peft").__version__},
    }
    if trainer.is_world_process_zero():
        # a model card replaces peft's stub README (only run-independent values: no dates, timings)
        write_model_card(tmp_final, run_label(out), summary)
        final = out / FINAL_NAME
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp_final, final)
        with atomic_path(out / SUMMARY_NAME) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
        sidecar.record("train", {**circumstances, "out": str(out)})
        log.info("finetune: %d steps (%s s/step), final adapter %s", state.global_step, circumstances["sec_per_step"], final)
    trainer.accelerator.wait_for_everyone()
    return {**summary, **circumstances}


def train_in_work_dir(out: str | os.PathLike, train: Callable[[Path], dict]) -> dict:
    """Run ``train(work)`` in ``<out>.partial`` and move the finished directory onto ``out``
    (only rank 0 of a multi-process launch publishes). Returns what ``train`` returned."""
    out = Path(out)
    work = work_dir(out)
    summary = train(work)
    if is_main_process():
        publish_work_dir(work, out)
    return summary
