"""Cost plan of a profile: jobs, optimiser steps, checkpoints, scored pairs, tokens, GPU-hours,
disk and LLM calls per stage, computed from the params alone (``irrepro plan``).

Contract: :func:`build_plan` is pure given the resolved params, the facts below and
``facts`` (counts that replace an assumption when measured, e.g. the mean walk length from
the walks metrics file); :func:`measured_facts` and :func:`calibration` read what finished
jobs logged. GPU time = tokens / throughput, where the throughput table (params ``plan``)
gives tokens/s of one device for a model of ``ref_params`` parameters and is scaled by
``ref_params / params`` for other sizes (compute-bound: FLOPs per token grow with the
parameter count), plus a fixed per-job overhead (imports, loading the weights).

Counting rules (tests/test_plan.py checks them against hand-computed numbers):
- optimiser steps = ceil(queries / (queries_per_device * grad_accum * world)) * epochs,
  or ``max_steps`` when > 0;
- checkpoints = floor(steps / save_steps) + final, where final = 1 when the last step is not
  already a multiple of save_steps (the Trainer also saves at the last step);
- pairs scored per config = sum over datasets scored at every checkpoint of
  queries * depth * checkpoints, plus queries * depth for datasets scored at the final one;
- disk per config = adapter bytes (LoRA params + score head, fp32) * (checkpoints + final/)
  + optimizer state (AdamW: 2 fp32 moments) in the newest checkpoint only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path


from .yamlio import load_yaml

from .params import PACKAGE_DIR, SCALES, route

# runtime, mem_mb, threads, gpu of every rule per route (the rules read it too: common.smk)
RUNTIMES_PATH = PACKAGE_DIR.parent / "resources.yaml"
RESOURCE_NAMES = ("runtime", "mem_mb", "threads", "gpu")

# Judged queries per evaluation set (TREC DL19/DL20 passage, MS MARCO dev-small), see datasets.py.
DATASET_QUERIES = {"dl19": 43, "dl20": 54, "dev": 6980}
CORPUS_PASSAGES = {"msmarco-passage": 8_841_823, "rankllm-top100": 9_658}
GB = 1e9


@dataclass(frozen=True)
class Arch:
    """What the plan needs of a transformer: total parameters and the linear shapes LoRA wraps."""

    params: int
    hidden: int
    layers: int
    intermediate: int
    kv_dim: int  # output width of k_proj / v_proj (grouped-query attention); GPT-NeoX: unused
    kind: str  # llama (q,k,v,o,gate,up,down) | gpt_neox (query_key_value, dense, dense_h_to_4h, dense_4h_to_h)

    def shapes(self) -> dict[str, tuple[int, int]]:
        h, i = self.hidden, self.intermediate
        if self.kind == "gpt_neox":
            return {"query_key_value": (h, 3 * h), "dense": (h, h), "dense_h_to_4h": (h, i), "dense_4h_to_h": (i, h)}
        return {"q_proj": (h, h), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


# Published configs (config.json of each hub model; parameter counts as the model cards state them).
ARCHS = {
    "meta-llama/Llama-3.1-8B": Arch(8_030_261_248, 4096, 32, 14336, 1024, "llama"),
    "mistralai/Mistral-7B-v0.1": Arch(7_241_732_096, 4096, 32, 14336, 1024, "llama"),
    "EleutherAI/pythia-6.9b": Arch(6_857_302_016, 4096, 32, 16384, 4096, "gpt_neox"),
    "meta-llama/Llama-2-7b-hf": Arch(6_738_415_616, 4096, 32, 11008, 4096, "llama"),
}
KIND_OF_FAMILY = {"llama": "llama", "mistral": "llama", "pythia": "gpt_neox"}
MHA = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj"], "gpt_neox": ["query_key_value", "dense"]}
MLP = {"llama": ["gate_proj", "up_proj", "down_proj"], "gpt_neox": ["dense_h_to_4h", "dense_4h_to_h"]}

# Published SynTOD test sets per domain (../shared/data/syntod/*_test_{gemini,llama}_v3.jsonl, counted
# with one pass over each file): conversations, mean characters, mean user / system turns.
SYNTOD_TESTS = {
    "cooking": [(95, 8990, 14.9, 15.6), (95, 11395, 14.5, 15.2)],
    "ecommerce": [(103, 11781, 11.4, 11.9), (100, 14447, 11.0, 11.6)],
}


class PlanError(ValueError):
    """The params cannot be planned; the message names the key."""


# ----------------------------------------------------------------------------- model facts
def arch_of(model_id: str, P: dict, family: str, key: str) -> Arch:
    """The architecture of ``model_id`` (``tiny``: built from params ``tiny``)."""
    if model_id == "tiny":
        T = P["tiny"]
        h, L, heads, i = T["hidden"], T["layers"], T["heads"], T["intermediate"]
        kind = KIND_OF_FAMILY[family]
        kv = h if family != "mistral" else (h // heads) * max(1, heads // 2)  # irrepro.tiny's configs
        shapes = Arch(0, h, L, i, kv, kind).shapes()
        layer = sum(a * b for a, b in shapes.values())
        return Arch(2 * T["vocab_size"] * h + L * layer, h, L, i, kv, kind)
    given = (P.get("plan") or {}).get("archs") or {}
    if model_id in given:  # sizes stated in params (the rehearsal's fixture checkpoints)
        a = given[model_id]
        return Arch(a["params"], a["hidden"], a["layers"], a["intermediate"], a["kv_dim"], KIND_OF_FAMILY[family])
    if model_id not in ARCHS:
        raise PlanError(f"params.yaml: {key}: no size facts for {model_id!r} in irrepro/plan.py ARCHS "
                        f"(known: {sorted(ARCHS)}); add its config there")
    return ARCHS[model_id]


def lora_params(arch: Arch, rank: int, modules: list[str]) -> int:
    """Trainable LoRA parameters: r * (in + out) per wrapped linear per layer."""
    shapes = arch.shapes()
    return arch.layers * sum(rank * sum(shapes[m]) for m in modules)


def modules_for(arch: Arch, targets: str) -> list[str]:
    return {"mha": MHA, "mlp": MLP}[targets][arch.kind] if targets != "all" else MHA[arch.kind] + MLP[arch.kind]


# ----------------------------------------------------------------------------- counting rules
def optimiser_steps(queries: int, per_device: int, grad_accum: int, world: int, epochs: float, max_steps: int) -> int:
    if max_steps and max_steps > 0:
        return int(max_steps)
    return math.ceil(queries / (per_device * grad_accum * world)) * math.ceil(epochs)


def n_checkpoints(steps: int, save_steps: int) -> int:
    return steps // save_steps + (1 if steps % save_steps else 0)


def eval_schedule(R: dict) -> tuple[list[str], list[str]]:
    """(datasets scored at every checkpoint, datasets scored at the final checkpoint only).

    Accepts the old single list ``rerank.datasets`` (all at every checkpoint) and the split keys."""
    if "checkpoint_datasets" in R or "final_datasets" in R:
        every = list(R.get("checkpoint_datasets") or [])
        return every, [d for d in R.get("final_datasets") or [] if d not in every]
    return list(R.get("datasets") or []), []


def throughput(P: dict) -> tuple[str, dict]:
    plan = P.get("plan")
    if not isinstance(plan, dict):
        raise PlanError("params.yaml: plan: section missing (GPU type and throughput table)")
    gpu = plan["gpu"]
    if gpu not in plan["throughput"]:
        raise PlanError(f"params.yaml: plan.gpu: {gpu!r} has no entry in plan.throughput ({sorted(plan['throughput'])})")
    return gpu, plan["throughput"][gpu]


def rate(T: dict, kind: str, params: int) -> float:
    """tokens/s of one device for ``kind`` (train | score | decode) on a model of ``params`` parameters."""
    return T[f"{kind}_tokens_s"] * T["ref_params"] / params


# ----------------------------------------------------------------------------- the plan
def _row(stage: str, rule: str | None = None, **kw) -> dict:
    row = {"stage": stage, "rule": rule, "jobs": 0, "steps": 0, "checkpoints": 0, "pairs": 0, "tokens": 0,
           "gpu_hours": 0.0, "job_hours": 0.0, "disk_gb": 0.0, "llm_calls": 0, "llm_tokens": 0, "group": None}
    row.update(kw)
    return row


def study1_rows(P: dict, facts: dict) -> list[dict]:
    F, R = P["finetune"], P["rerank"]
    gpu, T = throughput(P)
    over = T["job_overhead_s"]
    world = F["nproc_per_node"]
    queries = facts.get("train_queries") or P["plan"]["train_queries"]
    steps = optimiser_steps(queries, F["queries_per_device"], F["grad_accum"], world, F["epochs"], F["max_steps"])
    ckpts = n_checkpoints(steps, F["save_steps"])
    seq = F["query_max_len"] + F["passage_max_len"] + 2  # bos/eos; a batch of >= 256 texts pads to the limit
    train_tokens = steps * F["queries_per_device"] * F["grad_accum"] * world * F["group_size"] * seq
    every, final = eval_schedule(R)
    per_q = P["plan"]["score_tokens_per_pair"]
    nq = {**DATASET_QUERIES, **facts.get("queries", {})}  # measured: the BM25 runs' queries
    pairs_every = sum(nq[d] * R["depth"] for d in every) * ckpts
    pairs_final = sum(nq[d] * R["depth"] for d in final)
    ft = _row("finetune", "finetune", group="training", steps=steps, checkpoints=ckpts)
    ev = _row("rerank_eval (every checkpoint)", "rerank_eval", group="evaluation", checkpoints=ckpts)
    evf = _row("rerank_eval (final checkpoint)", None, group="evaluation", checkpoints=1 if final else 0)
    for fam in F["families"]:
        arch = arch_of(P["models"][fam]["id"], P, fam, f"models.{fam}.id")
        for r in F["ranks"]:
            for t in F["targets"]:
                trainable = lora_params(arch, r, modules_for(arch, t)) + arch.hidden  # + the score head
                train_s = train_tokens / rate(T, "train", arch.params)
                ft["jobs"] += 1
                ft["tokens"] += train_tokens
                ft["gpu_hours"] += (train_s + over * world) / 3600
                ft["job_hours"] = max(ft["job_hours"], (train_s / world + over) / 3600)
                ft["disk_gb"] += (4 * trainable * (ckpts + 1) + 8 * trainable) / GB
                s_every = pairs_every * per_q / rate(T, "score", arch.params)
                s_final = pairs_final * per_q / rate(T, "score", arch.params)
                for row, pairs, secs in ((ev, pairs_every, s_every), (evf, pairs_final, s_final)):
                    row["jobs"] += 1  # the final-only datasets are scored by the same rerank_eval job
                    row["pairs"] += pairs
                    row["tokens"] += pairs * per_q
                    row["gpu_hours"] += secs / 3600
                    row["disk_gb"] += pairs * 40 / GB  # one TREC run line ~40 bytes
                ev["gpu_hours"] += over / 3600
                ev["job_hours"] = max(ev["job_hours"], (s_every + s_final + over) / 3600)
    rows = [ft, ev] + ([evf] if final else [])
    rows.append(ablate_rows(P, T, over, facts))
    return rows


def ablate_rows(P: dict, T: dict, over: float, facts: dict | None = None) -> dict:
    """One job per ablated config: every distinct variant reranks ``ablate.datasets`` at ``ablate.depth``."""
    from .rerank.ablate import LoraSite, enumerate_variants

    A = P["ablate"]
    row = _row("ablate", "ablate", group="ablation", checkpoints=1)
    nq = {**DATASET_QUERIES, **(facts or {}).get("queries", {})}
    pairs_one = sum(nq[d] * A["depth"] for d in A["datasets"])
    per_q = P["plan"]["score_tokens_per_pair"]
    variants_total = 0
    for fam in A["families"]:
        arch = arch_of(P["models"][fam]["id"], P, fam, f"models.{fam}.id")
        for _r in A["ranks"]:
            for t in A["targets"]:
                sites = [LoraSite(f"layers.{i}.{m}", i, m) for i in range(arch.layers) for m in modules_for(arch, t)]
                variants = enumerate_variants(sites, fam, arch.layers, A["band_size"], A["cells"])
                scored = sum(1 for v in variants if v.same_as is None)
                secs = scored * pairs_one * per_q / rate(T, "score", arch.params)
                row["jobs"] += 1
                variants_total += scored
                row["pairs"] += scored * pairs_one
                row["tokens"] += scored * pairs_one * per_q
                row["gpu_hours"] += (secs + over) / 3600
                row["job_hours"] = max(row["job_hours"], (secs + over) / 3600)
                row["disk_gb"] += scored * pairs_one * 40 / GB
    row["stage"] = f"ablate ({variants_total:,} variants at ablate.checkpoint)"
    return row


def syntod_rows(P: dict, facts: dict) -> list[dict]:
    S, Q = P["syntod"], P["plan"]["syntod"]
    gpu, T = throughput(P)
    over = T["job_overhead_s"]
    arch = arch_of(S["base"]["id"], P, S["base"]["family"], "syntod.base.id")
    F, E = S["finetune"], S["eval"]
    n = S["n_conversations"]
    n_train = math.floor(n * (1 - S["heldout_fraction"]))
    n_held = n - n_train
    cpt = Q["chars_per_token"]
    rows = []
    for dom in S["domains"]:
        walk_len = facts.get("walk_length", {}).get(dom) or Q["walk_length"]
        for method in S["methods"]:
            calls = n * (round(walk_len) if method == "graph" else 1)
            prompt = Q["prompt_tokens"] if method == "graph" else Q["naive_prompt_tokens"]
            rows.append(_row(f"syntod_generate {dom}/{method}", None, group="syntod", jobs=1, llm_calls=calls,
                             llm_tokens=calls * (prompt + S["llm"]["max_tokens"])))
    ft = _row("finetune_tod", "finetune_tod", group="syntod")
    ev = _row("evaluate_tod", "evaluate_tod", group="syntod")
    steps = optimiser_steps(n_train, F["batch_size"], F["grad_accum"], 1, F["epochs"], F["max_steps"])
    tokens = steps * F["batch_size"] * F["grad_accum"] * F["max_len"]
    trainable = lora_params(arch, F["rank"], modules_for(arch, F["targets"]))
    ck = n_checkpoints(steps, F["save_steps"])
    for dom in S["domains"]:
        walk_len = facts.get("walk_length", {}).get(dom) or Q["walk_length"]
        tests = SYNTOD_TESTS[dom] + [(n_held, walk_len * Q["turn_chars"], walk_len / 2, walk_len / 2)]
        for _method in S["methods"]:
            secs = tokens / rate(T, "train", arch.params)
            ft["jobs"] += 1
            ft["steps"] = steps
            ft["checkpoints"] = ck
            ft["tokens"] += tokens
            ft["gpu_hours"] += (secs + over) / 3600
            ft["job_hours"] = max(ft["job_hours"], (secs + over) / 3600)
            ft["disk_gb"] += (4 * trainable * (ck + 1) + 8 * trainable) / GB
            prefill = decode = judge = 0
            for convs, chars, users, systems in tests:
                convs = min(convs, E["max_conversations"] or convs)
                responses = min(systems, E["responses_per_conversation"] if E["responses_per_conversation"] is not None else systems)
                context = min(chars / cpt / 2, E["max_len"])  # mean history before a turn
                prefill += convs * (users + responses) * context
                decode += convs * (users * min(Q["annotation_tokens"], E["max_new_tokens_intent"])
                                   + responses * min(Q["response_tokens"], E["max_new_tokens_response"]))
                judge += convs * responses
            secs = prefill / rate(T, "score", arch.params) + decode / rate(T, "decode", arch.params)
            ev["jobs"] += 1
            ev["tokens"] += int(prefill + decode)
            ev["gpu_hours"] += (secs + over) / 3600
            ev["job_hours"] = max(ev["job_hours"], (secs + over) / 3600)
            ev["llm_calls"] += int(judge)
            ev["llm_tokens"] += int(judge * (Q["judge_prompt_tokens"] + S["judge"]["max_tokens"]))
    return rows + [ft, ev]


def build_plan(P: dict, facts: dict | None = None) -> dict:
    """The plan of the resolved params ``P``: ``{"profile", "gpu", "rows", "totals"}``."""
    facts = facts or {}
    gpu, T = throughput(P)
    rows = study1_rows(P, facts) + syntod_rows(P, facts)
    rows.append(_row("data (raw + corpus + index)", None, group="data",
                     disk_gb=P["plan"]["data_disk_gb"]))
    totals = {}
    for r in rows:
        g = totals.setdefault(r["group"], {"gpu_hours": 0.0, "disk_gb": 0.0, "llm_calls": 0, "llm_tokens": 0})
        for k in g:
            g[k] += r[k]
    tr, ev = totals["training"]["gpu_hours"], totals["evaluation"]["gpu_hours"]
    return {"profile": P["profile"], "gpu": gpu, "throughput": T, "rows": rows, "totals": totals,
            "eval_over_training": ev / tr if tr else None,
            "gpu_hours": sum(r["gpu_hours"] for r in rows), "disk_gb": sum(r["disk_gb"] for r in rows)}


# ----------------------------------------------------------------------------- runtime check
def load_resources(path: str | Path = RUNTIMES_PATH) -> dict:
    """``{rule: {route: {resource: int}}}`` from workflow/resources.yaml, where a value is one
    number for both routes or ``{mini: n, paper: n}``; ``runtime`` (minutes) is required."""
    out = {}
    for rule, spec in load_yaml(path).items():
        if not isinstance(spec, dict) or "runtime" not in spec or set(spec) - set(RESOURCE_NAMES):
            raise PlanError(f"{path}: {rule}: needs `runtime` and only {list(RESOURCE_NAMES)}, got {spec!r}")
        out[rule] = {s: {} for s in SCALES}
        for name, v in spec.items():
            per = v if isinstance(v, dict) else dict.fromkeys(SCALES, v)
            low = 1 if name == "runtime" else 0
            if set(per) != set(SCALES) or not all(isinstance(x, int) and x >= low for x in per.values()):
                raise PlanError(f"{path}: {rule}.{name}: needs an integer >= {low} or one per {list(SCALES)}, got {v!r}")
            for s in SCALES:
                out[rule][s][name] = per[s]
    return out


def load_runtimes(path: str | Path = RUNTIMES_PATH) -> dict:
    """``{rule: {mini: minutes, paper: minutes}}`` (the runtime column of workflow/resources.yaml)."""
    return {rule: {s: res[s]["runtime"] for s in SCALES} for rule, res in load_resources(path).items()}


def runtime_problems(plan: dict, runtimes: dict, source: str = str(RUNTIMES_PATH)) -> list[str]:
    """One message per rule whose longest estimated job exceeds its declared ``runtime``."""
    out = []
    for r in plan["rows"]:
        if not r["rule"]:
            continue
        if r["rule"] not in runtimes:
            out.append(f"{source}: rule {r['rule']} has no runtime entry")
            continue
        declared = runtimes[r["rule"]][route(plan["profile"])]
        need = math.ceil(r["job_hours"] * 60)
        if need > declared:
            out.append(f"rule {r['rule']}: estimated job time {need} min exceeds its declared runtime {declared} min "
                       f"({source}, profile {plan['profile']}, GPU {plan['gpu']}); raise the runtime or add GPUs")
    return out


def check_runtimes(P: dict, runtimes: dict | None = None) -> None:
    problems = runtime_problems(build_plan(P), runtimes if runtimes is not None else load_runtimes())
    if problems:
        raise PlanError("job time exceeds the declared runtime:\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------------- measurements
_SCORED = re.compile(r"scored (\d+) pairs in ([0-9.]+)s")


def measured_facts(P: dict, root: str | Path = ".") -> dict:
    """Counts that replace assumptions when finished stages wrote them (cheap reads only)."""
    root, p = Path(root), P["profile"]
    facts: dict = {"walk_length": {}}
    groups = root / f"data/{p}/train/groups.jsonl"
    if groups.is_file():  # one group per training query (paper: a few GB, read once)
        with open(groups, "rb") as fh:
            facts["train_queries"] = sum(1 for _ in fh)
    for run in sorted((root / f"runs/{p}/bm25").glob("*.trec")):  # judged queries per dataset
        with open(run, encoding="utf-8") as fh:
            facts.setdefault("queries", {})[run.stem] = len({line.split(None, 1)[0] for line in fh if line.strip()})
    for dom in P["syntod"]["domains"]:
        f = root / f"results/{p}/metrics/syntod_walks_{dom}.json"
        if f.is_file():
            facts["walk_length"][dom] = json.loads(f.read_text())["length"]["mean"]
    return facts


def calibration(P: dict, root: str | Path = ".") -> list[dict]:
    """Measured throughput of finished jobs next to the table's (tokens/s of one device)."""
    root, p = Path(root), P["profile"]
    gpu, T = throughput(P)
    F, out = P["finetune"], []
    seq = F["query_max_len"] + F["passage_max_len"] + 2
    for fam in F["families"]:
        arch = arch_of(P["models"][fam]["id"], P, fam, f"models.{fam}.id")
        speeds = []
        for f in sorted((root / f"models/{p}/lora").glob(f"{fam}-r*/train_summary.json")) + sorted(
                (root / f"logs/{p}/finetune").glob(f"{fam}-r*.run.json")):  # sec_per_step: the run sidecar
            s = json.loads(f.read_text())
            s = s.get("train") or s  # a run sidecar keeps it in its ``train`` section
            if s.get("sec_per_step"):  # tokens of one optimiser step over all devices, per device
                speeds.append(F["queries_per_device"] * F["grad_accum"] * F["group_size"] * seq / s["sec_per_step"])
        if speeds:
            out.append({"what": f"finetune {fam}", "jobs": len(speeds), "measured_tokens_s": sum(speeds) / len(speeds),
                        "table_tokens_s": rate(T, "train", arch.params)})
        pairs = secs = 0.0
        for log in (root / f"logs/{p}/rerank_eval").glob(f"{fam}-r*.log"):
            for m in _SCORED.finditer(log.read_text(errors="replace")):
                pairs += int(m.group(1))
                secs += float(m.group(2))
        if secs:
            out.append({"what": f"rerank_eval {fam}", "jobs": None,
                        "measured_tokens_s": pairs * P["plan"]["score_tokens_per_pair"] / secs,
                        "table_tokens_s": rate(T, "score", arch.params)})
    for f in sorted((root / f"data/{p}/syntod").glob("*/*/stats.json")):
        u = json.loads(f.read_text()).get("llm_usage") or {}
        if u.get("replies"):
            out.append({"what": f"syntod_generate {f.parent.parent.name}/{f.parent.name}", "jobs": 1,
                        "llm_calls": u["replies"], "prompt_tokens": u.get("prompt_tokens"),
                        "completion_tokens": u.get("completion_tokens")})
    return out


# ----------------------------------------------------------------------------- rendering
COLUMNS = [("stage", "stage"), ("jobs", "jobs"), ("steps", "steps/job"), ("checkpoints", "ckpts/job"),
           ("pairs", "pairs scored"), ("tokens", "tokens"), ("gpu_hours", "GPU-h"), ("job_hours", "longest job h"),
           ("disk_gb", "disk GB"), ("llm_calls", "LLM calls"), ("llm_tokens", "LLM tokens")]


def _fmt(key: str, v) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if key != "disk_gb" or v >= 0.1 else f"{v:.3f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def render(plan: dict, fmt: str = "md", calib: list[dict] | None = None) -> str:
    if fmt == "json":
        return json.dumps({**plan, "calibration": calib or []}, indent=2) + "\n"
    if fmt == "tsv":
        lines = ["\t".join(k for k, _ in COLUMNS)]
        lines += ["\t".join(str(round(r[k], 3) if isinstance(r[k], float) else r[k]) for k, _ in COLUMNS) for r in plan["rows"]]
        return "\n".join(lines) + "\n"
    if fmt != "md":
        raise PlanError(f"unknown format {fmt!r} (md, json, tsv)")
    T = plan["throughput"]
    out = [f"Plan for profile **{plan['profile']}** on `{plan['gpu']}` (tokens/s of one device at "
           f"{T['ref_params']:.3g} params: train {T['train_tokens_s']:,}, score {T['score_tokens_s']:,}, "
           f"decode {T['decode_tokens_s']:,}; scaled by size)", "",
           "| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in plan["rows"]:
        out.append("| " + " | ".join(_fmt(k, r[k]) for k, _ in COLUMNS) + " |")
    t = plan["totals"]
    ratio = plan["eval_over_training"]
    out += ["", f"Totals: {plan['gpu_hours']:,.0f} GPU-h, {plan['disk_gb']:,.1f} GB; training "
                f"{t['training']['gpu_hours']:,.0f} GPU-h, checkpoint evaluation {t['evaluation']['gpu_hours']:,.0f} GPU-h "
                f"({ratio:.1%} of training)" if ratio is not None else ""]
    if calib:
        out += ["", "Measured (finished jobs) vs table:", ""]
        for c in calib:
            if "measured_tokens_s" in c:
                out.append(f"- {c['what']}: measured {c['measured_tokens_s']:,.0f} tokens/s, table {c['table_tokens_s']:,.0f}")
            else:
                out.append(f"- {c['what']}: {c['llm_calls']} LLM replies, {c['prompt_tokens']} prompt + "
                           f"{c['completion_tokens']} completion tokens")
    return "\n".join(out) + "\n"
