"""Circumstances of a job, kept out of its outputs: the run sidecar.

A stage's outputs hold results only, so rerunning it on the same machine gives byte-identical
files and DVC's hashes do not move (README, "Reproduced: what it means"). What used to ride
along inside the outputs and changes from run to run (wall time, seconds per step, the host,
the run date, absolute paths, how a run resumed, reply-cache hits) is recorded here instead,
in a JSON sidecar beside the job's log::

    logs/<profile>/<stage>[/<job>].run.json      (the command's --log, .log -> .run.json)

Neither runner declares it as an output, so it never enters ``dvc.lock``. Document::

    {"command": "finetune", "argv": [...], "host": "...", "cwd": "/abs/path", "python": "3.11.9",
     "platform": "Linux-...", "started": "2026-12-01T14:46:38+00:00", "finished": "...",
     "seconds": 12.3, "returncode": 0, "<section>": {...}, ...}

Stages add sections with :func:`record` (e.g. ``finetune``: ``wall_time_s``, ``train_time_s``,
``sec_per_step``, ``resumed_from``; ``base``: warm-up ``seconds``; ``generate``: cache hits).
Without a configured sidecar (library use, tests) the sections are kept in memory only
(:func:`current`). The file is rewritten atomically after every change, so a crashed job
leaves what it knew.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["SUFFIX", "sidecar_path", "start", "record", "finish", "current", "read_sidecar", "portable_path",
           "imported_modules"]

SUFFIX = ".run.json"

_state: dict[str, Any] = {"path": None, "doc": {}, "t0": None}


def sidecar_path(log_path: str | os.PathLike | None) -> Path | None:
    """The sidecar of a job whose log is ``log_path`` (``x.log`` -> ``x.run.json``)."""
    if not log_path:
        return None
    p = Path(log_path)
    return p.with_name((p.name[:-4] if p.name.endswith(".log") else p.name) + SUFFIX)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write() -> None:
    path = _state["path"]
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(_state["doc"], indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def start(command: str, argv: list[str] | None = None, log_path: str | os.PathLike | None = None) -> Path | None:
    """Begin the record of one command (the CLI calls this once per process); returns the
    sidecar path (None: in memory only)."""
    _state["path"] = sidecar_path(log_path)
    _state["t0"] = time.time()
    _state["doc"] = {
        "command": command, "argv": list(argv or []), "host": socket.gethostname(), "cwd": os.getcwd(),
        "python": platform.python_version(), "platform": platform.platform(), "started": _now(),
    }
    _write()
    return _state["path"]


def record(section: str, data: dict) -> None:
    """Merge ``data`` into the sidecar's ``section`` (written at once when a sidecar is set)."""
    _state["doc"].setdefault(section, {}).update(data)
    _write()


def finish(returncode: int) -> None:
    """Close the record: end time, duration, the command's return code and what it imported."""
    t0 = _state["t0"]
    from .warm_worker import preloaded

    _state["doc"].update(finished=_now(), returncode=int(returncode),
                         seconds=round(time.time() - t0, 3) if t0 else None, imported=imported_modules(),
                         warm_worker=bool(preloaded))
    _write()


def imported_modules() -> list[str]:
    """What this process imported beyond the standard library: each third-party package (top
    level) and each irrepro module. benchmarks/bench_pipeline.py times importing them in a
    fresh interpreter: a job's cold-start cost. In a warm worker's job, what the worker had
    imported before the job started is not the job's cost and is left out."""
    from .warm_worker import preloaded

    names = set()
    for name in list(sys.modules):
        top = name.split(".")[0]
        if name in preloaded or top in preloaded and top != "irrepro":
            continue
        if top == "irrepro":
            names.add(name)
        elif not top.startswith("_") and top not in sys.stdlib_module_names:
            names.add(top)
    return sorted(names)


def current() -> dict:
    """A copy of the record so far."""
    return json.loads(json.dumps(_state["doc"], default=str))


def read_sidecar(log_path: str | os.PathLike) -> dict | None:
    """The sidecar written for the job logged at ``log_path`` (None: absent or unreadable)."""
    path = sidecar_path(log_path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError):
        return None


def portable_path(path: str | os.PathLike) -> str:
    """How an output should name ``path``: a Hugging Face hub snapshot as ``hf:<repo>@<commit>``
    (the same on every machine), a path inside the working directory relative to it, anything
    else as given. Used wherever a saved artifact records where its inputs came from."""
    text = str(path)
    parts = Path(text).parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        repo_dir = parts[i - 1] if i >= 1 else ""
        if repo_dir.startswith(("models--", "datasets--")) and i + 1 < len(parts):
            repo = repo_dir.split("--", 1)[1].replace("--", "/")
            sub = "/".join(parts[i + 2:])
            return f"hf:{repo}@{parts[i + 1]}" + (f":{sub}" if sub else "")
    p = Path(text)
    if p.is_absolute():
        try:
            return p.relative_to(Path.cwd()).as_posix() or "."
        except ValueError:
            return text
    return text


if __name__ == "__main__":  # pragma: no cover
    sys.exit("irrepro.sidecar is a library module")
