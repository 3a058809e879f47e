"""The rehearsal's checks (``irrepro tools rehearsal-check``): read what the stages wrote, fail naming the cause.

Each check returns a list of problems (strings naming the file and the cause); an empty list
passes. :func:`run_checks` runs them all and writes a markdown section for the report.

* ``fp32 trainables``: every tensor of every saved adapter (``adapter_model.safetensors`` of the
  reranker and TOD checkpoints and ``final/``) is F32: the LoRA weights and the score head are
  the trainable parameters, saved in the dtype they trained in. A half-precision tensor means
  the fp32 rule (:func:`irrepro.lora.precision.fp32_trainables` / :func:`irrepro.rerank.precision.fp32_head`) did not run.
* ``finite``: every logged loss / grad norm of every ``train_summary.json``, every adapter
  tensor and every score of every reranking / ablation run is finite.
* ``titles``: every training passage with a title (after :func:`irrepro.rerank.inputs.
  clean_title`) is read by the reranking evaluation (:func:`irrepro.rerank.evaluate.
  load_passages` over the scoring corpus) with that same title, and the scored input string
  (:func:`irrepro.rerank.inputs.format_pair`) contains it.
* ``split``: no SynTOD training item (``items/train.jsonl``) shares an id or a title with the
  domain's test seed catalog, and no walk targets a test item.
* ``plan``: for every rule the plan (:func:`irrepro.plan.build_plan`) estimates, the longest
  measured job (Snakemake's log: start and ``Finished`` lines) is within ``factor`` of the
  plan's longest job, either way.
"""

from __future__ import annotations

import json
import math
import re
import struct
from datetime import datetime
from pathlib import Path
from typing import Iterable

BANNER = ("> **REHEARSAL**: tiny random models and 9.7k passages on 2 CPU cores; every number below checks "
          "that the paper route's code paths run, nothing about the studies. Reference rows are expected to FAIL.")


# ----------------------------------------------------------------------------- adapters
def safetensors_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    header.pop("__metadata__", None)
    return header


def adapter_files(root: Path, p: str) -> list[Path]:
    return sorted((root / f"models/{p}").glob("*/*/*/adapter_model.safetensors"))


def check_fp32_trainables(root: Path, p: str) -> list[str]:
    files = adapter_files(root, p)
    if not files:
        return [f"models/{p}: no adapter_model.safetensors found (did finetune run?)"]
    out = []
    for f in files:
        bad = {k: v["dtype"] for k, v in safetensors_header(f).items() if v["dtype"] != "F32"}
        if bad:
            name, dtype = next(iter(sorted(bad.items())))
            out.append(f"{f.relative_to(root)}: {len(bad)} trainable tensor(s) not fp32, e.g. {name} is {dtype} "
                       "(fp32 trainables rule: irrepro.lora.precision.fp32_trainables / irrepro.rerank.precision.fp32_head)")
    return out


def check_finite(root: Path, p: str) -> list[str]:
    from safetensors.torch import load_file

    out = []
    for f in adapter_files(root, p):
        for name, t in load_file(str(f)).items():
            if not bool(t.float().isfinite().all()):
                out.append(f"{f.relative_to(root)}: tensor {name} holds NaN/inf")
                break
    summaries = sorted((root / f"models/{p}").glob("*/*/train_summary.json"))
    if not summaries:
        out.append(f"models/{p}: no train_summary.json found")
    for f in summaries:
        s = json.loads(f.read_text())
        for e in s.get("losses") or []:
            for k in ("loss", "grad_norm"):
                if k in e and not (isinstance(e[k], (int, float)) and math.isfinite(e[k])):
                    out.append(f"{f.relative_to(root)}: step {e.get('step')}: {k} = {e[k]!r}")
        if s.get("train_loss") is not None and not math.isfinite(s["train_loss"]):
            out.append(f"{f.relative_to(root)}: train_loss = {s['train_loss']!r}")
    runs = sorted((root / f"runs/{p}").glob("*/**/*.trec"))
    for f in runs:
        with open(f, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                parts = line.split()
                if len(parts) >= 5 and not math.isfinite(float(parts[4])):
                    out.append(f"{f.relative_to(root)}:{lineno}: score {parts[4]}")
                    break
    return out


# ----------------------------------------------------------------------------- titles
def check_titles(root: Path, p: str, max_report: int = 3) -> list[str]:
    from ..rerank.data import read_groups
    from ..rerank.evaluate import load_passages
    from ..rerank.inputs import clean_title, format_pair, passage_parts

    groups_path, corpus = root / f"data/{p}/train/groups.jsonl", root / f"data/{p}/corpus/corpus.jsonl"
    for f in (groups_path, corpus):
        if not f.is_file():
            return [f"{f.relative_to(root)}: missing (did train_groups / corpus run?)"]
    trained: dict[str, str] = {}
    for rec in read_groups(groups_path):
        for psg in list(rec.get("positive_passages") or []) + list(rec.get("negative_passages") or []):
            title = clean_title(psg.get("title"))
            if title:
                trained[str(psg["docid"])] = title
    if not trained:
        return [f"{groups_path.relative_to(root)}: no training passage carries a title (the rehearsal's "
                "Tevatron fixture has titles; the groups lost them)"]
    scored = load_passages(corpus, set(trained))
    problems = []
    for docid, title in trained.items():
        if docid not in scored:
            continue  # not in the scoring collection: never scored
        text, got = passage_parts(scored[docid])
        got = clean_title(got)
        if got != title or title not in format_pair("q", text, got):
            problems.append(f"passage {docid}: trained with title {title!r}, scored with {got!r}")
    if problems:
        return [f"{corpus.relative_to(root)}: {len(problems)} of {len(trained)} titled training passages are scored "
                "without their title (the corpus title join: irrepro.bm25.write_corpus_from_msmarco_tsv titles_path "
                "/ irrepro.rerank.evaluate.load_passages); e.g. " + "; ".join(problems[:max_report])]
    return []


# ----------------------------------------------------------------------------- SynTOD split
def _records(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def check_split(root: Path, p: str, P: dict) -> list[str]:
    from ..datasets import source_path
    from ..syntod.items import norm_title
    from ..syntod.stages import SEED_SOURCES

    out = []
    raw = root / f"data/{p}/raw"
    for dom in P["syntod"]["domains"]:
        train_f = root / f"data/{p}/syntod/{dom}/items/train.jsonl"
        if not train_f.is_file():
            out.append(f"{train_f.relative_to(root)}: missing (did syntod_items run?)")
            continue
        test = _records(Path(source_path(raw, SEED_SOURCES[dom])))
        test_ids = {str(r.get("id")) for r in test}
        test_titles = {norm_title(r.get("title", "")) for r in test}
        train = _records(train_f)
        shared = [r for r in train if str(r.get("id")) in test_ids or norm_title(r.get("title", "")) in test_titles]
        if shared:
            out.append(f"{train_f.relative_to(root)}: {len(shared)} of {len(train)} training items are test-catalog "
                       f"items (id or title), e.g. {shared[0].get('id')!r} {shared[0].get('title')!r} (the train/test "
                       "item split: irrepro.syntod.items.training_catalog)")
        walks = root / f"data/{p}/syntod/{dom}/walks.jsonl"
        if walks.is_file():
            hits = [w.get("target") for w in _records(walks) if str(w.get("target")) in test_ids]
            if hits:
                out.append(f"{walks.relative_to(root)}: {len(hits)} walks target test items, e.g. {hits[0]!r}")
    return out


# ----------------------------------------------------------------------------- plan vs measured
_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?(?:checkpoint|rule) (\w+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_DONE = re.compile(r"^Finished job(?:id:)? (\d+)")


def job_durations(log_lines: Iterable[str]) -> dict[str, list[float]]:
    """``{rule: [seconds per finished job]}`` from a Snakemake log (timestamp lines, ``rule X:`` with
    its ``jobid:``, ``Finished jobid: N``); resolution one second."""
    now = None
    rule_of, start, out = {}, {}, {}
    pending = None
    for line in log_lines:
        line = line.rstrip("\n")
        if m := _STAMP.match(line):
            now = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif m := _RULE.match(line):
            pending = m.group(1)
        elif (m := _JOBID.match(line)) and pending:
            rule_of[m.group(1)], start[m.group(1)] = pending, now
            pending = None
        elif (m := _DONE.match(line)) and m.group(1) in start and now and start[m.group(1)]:
            j = m.group(1)
            out.setdefault(rule_of[j], []).append((now - start[j]).total_seconds())
    return out


def plan_vs_measured(P: dict, root: Path, durations: dict[str, list[float]], factor: float) -> tuple[list[dict], list[str]]:
    from ..plan import build_plan, measured_facts

    plan = build_plan(P, measured_facts(P, root))
    per_rule: dict[str, float] = {}
    for r in plan["rows"]:
        if r["rule"]:
            per_rule[r["rule"]] = per_rule.get(r["rule"], 0.0) + r["job_hours"] * 3600
    rows, problems = [], []
    for rule, est in sorted(per_rule.items()):
        got = durations.get(rule)
        if not got:
            problems.append(f"plan: rule {rule}: no finished job in the Snakemake log")
            continue
        meas = max(got)
        ratio = meas / est if est > 0 else math.inf
        ok = 1 / factor <= ratio <= factor
        rows.append({"rule": rule, "jobs": len(got), "plan_s": est, "measured_s": meas, "ratio": ratio, "ok": ok})
        if not ok:
            problems.append(f"plan: rule {rule}: longest job measured {meas:.0f} s, plan estimates {est:.0f} s "
                            f"(ratio {ratio:.2f}, allowed 1/{factor:g}..{factor:g}; calibrate plan.throughput."
                            f"{plan['gpu']} in params.yaml)")
    return rows, problems


# ----------------------------------------------------------------------------- all
def run_checks(P: dict, root: str | Path = ".", snakemake_log: str | Path | None = None,
               factor: float = 10.0) -> tuple[dict[str, list[str]], str]:
    """``({check: problems}, markdown)`` over the outputs of profile ``P["profile"]`` under ``root``."""
    root, p = Path(root), P["profile"]
    results = {"fp32 trainables": check_fp32_trainables(root, p), "finite": check_finite(root, p),
               "titles": check_titles(root, p), "split": check_split(root, p, P)}
    # per-rule job times of every run so far: a rerun that had nothing to do keeps the last ones
    store = root / f"logs/{p}/job_durations.json"
    durations = json.loads(store.read_text()) if store.is_file() else {}
    if snakemake_log:
        with open(snakemake_log, encoding="utf-8", errors="replace") as fh:
            durations.update(job_durations(fh))
        store.parent.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps(durations, indent=1, sort_keys=True) + "\n")
    table, results["plan"] = plan_vs_measured(P, root, durations, factor)
    md = ["## Rehearsal checks", "", BANNER, "", "| check | result |", "|---|---|"]
    for name, problems in results.items():
        md.append(f"| {name} | {'OK' if not problems else 'FAIL: ' + ' / '.join(problems)[:600]} |")
    md += ["", f"Plan vs measured (longest job per rule; allowed factor {factor:g} either way):", "",
           "| rule | jobs | plan s | measured s | measured / plan | |", "|---|---|---|---|---|---|"]
    md += [f"| {r['rule']} | {r['jobs']} | {r['plan_s']:.1f} | {r['measured_s']:.0f} | {r['ratio']:.2f} | "
           f"{'OK' if r['ok'] else 'FAIL'} |" for r in table]
    walls = {rule: (len(v), sum(v), max(v)) for rule, v in sorted(durations.items())}
    md += ["", "Wall time per rule (Snakemake log):", "", "| rule | jobs | total s | longest s |", "|---|---|---|---|"]
    md += [f"| {rule} | {n} | {tot:.0f} | {mx:.0f} |" for rule, (n, tot, mx) in walls.items()]
    return results, "\n".join(md) + "\n"
