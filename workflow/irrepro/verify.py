"""`irrepro verify`: recompute stages of a published run and compare every output with it.

"Reproduced" has two levels (README, "Reproduced: what it means"):

* **bytes**: on the same hardware and software, a rerun gives byte-identical outputs (the
  Lucene index excepted: its segment ids change, the BM25 runs it produces do not);
* **metrics**: elsewhere (another CPU type, a GPU), float kernels round differently, so
  weights and run scores move in the last digits; the metrics must then agree within
  ``verify.tolerance`` (params.yaml).

Procedure: the published record is a ``dvc.lock`` (``--lock``, default the project's) whose
outputs are in the DVC cache (``--pull``: ``dvc pull --with-deps`` of the chosen stages from
``--remote`` first). Each chosen stage (``verify.stages`` or ``--stages``; dvc.lock names such
as ``finetune@llama-2-mha``) is recomputed in place with ``dvc repro --force --single-item``,
in the order given; the new output hashes are compared with the published ones, per file for
directory outputs (DVC's ``.dir`` manifests, both in the cache). A differing file is judged by
its kind (:func:`output_kind`):

* ``metric`` (a ``.json`` / ``.tsv`` under ``results/``): every number against the published
  one; the largest difference must be within the tolerance of its metric;
* ``run`` (a ``.trec`` file): both runs are evaluated on their dataset's qrels
  (``verify.run_metrics``) and compared the same way;
* ``bytes`` (weights, tokenizers, figures, ...): reported; a failure only with ``--bytes``
  (the same-hardware check), never for ``verify.nondeterministic`` outputs.

Afterwards the published ``dvc.lock`` and outputs are put back (``dvc checkout``), unless
``--keep``. Exit status 1 when any output is outside tolerance or missing.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

log = logging.getLogger("irrepro.verify")

__all__ = ["Finding", "VerifyError", "verify", "compare_numbers", "flatten_metrics", "output_kind", "render"]


class VerifyError(RuntimeError):
    """Verification could not run (no lock, unknown stage, missing published content)."""


@dataclass
class Finding:
    """The verdict on one output file of one stage."""

    stage: str
    path: str
    kind: str                       # metric | run | bytes
    status: str                     # identical | within | outside | differs | expected | missing
    max_diff: float | None = None
    where: str | None = None        # the key of the largest difference
    tolerance: float | None = None
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("outside", "missing")


# ---------------------------------------------------------------------------- numbers


def output_kind(path: str) -> str:
    """``metric``, ``run`` or ``bytes`` (see the module docstring)."""
    p = Path(path)
    if p.suffix == ".trec":
        return "run"
    if p.suffix in (".json", ".tsv") and p.parts and p.parts[0] == "results":
        return "metric"
    return "bytes"


def _number(text: Any) -> float | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def flatten_metrics(text: str, suffix: str) -> dict[tuple[str, ...], Any]:
    """``{key path: leaf}`` of a metrics file: JSON (nested keys, list indices) or a TSV with a
    header (rows keyed by their non-numeric cells, then the column name)."""
    if suffix == ".json":
        out: dict[tuple[str, ...], Any] = {}

        def walk(node, key):
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, key + (str(k),))
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, key + (str(i),))
            else:
                out[key] = node

        walk(json.loads(text), ())
        return out
    lines = [ln.split("\t") for ln in text.splitlines() if ln.strip()]
    if not lines:
        return {}
    header, out, seen = lines[0], {}, {}
    for row in lines[1:]:
        key = tuple(c for c in row if _number(c) is None)
        seen[key] = seen.get(key, -1) + 1
        if seen[key]:
            key = key + (f"#{seen[key]}",)
        for col, cell in zip(header, row):
            if _number(cell) is not None:
                out[key + (col,)] = cell
    return out


def _tolerance(key: Iterable[str], tolerances: dict[str, float]) -> float:
    for part in key:
        if part in tolerances and part != "default":
            return float(tolerances[part])
    return float(tolerances["default"])


def compare_numbers(published: dict, recomputed: dict, tolerances: dict[str, float]) -> tuple[str, float, str, float, str]:
    """Compare two flattened metric dicts. Returns ``(status, max_diff, where, tolerance, note)``:
    status ``within`` / ``outside``; a key on one side only, a non-finite or a changed
    non-numeric value is ``outside`` (named in ``note``)."""
    only = sorted(set(published) ^ set(recomputed))
    if only:
        side = "published" if only[0] in published else "recomputed"
        return "outside", math.inf, "/".join(only[0]), 0.0, f"{len(only)} key(s) on one side only, e.g. {side} {'/'.join(only[0])}"
    diffs = []  # (over the tolerance, difference, key, tolerance, note)
    for key in sorted(published):
        a, b = _number(published[key]), _number(recomputed[key])
        if a is None or b is None:
            if published[key] != recomputed[key]:
                return "outside", math.inf, "/".join(key), 0.0, f"value {published[key]!r} -> {recomputed[key]!r}"
            continue
        tol = _tolerance(key, tolerances)
        diff = abs(a - b) if math.isfinite(a) and math.isfinite(b) else (0.0 if a == b else math.inf)
        diffs.append((diff > tol, diff, "/".join(key), tol, f"{a} -> {b}" if diff > tol else ""))
    if not diffs:
        return "within", 0.0, "", float(tolerances["default"]), ""
    over, worst, where, tol_at, note = max(diffs, key=lambda d: (d[0], d[1]))
    status = "outside" if over else "within"
    return status, worst, where, tol_at, note


# ---------------------------------------------------------------------------- DVC


def _dvc_exe() -> str:
    """The ``dvc`` of this environment (beside the interpreter), else the one on PATH."""
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.exists() else "dvc"


def _dvc(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run([_dvc_exe(), *args], cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise VerifyError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


class _Cache:
    """Read blobs of the DVC cache by md5 (DVC 3 layout ``files/md5/ab/cdef...``)."""

    def __init__(self, root: Path):
        out = _dvc(["cache", "dir"], root).strip().splitlines()
        self.dir = Path(out[-1]) if out else root / ".dvc" / "cache"
        if not self.dir.is_absolute():
            self.dir = root / self.dir

    def path(self, md5: str) -> Path:
        for base in (self.dir / "files" / "md5", self.dir):
            p = base / md5[:2] / md5[2:]
            if p.exists():
                return p
        raise VerifyError(f"{md5} is not in the DVC cache {self.dir} (pull the published artifacts: --pull)")

    def manifest(self, md5: str) -> dict[str, str]:
        return {e["relpath"]: e["md5"] for e in json.loads(self.path(md5).read_text())}


def _outs(lock: dict, stage: str) -> dict[str, str]:
    entry = (lock.get("stages") or {}).get(stage)
    if entry is None:
        raise VerifyError(f"stage {stage!r} is not in the published dvc.lock "
                          f"(stages: {', '.join(sorted(lock.get('stages') or {}))})")
    return {o["path"]: o.get("md5") for o in entry.get("outs") or []}


# ---------------------------------------------------------------------------- judging


def _run_metrics(path: str, published: bytes, recomputed: bytes, P: dict, raw: Path, tolerances) -> tuple:
    from .datasets import DATASETS, source_path
    from .evaluate import evaluate_run
    from .trec import read_qrels, read_run

    parts = Path(path).with_suffix("").parts
    name = next((p for p in reversed(parts) if p in DATASETS), None)
    if name is None:
        return "outside", math.inf, "", 0.0, "no dataset named in the run's path; cannot evaluate it"
    qrels = read_qrels(source_path(raw, DATASETS[name].qrels))
    level = P["evaluate"]["rel_level"][name]
    metrics = P["verify"]["run_metrics"]
    values = []
    for blob in (published, recomputed):
        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f".irrepro-verify-{os.getpid()}.trec"
        tmp.write_bytes(blob)
        try:
            agg, _ = evaluate_run(qrels, read_run(tmp), metrics, level)
        finally:
            tmp.unlink(missing_ok=True)
        values.append({(name, m): v for m, v in agg.items()})
    return compare_numbers(values[0], values[1], tolerances)


def _judge(stage: str, path: str, old: bytes, new: bytes, P: dict, raw: Path, bytes_mode: bool) -> Finding:
    kind = output_kind(path)
    V = P["verify"]
    if old == new:
        return Finding(stage, path, kind, "identical")
    if any(fnmatch.fnmatch(path, pat) or any(fnmatch.fnmatch(str(q), pat) for q in Path(path).parents)
           for pat in V["nondeterministic"]):
        return Finding(stage, path, kind, "expected", note="nondeterministic output (verify.nondeterministic)")
    tolerances = V["tolerance"]
    if kind == "metric":
        status, diff, where, tol, note = compare_numbers(flatten_metrics(old.decode(), Path(path).suffix),
                                                         flatten_metrics(new.decode(), Path(path).suffix), tolerances)
    elif kind == "run":
        status, diff, where, tol, note = _run_metrics(path, old, new, P, raw, tolerances)
    else:
        return Finding(stage, path, kind, "outside" if bytes_mode else "differs",
                       note="bytes differ" + (" (--bytes)" if bytes_mode else "; judged through the metrics downstream"))
    if bytes_mode and status == "within":
        status, note = "outside", (note + "; " if note else "") + "bytes differ (--bytes)"
    return Finding(stage, path, kind, status, diff, where, tol, note)


def _compare_stage(stage: str, published: dict[str, str], recomputed: dict[str, str], cache: _Cache,
                   root: Path, P: dict, raw: Path, bytes_mode: bool) -> list[Finding]:
    findings = []
    for out, old_md5 in published.items():
        new_md5 = recomputed.get(out)
        if new_md5 is None or not (root / out).exists():
            findings.append(Finding(stage, out, output_kind(out), "missing", note="not produced by the recomputation"))
            continue
        if old_md5 == new_md5:
            n = len(cache.manifest(old_md5)) if old_md5.endswith(".dir") else 1
            findings.append(Finding(stage, out, output_kind(out), "identical", note=f"{n} file(s)" if n > 1 else ""))
            continue
        if not old_md5.endswith(".dir"):
            findings.append(_judge(stage, out, cache.path(old_md5).read_bytes(), (root / out).read_bytes(),
                                   P, raw, bytes_mode))
            continue
        old_files, new_files = cache.manifest(old_md5), cache.manifest(new_md5)
        same = 0
        for rel in sorted(set(old_files) | set(new_files)):
            path = f"{out}/{rel}"
            if rel not in new_files:
                findings.append(Finding(stage, path, output_kind(path), "missing", note="not produced by the recomputation"))
            elif rel not in old_files:
                findings.append(Finding(stage, path, output_kind(path), "differs" if not bytes_mode else "outside",
                                        note="new file, not in the published output"))
            elif old_files[rel] == new_files[rel]:
                same += 1
            else:
                findings.append(_judge(stage, path, cache.path(old_files[rel]).read_bytes(),
                                       cache.path(new_files[rel]).read_bytes(), P, raw, bytes_mode))
        if same:
            findings.append(Finding(stage, f"{out}/", output_kind(out), "identical", note=f"{same} other file(s)"))
    return findings


def verify(P: dict, root: str | os.PathLike = ".", *, stages: list[str] | None = None, lock: str | None = None,
           pull: bool = False, remote: str | None = None, bytes_mode: bool = False, keep: bool = False) -> list[Finding]:
    """Recompute ``stages`` (default ``verify.stages``) and judge every output against the
    published ``lock`` (default ``<root>/dvc.lock``); see the module docstring. Returns the
    findings; the project's ``dvc.lock`` and outputs are restored unless ``keep``."""
    root = Path(root).resolve()
    project_lock = root / "dvc.lock"
    stages = list(stages or P["verify"]["stages"])
    published_text = Path(lock or project_lock).read_text(encoding="utf-8")
    published = yaml.safe_load(published_text) or {}
    original_text = project_lock.read_text(encoding="utf-8") if project_lock.exists() else None
    wanted = {s: _outs(published, s) for s in stages}  # unknown stages fail before anything runs
    raw = root / "data" / P["profile"] / "raw"
    findings: list[Finding] = []
    try:
        project_lock.write_text(published_text, encoding="utf-8")
        if pull:
            _dvc(["pull", "--with-deps", *(["-r", remote] if remote else []), *stages], root)
        cache = _Cache(root)
        for stage in stages:
            log.info("verify: recomputing %s", stage)
            _dvc(["repro", "--force", "--single-item", stage], root)
            now = _outs(yaml.safe_load(project_lock.read_text(encoding="utf-8")), stage)
            findings += _compare_stage(stage, wanted[stage], now, cache, root, P, raw, bytes_mode)
    finally:
        if not keep:
            project_lock.write_text(published_text if original_text is None else original_text, encoding="utf-8")
            try:
                _dvc(["checkout", "--force", *stages], root)
            except VerifyError as exc:
                log.warning("verify: could not restore the published outputs: %s", exc)
    return findings


def render(findings: list[Finding]) -> str:
    """A markdown table, one row per finding, then a one-line verdict."""
    rows = ["| stage | output | kind | verdict | largest difference | tolerance | note |", "|---|---|---|---|---|---|---|"]
    for f in findings:
        diff = "" if f.max_diff is None else (f"{f.max_diff:.6g}" + (f" at {f.where}" if f.where else ""))
        tol = "" if f.tolerance is None else f"{f.tolerance:g}"
        rows.append(f"| {f.stage} | {f.path} | {f.kind} | {f.status.upper() if f.failed else f.status} | {diff} | {tol} | {f.note} |")
    bad = [f for f in findings if f.failed]
    verdict = (f"NOT REPRODUCED: {len(bad)} output(s) outside tolerance or missing: {', '.join(f.path for f in bad)}"
               if bad else f"REPRODUCED: {len(findings)} output(s) identical or within tolerance")
    return "\n".join(rows) + "\n\n" + verdict + "\n"


def findings_json(findings: list[Finding]) -> str:
    return json.dumps([{**asdict(f), "failed": f.failed} for f in findings], indent=1, default=str) + "\n"
