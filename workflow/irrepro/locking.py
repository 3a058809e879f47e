"""Exclusive locks on job outputs: two jobs never write the same output at once.

Every command holds the lock of each output its argument spec marks as written
(:func:`irrepro.commands.Out`) for as long as it runs (:class:`irrepro.commands.Command`).
:func:`output_lock` takes an ``flock`` on ``<output>.lock`` (beside the output, so it covers
the output and its ``.partial`` work directory) without waiting: a second job on the same
output fails at once with :class:`~irrepro.errors.LockedError` naming the holder (pid, host,
command, start time), instead of both writing into one directory. The lock is released
when the job ends, however it ends (the kernel drops it when the process dies, so a
``kill -9`` leaves no stale lock: the next job simply takes it). The lock file is removed on
release; the inode check after locking handles a file removed between open and lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from .errors import LockedError


def lock_path(output: str | os.PathLike) -> Path:
    out = Path(output)
    return out.with_name(out.name + ".lock")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "an unknown process"
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}: "
            f"{info.get('command', '?')}")


@contextlib.contextmanager
def output_lock(output: str | os.PathLike, what: str = "job") -> Iterator[Path]:
    """Hold the exclusive lock of ``output`` for the ``with`` block (see the module docstring)."""
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(f"another {what} is writing this output: {_holder(path)}", file=output,
                              hint=f"wait for it to finish, or stop it; lock file {path}") from None
        try:  # the holder before us may have removed the file after we opened it: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
