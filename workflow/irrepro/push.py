"""``irrepro push``: publish our adapters and the generated SynTOD data on the Hugging Face Hub.

Upload plan (:func:`plan`), one repo per item, one commit per repo:

* every finished reranker config ``models/<p>/lora/<config>`` -> model repo
  ``<namespace>/<prefix>-<profile>-<config>`` (and every SynTOD TOD model
  ``models/<p>/tod/<domain>-<method>`` -> ``<prefix>-<profile>-tod-<domain>-<method>``, with its
  ``strict`` metrics per test set): the final adapter at the repo root (``README.md`` = its
  model card, with the final checkpoint's metrics from ``results/<p>/metrics/rerank.json``),
  every ``checkpoint-<step>/`` as a subfolder holding the adapter, ``trainer_state.json`` and
  the small metadata files (never the optimizer / scheduler / RNG state kept to resume), and
  ``train_summary.json``;
* every generated SynTOD set ``data/<p>/syntod/<domain>/<method>`` -> dataset repo
  ``<namespace>/<prefix>-<profile>-syntod-<domain>-<method>`` with its files and a dataset card.

After the upload each commit is printed as a ready spec: ``hf:<repo>@<commit>`` (and
``hf:<repo>@<commit>:checkpoint-<step>`` per checkpoint, what ``--adapters`` of
``rerank-eval`` / ``ablate`` accept), datasets as ``hf:datasets/<repo>@<commit>``.

The token comes from the ``HF_TOKEN`` environment variable only (never an argument or a
file). ``--dry-run`` prints the plan (repos, files, bytes) and needs neither a token nor a
network. ``endpoint`` (``--endpoint``, default: the library's, i.e. ``HF_ENDPOINT`` or
huggingface.co) points :class:`huggingface_hub.HfApi` elsewhere, e.g. at a test server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .cards import dataset_card, model_card, task_of

log = logging.getLogger("irrepro")

# what an uploaded checkpoint keeps: the adapter (weights + config, incl. the score head) and
# the small state files; optimizer, scheduler and RNG state are only for resuming
CHECKPOINT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_config.json", "trainer_state.json",
                    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")
SYNTOD_FILES = ("conversations.jsonl", "conversations.txt.jsonl", "train.jsonl", "heldout.jsonl", "stats.json")


@dataclass
class Upload:
    """One repo and the files of its single commit (``path_in_repo -> bytes or local path``)."""
    repo_id: str
    repo_type: str  # model | dataset
    kind: str       # adapter | syntod
    files: dict[str, bytes | Path] = field(default_factory=dict)
    checkpoints: list[str] = field(default_factory=list)

    def size(self) -> int:
        return sum(len(v) if isinstance(v, bytes) else v.stat().st_size for v in self.files.values())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _adapter_upload(lora_dir: Path, repo_id: str, metrics: Mapping | None) -> Upload:
    final = lora_dir / "final"
    summary_path = lora_dir / "train_summary.json"
    if not final.is_dir() or not summary_path.is_file():
        raise FileNotFoundError(f"{lora_dir}: no final/ and train_summary.json (finetune did not finish)")
    summary = json.loads(summary_path.read_text())
    up = Upload(repo_id, "model", "adapter")
    for f in sorted(final.iterdir()):
        if f.is_file() and f.name != "README.md":
            up.files[f.name] = f
    up.files["train_summary.json"] = summary_path
    up.files["README.md"] = model_card(lora_dir.name, summary, task=task_of(summary), metrics=metrics,
                                       repo_id=repo_id).encode()
    for ckpt in sorted((p for p in lora_dir.glob("checkpoint-*") if p.is_dir()),
                       key=lambda p: int(p.name.split("-")[1])):
        for name in CHECKPOINT_FILES:
            if (ckpt / name).is_file():
                up.files[f"{ckpt.name}/{name}"] = ckpt / name
        up.checkpoints.append(ckpt.name)
    return up


def _syntod_upload(gen_dir: Path, repo_id: str, domain: str, method: str, S: Mapping, resources: Path) -> Upload:
    stats_path = gen_dir / "stats.json"
    if not stats_path.is_file():
        raise FileNotFoundError(f"{stats_path}: missing (syntod-generate did not finish)")
    up = Upload(repo_id, "dataset", "syntod")
    present = [n for n in SYNTOD_FILES if (gen_dir / n).is_file()]
    for name in present:
        up.files[name] = gen_dir / name
    card = dataset_card(domain, method, stats=json.loads(stats_path.read_text()), params=S,
                        graph_sha256=_sha256(resources / f"{domain}.yaml"),
                        prompts_sha256=_sha256(resources / "prompts.yaml"), files=present)
    up.files["README.md"] = card.encode()
    return up


def plan(P: Mapping, namespace: str, prefix: str = "irrepro", *, root: str | os.PathLike = ".",
         adapters: bool = True, syntod: bool = True) -> list[Upload]:
    """Every upload of the profile's finished outputs (see module doc). Configs and sets not
    yet produced are skipped with a log line; an empty plan is an error."""
    root = Path(root)
    profile = P["profile"]
    if not namespace or "/" in namespace:
        raise ValueError(f"push: namespace must be a user or organisation name, got {namespace!r}")
    out: list[Upload] = []
    if adapters:
        metrics_path = root / "results" / profile / "metrics" / "rerank.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        F = P["finetune"]
        for fam in F["families"]:
            for rank in F["ranks"]:
                for tgt in F["targets"]:
                    cfg = f"{fam}-r{rank}-{tgt}"
                    d = root / "models" / profile / "lora" / cfg
                    if not d.is_dir():
                        log.info("push: %s not trained, skipped", d)
                        continue
                    out.append(_adapter_upload(d, f"{namespace}/{prefix}-{profile}-{cfg}", metrics.get(f"rerank-{cfg}")))
        syn_path = root / "results" / profile / "metrics" / "syntod.json"
        syn = json.loads(syn_path.read_text()) if syn_path.is_file() else {}
        for domain in P["syntod"]["domains"]:
            for method in P["syntod"]["methods"]:
                d = root / "models" / profile / "tod" / f"{domain}-{method}"
                if not d.is_dir():
                    log.info("push: %s not trained, skipped", d)
                    continue
                scored = syn.get(domain, {}).get(method, {})
                tod_metrics = {ts: v["strict"] for ts, v in sorted(scored.items()) if v.get("strict")} or None
                out.append(_adapter_upload(d, f"{namespace}/{prefix}-{profile}-tod-{domain}-{method}", tod_metrics))
    if syntod:
        S = P["syntod"]
        resources = Path(__file__).parent / "resources" / "syntod"
        for domain in S["domains"]:
            for method in S["methods"]:
                d = root / "data" / profile / "syntod" / domain / method
                if not d.is_dir():
                    log.info("push: %s not generated, skipped", d)
                    continue
                out.append(_syntod_upload(d, f"{namespace}/{prefix}-{profile}-syntod-{domain}-{method}",
                                          domain, method, S, resources))
    if not out:
        raise FileNotFoundError(f"push: nothing to upload for profile {profile} under {root} (run the workflow first)")
    return out


def describe(uploads: list[Upload]) -> str:
    """The dry-run text: one block per repo with every file and its size."""
    lines = []
    for up in uploads:
        lines.append(f"{up.repo_type} {up.repo_id}: {len(up.files)} files, {up.size():,} bytes"
                     + (f", checkpoints {', '.join(up.checkpoints)}" if up.checkpoints else ""))
        for path, src in sorted(up.files.items()):
            size = len(src) if isinstance(src, bytes) else src.stat().st_size
            lines.append(f"  {path}  ({size:,} bytes{'' if isinstance(src, bytes) else ', ' + str(src)})")
    return "\n".join(lines)


def specs(up: Upload, commit: str) -> list[str]:
    """The ``hf:`` specs of one pushed repo at ``commit``."""
    if up.repo_type == "dataset":
        return [f"hf:datasets/{up.repo_id}@{commit}"]
    return [f"hf:{up.repo_id}@{commit}", *(f"hf:{up.repo_id}@{commit}:{c}" for c in up.checkpoints)]


def push(uploads: list[Upload], *, private: bool = True, endpoint: str | None = None,
         message: str = "irrepro push") -> list[str]:
    """Create each repo (if needed) and upload its files in one commit; returns the specs.
    The token is read from ``HF_TOKEN`` only; without it nothing is sent."""
    from huggingface_hub import CommitOperationAdd, HfApi

    token = os.environ.get("HF_TOKEN")
    if not token:
        raise PermissionError("push: set HF_TOKEN in the environment (a write token); it is never read from "
                              "arguments or files. Use --dry-run to see the plan without a token.")
    api = HfApi(endpoint=endpoint, token=token)
    out = []
    for up in uploads:
        api.create_repo(up.repo_id, repo_type=up.repo_type, private=private, exist_ok=True)
        ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=src if isinstance(src, bytes) else str(src))
               for p, src in sorted(up.files.items())]
        info = api.create_commit(up.repo_id, ops, commit_message=message, repo_type=up.repo_type)
        log.info("push: %s -> commit %s", up.repo_id, info.oid)
        out += specs(up, info.oid)
    return out
