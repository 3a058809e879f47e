"""Model cards for our adapters and dataset cards for the generated SynTOD data.

Cards are Hugging Face README.md files (YAML front matter + markdown). They are built only
from values that are the same on every rerun (recipe, data paths relative to the project,
steps, losses, evaluation metrics): no dates, timings or machine paths, so the adapter
directories they live in stay byte-identical across reruns.

* :func:`model_card`: base model id and revision (a hub snapshot path
  ``.../models--<org>--<name>/snapshots/<commit>`` gives both; a local tiny base is named as
  such), the training data, the recipe, the training losses, evaluation metrics when given,
  and a loading snippet. Replaces the stub README peft's ``save_pretrained`` writes.
* :func:`dataset_card`: one generated SynTOD set (domain x method): generator backend and
  model, seed, sha256 of the state graph and the prompts, counts, and for the offline
  template simulator a warning that the texts are not LLM output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

_HF_SPEC = re.compile(r"^hf:(?P<repo>[^@/]+/[^@]+)@(?P<rev>[0-9a-f]{40})$")
_SNAPSHOT = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<rev>[0-9a-f]{40})")

RERANK_RECIPE = ("rank", "targets", "alpha", "dropout", "lr", "epochs", "max_steps", "queries_per_device",
                 "grad_accum", "group_size", "qmax", "pmax", "save_steps", "warmup_ratio", "bf16",
                 "gradient_checkpointing", "base_dtype", "head_labels", "seed")


def base_identity(base: str) -> tuple[str, str | None]:
    """``(model id, revision)`` of a base path: a hub cache snapshot (or its ``hf:`` form)
    gives the repo id and commit; anything else is a local model, named by its path (revision None)."""
    text = str(base).replace("\\", "/")
    m = _SNAPSHOT.search(text)
    if m:
        return f"{m['org']}/{m['name']}", m["rev"]
    m = _HF_SPEC.match(text)  # irrepro.sidecar.portable_path's form of a snapshot
    if m:
        return m["repo"], m["rev"]
    return text, None


def _front_matter(d: Mapping) -> str:
    lines = ["---"]
    for k, v in d.items():
        if isinstance(v, list):
            lines.append(f"{k}:")
            lines += [f"- {json.dumps(x)}" for x in v]
        elif v is not None:
            lines.append(f"{k}: {json.dumps(v)}")
    return "\n".join(lines + ["---", ""])


def _table(rows: list[tuple]) -> list[str]:
    return ["| key | value |", "|---|---|", *(f"| `{k}` | {v} |" for k, v in rows), ""]


def model_card(name: str, summary: Mapping, *, task: str = "rerank", metrics: Mapping | None = None,
               repo_id: str | None = None) -> str:
    """The README.md of the adapter ``name`` from its ``train_summary.json`` (``summary``;
    only ``config``, ``steps``, ``losses`` and ``train_loss`` are read). ``metrics``:
    ``{dataset: {metric: value}}`` of the final checkpoint. ``repo_id``: where it is (to be)
    published, for the snippet (default: the local ``final`` directory)."""
    config = summary.get("config", {})
    base_id, base_rev = base_identity(config.get("base", "?"))
    local = base_rev is None
    head = _front_matter({
        "library_name": "peft",
        "base_model": None if local else base_id,
        "pipeline_tag": "text-classification" if task == "rerank" else "text-generation",
        "tags": ["irrepro", "lora", "passage-reranking" if task == "rerank" else "task-oriented-dialogue"],
    })
    what = ("a pointwise passage reranker (RankLLaMA recipe: `AutoModelForSequenceClassification`, "
            "score of the last token, LoRA plus the trained score head)" if task == "rerank"
            else "an end-to-end task-oriented dialogue model (SynTOD recipe, causal LM with LoRA)")
    out = [head, f"# {name}", "", f"LoRA adapter: {what}, trained by the irrepro workflow.", ""]
    out += ["## Base model", ""]
    if local:
        out += [f"A local model (`{base_id}`; in the mini profile the tiny model built by the workflow), not a "
                "hub model: the adapter loads only on that base, and mini numbers say nothing about the paper's "
                "models.", ""]
    else:
        out += [f"[`{base_id}`](https://huggingface.co/{base_id}) at revision `{base_rev}`.", ""]
    data = config.get("groups") or config.get("train") or "?"
    out += ["## Training data", "", f"`{data}` (as named by the run)"
            + ("; Tevatron-format groups, 1 positive + hard negatives per query." if task == "rerank" else "."), ""]
    keys = RERANK_RECIPE if task == "rerank" else sorted(k for k in config if k not in ("base", "train"))
    out += ["## Recipe", "", *_table([(k, f"`{config[k]}`") for k in keys if k in config])]
    losses = summary.get("losses") or []
    out += ["## Training", "", f"- optimiser steps: {summary.get('steps')}",
            f"- mean training loss: {summary['train_loss']:.4f}" if summary.get("train_loss") is not None else "",
            f"- last logged loss (step {losses[-1]['step']}): {losses[-1]['loss']:.4f}" if losses else "", ""]
    if metrics:
        out += ["## Evaluation (final checkpoint)", "", "| dataset | metric | value |", "|---|---|---|"]
        out += [f"| {ds} | {m} | {'-' if v is None else f'{v:.4f}'} |"
                for ds in sorted(metrics) for m, v in sorted(metrics[ds].items())
                if not isinstance(v, Mapping)]  # not the judged-queries flag of the metrics JSON
        out.append("")
    where = repo_id or "path/to/final"
    base_arg = base_id  # a hub id, or the local base directory as the run named it
    rev = f', revision="{base_rev}"' if base_rev else ""
    if task == "rerank":
        load = (f'base = AutoModelForSequenceClassification.from_pretrained("{base_arg}"{rev}, num_labels=1)\n'
                f'model = PeftModel.from_pretrained(base, "{where}")')
        imports = "from transformers import AutoModelForSequenceClassification"
    else:
        load = (f'base = AutoModelForCausalLM.from_pretrained("{base_arg}"{rev})\n'
                f'model = PeftModel.from_pretrained(base, "{where}")')
        imports = "from transformers import AutoModelForCausalLM"
    out += ["## Loading", "", "```python", "from peft import PeftModel", imports, load, "```", ""]
    if task == "rerank":
        out += ["Input format: `query:  {query} document:  {title} {passage}` "
                "(see `irrepro.rerank.inputs`); the score is the logit of the last non-pad token.", ""]
    return "\n".join(line for i, line in enumerate(out) if line or (i and out[i - 1])) + "\n"


def task_of(summary: Mapping) -> str:
    """``rerank`` or ``tod``, from what a train summary records."""
    return "tod" if "n_conversations" in summary else "rerank"


def write_model_card(adapter_dir: str | Path, name: str, summary: Mapping, **kw) -> Path:
    """Write ``<adapter_dir>/README.md`` (replacing peft's stub)."""
    path = Path(adapter_dir) / "README.md"
    path.write_text(model_card(name, summary, task=kw.pop("task", task_of(summary)), **kw), encoding="utf-8")
    return path


def dataset_card(domain: str, method: str, *, stats: Mapping, params: Mapping, graph_sha256: str,
                 prompts_sha256: str, files: list[str]) -> str:
    """The README.md of one generated SynTOD set (see module doc). ``params``: the resolved
    ``syntod`` section."""
    llm = params["llm"]
    simulator = llm["kind"] == "offline"
    head = _front_matter({"language": ["en"], "tags": ["irrepro", "syntod", "task-oriented-dialogue", "synthetic"],
                          "pretty_name": f"SynTOD {domain} ({method}) generated by irrepro"})
    out = [head, f"# SynTOD {domain} / {method}", ""]
    if simulator:
        out += ["> **Warning: not LLM data.** These conversations were written by irrepro's offline *template "
                "simulator* (the mini profile's stand-in for an LLM). They only exercise the pipeline; they say "
                "nothing about the quality of LLM-generated SynTOD data and must not be used as such.", ""]
    how = ("random walks on the state transition graph, each turn simulated" if method == "graph"
           else "one prompt per conversation (the naive baseline)")
    out += [f"Synthetic task-oriented dialogues ({domain}), generated by {how}.", ""]
    n = stats.get("split", {})
    out += ["## Generator", "", *_table([
        ("backend", f"`{llm['kind']}`"), ("model", f"`{llm['model']}`"), ("temperature", f"`{llm.get('temperature')}`"),
        ("generation seed (syntod.seed)", f"`{params.get('seed')}`"), ("llm.seed", f"`{llm.get('seed')}`"),
        ("conversations requested", f"`{params.get('n_conversations')}`"),
        ("state graph sha256", f"`{graph_sha256}`"), ("prompts sha256", f"`{prompts_sha256}`"),
        ("train / heldout", f"`{n.get('train')}` / `{n.get('heldout')}`"),
        ("failed conversations", f"`{stats.get('failed')}`"),
    ])]
    out += ["## Files", "", *(f"- `{f}`" for f in files), "",
            "`conversations.txt.jsonl` is in the original SynTOD text format; `conversations.jsonl` is irrepro's "
            "structured form (`irrepro.syntod.format`). Items come only from the domain's training catalog "
            "(never from the published test items).", ""]
    return "\n".join(out) + "\n"
