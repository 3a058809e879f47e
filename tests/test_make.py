"""`make help` and `make run`'s failure report, with a stand-in snakemake (no workflow is run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

FAKE_SNAKEMAKE = """#!/bin/sh
echo "$@" > snakemake.args
echo "Building DAG of jobs..."
if [ -f fail ]; then
  printf 'Error in rule finetune:\\n    message: x\\n    jobid: 3\\n    log: logs/mini/finetune/llama-r1-mha.log (check log file(s) for error details)\\n'
  printf 'Error in rule figure_checkpoint_curves:\\n    jobid: 9\\n'
  echo "Exiting because a job execution failed. Look below for error messages" >&2
  exit 1
fi
echo "done"
"""


@pytest.fixture
def project(tmp_path, root):
    """A directory with the Makefile, params.yaml and an up-to-date stand-in venv."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    shutil.copy(root / "Makefile", tmp_path / "Makefile")
    (tmp_path / "params.yaml").write_text("profile: mini\n")
    (tmp_path / "envs").mkdir()
    for f in ("envs/requirements.lock", "pyproject.toml"):
        (tmp_path / f).write_text("")
        os.utime(tmp_path / f, (time.time() - 100, time.time() - 100))
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (tmp_path / "venv" / ".installed").write_text("")
    os.symlink(sys.executable, bin_dir / "python")
    (bin_dir / "snakemake").write_text(FAKE_SNAKEMAKE)
    (bin_dir / "snakemake").chmod(0o755)
    (tmp_path / "results" / "mini").mkdir(parents=True)
    (tmp_path / "results" / "mini" / "report.md").write_text("# the report\n")
    return tmp_path


def _make(project, *targets):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(["make", "-s", "VENV=venv", *targets], cwd=project, env=env, capture_output=True, text=True)


def test_make_help_lists_the_targets(project):
    out = _make(project, "help")
    assert out.returncode == 0, out.stderr
    for target in ("run ", "test ", "pull ", "paper-dry-run", "help "):
        assert f"  {target}" in out.stdout
    assert "keeps going past a failed job" in out.stdout


def test_make_run_keeps_going_and_lists_the_failures(project):
    ok = _make(project, "run")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "--keep-going" in (project / "snakemake.args").read_text()
    assert "# the report" in ok.stdout
    (project / "fail").write_text("")
    bad = _make(project, "run")
    assert bad.returncode != 0
    assert "== make run: FAILED" in bad.stdout
    assert "  - finetune (log: logs/mini/finetune/llama-r1-mha.log)" in bad.stdout
    assert "  - figure_checkpoint_curves" in bad.stdout
    assert "# the report" not in bad.stdout
    assert "Error in rule finetune" in (project / "logs" / "mini" / "make-run.log").read_text()
