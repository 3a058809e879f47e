"""Developer tools: ``irrepro tools <name>`` (no workflow rule calls them).

Checks of SynTOD data and LLM endpoints, graph walks on their own, the DVC bookkeeping that
runs around a Snakemake run (``dvc-commit`` from ``onsuccess``, ``dvc-pull`` behind ``make
pull``) and the rehearsal's helpers (``make rehearse``). Each is a
:class:`~irrepro.commands.Command` like the stages, so its outputs are locked the same way.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from .commands import Command, In, Opt, Out
from .errors import FailureError
from .vocab import DOMAINS

log = logging.getLogger("irrepro")


def syntod_check(a, P) -> int:
    from .syntod.format import check_file
    from .utils import atomic_path

    report = {Path(f).name: check_file(f, strict=a.strict) for f in a.inputs}
    with atomic_path(a.out) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    bad = sum(r["round_trip_mismatches"] for r in report.values())
    log.info("syntod-check: %d files, %d conversations, %d round-trip mismatches -> %s",
             len(report), sum(r["conversations"] for r in report.values()), bad, a.out)
    return 1 if bad else 0


def syntod_walks(a, P) -> int:
    from .syntod.graph import load_graph, load_items, sample_walks, walk_stats, write_walks
    from .utils import atomic_path

    graph = load_graph(a.graph or a.domain)
    walks = sample_walks(graph, a.n, a.seed, load_items(graph, a.seeds))
    write_walks(walks, a.out)
    if a.stats:
        with atomic_path(a.stats) as tmp:
            tmp.write_text(json.dumps(walk_stats(walks), indent=2) + "\n")
    log.info("syntod-walks: %d %s walks (seed %d) -> %s", len(walks), graph.domain, a.seed, a.out)
    return 0


def syntod_llm_check(a, P) -> int:
    """One prompt through a SynTOD LLM backend: checks an endpoint / model before a long generation."""
    from .syntod.llm import chat_json, make_backend, select_spec

    spec = {"kind": a.kind, "model": a.model, "api_key_env": a.api_key_env, "base_url_env": a.base_url_env,
            "model_dir": a.model_dir, "max_tokens": a.max_tokens, "timeout_s": a.timeout, "max_retries": a.max_retries}
    spec = select_spec(spec, "syntod-llm-check")  # the options of --kind's backend
    backend = make_backend(spec, a.cache_dir)
    messages = [{"role": "user", "content": a.prompt}]
    meta = {"task": "system_turn", "state": "start", "domain": "recipes"}
    reply = chat_json(backend, messages, meta=meta) if a.json else backend.chat(messages, meta=meta)
    print(json.dumps({"backend": backend.describe(), "reply": reply}, indent=1, ensure_ascii=False))
    return 0


def dvc_commit(a, P) -> int:
    from .dvcsync import commit

    return commit(P["profile"])


def dvc_pull(a, P) -> int:
    from .dvcremote import PullError, dvc_pull as pull

    try:
        pull(a.remote, a.targets, a.jobs)
    except PullError as exc:
        raise FailureError(str(exc)) from exc
    return 0


def rehearsal_fixtures(a, P) -> int:
    from .download import mirror_dirs
    from .rehearsal.hubcache import build_hub_cache
    from .rehearsal.upstream import (OVERLAY_SOURCES, build_upstream_mirror, find_mirror, mirror_passages,
                                     write_overlaid_sources)

    mirror = find_mirror([a.mirror] if a.mirror else mirror_dirs(P["data"]["mirrors"]))
    overlay = build_upstream_mirror(a.mirror_out, mirror)
    sources = write_overlaid_sources(overlay, Path(a.mirror_out) / OVERLAY_SOURCES)
    models = build_hub_cache(a.hub_cache, texts=mirror_passages(mirror).values())
    summary = {"mirror": str(mirror), "sources": str(sources), "overlay": overlay,
               "models": {k: {"revision": v["revision"], "dtype": v["dtype"], "shards": len(v["shards"])}
                          for k, v in models.items()}}
    sys.stdout.write(json.dumps(summary, indent=1) + "\n")
    return 0


def llm_serve(a, P) -> int:
    from .rehearsal.llmserve import serve

    serve(a.port, a.fail_every, a.key_env, a.url_file, a.stats)
    return 0


def rehearsal_check(a, P) -> int:
    from .rehearsal.check import run_checks
    from .utils import atomic_path

    results, md = run_checks(P, ".", a.snakemake_log, a.factor)
    if a.report:
        with atomic_path(a.report) as tmp:
            base = Path(a.report).read_text(encoding="utf-8") if Path(a.report).is_file() else ""
            cut = base.find("## Rehearsal checks")
            tmp.write_text((base[:cut] if cut >= 0 else base).rstrip("\n") + "\n\n" + md)
    sys.stdout.write(md)
    failed = {k: v for k, v in results.items() if v}
    for name, problems in failed.items():
        for msg in problems:
            log.error("rehearsal check %s FAILED: %s", name, msg)
    if failed:
        log.error("rehearsal: %d check(s) failed: %s", len(failed), ", ".join(failed))
        return 1
    log.info("rehearsal: every check passed (%s)", ", ".join(results))
    return 0


TOOLS = (
    Command("syntod-check", "read SynTOD conversation JSONL files, check the round trip, write counts", (
        In("--inputs", "published {text} or structured conversation JSONL files", nargs="+"),
        Opt("--strict", "fail on the first irregular conversation", action="store_true"),
        Out("--out", "summary JSON (per file)"),
    ), syntod_check),
    Command("syntod-walks", "sample constrained random walks on a SynTOD state transition graph (no BM25 pages: "
                            "the syntod-walks stage makes the pipeline's)", (
        Opt("--domain", "a shipped graph (resources/syntod/<domain>.yaml)", group="graph", choices=DOMAINS),
        In("--graph", "path of a graph YAML file", group="graph"),
        In("--seeds", "recipe seeds or product catalog JSONL (matching the graph's items)"),
        Opt("--n", "number of walks", required=True, type=int),
        Opt("--seed", type=int, default=0),
        Out("--out", "walks JSONL"),
        Out("--stats", "walk statistics JSON (DVC metrics)", required=False),
    ), syntod_walks),
    Command("syntod-llm-check", "send one prompt through a SynTOD LLM backend and print the reply", (
        Opt("--kind", choices=["openai", "transformers", "offline"], default="offline"),
        Opt("--model", "model name (openai: required)"),
        Opt("--model-dir", "transformers: local model directory"),
        Opt("--api-key-env", "NAME of the environment variable holding the key (default OPENAI_API_KEY)"),
        Opt("--base-url-env", "NAME of the environment variable holding the base URL (default OPENAI_BASE_URL)"),
        Opt("--timeout", "openai: seconds per request", type=float),
        Opt("--max-retries", "openai: retries on 429/5xx/timeouts", type=int),
        Opt("--max-tokens", type=int, default=64),
        Opt("--cache-dir", "reply cache directory (default: no cache)"),
        Opt("--prompt", default='Greet a cooking assistant user in one sentence, as JSON {"text": ...}.'),
        Opt("--json", "ask in JSON mode and parse/repair the reply", action="store_true"),
    ), syntod_llm_check),
    Command("dvc-commit", "record finished Snakemake outputs in dvc.lock", (), dvc_commit, params=("profile",)),
    Command("dvc-pull", "dvc pull, then date the outputs so Snakemake sees them up to date", (
        Opt("--remote", "DVC remote name (default: the core.remote of .dvc/config)", alias="-r"),
        Opt("--jobs", "parallel transfers (dvc pull -j)", alias="-j", type=int),
        Opt("targets", "stages or outputs to pull (default: all)", nargs="*"),
    ), dvc_pull),
    Command("rehearsal-fixtures", "tiny hub-cache models of the paper's repos and small upstream-format data files "
                                  "(+ their checksum overlay) for a rehearsal", (
        Out("--hub-cache", "Hugging Face hub cache directory to write (HF_HUB_CACHE)"),
        Out("--mirror-out", "mirror directory for the fixture files and sources.rehearsal.yaml"),
        In("--mirror", "the real data mirror to build from (default: params data.mirrors, $IRREPRO_DATA_MIRROR)",
           required=False),
    ), rehearsal_fixtures, params=("data.mirrors",)),
    Command("llm-serve", "OpenAI-compatible chat server on 127.0.0.1 answering with the template simulator / "
                         "heuristic judge, with injected 429/5xx (the rehearsal's LLM)", (
        Opt("--port", "0: a free port", type=int, default=0),
        Opt("--fail-every", "refuse every N-th request (429 and 503 alternately)", type=int, default=0),
        Opt("--key-env", "require this environment variable's value as the bearer key"),
        # not locked: the server runs until it is stopped, and its files are no job's output
        Opt("--url-file", "write the base URL here once listening"),
        Opt("--stats", "JSON file of request counts, rewritten after every request"),
    ), llm_serve),
    Command("rehearsal-check", "the rehearsal's checks: fp32 trainables, finite numbers, titles, train/test split, "
                               "plan vs measured job times", (
        In("--snakemake-log", "the Snakemake log of the run (per-job wall times)", required=False),
        Opt("--factor", "allowed measured/plan ratio, either way", type=float, default=10.0),
        Out("--report", "append the checks' section to this report", required=False),
    ), rehearsal_check, params=("profile", "plan")),
)
