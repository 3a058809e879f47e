"""What ``irrepro finetune`` checks and prepares before training (issue 12).

:func:`prepare_finetune` checks the inputs in seconds (base directory complete, groups or
TOD text well-formed, group size against the negatives available) before any lock, model
or Trainer, and returns the step to run under the output's lock: the ``<out>.partial`` work
directory is resumed only when the *contents* of its inputs and the settings are those it
was made from (:mod:`irrepro.rundir`); a groups file rewritten at the same path starts the
run afresh, saying so.
"""

from __future__ import annotations

from typing import Callable

from ..checks import check_groups, check_model_dir, check_text_jsonl
from ..fingerprint import path_fingerprint, settings_fingerprint
from ..rundir import prepare_work_dir, work_dir

GRID_AND_LAYOUT = ("families", "ranks", "targets", "launcher", "nproc_per_node", "threads")


def prepare_finetune(P: dict, a) -> Callable[[], bool]:
    """Check the inputs of one ``irrepro finetune`` invocation ``a``; return the work-directory
    preparation (call it while holding the output lock; returns True when resuming)."""
    if a.task == "tod":
        check_text_jsonl(a.train)
        check_model_dir(a.base, "TOD base model")
        prints = {"train": path_fingerprint(a.train), "base": path_fingerprint(a.base),
                  "settings": settings_fingerprint(P["syntod"]["finetune"])}
    else:
        F = P["finetune"]
        check_groups(a.groups, F["group_size"])
        check_model_dir(a.base)
        # the grid and the process layout do not change what one config's run computes
        shaping = {k: v for k, v in F.items() if k not in GRID_AND_LAYOUT}
        prints = {"groups": path_fingerprint(a.groups), "base": path_fingerprint(a.base),
                  "settings": settings_fingerprint({"finetune": shaping, "family": a.family, "rank": a.rank,
                                                    "targets": a.targets})}
    return lambda: prepare_work_dir(work_dir(a.out), prints, f"finetune {a.out}")
