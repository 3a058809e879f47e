"""irrepro.dvcsync.commit: recording Snakemake's outputs in dvc.lock in one DVC session.

A scratch git + DVC project (hard-link cache as in the real .dvc/config) with a plain stage,
a ``foreach`` and a ``matrix`` stage, params deps, directory deps and outputs and a metrics
file; the outputs are written directly (as Snakemake leaves them), nothing runs. The result
is checked against ``dvc commit --force`` of the same stages in a second copy.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import yaml
from conftest import BIN, run

from irrepro.dvcsync import commit

ROOT = Path(__file__).resolve().parents[1]

DVC_YAML = {
    "stages": {
        "raw": {"cmd": "python make.py raw", "deps": ["make.py"], "params": ["profile", "data.n"],
                "outs": ["data/mini/raw"]},
        "split": {"foreach": "${parts}", "do": {
            "cmd": "python make.py split ${item}", "deps": ["make.py", "data/mini/raw"],
            "params": ["profile", "fit"], "outs": ["data/mini/split/${item}"]}},
        "fit": {"matrix": {"part": "${parts}", "rank": "${fit.ranks}"},
                "cmd": "python make.py fit ${item.part} ${item.rank}",
                "deps": ["make.py", "data/mini/split/${item.part}"], "params": ["profile", "fit.lr"],
                "outs": ["models/mini/${item.part}-r${item.rank}"]},
        "summary": {"cmd": "python make.py summary", "deps": ["make.py", "models/mini"],
                    "params": ["profile"], "outs": ["results/mini/summary.tsv"],
                    "metrics": ["results/mini/metrics.json"]},
    }
}
PARAMS = {"profile": "mini", "data": {"n": 3}, "parts": ["a", "b"], "fit": {"ranks": [1, 2], "lr": 0.1}}
STAGES = ["raw", "split@a", "split@b", "fit@a-1", "fit@a-2", "fit@b-1", "fit@b-2", "summary"]


def outputs() -> dict[str, bytes]:
    """Every output file (relative path -> contents), in DAG order."""
    files = {f"data/mini/raw/f{i}.txt": f"raw {i}\n".encode() * 50 for i in range(PARAMS["data"]["n"])}
    for part in PARAMS["parts"]:
        files |= {f"data/mini/split/{part}/{i}.bin": bytes([i]) * 1000 for i in range(4)}
    for part in PARAMS["parts"]:
        for rank in PARAMS["fit"]["ranks"]:
            files |= {f"models/mini/{part}-r{rank}/ckpt-{i}/w.bin": os.urandom(2000) for i in range(3)}
    files["results/mini/summary.tsv"] = b"model\tscore\na-r1\t0.5\n"
    files["results/mini/metrics.json"] = b'{"score": 0.5}\n'
    return files


def make_project(dest: Path, files: dict[str, bytes], skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Write the project and its outputs (but not those under ``skip``) at ``dest`` with
    increasing mtimes; return ``{output file: mtime_ns}``."""
    dest.mkdir()
    run(["git", "init", "-q"], dest)
    run(["dvc", "init", "-q"], dest)
    (dest / ".dvc" / "config").write_text((ROOT / ".dvc" / "config").read_text())
    (dest / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (dest / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    (dest / "make.py").write_text("raise SystemExit('outputs are made by the test, not by DVC')\n")
    mtimes = {}
    for k, (name, data) in enumerate(files.items()):
        if name.startswith(skip):
            continue
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(1_700_000_000_000_000_000 + k * 10**9,) * 2)
        mtimes[name] = path.stat().st_mtime_ns
    return mtimes


def stat_of(dest: Path, names) -> dict[str, tuple[int, int]]:
    return {n: ((dest / n).stat().st_mtime_ns, (dest / n).stat().st_ino) for n in names}


def dvc(args, cwd):
    env = {**os.environ, "PATH": str(BIN) + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_commit_matches_dvc_commit_force_and_leaves_nothing_to_do(tmp_path):
    files = outputs()
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    make_project(ours, files)
    make_project(theirs, files)
    before = stat_of(ours, files)

    assert commit("mini", ours) == 0
    run(["dvc", "commit", "--force", "--quiet", *STAGES], theirs)

    lock = yaml.safe_load((ours / "dvc.lock").read_text())
    assert lock == yaml.safe_load((theirs / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(STAGES)
    # the same run-cache entries and cache objects (outputs stored under the same hashes)
    cached = {p: sorted(str(f.relative_to(p / ".dvc" / "cache")) for f in (p / ".dvc" / "cache").rglob("*") if f.is_file())
              for p in (ours, theirs)}
    assert cached[ours] == cached[theirs]
    assert any(name.startswith("runs/") for name in cached[ours])
    # hard links into the cache: same inodes, same modification times (Snakemake's DAG order)
    assert stat_of(ours, files) == before
    assert (ours / "models/mini/a-r1/ckpt-0/w.bin").stat().st_nlink == 2

    status = dvc(["status", "--quiet"], ours)
    assert status.returncode == 0, status.stdout + status.stderr
    dry = dvc(["repro", "--dry"], ours)
    assert dry.returncode == 0 and "Running stage" not in dry.stdout, dry.stdout
    repro = dvc(["repro"], ours)  # make.py exits non-zero: any stage that runs fails the repro
    assert repro.returncode == 0 and "Running stage" not in repro.stdout, repro.stdout + repro.stderr
    assert stat_of(ours, files) == before

    # a second call with nothing changed leaves dvc.lock alone
    lock_stat = (ours / "dvc.lock").stat().st_mtime_ns
    assert commit("mini", ours) == 0
    assert (ours / "dvc.lock").stat().st_mtime_ns == lock_stat
    assert stat_of(ours, files) == before

    # a rerun job (Snakemake removes the output, writes a new one): only its entry changes
    changed = ours / "models/mini/b-r1/ckpt-2/w.bin"
    changed.unlink()
    changed.write_bytes(b"retrained")
    assert commit("mini", ours) == 0
    new_lock = yaml.safe_load((ours / "dvc.lock").read_text())
    differ = sorted(s for s in STAGES if new_lock["stages"][s] != lock["stages"][s])
    assert differ == ["fit@b-1", "summary"]  # summary depends on models/mini
    assert dvc(["status", "--quiet"], ours).returncode == 0


def test_stage_with_a_missing_output_is_skipped_and_named(tmp_path, caplog):
    files = outputs()
    dest = tmp_path / "p"
    # fit@b-2 did not run, so summary (which depends on models/mini, which exists) is recorded
    # but fit@b-2 is not
    make_project(dest, files, skip=("models/mini/b-r2",))
    with caplog.at_level(logging.INFO, logger="irrepro.dvcsync"):
        assert commit("mini", dest) == 0
    lock = yaml.safe_load((dest / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(s for s in STAGES if s != "fit@b-2")
    skipped = [r.getMessage() for r in caplog.records if "not recorded" in r.getMessage()]
    assert skipped and skipped[0].endswith(": fit@b-2"), caplog.text
    status = dvc(["status", *[s for s in STAGES if s not in ("fit@b-2", "summary")]], dest)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout


def test_failure_is_reported_not_raised(tmp_path, caplog):
    dest = tmp_path / "p"
    make_project(dest, outputs())
    (dest / "dvc.lock").write_text("stages: [unclosed\n")
    with caplog.at_level(logging.ERROR, logger="irrepro.dvcsync"):
        assert commit("mini", dest) == 1
    assert "could not record the outputs in DVC" in caplog.text
    assert "irrepro tools dvc-commit --profile mini" in caplog.text


def test_other_profile_records_nothing(tmp_path, caplog):
    dest = tmp_path / "p"
    make_project(dest, outputs())
    with caplog.at_level(logging.WARNING, logger="irrepro.dvcsync"):
        assert commit("paper", dest) == 0
    assert not (dest / "dvc.lock").exists()
    assert "params.yaml says 'mini'" in caplog.text
