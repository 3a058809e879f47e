"""Keep DVC's record in step with outputs produced by Snakemake.

After a Snakemake run the outputs exist but dvc.lock does not describe them. Recording every
stage whose outputs and file dependencies are all present (what ``dvc commit --force`` does:
hash deps and outs, store the outs in the cache, write the run cache and dvc.lock) makes
``dvc status`` clean and ``dvc repro`` a no-op. Stages with missing files (a partial run) are
skipped and named in the log.

Why not ``dvc commit --force s1 ... sN``: DVC treats every target as a separate command: it
re-reads dvc.yaml and dvc.lock (ruamel.yaml, pure Python) to collect the stage and then
re-parses and rewrites the whole dvc.lock to record that one stage. With 115 stages and a
lock growing to ~9,000 lines that was 95% of a 4.5-10 minute call; hashing the ~150 MB of
outputs took seconds (benchmarks/bench_dvc_commit.py). Here one DVC session holds the repo
lock, builds the index once, saves and commits each stage with DVC's own ``Stage.save`` /
``Stage.commit`` (same hashes, same cache transfer with hard links, so output mtimes do not
change) and writes dvc.lock once per dvc.yaml with DVC's own ``dump_stages``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from pathlib import Path


from .yamlio import load_yaml_text

log = logging.getLogger("irrepro.dvcsync")


def _files_present(stage) -> bool:
    """Every output and every file/directory dependency (not params) of ``stage`` exists."""
    from dvc.dependency.param import ParamsDependency

    files = list(stage.outs) + [d for d in stage.deps if not isinstance(d, ParamsDependency)]
    return all(Path(f.fs_path).exists() for f in files)


def _split(stages) -> tuple[list, list]:
    """(stages with a command whose files are all present, those with some missing)."""
    ready, missing = [], []
    for stage in stages:
        if stage.cmd:
            (ready if _files_present(stage) else missing).append(stage)
    return ready, missing


def committable_stages(root: str | Path = ".") -> tuple[list[str], list[str]]:
    """Split dvc.yaml's stages into (every output and file dependency present, the rest)."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:  # names are relative to the working dir
        ready, missing = _split(repo.index.stages)
        return [s.addressing for s in ready], [s.addressing for s in missing]


@contextlib.contextmanager
def _params_read_once():
    """Within the block, DVC parses each (unchanged) params file once.

    DVC reads params.yaml for every params dependency three times per stage (save, and twice
    for the run-cache key), each a ruamel.yaml parse plus a dpath walk per key: 345 reads of a
    370-line file for 115 stages, 15 s of CPU. DVC's ``load_path`` (the parse) and
    ``read_param_file`` (parse + keys; the matrix stages share their keys) are memoised by
    (path, mtime, size[, keys]) and their results handed out as deep copies, so DVC sees
    exactly what it would have read. If DVC renames them, nothing is patched (slower, same
    result)."""
    try:
        from dvc.dependency import param as dvc_param

        originals = {"load_path": dvc_param.load_path, "read_param_file": dvc_param.read_param_file}
    except (ImportError, AttributeError):
        yield
        return
    memo: dict[tuple, object] = {}

    def remembered(path, fs, what: tuple, compute):
        if getattr(fs, "protocol", None) != "local":  # only local files: (mtime, size) say when they change
            return compute()
        st = os.stat(path)
        key = (*what, os.path.abspath(path), st.st_mtime_ns, st.st_size)
        if key not in memo:
            memo[key] = compute()
        return copy.deepcopy(memo[key])

    def load_path(fs_path, fs, **kwargs):
        def compute():
            return originals["load_path"](fs_path, fs, **kwargs)

        return compute() if kwargs else remembered(fs_path, fs, ("load_path",), compute)

    def read_param_file(fs, path, key_paths=None, flatten=False, **load_kwargs):
        def compute():
            return originals["read_param_file"](fs, path, key_paths, flatten=flatten, **load_kwargs)

        if load_kwargs:
            return compute()
        return remembered(path, fs, ("read_param_file", tuple(key_paths or ()), flatten), compute)

    dvc_param.load_path, dvc_param.read_param_file = load_path, read_param_file
    try:
        yield
    finally:
        dvc_param.load_path, dvc_param.read_param_file = originals["load_path"], originals["read_param_file"]


def _lock_entry(stage) -> dict:
    """What DVC would write to dvc.lock for ``stage`` (after ``stage.save()``)."""
    from dvc.stage.serialize import to_single_stage_lockfile

    return to_single_stage_lockfile(stage)


def record_stages(root: str | Path = ".") -> tuple[list[str], list[str], dict[str, str]]:
    """Record every committable stage of the DVC project at ``root`` like ``dvc commit --force``.

    Returns ``(recorded, missing, failed)``: names of the stages written to the lock file, of
    those skipped because a file is missing, and ``{stage: error}`` for those whose save or
    commit raised (they keep their previous lock entry; the others are still written).
    Holds DVC's repo lock for the whole call; parses each lock file once and writes it once.
    """
    from dvc.repo import Repo, lock_repo

    recorded, failed = [], {}
    # DVC resolves stage paths against the working directory, so work from the repo root.
    with contextlib.chdir(root), _params_read_once(), Repo(".") as repo, lock_repo(repo):
        ready, missing = _split(repo.index.stages)
        per_file: dict[str, tuple] = {}
        for stage in ready:
            try:
                stage.save()  # hashes deps and outs (DVC's state db skips unchanged files), run cache
                stage.commit(relink=True)  # outs into the cache: hard links, contents and mtimes kept
            except Exception as exc:  # noqa: BLE001 -- one bad stage must not lose the others
                failed[stage.addressing] = f"{type(exc).__name__}: {exc}"
                continue
            per_file.setdefault(stage.dvcfile.path, (stage.dvcfile, []))[1].append(stage)
        for dvcfile, stages in per_file.values():
            # one read + one write of the lock, and none if no entry changed (a rerun of
            # `irrepro tools dvc-commit`); the entries compared are those parsed for the index
            locked = dvcfile.lockfile_contents.get("stages", {})
            changed = [s for s in stages if _lock_entry(s) != locked.get(s.name)]
            dvcfile.dump_stages(changed, update_pipeline=False)
            recorded += [s.addressing for s in stages]
        return recorded, [s.addressing for s in missing], failed  # names relative to root


def params_profile(root: str | Path = ".") -> str:
    with open(Path(root) / "params.yaml") as fh:
        return load_yaml_text(fh.read(), Path(root) / "params.yaml")["profile"]


def commit(profile: str, root: str | Path = ".") -> int:
    root = Path(root)
    if not (root / ".dvc").is_dir():
        log.warning("no .dvc directory in %s: nothing recorded", root)
        return 0
    if params_profile(root) != profile:
        log.warning(
            "Snakemake ran profile %r but params.yaml says %r: DVC describes the params.yaml "
            "profile, so nothing is recorded (set `profile` in params.yaml to share state)",
            profile,
            params_profile(root),
        )
        return 0
    try:
        recorded, missing, failed = record_stages(root)
        if missing:
            log.info("not recorded in DVC (outputs or inputs missing): %s", ", ".join(missing))
        if recorded:
            log.info("recorded %d stage(s) in dvc.lock: %s", len(recorded), ", ".join(recorded))
        if failed:
            raise RuntimeError("; ".join(f"{name}: {err}" for name, err in failed.items()))
    except Exception as exc:  # the Snakemake results are complete; only DVC's record is stale
        log.error(
            "could not record the outputs in DVC (%s: %s). The workflow's results are complete; "
            "DVC will consider these stages changed. Fix the cause (a damaged dvc.lock can be "
            "deleted) and run `irrepro tools dvc-commit --profile %s`.",
            type(exc).__name__, exc, profile,
        )
        return 1
    return 0
