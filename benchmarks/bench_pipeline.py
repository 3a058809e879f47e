#!/usr/bin/env python
"""Benchmark the mini job (``make run``) on a scratch clone: where the time goes.

Clones the repository (``git clone``: the committed HEAD, as a new user gets it) into a
temporary directory with ``../shared`` beside it (a symlink to the shared data mirror), runs
what ``make run`` runs -- ``snakemake --cores N --keep-going``, whose ``onsuccess`` handler
records the outputs in DVC (``irrepro tools dvc-commit``) -- with the existing ``.venv``
(its ``bin`` first on ``PATH``, ``VIRTUAL_ENV`` set, and ``PYTHONPATH`` at the clone's
``workflow/`` so that the clone's code runs, not the editable install's), then prints

* per stage family (Snakemake rule): jobs, summed job wall time, the longest job, and the
  start-up time of its jobs;
* totals: jobs, processes, summed job time (core-seconds when jobs run side by side), the
  start-up share, the bookkeeping share (``dvc-commit``) and the wall time of the whole run;
* the set-up (clone) time, reported separately; building the venv is not part of it.

Every figure comes from the run's own records, except the set-up, the whole Snakemake
process and the stages' imports, timed by this script:

* a job's start and end: Snakemake's metadata (``.snakemake/metadata/*``: ``rule``,
  ``starttime``, ``endtime``, ``log``), one record per output, deduplicated per job;
* its start-up = the CLI's part, from the job's start to the first line of its log
  (``irrepro <stage> (profile ...)``: interpreter, CLI imports, params check; from the
  records), plus the rest of what the job imported (``torch``, ``transformers``, ``peft``,
  ``matplotlib`` ...: the stages import their libraries lazily). The job's sidecar lists
  what it imported (``imported``: third-party packages and irrepro modules); importing that
  list is timed after the run in a fresh interpreter that has already imported the CLI
  (best of ``--import-repeats``, page cache warm as in the run). A job whose sidecar has no
  such list gets the CLI part only (marked ``*``);
* processes: the run sidecars (``logs/<profile>/**.run.json``, one per ``irrepro`` process,
  :mod:`irrepro.sidecar`), the JVMs of the Lucene stages not counted;
* bookkeeping: the ``seconds`` of ``dvc-commit``'s sidecar.

    .venv/bin/python benchmarks/bench_pipeline.py                   # the whole mini job (20-40 min)
    .venv/bin/python benchmarks/bench_pipeline.py --until bm25      # download .. bm25 only (a minute)
    .venv/bin/python benchmarks/bench_pipeline.py --records /tmp/x/project --wall 1234
                                                                    # summarise a finished run
    .venv/bin/python benchmarks/bench_pipeline.py --json out.json   # also write the figures as JSON
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# "2026-12-01 16:04:54,458 INFO irrepro: ..." (irrepro.utils.setup_logging: asctime is local time)
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


@dataclass
class Job:
    rule: str
    start: float  # epoch seconds (Snakemake's record)
    end: float
    log: str | None = None
    cli_s: float | None = None  # job start -> first log line (interpreter + CLI imports + params check)
    import_s: float | None = None  # the rest of its imports (timed apart from its sidecar's list)

    @property
    def startup_s(self) -> float | None:
        if self.cli_s is None:
            return None
        return min(self.wall, self.cli_s + (self.import_s or 0.0))

    @property
    def wall(self) -> float:
        return self.end - self.start


@dataclass
class Summary:
    jobs: list[Job]
    processes: int
    bookkeeping_s: float | None
    wall_s: float | None
    setup_s: float | None = None
    families: dict[str, dict] = field(default_factory=dict)
    warm_jobs: int = 0  # jobs forked from the run's warm worker (irrepro.warm_worker)


def log_times(path: Path, lines: int = 1) -> list[float]:
    """Epoch times of the first ``lines`` timestamped lines of an irrepro log (local time)."""
    out: list[float] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                m = LOG_LINE.match(line)
                if m:
                    t = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
                    out.append(t)
                    if len(out) == lines:
                        break
    except OSError:
        pass
    return out


def read_jobs(project: Path, since: float | None = None, import_s: dict[str, float] | None = None,
              profile: str | None = None) -> list[Job]:
    """The finished jobs recorded in ``project/.snakemake/metadata`` (started at or after
    ``since``; with ``profile``, only the jobs logging under ``logs/<profile>/``: a project that also
    ran the rehearsal keeps both in one metadata folder), one per job: a job with several outputs has
    one record per output.
    ``import_s``: per job log, the job's import cost beyond the CLI (:func:`measure_imports`)."""
    seen: dict[tuple, Job] = {}
    meta_dir = project / ".snakemake" / "metadata"
    for p in sorted(meta_dir.iterdir()) if meta_dir.is_dir() else []:
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        start, end = rec.get("starttime"), rec.get("endtime")
        if rec.get("incomplete") or start is None or end is None or (since is not None and start < since):
            continue
        logs = rec.get("log") or []
        if profile and logs and not logs[0].startswith(f"logs/{profile}/"):
            continue
        key = (rec.get("rule"), rec.get("job_hash"), tuple(logs))
        job = seen.get(key)
        if job is None:
            seen[key] = Job(rule=rec["rule"], start=float(start), end=float(end), log=logs[0] if logs else None)
        else:  # the outputs of one job: the earliest start, the latest end
            job.start, job.end = min(job.start, float(start)), max(job.end, float(end))
    jobs = sorted(seen.values(), key=lambda j: (j.start, j.rule))
    for job in jobs:
        job.import_s = (import_s or {}).get(job.log)
        times = log_times(project / job.log) if job.log else []
        if times:
            job.cli_s = max(0.0, times[0] - job.start)
    return jobs


IMPORT_PROBE = """import importlib, sys, time
import irrepro.cli
t0 = time.perf_counter()
for m in sys.argv[1:]:
    try:
        importlib.import_module(m)
    except Exception:  # a package that is not importable on its own: its importer brings it in
        pass
print(time.perf_counter() - t0)
"""


def import_seconds(project: Path, module_sets, python: str = sys.executable, repeats: int = 2,
                   env: dict | None = None) -> dict[tuple, float]:
    """Seconds a fresh interpreter that has imported the CLI takes to import each module list
    (best of ``repeats``), keyed by the list as a tuple."""
    out: dict[tuple, float] = {}
    for mods in sorted({tuple(m) for m in module_sets}):
        best = None
        for _ in range(max(1, repeats)):
            r = subprocess.run([python, "-c", IMPORT_PROBE, *mods], cwd=project, env=env, capture_output=True, text=True)
            if r.returncode:
                print(f"import probe failed: {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                break
            t = float(r.stdout.split()[-1])
            best = t if best is None else min(best, t)
        if best is not None:
            out[mods] = best
    return out


def job_imports(project: Path, jobs) -> dict[str, tuple]:
    """Per job log: the modules its sidecar says it imported (jobs without such a list are left out)."""
    out = {}
    for j in jobs:
        if not j.log:
            continue
        log = Path(j.log)
        car = project / log.with_name((log.name[:-4] if log.name.endswith(".log") else log.name) + ".run.json")
        try:
            mods = json.loads(car.read_text(encoding="utf-8")).get("imported")
        except (OSError, ValueError):
            continue
        if mods:
            out[j.log] = tuple(mods)
    return out


def measure_imports(project: Path, jobs, env: dict, python: str = sys.executable, repeats: int = 2) -> dict:
    """Per job log: the seconds its imports beyond the CLI take (:func:`import_seconds`)."""
    per_job = job_imports(project, jobs)
    cost = import_seconds(project, per_job.values(), python=python, repeats=repeats, env=env)
    return {log: cost[mods] for log, mods in per_job.items() if mods in cost}


def read_sidecars(project: Path, profile: str) -> list[dict]:
    out = []
    for p in sorted((project / "logs" / profile).rglob("*.run.json")):
        try:
            out.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return out


def summarise(project: Path, profile: str, wall_s: float | None = None, since: float | None = None,
              setup_s: float | None = None, import_s: dict[str, float] | None = None) -> Summary:
    """The figures of a finished run in ``project`` (see the module docstring)."""
    jobs = read_jobs(project, since, import_s, profile)
    cars = read_sidecars(project, profile)
    if since is not None:  # sidecars carry a start time to the second
        cars = [c for c in cars if _iso(c.get("started")) is None or _iso(c["started"]) >= int(since)]
    commit = [c for c in cars if c.get("command") in ("dvc-commit", "tools dvc-commit")]
    book = sum(c.get("seconds") or 0.0 for c in commit) if commit else None
    fam: dict[str, dict] = {}
    for j in jobs:
        f = fam.setdefault(j.rule, {"jobs": 0, "wall_s": 0.0, "max_s": 0.0, "startup_s": 0.0, "cli_s": 0.0,
                                    "import_s": [], "timed": 0})
        f["jobs"] += 1
        f["wall_s"] += j.wall
        f["max_s"] = max(f["max_s"], j.wall)
        if j.startup_s is not None:
            f["startup_s"] += j.startup_s
            f["cli_s"] += min(j.cli_s, j.wall)
            f["timed"] += 1
        if j.import_s is not None:
            f["import_s"].append(j.import_s)
    for f in fam.values():  # per job, the mean (None: no job of the rule listed its imports)
        f["import_s"] = sum(f["import_s"]) / len(f["import_s"]) if f["import_s"] else None
    return Summary(jobs=jobs, processes=len(cars), bookkeeping_s=book, wall_s=wall_s, setup_s=setup_s, families=fam,
                   warm_jobs=sum(1 for c in cars if c.get("warm_worker")))


def _iso(text) -> int | None:
    try:
        return int(dt.datetime.fromisoformat(text).timestamp())
    except (TypeError, ValueError):
        return None


def as_dict(s: Summary) -> dict:
    job_s = sum(j.wall for j in s.jobs)
    startup = sum(f["startup_s"] for f in s.families.values())
    cli = sum(f["cli_s"] for f in s.families.values())
    return {
        "setup_s": s.setup_s,
        "wall_s": s.wall_s,
        "jobs": len(s.jobs),
        "processes": s.processes,
        "warm_jobs": s.warm_jobs,
        "job_seconds": job_s,
        "startup_s": startup,
        "startup_share": startup / job_s if job_s else None,
        "cli_startup_s": cli,
        "bookkeeping_s": s.bookkeeping_s,
        "bookkeeping_share": (s.bookkeeping_s / s.wall_s) if s.bookkeeping_s is not None and s.wall_s else None,
        "families": s.families,
    }


def render(s: Summary) -> str:
    d = as_dict(s)
    rows = [f"{'stage family (rule)':26s} {'jobs':>4s} {'job time':>9s} {'longest':>8s} {'start-up':>9s} "
            f"{'share':>6s} {'cli':>6s} {'import/job':>10s}"]
    for rule, f in sorted(s.families.items(), key=lambda kv: -kv[1]["wall_s"]):
        share = f["startup_s"] / f["wall_s"] if f["wall_s"] else 0.0
        imp = f"{f['import_s']:9.2f}s" if f["import_s"] is not None else f"{'*':>10s}"
        rows.append(f"{rule[:26]:26s} {f['jobs']:4d} {f['wall_s']:8.1f}s {f['max_s']:7.1f}s {f['startup_s']:8.1f}s "
                    f"{share:6.1%} {f['cli_s']:5.1f}s {imp}")
    job_s = d["job_seconds"]
    rows.append(f"{'all jobs':26s} {d['jobs']:4d} {job_s:8.1f}s {'':8s} {d['startup_s']:8.1f}s "
                f"{(d['startup_share'] or 0):6.1%} {d['cli_startup_s']:5.1f}s")
    rows.append("")
    rows.append(f"processes (irrepro, one run sidecar each; JVMs not counted): {d['processes']}, "
                f"{d['warm_jobs']} of them forked from the warm worker (torch/transformers/peft preloaded)")
    rows.append(f"start-up: {d['startup_s']:.1f}s of {job_s:.1f}s job time = {(d['startup_share'] or 0):.1%} "
                f"(CLI: job start -> first log line, {d['cli_startup_s']:.1f}s in all; + the stage library's "
                f"imports, timed apart; * = no import list, CLI only)")
    if d["bookkeeping_s"] is None:
        rows.append("bookkeeping (dvc-commit): no dvc-commit sidecar in this run")
    else:
        share = f" = {d['bookkeeping_share']:.1%} of the run" if d["bookkeeping_share"] is not None else ""
        rows.append(f"bookkeeping (dvc-commit): {d['bookkeeping_s']:.1f}s{share}")
    if d["wall_s"] is not None:
        rows.append(f"total: {d['wall_s']:.1f}s wall ({d['wall_s'] / 60:.1f} min), Snakemake and dvc-commit")
    if d["setup_s"] is not None:
        rows.append(f"set-up (git clone; the existing venv reused, not timed): {d['setup_s']:.1f}s")
    return "\n".join(rows)


def profile_of(project: Path) -> str:
    import yaml

    return yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))["profile"]


def run_clone(args) -> int:
    venv_bin = Path(args.venv).resolve() / "bin"
    if not (venv_bin / "snakemake").exists():
        raise SystemExit(f"{venv_bin}/snakemake not found: build the venv first (make setup)")
    base = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.workdir))
    project = base / "project"
    t0 = time.perf_counter()
    subprocess.run(["git", "clone", "--quiet", str(args.repo), str(project)], check=True)
    if args.with_changes:
        overlay_changes(Path(args.repo), project)
    if SHARED.exists():
        (base / "shared").symlink_to(SHARED.resolve())
    setup_s = time.perf_counter() - t0
    env = dict(os.environ)
    env.update(PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv_bin.parent),
               PYTHONPATH=str(project / "workflow"))
    if (base / "shared" / "data").exists():
        env["IRREPRO_DATA_MIRROR"] = str(base / "shared" / "data")
    cmd = [str(venv_bin / "snakemake"), "--cores", str(args.cores), "--keep-going"]
    if args.until:
        cmd += ["--until", *args.until]
    cmd += args.targets
    print(f"== {project}: {' '.join(cmd[1:])}", flush=True)
    since = time.time()
    t0 = time.perf_counter()
    with open(base / "snakemake.log", "w") as out:
        code = subprocess.run(cmd, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall_s = time.perf_counter() - t0
    imports = {} if args.no_imports else measure_imports(project, read_jobs(project, since - 1), env,
                                                          python=str(venv_bin / "python"), repeats=args.import_repeats)
    summary = summarise(project, profile_of(project), wall_s=wall_s, since=since - 1, setup_s=setup_s,
                        import_s=imports)
    finish(summary, args)
    if code:
        print(f"snakemake exited {code}: see {base / 'snakemake.log'}")
    if args.keep or code:
        print(f"scratch clone kept: {project}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return code


def overlay_changes(repo: Path, project: Path) -> None:
    """Bring the uncommitted changes of ``repo`` (tracked diffs and untracked, not ignored
    files) into the clone ``project``; ``repo`` is only read."""
    diff = subprocess.run(["git", "-C", str(repo), "diff", "HEAD", "--binary"], check=True, capture_output=True).stdout
    if diff:
        subprocess.run(["git", "-C", str(project), "apply", "--whitespace=nowarn"], input=diff, check=True)
    others = subprocess.run(["git", "-C", str(repo), "ls-files", "--others", "--exclude-standard", "-z"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, others):
        dst = project / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dst)


def finish(summary: Summary, args) -> None:
    print(render(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(as_dict(summary), indent=1) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default=str(ROOT), help="repository to clone (default: this one)")
    ap.add_argument("--venv", default=str(ROOT / ".venv"), help="existing venv to run with (default: %(default)s)")
    ap.add_argument("--workdir", default=None, help="where the scratch clone goes (default: the temp dir)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--until", nargs="+", metavar="RULE", help="run only up to these rules (snakemake --until)")
    ap.add_argument("targets", nargs="*", help="snakemake targets (default: the whole mini job)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch clone")
    ap.add_argument("--with-changes", action="store_true",
                    help="also copy the repository's uncommitted changes into the clone (default: HEAD only)")
    ap.add_argument("--records", type=Path, help="only summarise the finished run in this project directory")
    ap.add_argument("--wall", type=float, help="with --records: the run's wall seconds (for the shares)")
    ap.add_argument("--code", type=Path, help="with --records: the checkout whose modules are imported for the "
                                              "import timings (default: the --records directory)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--no-imports", action="store_true", help="do not time the stages' library imports")
    ap.add_argument("--import-repeats", type=int, default=2, help="timings per stage import (best is kept)")
    args = ap.parse_args(argv)
    if args.records:
        project = args.records.resolve()
        env = dict(os.environ, PYTHONPATH=str((args.code or project).resolve() / "workflow"))
        imports = {} if args.no_imports else measure_imports(project, read_jobs(project), env,
                                                              repeats=args.import_repeats)
        finish(summarise(project, profile_of(project), wall_s=args.wall, import_s=imports), args)
        return 0
    return run_clone(args)


if __name__ == "__main__":
    sys.exit(main())
