"""Keep DVC's record in step with outputs produced by Snakemake.

After a Snakemake run the outputs exist but dvc.lock does not describe them. Committing
every stage whose outputs are all present (``dvc commit --force``) records their hashes,
so ``dvc status`` is clean and ``dvc repro`` has nothing to do. Stages with missing
outputs (a partial run) are skipped and named in the log.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import yaml

log = logging.getLogger("irrepro.dvcsync")


def committable_stages(root: str | Path = ".") -> tuple[list[str], list[str]]:
    """Split dvc.yaml's stages into (every output and file dependency present, the rest)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    ready, missing = [], []
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            if not stage.cmd:
                continue
            files = list(stage.outs) + [d for d in stage.deps if not isinstance(d, ParamsDependency)]
            (ready if all(Path(f.fs_path).exists() for f in files) else missing).append(stage.name)
    return ready, missing


def params_profile(root: str | Path = ".") -> str:
    with open(Path(root) / "params.yaml") as fh:
        return yaml.safe_load(fh)["profile"]


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
        ready, missing = committable_stages(root)
        if missing:
            log.info("not recorded in DVC (outputs or inputs missing): %s", ", ".join(missing))
        if not ready:
            return 0
        log.info("recording %d stage(s) in dvc.lock: %s", len(ready), ", ".join(ready))
        subprocess.run(["dvc", "commit", "--force", "--quiet", *ready], cwd=root, check=True)
    except Exception as exc:  # the Snakemake results are complete; only DVC's record is stale
        log.error(
            "could not record the outputs in DVC (%s: %s). The workflow's results are complete; "
            "DVC will consider these stages changed. Fix the cause (a damaged dvc.lock can be "
            "deleted) and run `irrepro dvc-commit --profile %s`.",
            type(exc).__name__, exc, profile,
        )
        return 1
    return 0
