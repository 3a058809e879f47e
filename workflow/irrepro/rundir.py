"""Resumable work directories keyed on the content of their inputs, published atomically.

A job that can resume (fine-tuning, SynTOD generation) works in ``<out>.partial`` and moves
it onto ``<out>`` only when finished, so ``<out>`` is always either the previous complete
result or the new one, never a mix. ``<out>.partial/RUN.json`` records the fingerprints
(:mod:`irrepro.fingerprint`) of everything the result depends on: input file contents, not
their paths, and the settings. :func:`prepare_work_dir` resumes a work directory only when
they all match; otherwise it says what changed and starts afresh. Callers hold the output's
lock (:func:`irrepro.locking.output_lock`) around both steps.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from .fingerprint import differences
from .utils import atomic_path

log = logging.getLogger("irrepro.rundir")

RUN_MARKER = "RUN.json"


def work_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def prepare_work_dir(work: str | os.PathLike, fingerprints: dict, what: str) -> bool:
    """Make ``work`` ready for a run described by ``fingerprints`` (a flat JSON dict). Returns
    True when an earlier run with the same fingerprints is resumed, False when starting afresh
    (a work directory of another run is deleted first, with a warning naming what differs)."""
    work = Path(work)
    marker = work / RUN_MARKER
    if work.exists():
        try:
            old = json.loads(marker.read_text()).get("fingerprints", {})
        except (OSError, ValueError, AttributeError):
            old = None
        if old == fingerprints:
            log.info("%s: resuming %s (inputs and settings unchanged)", what, work)
            return True
        changed = sorted(differences(old, fingerprints)) if isinstance(old, dict) else ["no RUN.json"]
        log.warning("%s: %s was made from other inputs or settings (%s changed); starting afresh", what, work,
                    ", ".join(changed))
        shutil.rmtree(work)
    work.mkdir(parents=True)
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps({"fingerprints": fingerprints}, indent=1, sort_keys=True) + "\n")
    return False


def publish_work_dir(work: str | os.PathLike, out: str | os.PathLike, keep_marker: bool = False) -> None:
    """Move the finished ``work`` onto ``out`` (replacing a previous ``out`` only at that moment)."""
    work, out = Path(work), Path(out)
    if not keep_marker:
        (work / RUN_MARKER).unlink(missing_ok=True)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(work, out)
    shutil.rmtree(old, ignore_errors=True)
