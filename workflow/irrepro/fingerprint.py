"""Content fingerprints of inputs, for resumable state that must not outlive its inputs.

A ``.partial`` directory records the fingerprints of the files it was computed from; a
resume compares them (not the paths: a file rewritten at the same path is a different
input) and starts afresh on any difference.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .utils import sha256_file


def path_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a directory tree (relative names + file sha256, sorted); a missing
    path has the fingerprint ``"missing"``."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(f"{f.relative_to(p).as_posix()}\0{sha256_file(f)}\n".encode())
        return h.hexdigest()
    return "missing"


def settings_fingerprint(settings: Any) -> str:
    """sha256 of JSON-serialisable settings (key order does not matter)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def differences(old: dict, new: dict) -> dict:
    """``{key: (old, new)}`` of the entries that differ (missing counts as ``None``)."""
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
