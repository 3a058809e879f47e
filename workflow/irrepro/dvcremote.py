"""Pull published artifacts with DVC, then make Snakemake agree that they are up to date.

`dvc pull` checks outputs out with fresh modification times in no particular order, and
a clone has no `.snakemake/` metadata, so Snakemake (which then decides by mtimes only)
wants to rerun nearly the whole DAG (measured with Snakemake 9.27: every job after
`download`). DVC, on the other hand, knows from content hashes which stages are up to
date. `align_mtimes` transfers exactly that knowledge to the file system:

- the outputs of every stage DVC reports as up to date get modification times in the
  DAG's topological order (upstream earlier, 1 ms apart, none older than the stage's
  other inputs), which is what a real run leaves behind;
- outputs of a stage DVC reports as changed (e.g. its code was edited) are dated before
  their oldest input, so Snakemake reruns that stage too;
- stages with missing outputs or inputs (a partial pull) are left alone: Snakemake
  reruns them, as it must to regenerate the missing files.

Nothing is written into `.snakemake/`. A directory output's time is carried by its
`.snakemake_timestamp` file when it has one (Snakemake reads that file), else by the
directory itself. DVC's cache is hard-linked, so two outputs with identical content can
share an inode (and an mtime); such a file is replaced by its own copy before dating it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("irrepro.dvcremote")

STEP_NS = 1_000_000  # 1 ms between DAG levels; Snakemake reruns only if an input is strictly newer
TIMESTAMP = ".snakemake_timestamp"


class PullError(RuntimeError):
    """`dvc pull` failed; the message names the outputs that were not restored."""


def dvc_pull(remote: str | None = None, targets: Sequence[str] = (), jobs: int | None = None,
             root: str | Path = ".") -> tuple[int, int]:
    """`dvc pull [-r remote] [-j jobs] [targets]` in ``root``, then `align_mtimes`.

    Returns `align_mtimes`'s counts. Raises `PullError` naming the missing outputs when
    DVC could not restore everything (the mtimes are then left untouched).
    """
    root = Path(root)
    cmd = ["dvc", "pull", *(["-r", remote] if remote else []), *(["-j", str(jobs)] if jobs else []), *targets]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run([sys.executable, "-m", *cmd], cwd=root)
    if proc.returncode != 0:
        missing = missing_outputs(root)
        where = f"remote {remote!r}" if remote else "the default remote"
        raise PullError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}); "
            + (f"{len(missing)} output(s) of dvc.lock not restored: {', '.join(missing)}. " if missing else "")
            + f"Their data is not in {where} (see DVC's message above for the missing objects): "
            "the maintainer has to `dvc push` them, or check `dvc remote list` / the remote's URL."
        )
    return align_mtimes(root)


def missing_outputs(root: str | Path = ".") -> list[str]:
    """Outputs of dvc.yaml's stages that do not exist in the workspace."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [str(o) for s in repo.index.stages if s.cmd for o in s.outs if not Path(o.fs_path).exists()]


def align_mtimes(root: str | Path = ".") -> tuple[int, int]:
    """Date outputs so Snakemake's mtime view matches DVC's status (see the module doc).

    Returns (stages dated as up to date, stages dated as out of date).
    """
    from dvc.repo import Repo

    t_now = time.time_ns()
    fresh, stale, skipped = [], [], []
    seen_inodes: dict[tuple[int, int], int] = {}
    with Repo(str(root)) as repo:
        ranked = _ranked_stages(repo)
        changed = set(repo.status())  # addressing of every stage whose deps, params or outs differ
        # Outputs must not be older than any other input of an up-to-date stage (clock skew,
        # a file edited without changing its content), so start after the newest of them.
        out_paths = {o.fs_path for _, s in ranked for o in s.outs}
        dep_times = [_mtime_ns(d.fs_path) for _, s in ranked for d in s.deps
                     if d.fs_path not in out_paths and Path(d.fs_path).exists()]
        t0 = max([t_now, *dep_times]) + STEP_NS
        for rank, stage in ranked:
            outs = [Path(o.fs_path) for o in stage.outs]
            if not all(Path(p).exists() for p in [*outs, *(d.fs_path for d in stage.deps)]):
                skipped.append(stage.addressing)  # not pulled, or its inputs were not
                continue
            if stage.addressing in changed:
                oldest_input = min((_mtime_ns(d.fs_path) for d in stage.deps), default=t0)
                when, bucket = oldest_input - 1_000_000_000, stale  # 1 s before it: any input is newer
            else:
                when, bucket = t0 + rank * STEP_NS, fresh
            for out in outs:
                _set_mtime(out, when, seen_inodes)
            bucket.append(stage.addressing)
    log.info("dated the outputs of %d up-to-date stage(s) in DAG order", len(fresh))
    if stale:
        log.warning("DVC reports %d stage(s) as changed; their outputs are dated as out of date so "
                    "both runners redo them: %s", len(stale), ", ".join(stale))
    if skipped:
        log.info("left alone, %d stage(s) whose outputs or inputs are not in the workspace (a partial pull): %s",
                 len(skipped), ", ".join(skipped))
    return len(fresh), len(stale)


def _ranked_stages(repo) -> list[tuple[int, object]]:
    """(level, stage) for dvc.yaml's command stages, dependencies first; level 0 has no
    upstream stage, otherwise 1 + the highest level among the stages it depends on."""
    import networkx as nx

    graph = repo.index.graph  # edges point from a stage to the stages it depends on
    level: dict = {}
    for stage in reversed(list(nx.topological_sort(graph))):
        level[stage] = 1 + max((level[d] for d in graph.successors(stage)), default=-1)
    return sorted(((lv, s) for s, lv in level.items() if s.cmd), key=lambda x: (x[0], x[1].addressing))


def _carriers(path: Path) -> list[Path]:
    """The paths whose mtime Snakemake reads for an output (a directory: its timestamp file)."""
    if path.is_dir() and (path / TIMESTAMP).is_file():
        return [path / TIMESTAMP, path]
    return [path]


def _mtime_ns(path: str | os.PathLike) -> int:
    return os.stat(_carriers(Path(path))[0]).st_mtime_ns


def _set_mtime(path: Path, when: int, seen_inodes: dict[tuple[int, int], int]) -> None:
    for carrier in _carriers(path):
        st = os.stat(carrier)
        key = (st.st_dev, st.st_ino)
        if carrier.is_file() and seen_inodes.get(key, when) != when:
            _unshare(carrier)  # hard-linked to another output that needs a different time
            st = os.stat(carrier)
            key = (st.st_dev, st.st_ino)
        os.utime(carrier, ns=(st.st_atime_ns, when))
        seen_inodes[key] = when


def _unshare(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.unshare-tmp")
    shutil.copyfile(path, tmp)
    os.chmod(tmp, os.stat(path).st_mode & 0o777)
    os.replace(tmp, path)
    log.info("%s shared its inode with another output; replaced by a copy", path)
