"""Evaluate many LoRA checkpoints of one base model: rerank, write TREC runs, score with ranx.

:func:`evaluate_checkpoints` loads the base ``AutoModelForSequenceClassification``
(``num_labels=1``, pad token chosen as in training, see :mod:`irrepro.rerank.model`) **once**
and attaches the adapters one after the other:

* the first with ``PeftModel.from_pretrained(base, path, adapter_name=...)``;
* each next one with ``load_adapter(path, adapter_name=...)``, ``set_adapter(name)`` and
  ``delete_adapter(previous)``, so at most two adapters are in memory at any time.

After every switch the live weights are checked against the adapter file
(:func:`check_active_adapter`): the LoRA matrices **and the score head**. The head is a
peft *module to save* (``ModulesToSaveWrapper``: one copy per adapter plus the original);
if it did not follow the switch, every checkpoint after the first would be scored with
another checkpoint's head, or with the base's randomly initialised one when an adapter
carries no head (peft then silently disables the wrapper). Either is a hard error here.
Each checkpoint is scored with its adapter merged into the base weights, as the authors'
inference does (:func:`merged_adapter`), and the base weights are restored exactly after it.

Candidate pairs are tokenised once per dataset and reused for every checkpoint. A dataset
may name the checkpoint ``steps`` it is reranked with (e.g. a large set only with the final
checkpoint); by default every checkpoint. Each scheduled
``(checkpoint, dataset)`` gives a TREC run ``runs_dir/{dataset}/step-{step}.trec`` (atomic),
and everything ends in one tidy TSV ``config step dataset metric value`` (atomic, written
once at the end). Resume: a run file whose sidecar ``step-{step}.meta.json`` matches the
adapter's weights, the candidates and the scoring parameters is read back instead of
recomputed (the base model is not even loaded when every run is reusable).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..evaluate import compare, comparison_table, evaluate_run
from ..trec import ranked, read_qrels, read_run, read_topics, write_run
from ..sidecar import portable_path
from ..utils import atomic_path
from .hub import head_labels as hub_head_labels
from .hub import resolve_adapter
from .score import _pad_token_id, candidates, encode_pairs, score_encoded, to_run
from ..checks import check_adapter_dir, loading
from ..jsonl import json_lines
from ..errors import InputError

log = logging.getLogger("irrepro.rerank.evaluate")

__all__ = [
    "load_base",
    "head_labels_of",
    "load_passages",
    "check_active_adapter",
    "AdapterSwitcher",
    "merged_adapter",
    "evaluate_checkpoints",
    "compare_to_bm25",
    "HeadNotSwitched",
    "TSV_COLUMNS",
]

PathLike = str | os.PathLike
TSV_COLUMNS = ("config", "step", "dataset", "metric", "value")


class HeadNotSwitched(RuntimeError):
    """The active adapter's weights (LoRA or the score head) are not the adapter file's."""


# ----------------------------------------------------------------------------- loading
def load_base(base: PathLike, *, device: str | None = None, dtype: Any = "auto", token: str | None = None,
              num_labels: int = 1):
    """``(model, tokenizer)``: ``base`` as ``AutoModelForSequenceClassification(num_labels)``, eval mode.

    The pad token is chosen exactly as :func:`irrepro.rerank.model.load_reranker` chooses it
    for training (and the embedding matrix resized in the same case), and written into the
    model config. Weights: ``"auto"``: fp32 on CPU, bf16 (fp16 without bf16 support) on
    CUDA; ``"float32"``/``"bfloat16"``/``"float16"`` (or a ``torch.dtype``) on any device.
    The ``score`` head is fp32 and computes in fp32 (:func:`irrepro.rerank.precision.fp32_head`),
    so an adapter's fp32 head loads and scores without bf16 rounding. The base's own head
    is randomly initialised (seeded); adapters bring theirs (``num_labels`` must match
    theirs: :func:`head_labels_of`).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    from ..lora.model import load_tokenizer
    from .precision import fp32_head
    from .score import _DTYPE_NAMES

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = str(dtype).removeprefix("torch.").lower()
    if name == "auto":
        on_cuda = torch.device(device).type == "cuda"
        weights = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if on_cuda else torch.float32
    elif name in _DTYPE_NAMES:
        weights = getattr(torch, _DTYPE_NAMES[name])
    else:
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'")
    tok_arg = token or os.environ.get("HF_TOKEN") or False
    with loading(base, "tokenizer"):
        tokenizer = load_tokenizer(base, tok_arg)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=int(num_labels), dtype=weights,
                                                               token=tok_arg)
    fp32_head(model.score)  # before peft copies it for each adapter
    if tokenizer.pad_token_id >= model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    text_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


def head_labels_of(adapter_dir: PathLike, head: str = "score") -> int:
    """How many logits the ``head`` saved in a peft adapter has (rows of its weight): 1 for
    RankLLaMA-style adapters, 2 for the authors' training build (``finetune.head_labels``).
    An adapter without the head gives 1 (:func:`check_active_adapter` rejects it later)."""
    from peft.utils import load_peft_weights

    for key, value in load_peft_weights(str(adapter_dir), device="cpu").items():
        if key.endswith(f"{head}.weight") and value.ndim == 2:
            return int(value.shape[0])
    return 1


def load_passages(path: PathLike, docids: set[str] | None = None) -> dict[str, Any]:
    """Reranker passages from a JsonCollection JSONL (as the corpus stage writes it); only
    ``docids`` if given (streams the 8.8M-passage corpus).

    A line ``{"id", "contents"}`` gives ``{docid: contents}``. A line that also carries a
    ``"title"`` (the paper corpus, titled like the training data) gives
    ``{docid: {"title": title, "text": text}}`` where ``text`` is the line's ``"text"`` if it
    has one (the titled corpus's own text, where it differs from the indexed ``contents``)
    and ``contents`` otherwise.
    """
    out: dict[str, Any] = {}
    first: dict[str, int] = {}
    for lineno, rec in json_lines(path):
        try:
            docid, text = str(rec["id"]), rec["contents"]
        except KeyError as exc:
            raise InputError(f"expected keys 'id' and 'contents', missing {exc}", file=path, line=lineno) from None
        if docid in first:  # the later text would win silently and reach training / scoring
            raise InputError(f"duplicate passage id {docid!r}", file=path, line=lineno,
                             hint=f"first on line {first[docid]}")
        first[docid] = lineno
        if docids is None or docid in docids:
            if "title" in rec:
                out[docid] = {"title": rec["title"] or "", "text": rec.get("text", text)}
            else:
                out[docid] = text
    return out


# ----------------------------------------------------------------------------- adapter switching
def _live_name(key: str, adapter: str, wrapped: set[str]) -> str | None:
    """Name of the live parameter that file key ``key`` (peft's saved name) loads into."""
    parts = key.split(".")
    for i, p in enumerate(parts):
        if p.startswith("lora_"):  # ...q_proj.lora_A.weight -> ...q_proj.lora_A.{adapter}.weight
            return ".".join(parts[: i + 1] + [adapter] + parts[i + 1 :])
    module = ".".join(parts[:-1])
    if module in wrapped:  # ...score.weight -> ...score.modules_to_save.{adapter}.weight
        return f"{module}.modules_to_save.{adapter}.{parts[-1]}"
    return None


def check_active_adapter(peft_model, adapter_name: str, adapter_dir: PathLike, head: str = "score") -> None:
    """Raise :class:`HeadNotSwitched` unless ``adapter_name`` is active and the live LoRA and
    head weights equal those in ``adapter_dir`` (the head must be in the file)."""
    import torch
    from peft.utils import load_peft_weights
    from peft.utils.other import ModulesToSaveWrapper

    if peft_model.active_adapter != adapter_name:
        raise HeadNotSwitched(f"active adapter is {peft_model.active_adapter!r}, expected {adapter_name!r}")
    wrappers = {n: m for n, m in peft_model.named_modules() if isinstance(m, ModulesToSaveWrapper)}
    saved = load_peft_weights(str(adapter_dir), device="cpu")
    live = dict(peft_model.named_parameters())
    heads_seen = 0
    for key, value in saved.items():
        name = _live_name(key, adapter_name, set(wrappers))
        if name is None:
            log.debug("adapter %s: not checking non-LoRA, non-head key %s", adapter_dir, key)
            continue
        if name not in live:
            raise HeadNotSwitched(f"adapter {adapter_dir}: weight {key} has no live counterpart {name}")
        p = live[name].detach()
        if not torch.equal(p.cpu().float(), value.to(p.dtype).float()):
            raise HeadNotSwitched(f"adapter {adapter_dir}: live {name} differs from the file's {key}")
        module = name.rsplit(".modules_to_save.", 1)[0] if ".modules_to_save." in name else None
        if module is not None:
            w = wrappers[module]
            if w.disable_adapters or list(w.active_adapters) != [adapter_name]:
                raise HeadNotSwitched(
                    f"module to save {module} is not using adapter {adapter_name!r} (active: {w.active_adapters}, "
                    f"disabled: {w.disable_adapters})"
                )
            if module.rsplit(".", 1)[-1] == head:
                heads_seen += 1
    if not heads_seen:
        raise HeadNotSwitched(
            f"adapter {adapter_dir} carries no trained {head!r} head (no modules_to_save weights): scoring would "
            "use the base model's randomly initialised head; train with modules_to_save=['score']"
        )


class AdapterSwitcher:
    """Attach adapters to one base model in turn, keeping at most two in memory."""

    def __init__(self, base_model):
        self.base_model = base_model
        self.model = None  # the PeftModel, once the first adapter is attached
        self.active: str | None = None
        self._count = 0

    def attach(self, adapter_dir: PathLike):
        """Load ``adapter_dir``, make it the active adapter, drop the previous one, verify; return the model."""
        from peft import PeftModel

        name = f"ckpt{self._count}"
        self._count += 1
        if self.model is None:
            self.model = PeftModel.from_pretrained(self.base_model, str(adapter_dir), adapter_name=name, is_trainable=False)
        else:
            self.model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
            self.model.set_adapter(name)
            self.model.delete_adapter(self.active)
            gc.collect()
        self.active = name
        self.model.eval()
        check_active_adapter(self.model, name, adapter_dir)
        return self.model


@contextlib.contextmanager
def merged_adapter(peft_model):
    """Inside the block, the active adapter is merged into the base weights, as the authors'
    inference (``merge_and_unload`` before scoring); afterwards the base weights are exactly
    those before it.

    The merge is peft's own (``merge_adapter``: ``W += delta`` in the base weight's dtype, what
    ``merge_and_unload`` runs). The adapted weights are copied to host memory first and copied
    back at the end rather than recovered by unmerging, because ``W + delta - delta`` does not
    round back to ``W`` in bf16, and the next checkpoint must start from the same base whether or
    not earlier ones were scored (resume). The copy costs host memory (~14 GB for an 8B model with
    every projection adapted, bf16), not GPU memory.
    """
    import torch
    from peft.tuners.lora import LoraLayer

    # the layers the active adapter adapts (a previous checkpoint may have left wrappers elsewhere)
    layers = [m for m in peft_model.modules()
              if isinstance(m, LoraLayer) and any(a in m.lora_A for a in m.active_adapters)]
    kept = [(w, w.detach().to("cpu", copy=True)) for w in (layer.get_base_layer().weight for layer in layers)]
    peft_model.merge_adapter()
    try:
        yield peft_model
    finally:
        for layer in layers:  # peft's bookkeeping (merged_adapters); the weights are put back next
            if layer.merged:
                layer.unmerge()
        with torch.no_grad():
            for weight, original in kept:
                weight.copy_(original)


# ----------------------------------------------------------------------------- resume fingerprints
def _sha256_files(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _adapter_fingerprint(adapter_dir: Path) -> str:
    files = [adapter_dir / "adapter_config.json"] + [
        adapter_dir / n for n in ("adapter_model.safetensors", "adapter_model.bin") if (adapter_dir / n).is_file()
    ]
    return _sha256_files(files)


def _candidates_fingerprint(keys, encoded) -> str:
    h = hashlib.sha256()
    for (qid, docid), ids in zip(keys, encoded):
        h.update(f"{qid}\t{docid}\t{','.join(map(str, ids))}\n".encode())
    return h.hexdigest()


def _read_meta(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- main entry
def _as(value, reader):
    return reader(value) if isinstance(value, (str, os.PathLike)) else value


def require_keys(datasets: Mapping[str, Mapping[str, Any]], keys: Sequence[str]) -> None:
    """Every dataset spec has ``keys`` (a KeyError naming the dataset and the missing ones)."""
    for name, spec in datasets.items():
        missing = [k for k in keys if k not in spec]
        if missing:
            raise KeyError(f"dataset {name!r}: missing {missing}")


def candidate_passages(passages: Mapping[str, Any] | PathLike, runs: Sequence[Mapping[str, Mapping[str, float]]],
                       depth: int) -> Mapping[str, Any]:
    """``passages`` as given, or read from a JsonCollection path: only the passages of the
    runs' top-``depth`` (streams the 8.8M-passage corpus)."""
    if not isinstance(passages, (str, os.PathLike)):
        return passages
    wanted = {d for run in runs for q in run for d, _ in ranked(run[q])[:depth]}
    return load_passages(passages, wanted)


def _tag(label: str, step: int) -> str:
    return re.sub(r"\s+", "_", f"{label}.step-{step}")


def evaluate_checkpoints(
    base: PathLike,
    adapters: Sequence[tuple[str, int, PathLike]],
    datasets: Mapping[str, Mapping[str, Any]],
    passages: Mapping[str, Any] | PathLike,
    depth: int,
    metrics: Sequence[str],
    runs_dir: PathLike,
    out_tsv: PathLike,
    batch_size: int = 64,
    *,
    qmax: int = 32,
    pmax: int = 164,
    dtype: Any = "auto",
    device: str | None = None,
    resume: bool = True,
) -> list[dict]:
    """Rerank every dataset with every adapter and evaluate; return the tidy rows.

    ``adapters``: ``[(label, step, adapter)]``, ``adapter`` a local directory or a hub spec
    ``hf:org/name@revision[:subfolder]`` (:func:`irrepro.rerank.hub.resolve_adapter`); steps
    must be distinct (they name the run files). ``datasets``: ``{name: {"topics", "qrels",
    "run", "rel_level"}}`` with topics/qrels/run as file paths or already-read dicts
    (``run`` is the first-stage run; its top-``depth`` per query is reranked); an optional
    ``"metrics"`` overrides ``metrics`` for that dataset; an optional ``"steps"`` (a
    collection of adapter steps, each one of ``adapters``' steps) limits that dataset to
    those checkpoints (default: all). ``passages``: ``{docid: text}`` or a JsonCollection
    JSONL path.

    Writes ``runs_dir/{dataset}/step-{step}.trec`` (+ ``.meta.json`` sidecar for resume) for
    every scheduled (adapter, dataset) and ``out_tsv`` (columns ``config step dataset metric
    value``, one row per scheduled adapter x dataset x metric, in input order). Returns the
    rows as dicts with those keys. An adapter no dataset is scheduled for is not loaded.
    """
    t_start = time.perf_counter()
    runs_dir = Path(runs_dir)
    steps = [int(s) for _, s, _ in adapters]
    dup = sorted({s for s in steps if steps.count(s) > 1})
    if dup:
        raise ValueError(f"duplicate checkpoint steps {dup}: run files are named by step; use one runs_dir per config")
    if not adapters:
        raise ValueError("no adapters to evaluate")
    for _, _, spec in adapters:  # a truncated weights file or config, named before any work
        if not str(spec).startswith("hf:"):
            check_adapter_dir(spec)

    # ---- data, read once
    ds: dict[str, dict] = {}
    require_keys(datasets, ("topics", "qrels", "run", "rel_level"))
    for name, spec in datasets.items():
        first = _as(spec["run"], read_run)
        ds[name] = {
            "topics": _as(spec["topics"], read_topics),
            "qrels": _as(spec["qrels"], read_qrels),
            "run": first,
            "rel_level": spec["rel_level"],
            "metrics": list(spec.get("metrics", metrics or [])),
            "steps": set(steps) if spec.get("steps") is None else {int(s) for s in spec["steps"]},
        }
        unknown = sorted(ds[name]["steps"] - set(steps))
        if unknown:
            raise ValueError(f"dataset {name!r}: steps {unknown} are not among the adapters' steps {sorted(steps)}")
    ds = {name: x for name, x in ds.items() if x["steps"]}  # a dataset scheduled for no checkpoint
    passages = candidate_passages(passages, [x["run"] for x in ds.values()], depth)

    # ---- adapters: resolve (hub specs -> cache dirs) and fingerprint
    resolved = []
    for label, step, spec in adapters:
        path = resolve_adapter(spec)
        resolved.append((str(label), int(step), path, _adapter_fingerprint(path)))
    # every head must be one that can be scored (1 or 2 rows, else refused here, before any model
    # is loaded), and all alike: the base is loaded once with that many labels
    heads = {str(path): hub_head_labels(path) for _, _, path, _ in resolved}
    if len({n for n in heads.values() if n is not None}) > 1:
        raise ValueError(f"adapters with different score heads cannot share one base model: {heads}")

    state: dict[str, Any] = {"model": None, "tokenizer": None, "switcher": None}

    def tokenizer():
        if state["tokenizer"] is None:
            from ..lora.model import load_tokenizer

            with loading(base, "tokenizer"):
                state["tokenizer"] = load_tokenizer(base, os.environ.get("HF_TOKEN") or False)
        return state["tokenizer"]

    def switcher():
        if state["switcher"] is None:
            t0 = time.perf_counter()
            model, tok = load_base(base, device=device, dtype=dtype, num_labels=head_labels_of(resolved[0][2]))
            state["tokenizer"] = tok
            state["switcher"] = AdapterSwitcher(model)
            log.info("loaded base %s in %.1fs", base, time.perf_counter() - t0)
        return state["switcher"]

    # ---- candidates, tokenised once per dataset
    for name, x in ds.items():
        keys, pairs = candidates(x["run"], x["topics"], passages, depth)
        x["keys"] = keys
        x["encoded"] = encode_pairs(tokenizer(), pairs, qmax=qmax, pmax=pmax)
        x["fingerprint"] = _candidates_fingerprint(keys, x["encoded"])
        log.info("%s: %d queries, %d candidate pairs (depth %d)", name, len({q for q, _ in keys}), len(keys), depth)

    rows: list[dict] = []
    for label, step, path, adapter_fp in resolved:
        model = None
        for name, x in ds.items():
            if step not in x["steps"]:
                continue
            run_path = runs_dir / name / f"step-{step}.trec"
            meta_path = runs_dir / name / f"step-{step}.meta.json"
            meta = {
                "config": label,
                "step": step,
                "base": portable_path(base),  # a hub snapshot as hf:<repo>@<commit>: the same on every machine
                "adapter_sha256": adapter_fp,
                "candidates_sha256": x["fingerprint"],
                "depth": depth,
                "qmax": qmax,
                "pmax": pmax,
                "dtype": str(dtype),
                "adapter": "merged",
            }
            run = None
            if resume and run_path.is_file():
                if _read_meta(meta_path) == meta:
                    run = read_run(run_path)
                    log.info("%s step %d on %s: reusing %s", label, step, name, run_path)
                else:
                    log.info("%s step %d on %s: %s exists but was made differently; recomputing", label, step, name, run_path)
            if run is None:
                if model is None:
                    t0 = time.perf_counter()
                    model = switcher().attach(path)
                    log.info("%s step %d: attached adapter %s in %.1fs", label, step, path, time.perf_counter() - t0)
                t0 = time.perf_counter()
                pad = _pad_token_id(model, tokenizer())
                with merged_adapter(model):
                    scores = score_encoded(model, x["encoded"], pad, batch_size=batch_size, dtype=dtype,
                                           keys=x["keys"], desc=f"{label} step {step} on {name}")
                dt = time.perf_counter() - t0
                run = to_run(x["keys"], scores)
                write_run(run, run_path, tag=_tag(label, step))
                with atomic_path(meta_path) as tmp:
                    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
                log.info("%s step %d on %s: scored %d pairs in %.1fs (%.0f pairs/s)",
                         label, step, name, len(x["keys"]), dt, len(x["keys"]) / max(dt, 1e-9))
            if not x["metrics"]:  # rerank only; the caller scores the runs (irrepro.study1.collect)
                continue
            agg, _ = evaluate_run(x["qrels"], run, x["metrics"], x["rel_level"])
            log.info("%s step %d on %s: %s", label, step, name, ", ".join(f"{m}={v:.4f}" for m, v in agg.items()))
            rows.extend({"config": label, "step": step, "dataset": name, "metric": m, "value": v} for m, v in agg.items())

    if out_tsv is None:
        log.info("reranked with %d checkpoints on %d datasets in %.1fs", len(resolved), len(ds), time.perf_counter() - t_start)
        return rows
    with atomic_path(out_tsv) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write("\t".join(TSV_COLUMNS) + "\n")
            for r in rows:
                if not math.isfinite(r["value"]):
                    raise ValueError(f"non-finite metric value in {r}")
                fh.write(f"{r['config']}\t{r['step']}\t{r['dataset']}\t{r['metric']}\t{r['value']:.6f}\n")
    log.info("evaluated %d checkpoints on %d datasets in %.1fs -> %s",
             len(resolved), len(ds), time.perf_counter() - t_start, out_tsv)
    return rows


# ----------------------------------------------------------------------------- significance
def compare_to_bm25(
    datasets: Mapping[str, Mapping[str, Any]],
    runs: Mapping[str, Mapping[str, PathLike | Mapping[str, Mapping[str, float]]]],
    metrics: Sequence[str],
    *,
    out_md: PathLike | None = None,
    out_json: PathLike | None = None,
    baseline: str = "bm25",
    depth: int | None = None,
    stat_test: str = "student",
    max_p: float = 0.05,
    correction: str = "bh",
    out_tex: PathLike | None = None,
) -> dict[str, dict]:
    """Paired significance tests of reranked runs against the first-stage run, per dataset.

    ``datasets`` as in :func:`evaluate_checkpoints` (its ``run`` is the baseline, cut to the
    top-``depth`` if given, i.e. the same candidate pool the reranker saw); ``runs`` is
    ``{run_name: {dataset: run file or dict}}``. Uses :func:`irrepro.evaluate.compare`
    (``stat_test`` "student" = paired t-test, "fisher" = randomisation test) with p-values
    adjusted by ``correction`` over all pairs of runs per dataset and metric
    (:mod:`irrepro.significance`; default Benjamini-Hochberg). Returns ``{dataset: compare
    result}``; writes a markdown table per dataset to ``out_md``, the same tables as LaTeX
    (ranx's ``to_latex``) to ``out_tex`` and the results to ``out_json`` if given.
    """
    from ..significance import comparison_latex

    results: dict[str, dict] = {}
    sections: list[str] = []
    latex: list[str] = []
    for name, spec in datasets.items():
        base_run = _as(spec["run"], read_run)
        if depth is not None:
            base_run = {q: dict(ranked(d)[:depth]) for q, d in base_run.items()}
        these = {baseline: base_run}
        for run_name, by_ds in runs.items():
            if name in by_ds:
                if run_name == baseline:
                    raise ValueError(f"run name {run_name!r} collides with the baseline's")
                these[run_name] = _as(by_ds[name], read_run)
        if len(these) < 2:
            continue
        res = compare(_as(spec["qrels"], read_qrels), these, list(spec.get("metrics", metrics)),
                      stat_test=stat_test, max_p=max_p, rel_level=spec["rel_level"], correction=correction)
        results[name] = res
        sections.append(f"## {name}\n\n{comparison_table(res)}")
        latex.append(comparison_latex(res, label=f"tab:significance-{name}", caption_prefix=f"Dataset {name}."))
    if out_md is not None:
        with atomic_path(out_md) as tmp:
            tmp.write_text("\n".join(sections), encoding="utf-8")
    if out_tex is not None:
        with atomic_path(out_tex) as tmp:
            tmp.write_text("\n".join(latex) or "% no comparison (no reranked runs)\n", encoding="utf-8")
    if out_json is not None:
        with atomic_path(out_json) as tmp:
            tmp.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return results
