"""Every job starts with the CLI: importing it (and with it every stage module, irrepro.stages)
and checking params.yaml must not load a heavy library. torch + transformers + peft cost about
5 s of CPU per process (benchmarks/bench_pipeline.py), so a stage imports what it needs inside
its ``run()``, and only the jobs that need them pay for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEAVY = ("torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "huggingface_hub", "numpy",
         "scipy", "pandas", "matplotlib", "sklearn", "ranx", "numba", "pyserini", "jnius", "papermill", "nbformat",
         "openai", "dvc", "snakemake")

PROBE = """import json, sys
import irrepro.cli
from irrepro import provenance
from irrepro.params import load_params
P = load_params(sys.argv[1], None)
provenance.collect(P, sys.argv[2])
print(json.dumps(sorted(set(sys.argv[3:]) & {m.split(".")[0] for m in sys.modules})))
"""


def test_cli_start_up_loads_no_heavy_library():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "workflow"))
    r = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "params.yaml"), str(ROOT), *HEAVY],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
