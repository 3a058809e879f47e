#!/usr/bin/env python
"""Benchmark recording a finished Snakemake run in ``dvc.lock``.

Builds a scratch git + DVC project shaped like the mini run (by default 115 stages: single
stages, ``foreach`` and ``matrix`` stages, ``params.yaml`` params deps, code-file deps, shared
directory deps, directory outputs; about 2,300 files and 150 MB of outputs made of random
bytes, nothing is computed), twice from the same seed, and times in each copy

* ``dvc commit --force`` -- one ``dvc commit --force --quiet s1 ... sN`` of every stage (what
  ``irrepro dvc-commit`` ran until issue 13);
* ``irrepro.dvcsync``    -- :func:`irrepro.dvcsync.commit` (every stage hashed and committed
  in one DVC session, ``dvc.lock`` written once).

Both copies are checked to end with the same ``dvc.lock`` (parsed YAML), a clean
``dvc status`` and unchanged output modification times before the figures are printed.
Also printed: a bare md5 of every output file (the floor for any approach).

    .venv/bin/python benchmarks/bench_dvc_commit.py
    .venv/bin/python benchmarks/bench_dvc_commit.py --profile-old /tmp/old.prof   # cProfile of dvc commit
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))
BIN = Path(sys.executable).parent

FAMILIES = ["llama", "mistral", "qwen"]
RANKS = [1, 2, 4]
TARGETS = ["mha", "mlp", "all", "qv"]
DOMAINS = ["cooking", "ecommerce"]
METHODS = ["graph", "naive"]
CODE = [f"workflow/pkg/mod{i}.py" for i in range(20)]
CHANGED = "models/mini/lora/qwen-r4-qv/part-000.bin"  # the output file the incremental timing edits
FT_KNOBS = [
    "lora_alpha",
    "lora_dropout",
    "lr",
    "epochs",
    "max_steps",
    "group_size",
    "queries_per_device",
    "grad_accum",
    "query_max_len",
    "passage_max_len",
    "save_steps",
    "warmup_ratio",
    "bf16",
    "base_dtype",
    "head_labels",
    "gradient_checkpointing",
    "seed",
    "threads",
    "launcher",
    "nproc_per_node",
]


def _stage(cmd, deps, outs, params=("profile",), metrics=()):
    st = {"cmd": cmd, "deps": list(deps), "params": list(params), "outs": list(outs)}
    if metrics:
        st["metrics"] = list(metrics)
    return st


def pipeline() -> tuple[dict, dict, dict]:
    """``(dvc.yaml, params.yaml, what to write per output)``.

    The last maps an output path (with ``mini`` for ``${profile}``) to ``(number of files,
    total bytes)``; ``1`` file means a plain file output."""
    p = "${profile}"
    stages, shape = {}, {}

    def single(name, deps, outs, params=("profile",), metrics=()):
        stages[name] = _stage(f"echo {name}", deps, [o for o, _ in outs], params, [m for m, _ in metrics])
        for o, s in [*outs, *metrics]:
            shape[o.replace(p, "mini")] = s

    def foreach(name, over, cmd, deps, outs, params):  # one stage per value of a params list
        stages[name] = {"foreach": over, "do": _stage(cmd, deps, outs, params)}

    def matrix(name, over, cmd, deps, outs, params):  # one stage per combination of params lists
        stages[name] = {"matrix": dict(over), **_stage(cmd, deps, outs, params)}

    single("download", CODE[:2], [(f"data/{p}/raw", (16, 12_600_000))], ["profile", "data"])
    single(
        "corpus",
        [CODE[2], f"data/{p}/raw"],
        [(f"data/{p}/corpus/corpus.jsonl", (1, 5_000_000))],
        ["profile", "bm25.corpus"],
    )
    single(
        "index",
        [CODE[2], CODE[3], f"data/{p}/corpus/corpus.jsonl"],
        [(f"data/{p}/index", (24, 8_000_000))],
        ["profile", "bm25.threads"],
    )
    single(
        "bm25",
        [*CODE[2:5], f"data/{p}/index", f"data/{p}/raw"],
        [(f"runs/{p}/bm25", (6, 1_000_000))],
        ["profile", "bm25"],
    )
    single(
        "evaluate",
        [CODE[5], f"data/{p}/raw", f"runs/{p}/bm25"],
        [(f"results/{p}/metrics/bm25_perquery.tsv", (1, 50_000))],
        ["profile", "evaluate"],
        [(f"results/{p}/metrics/bm25.json", (1, 2_000))],
    )
    foreach(
        "base",
        "${finetune.families}",
        "echo base ${item}",
        [CODE[6], f"data/{p}/corpus/corpus.jsonl"],
        [f"models/{p}/base/${{item}}"],
        ["profile", "tiny"],
    )
    for f in FAMILIES:
        shape[f"models/mini/base/{f}"] = (8, 3_000_000)
    single(
        "train_groups",
        [CODE[7], f"data/{p}/raw", f"runs/{p}/bm25"],
        [(f"data/{p}/train/groups.jsonl", (1, 2_000_000))],
        ["profile", "train_data"],
    )
    cfg = "${item.family}-r${item.rank}-${item.targets}"
    grid = {"family": "${finetune.families}", "rank": "${finetune.ranks}", "targets": "${finetune.targets}"}
    ft_params = ["profile", *(f"finetune.{k}" for k in FT_KNOBS)]
    matrix(
        "finetune",
        grid,
        f"echo finetune {cfg}",
        [*CODE[7:14], f"models/{p}/base/${{item.family}}", f"data/{p}/train/groups.jsonl"],
        [f"models/{p}/lora/{cfg}"],
        ft_params,
    )
    matrix(
        "rerank_eval",
        grid,
        f"echo rerank {cfg}",
        [
            *CODE[9:16],
            f"models/{p}/base/${{item.family}}",
            f"models/{p}/lora/{cfg}",
            f"data/{p}/raw",
            f"runs/{p}/bm25",
            f"data/{p}/corpus/corpus.jsonl",
        ],
        [f"runs/{p}/rerank/{cfg}"],
        ["profile", "rerank", "finetune.max_steps"],
    )
    for f in FAMILIES:
        for r in RANKS:
            for t in TARGETS:
                shape[f"models/mini/lora/{f}-r{r}-{t}"] = (39, 1_250_000)
                shape[f"runs/mini/rerank/{f}-r{r}-{t}"] = (7, 800_000)
    single(
        "collect",
        [CODE[14], f"data/{p}/raw", f"runs/{p}/bm25", f"runs/{p}/rerank"],
        [(f"results/{p}/rerank_checkpoints.tsv", (1, 30_000))],
        ["profile", "rerank"],
        [(f"results/{p}/metrics/rerank.json", (1, 3_000))],
    )
    matrix(
        "ablate",
        {"family": "${ablate.families}", "rank": "${ablate.ranks}", "targets": "${ablate.targets}"},
        f"echo ablate {cfg}",
        [CODE[15], f"models/{p}/base/${{item.family}}", f"models/{p}/lora/{cfg}", f"data/{p}/raw"],
        [f"runs/{p}/ablate/{cfg}"],
        ["profile", "ablate.variants"],
    )
    for r in RANKS:
        for t in TARGETS[:3]:
            shape[f"runs/mini/ablate/llama-r{r}-{t}"] = (20, 500_000)
    single(
        "ablate_collect",
        [CODE[15], f"runs/{p}/ablate"],
        [(f"results/{p}/ablation.tsv", (1, 20_000))],
        ["profile", "ablate.variants"],
    )
    foreach(
        "syntod_walks",
        "${syntod.domains}",
        "echo walks ${item}",
        [CODE[16]],
        [f"data/{p}/syntod/walks/${{item}}.jsonl"],
        ["profile", "syntod.walks"],
    )
    dm = {"domain": "${syntod.domains}", "method": "${syntod.methods}"}
    matrix(
        "syntod_generate",
        dm,
        "echo gen ${item.domain} ${item.method}",
        [CODE[17], f"data/{p}/syntod/walks/${{item.domain}}.jsonl"],
        [f"data/{p}/syntod/conversations/${{item.domain}}-${{item.method}}"],
        ["profile", "syntod.generate"],
    )
    single("syntod_base", [CODE[18]], [(f"models/{p}/syntod/base", (8, 2_000_000))], ["profile", "syntod.base"])
    matrix(
        "finetune_tod",
        dm,
        "echo tod ${item.domain} ${item.method}",
        [CODE[18], f"models/{p}/syntod/base", f"data/{p}/syntod/conversations/${{item.domain}}-${{item.method}}"],
        [f"models/{p}/syntod/tod/${{item.domain}}-${{item.method}}"],
        ["profile", "syntod.finetune"],
    )
    matrix(
        "evaluate_tod",
        dm,
        "echo evaltod ${item.domain} ${item.method}",
        [CODE[19], f"models/{p}/syntod/tod/${{item.domain}}-${{item.method}}"],
        [f"results/{p}/syntod/${{item.domain}}-${{item.method}}.json"],
        ["profile", "syntod.eval"],
    )
    for d in DOMAINS:
        shape[f"data/mini/syntod/walks/{d}.jsonl"] = (1, 300_000)
        for m in METHODS:
            shape[f"data/mini/syntod/conversations/{d}-{m}"] = (30, 1_000_000)
            shape[f"models/mini/syntod/tod/{d}-{m}"] = (25, 2_000_000)
            shape[f"results/mini/syntod/{d}-{m}.json"] = (1, 5_000)
    single(
        "syntod_collect",
        [CODE[19], f"results/{p}/syntod"],
        [(f"results/{p}/syntod_comparison.md", (1, 3_000))],
        ["profile"],
    )
    single(
        "report",
        [CODE[0], f"results/{p}/metrics/bm25.json", f"results/{p}/metrics/rerank.json"],
        [(f"results/{p}/report.md", (1, 10_000))],
        ["profile", "evaluate"],
    )
    for i in range(6):
        single(
            f"figure_{i}",
            [CODE[i], f"results/{p}/rerank_checkpoints.tsv"],
            [(f"results/{p}/figures/fig{i}.pdf", (1, 60_000))],
            ["profile"],
        )

    params = {
        "profile": "mini",
        "data": {"mirrors": ["../shared/data"], "timeout_s": 60},
        "bm25": {"k1": 0.9, "b": 0.4, "threads": 1, "corpus": {"max_passages": 100000}},
        "evaluate": {"metrics": ["ndcg@10", "map"], "on_fail": "warn"},
        "tiny": {"hidden": 64, "layers": 2},
        "train_data": {"negatives": 7},
        "finetune": {
            "families": FAMILIES,
            "ranks": RANKS,
            "targets": TARGETS,
            **{k: {"mini": i, "paper": i * 10} for i, k in enumerate(FT_KNOBS)},
        },
        "rerank": {"depth": 100, "batch_size": 32},
        "ablate": {"families": ["llama"], "ranks": RANKS, "targets": TARGETS[:3], "variants": ["none", "q", "k"]},
        "syntod": {
            "domains": DOMAINS,
            "methods": METHODS,
            "walks": {"n": 10},
            "generate": {"n": 16},
            "base": {"hidden": 32},
            "finetune": {"steps": 80},
            "eval": {"n": 2},
        },
        # padding to the size of the real params.yaml (~370 lines): DVC reads it for every params dep
        "published": {
            "adapters": {
                f"adapter{i}": {"repo": f"org/adapter-{i}", "revision": "0" * 40, "rank": 8} for i in range(40)
            }
        },
        "plan": {"costs": {f"stage{i}": {"cpu_s": i, "gpu_s": 2 * i} for i in range(40)}},
    }
    return {"stages": stages}, params, shape


def build_project(dest: Path, seed: int = 0, scale: float = 1.0, only: str | None = None) -> dict[str, int]:
    """Write the scratch project at ``dest`` (git + DVC initialised, hardlink cache, no
    dvc.lock); return ``{output file: mtime_ns}`` for every output file written.

    Outputs are written in DAG order with increasing modification times (as Snakemake leaves
    them); ``scale`` multiplies the bytes (not the number of files). ``only``: rewrite just
    that output file (same contents and mtime) in an existing project."""
    dvc_yaml, params, shape = pipeline()
    rng = random.Random(seed)
    if only is None:
        _init_project(dest, dvc_yaml, params)
    t0 = 1_700_000_000  # fixed, so both copies (and a rewritten file) get the same mtimes
    mtimes = {}
    for k, (out, (nfiles, nbytes)) in enumerate(shape.items()):
        nbytes = max(1, int(nbytes * scale))
        target = dest / out
        files = (
            [target] if nfiles == 1 and "." in target.name else [target / f"part-{i:03d}.bin" for i in range(nfiles)]
        )
        for i, f in enumerate(files):
            data = rng.randbytes(nbytes // nfiles)
            if f.suffix in {".json", ".tsv", ".md", ".jsonl"}:  # metrics must be text
                data = data.hex()[: len(data)].encode()
            name = str(f.relative_to(dest))
            if only is not None and name != only:
                continue
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
            when = int((t0 + k + i / 1000) * 1e9)
            os.utime(f, ns=(when, when))
            mtimes[name] = os.stat(f).st_mtime_ns
    return mtimes


def _init_project(dest: Path, dvc_yaml: dict, params: dict) -> None:
    dest.mkdir(parents=True)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True, env=env)
    subprocess.run(["dvc", "init", "-q"], cwd=dest, check=True, env=env)
    shutil.copy(ROOT / ".dvc" / "config", dest / ".dvc" / "config")
    (dest / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for i, code in enumerate(CODE):
        (dest / code).parent.mkdir(parents=True, exist_ok=True)
        (dest / code).write_text(f'"""module {i}"""\nVALUE = {i}\n')


def output_mtimes(dest: Path, names) -> dict[str, int]:
    return {n: os.stat(dest / n).st_mtime_ns for n in names}


def all_stage_names(dest: Path) -> list[str]:
    from dvc.repo import Repo

    with Repo(str(dest)) as repo:
        return [s.name for s in repo.index.stages]


def dvc_commit_force(dest: Path, names: list[str], profile_to: str | None = None) -> None:
    """The previous approach: one ``dvc commit --force`` of every stage, in a new process."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(BIN / "dvc"), "commit", "--force", "--quiet", *names]
    if profile_to:
        cmd = [sys.executable, "-m", "cProfile", "-o", profile_to, *cmd]
    subprocess.run(cmd, cwd=dest, check=True, env=env)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def md5_floor(dest: Path, names) -> float:
    t = time.perf_counter()
    for n in names:
        with open(dest / n, "rb") as fh:
            hashlib.file_digest(fh, "md5")
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the output bytes (default 1: about 150 MB)")
    ap.add_argument("--profile-old", help="write a cProfile of `dvc commit --force` to this file")
    ap.add_argument("--skip-old", action="store_true", help="time only irrepro.dvcsync.commit")
    ap.add_argument("--workdir", help="build the scratch projects here (default: a temp dir)")
    args = ap.parse_args()

    from irrepro.dvcsync import commit

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    import dvc.repo  # noqa: F401 -- sets up DVC's own loggers, which we then quieten

    logging.getLogger("dvc").setLevel(logging.WARNING)  # "Updating lock file" notes
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-dvc-commit-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        new_dir = base / "new"
        mtimes = build_project(new_dir, scale=args.scale)
        names = all_stage_names(new_dir)
        nbytes = sum(os.stat(new_dir / n).st_size for n in mtimes)
        print(
            f"scratch project: {len(names)} stages, {len(mtimes)} output files, {nbytes / 1e6:.0f} MB "
            f"(built in {time.perf_counter() - t:.1f} s)"
        )
        print(f"{'md5 of every output file (floor)':34s} {md5_floor(new_dir, mtimes):7.1f} s")

        t, c = time.perf_counter(), time.process_time()
        rc = commit("mini", new_dir)
        t_new, c_new = time.perf_counter() - t, time.process_time() - c
        assert rc == 0, "irrepro.dvcsync.commit failed"
        assert output_mtimes(new_dir, mtimes) == mtimes, "irrepro.dvcsync.commit changed output mtimes"
        print(f"{'':34s} {'wall':>9s} {'CPU':>9s}")
        print(f"{'irrepro.dvcsync.commit':34s} {t_new:7.1f} s {c_new:7.1f} s")
        lock_first = (new_dir / "dvc.lock").read_text()
        for label, change in (("  again, nothing changed", None), ("  again, one output file changed", CHANGED)):
            if change:  # as Snakemake reruns a job: the old output is removed, a new one written
                (new_dir / change).unlink()
                (new_dir / change).write_bytes(b"changed")
            t, c = time.perf_counter(), time.process_time()
            assert commit("mini", new_dir) == 0
            print(f"{label:34s} {time.perf_counter() - t:7.1f} s {time.process_time() - c:7.1f} s")
        assert (new_dir / "dvc.lock").read_text() != lock_first
        # back to the state both copies share (content and mtime), recorded again
        (new_dir / CHANGED).unlink()
        build_project(new_dir, scale=args.scale, only=CHANGED)
        assert commit("mini", new_dir) == 0
        assert output_mtimes(new_dir, mtimes) == mtimes
        if args.skip_old:
            return 0

        old_dir = base / "old"
        build_project(old_dir, scale=args.scale)
        t, c = time.perf_counter(), _children_cpu()
        dvc_commit_force(old_dir, names, args.profile_old)
        t_old, c_old = time.perf_counter() - t, _children_cpu() - c
        assert output_mtimes(old_dir, mtimes) == mtimes, "dvc commit --force changed output mtimes"
        print(
            f"{'dvc commit --force (previous)':34s} {t_old:7.1f} s {c_old:7.1f} s   "
            f"(x{t_old / t_new:.0f} wall, x{c_old / c_new:.0f} CPU)"
        )

        lock_new = yaml.safe_load((new_dir / "dvc.lock").read_text())
        lock_old = yaml.safe_load((old_dir / "dvc.lock").read_text())
        assert lock_new == lock_old, "the two dvc.lock files differ"
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        status = subprocess.run([str(BIN / "dvc"), "status", "--quiet"], cwd=new_dir, env=env)
        assert status.returncode == 0, "dvc status is not clean after irrepro.dvcsync.commit"
        print("checked: same dvc.lock (parsed), clean `dvc status`, output mtimes unchanged")
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
