"""benchmarks/bench_pipeline.py: the summary of a run from Snakemake's and the sidecars' records
(a synthetic record set; no pipeline runs here)."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_pipeline", ROOT / "benchmarks" / "bench_pipeline.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_pipeline"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


T0 = 1_800_000_000.0


def _stamp(t: float) -> str:
    """An irrepro log line's asctime (local time, milliseconds)."""
    d = dt.datetime.fromtimestamp(t)
    return d.strftime("%Y-%m-%d %H:%M:%S") + f",{d.microsecond // 1000:03d}"


def _record(project: Path, output: str, rule: str, start: float, end: float, log: str | None, job_hash: int,
            **extra) -> None:
    meta = project / ".snakemake" / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    rec = {"rule": rule, "log": [log] if log else [], "starttime": start, "endtime": end, "job_hash": job_hash,
           "incomplete": False, **extra}
    (meta / base64.b64encode(output.encode()).decode()).write_text(json.dumps(rec))


def _job_log(project: Path, log: str, first_line_at: float, sidecar: dict | None) -> None:
    path = project / log
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{_stamp(first_line_at)} INFO irrepro: irrepro x (profile mini)\n"
                    f"{_stamp(first_line_at + 5)} INFO irrepro.x: working\n")
    if sidecar is not None:
        path.with_name(path.name[:-4] + ".run.json").write_text(json.dumps(sidecar))


@pytest.fixture
def project(tmp_path):
    p = tmp_path / "project"
    p.mkdir()
    (p / "params.yaml").write_text("profile: mini\n")
    # finetune a: two outputs of one job (one record each), 10 s, first log line 0.75 s after the start
    for out in ("models/mini/lora/a", "results/mini/a.json"):
        _record(p, out, "finetune", T0, T0 + 10, "logs/mini/finetune/a.log", 1)
    _job_log(p, "logs/mini/finetune/a.log", T0 + 0.75, {"command": "finetune", "imported": ["irrepro.x", "torch"]})
    # finetune b: 4 s, its sidecar lists no imports (an older sidecar)
    _record(p, "models/mini/lora/b", "finetune", T0 + 5, T0 + 9, "logs/mini/finetune/b.log", 2)
    _job_log(p, "logs/mini/finetune/b.log", T0 + 5.25, {"command": "finetune"})
    # a figure job: 2 s, CLI 0.5 s
    _record(p, "results/mini/figures/x.pdf", "figure_x", T0 + 12, T0 + 14, "logs/mini/figures/x.log", 3)
    _job_log(p, "logs/mini/figures/x.log", T0 + 12.5, {"command": "figure", "imported": ["matplotlib"]})
    # skipped: an incomplete record, a job of an earlier run
    _record(p, "results/mini/broken.json", "report", T0 + 1, T0 + 2, None, 4, incomplete=True)
    _record(p, "results/mini/old.json", "report", T0 - 100, T0 - 99, None, 5)
    (p / "logs" / "mini" / "dvc-commit.run.json").write_text(json.dumps({"command": "dvc-commit", "seconds": 3.0}))
    return p


def test_summary_of_records(bench, project):
    imports = {"logs/mini/finetune/a.log": 2.0, "logs/mini/figures/x.log": 1.0}
    s = bench.summarise(project, "mini", wall_s=20.0, since=T0 - 1, setup_s=1.5, import_s=imports)
    jobs = {j.log: j for j in s.jobs}
    assert sorted(jobs) == ["logs/mini/figures/x.log", "logs/mini/finetune/a.log", "logs/mini/finetune/b.log"]
    a, b, x = jobs["logs/mini/finetune/a.log"], jobs["logs/mini/finetune/b.log"], jobs["logs/mini/figures/x.log"]
    assert (a.wall, a.cli_s, a.startup_s) == pytest.approx((10.0, 0.75, 2.75), abs=1e-6)
    assert (b.wall, b.cli_s, b.import_s, b.startup_s) == pytest.approx((4.0, 0.25, None, 0.25), abs=1e-6)
    assert x.startup_s == pytest.approx(1.5, abs=1e-6)

    ft, fig = s.families["finetune"], s.families["figure_x"]
    assert (ft["jobs"], ft["wall_s"], ft["max_s"], ft["startup_s"]) == pytest.approx((2, 14.0, 10.0, 3.0), abs=1e-6)
    assert ft["import_s"] == pytest.approx(2.0)  # mean over the jobs that listed their imports
    assert (fig["jobs"], fig["startup_s"]) == pytest.approx((1, 1.5), abs=1e-6)
    assert set(s.families) == {"finetune", "figure_x"}
    assert s.processes == 4 and s.bookkeeping_s == 3.0

    d = bench.as_dict(s)
    assert d["jobs"] == 3 and d["job_seconds"] == pytest.approx(16.0)
    assert d["startup_share"] == pytest.approx(4.5 / 16.0)
    assert d["bookkeeping_share"] == pytest.approx(3.0 / 20.0)
    text = bench.render(s)
    assert "bookkeeping (dvc-commit): 3.0s = 15.0% of the run" in text
    assert "start-up: 4.5s of 16.0s job time = 28.1%" in text
    assert "total: 20.0s wall" in text and "set-up (git clone" in text
    # families by job time, longest first
    assert text.index("finetune") < text.index("figure_x")


def test_startup_is_capped_at_the_job(bench, project):
    s = bench.summarise(project, "mini", since=T0 - 1, import_s={"logs/mini/figures/x.log": 30.0})
    assert s.families["figure_x"]["startup_s"] == pytest.approx(2.0)
    assert "no dvc-commit" not in bench.render(s) and s.wall_s is None


def test_without_since_every_finished_job_counts(bench, project):
    s = bench.summarise(project, "mini")
    assert len(s.jobs) == 4 and "report" in s.families


def test_job_imports_come_from_the_sidecars(bench, project):
    s = bench.summarise(project, "mini", since=T0 - 1)
    assert bench.job_imports(project, s.jobs) == {"logs/mini/finetune/a.log": ("irrepro.x", "torch"),
                                                   "logs/mini/figures/x.log": ("matplotlib",)}


def test_import_probe_times_a_real_import(bench, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "workflow"))
    cost = bench.import_seconds(tmp_path, [("yaml", "no_such_module_xyz"), ("yaml", "no_such_module_xyz")],
                                repeats=1, env=env)
    assert list(cost) == [("yaml", "no_such_module_xyz")] and 0.0 <= cost[("yaml", "no_such_module_xyz")] < 30


def test_sidecar_lists_what_the_process_imported():
    from irrepro import sidecar

    names = sidecar.imported_modules()
    assert "irrepro.sidecar" in names and "pytest" in names
    assert "json" not in names and not any(n.startswith("_") for n in names)
    assert not any(n.startswith("pytest.") for n in names)  # third-party packages: top level only
