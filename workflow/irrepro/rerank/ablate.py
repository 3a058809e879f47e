"""Ablations of one trained LoRA adapter: switch its update off in parts of the model, rerank again.

The base model is loaded **once** and the adapter attached **once**
(:class:`~irrepro.rerank.evaluate.AdapterSwitcher`, which verifies the LoRA matrices and
the trained ``score`` head against the adapter file). Every *variant* is then made in
memory by switching the LoRA update off in a set of LoRA layers with peft's public
per-layer switch ``BaseTunerLayer.enable_adapters(False)`` and switching it back on
afterwards (:func:`lora_disabled`, a context manager that restores the exact previous
state even on error). A disabled LoRA layer computes ``base_layer(x)``, i.e. the frozen
projection; the score head is a peft *module to save*, not a LoRA layer, so it stays the
adapter's trained head in every variant.

Variants (:func:`enumerate_variants`), for an adapter whose LoRA layers sit at
``(layer index, projection)`` sites:

========================  =============================================================
``full``                  nothing off (the adapter as trained)
``head_only``             every LoRA layer off: the base model plus the trained head
``layer-{i}``             every projection of transformer layer ``i`` off
``band-{i}-{j}``          layers ``i..j`` off (contiguous, non-overlapping bands)
``proj-{name}``           that projection off in every layer
``mha`` / ``mlp``         all attention / all feed-forward projections off
``cell-{i}-{name}``       one projection of one layer off (only with ``cells``)
========================  =============================================================

A variant that would switch off nothing the adapter has (the MLP projections of an
attention-only adapter) is skipped; a variant that switches off exactly the same LoRA
layers as an earlier one (``mha`` = ``head_only`` for an attention-only adapter) is scored
once and written under both names, marked ``same_as`` the first.

:func:`sweep` reranks each dataset's first-stage top-``depth`` candidates (tokenised once
per dataset) with every variant and writes ``out_dir/{dataset}/{variant}.trec`` plus a
``{variant}.meta.json`` sidecar; a run whose sidecar matches (adapter weights, candidates,
variant definition, scoring parameters) is reused on a rerun instead of recomputed.
Metrics are computed elsewhere, for all configs in one process
(:func:`irrepro.study1.ablation.ablate_collect`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from ..checks import check_adapter_dir
from ..progress import progress
from ..trec import read_run, read_topics, write_run
from ..sidecar import portable_path
from ..utils import atomic_path
from .evaluate import (
    AdapterSwitcher,
    _adapter_fingerprint,
    _as,
    _candidates_fingerprint,
    _read_meta,
    candidate_passages,
    check_active_adapter,
    head_labels_of,
    load_base,
    require_keys,
)
from .hub import resolve_adapter
from .score import _pad_token_id, candidates, encode_pairs, score_encoded, to_run
from .targets import MODULES, family_of

log = logging.getLogger("irrepro.rerank.ablate")

__all__ = ["LoraSite", "Variant", "lora_sites", "enumerate_variants", "lora_disabled", "sweep"]

PathLike = str | os.PathLike
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class LoraSite:
    """One peft LoRA layer: its module name in the PeftModel, transformer layer and projection."""

    module: str
    layer: int
    projection: str


@dataclass(frozen=True)
class Variant:
    """A set of LoRA layers to switch off, with the layers/projections it covers (sorted)."""

    name: str
    kind: str  # full | head_only | layer | band | proj | group | cell
    layers: tuple[int, ...]
    projections: tuple[str, ...]
    off: frozenset[str]  # LoRA module names switched off
    same_as: str | None = None  # an earlier variant that switches off the same set

    def describe(self) -> dict:
        """The JSON record of ``variants.json`` (no module names: they depend on peft's wrapping)."""
        return {"name": self.name, "kind": self.kind, "layers": list(self.layers),
                "projections": list(self.projections), "same_as": self.same_as}


# ----------------------------------------------------------------------------- enumeration
def _lora_layers(peft_model) -> dict[str, Any]:
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)}


def lora_sites(peft_model, family: str) -> list[LoraSite]:
    """Every LoRA layer of ``peft_model`` as a site, ordered by layer then the family's projection order.

    The layer index comes from the module path (``...model.layers.{i}...`` for Llama/Mistral,
    ``...gpt_neox.layers.{i}...`` for GPT-NeoX); the projection is the module's own name and
    must be one of the family's MHA/MLP projections (:data:`irrepro.rerank.targets.MODULES`).
    """
    order = MODULES[family]["mha"] + MODULES[family]["mlp"]
    sites = []
    for name in _lora_layers(peft_model):
        m = _LAYER.search(name)
        proj = name.rsplit(".", 1)[-1]
        if m is None:
            raise ValueError(f"LoRA module {name!r} is not inside a transformer layer ('layers.<i>.' in its path)")
        if proj not in order:
            raise ValueError(f"LoRA module {name!r}: projection {proj!r} is none of the {family} projections {order}")
        sites.append(LoraSite(name, int(m.group(1)), proj))
    if not sites:
        raise ValueError("the model has no LoRA layers: nothing to ablate")
    return sorted(sites, key=lambda s: (s.layer, order.index(s.projection)))


def enumerate_variants(sites: Iterable[LoraSite], family: str, n_layers: int, band_size: int,
                       cells: bool = True) -> list[Variant]:
    """The ablation variants of an adapter with LoRA at ``sites`` (see the module docstring).

    Order: full, head_only, layers, bands, projections, mha, mlp, cells. ``n_layers`` is the
    model's number of transformer layers (bands are aligned to it: ``0..b-1``, ``b..2b-1``,
    ..., the last one possibly shorter).
    """
    if isinstance(band_size, bool) or not isinstance(band_size, int) or band_size < 1:
        raise ValueError(f"band_size must be an integer >= 1, got {band_size!r}")
    sites = list(sites)
    mha, mlp = MODULES[family]["mha"], MODULES[family]["mlp"]
    order = mha + mlp
    every = range(n_layers)
    wanted: list[tuple[str, str, Iterable[int], Iterable[str]]] = [
        ("full", "full", (), ()),
        ("head_only", "head_only", every, order),
    ]
    wanted += [(f"layer-{i}", "layer", [i], order) for i in every]
    wanted += [(f"band-{i}-{min(i + band_size, n_layers) - 1}", "band", range(i, min(i + band_size, n_layers)), order)
               for i in range(0, n_layers, band_size)]
    wanted += [(f"proj-{p}", "proj", every, [p]) for p in order]
    wanted += [("mha", "group", every, mha), ("mlp", "group", every, mlp)]
    if cells:
        wanted += [(f"cell-{s.layer}-{s.projection}", "cell", [s.layer], [s.projection]) for s in sites]

    variants: list[Variant] = []
    first_with: dict[frozenset[str], str] = {}
    for name, kind, layers, projections in wanted:
        layers, projections = set(layers), set(projections)
        hit = [s for s in sites if s.layer in layers and s.projection in projections]
        if not hit and kind != "full":
            log.debug("variant %s skipped: the adapter has no LoRA layer there", name)
            continue
        off = frozenset(s.module for s in hit)
        variants.append(Variant(
            name, kind,
            tuple(sorted({s.layer for s in hit})),
            tuple(p for p in order if any(s.projection == p for s in hit)),
            off,
            first_with.get(off),
        ))
        first_with.setdefault(off, name)
    return variants


# ----------------------------------------------------------------------------- toggling
@contextlib.contextmanager
def lora_disabled(peft_model, modules: Iterable[str]) -> Iterator[None]:
    """Switch the LoRA update off in the LoRA layers named ``modules`` for the ``with`` block.

    Uses peft's per-layer ``enable_adapters(False)``; on exit (also on error) each layer
    gets its previous enabled state back and every parameter its previous ``requires_grad``
    (``enable_adapters(True)`` would otherwise mark the active adapter trainable). Merged
    layers are refused: switching them off would not remove their (merged) update.
    """
    layers = _lora_layers(peft_model)
    modules = sorted(set(modules))
    unknown = [m for m in modules if m not in layers]
    if unknown:
        raise KeyError(f"not LoRA layers of the model: {unknown[:5]}")
    merged = [m for m in modules if layers[m].merged]
    if merged:
        raise ValueError(f"LoRA layers {merged[:5]} are merged into their base weights: unmerge before ablating")
    saved = [(layers[m], layers[m].disable_adapters, [(p, p.requires_grad) for p in layers[m].parameters()])
             for m in modules]
    try:
        for layer, _, _ in saved:
            layer.enable_adapters(False)
        yield
    finally:
        for layer, was_disabled, grads in saved:
            layer.enable_adapters(not was_disabled)
            for p, requires_grad in grads:
                p.requires_grad_(requires_grad)


# ----------------------------------------------------------------------------- sweep
def _prune(out_dir: Path, datasets: Iterable[str], names: set[str]) -> None:
    """Remove runs of variants or datasets a previous sweep wrote but this one does not."""
    keep_ds = set(datasets)
    for folder in (p for p in out_dir.iterdir() if p.is_dir()) if out_dir.is_dir() else ():
        for f in folder.iterdir():
            stem = f.name.removesuffix(".meta.json").removesuffix(".trec")
            if folder.name not in keep_ds or stem not in names:
                log.info("removing stale %s", f)
                f.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


def sweep(
    base: PathLike,
    adapter: PathLike,
    datasets: Mapping[str, Mapping[str, Any]],
    passages: Mapping[str, Any] | PathLike,
    depth: int,
    out_dir: PathLike,
    *,
    band_size: int,
    cells: bool = True,
    batch_size: int = 64,
    qmax: int = 32,
    pmax: int = 164,
    dtype: Any = "auto",
    device: str | None = None,
    resume: bool = True,
    label: str = "ablate",
) -> dict:
    """Rerank every dataset with every ablation variant of one adapter; write the TREC runs.

    ``adapter``: a local adapter directory or ``hf:org/name@revision[:subfolder]``.
    ``datasets``: ``{name: {"topics", "run"}}`` (files or already-read dicts; ``run`` is the
    first-stage run whose top-``depth`` per query is reranked). ``passages``: ``{docid: text}``
    or a JsonCollection JSONL path. Writes ``out_dir/{dataset}/{variant}.trec`` and
    ``{variant}.meta.json`` for every variant (aliases included) and removes other runs in
    ``out_dir``. Returns ``{"family", "adapter", "variants": [Variant.describe(), ...]}``.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    if not datasets:
        raise ValueError("no datasets to ablate on")
    require_keys(datasets, ("topics", "run"))
    if not str(adapter).startswith("hf:"):  # a truncated weights file, named before any work
        check_adapter_dir(adapter)
    ds = {name: {"topics": _as(spec["topics"], read_topics), "run": _as(spec["run"], read_run)}
          for name, spec in datasets.items()}
    passages = candidate_passages(passages, [x["run"] for x in ds.values()], depth)
    path = resolve_adapter(adapter)
    adapter_fp = _adapter_fingerprint(path)

    t0 = time.perf_counter()
    model, tokenizer = load_base(base, device=device, dtype=dtype, num_labels=head_labels_of(path))
    switcher = AdapterSwitcher(model)
    pm = switcher.attach(path)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    family = family_of(cfg.model_type)
    sites = lora_sites(pm, family)
    variants = enumerate_variants(sites, family, cfg.num_hidden_layers, band_size, cells)
    distinct = [v for v in variants if v.same_as is None]
    log.info("loaded %s + adapter %s in %.1fs: %s, %d LoRA layers in %d of %d transformer layers; "
             "%d variants (%d distinct)", base, adapter, time.perf_counter() - t0, family, len(sites),
             len({s.layer for s in sites}), cfg.num_hidden_layers, len(variants), len(distinct))
    pad = _pad_token_id(pm, tokenizer)

    for name, x in ds.items():
        keys, pairs = candidates(x["run"], x["topics"], passages, depth)
        encoded = encode_pairs(tokenizer, pairs, qmax=qmax, pmax=pmax)
        common = {"base": portable_path(base), "adapter_sha256": adapter_fp,
                  "candidates_sha256": _candidates_fingerprint(keys, encoded),
                  "depth": depth, "qmax": qmax, "pmax": pmax, "dtype": str(dtype)}
        log.info("%s: %d queries, %d candidate pairs (depth %d)", name, len({q for q, _ in keys}), len(keys), depth)
        done_pairs, t_ds = 0, time.perf_counter()
        for k, v in enumerate(progress(distinct, desc=f"ablation variants on {name}", unit="variants"), 1):
            names = [v] + [w for w in variants if w.same_as == v.name]
            metas = {w.name: {"variant": w.name, "kind": w.kind, "off": sorted(w.off), **common} for w in names}
            files = {w.name: (out_dir / name / f"{w.name}.trec", out_dir / name / f"{w.name}.meta.json") for w in names}
            if resume and all(r.is_file() and _read_meta(m) == metas[n] for n, (r, m) in files.items()):
                log.info("%s: variant %d/%d %s: reusing %s", name, k, len(distinct), v.name, files[v.name][0])
                continue
            t0 = time.perf_counter()
            with lora_disabled(pm, v.off):
                scores = score_encoded(pm, encoded, pad, batch_size=batch_size, dtype=dtype, keys=keys,
                                       desc=f"{name} {v.name}")
            dt = time.perf_counter() - t0
            run = to_run(keys, scores)
            for n, (run_path, meta_path) in files.items():
                write_run(run, run_path, tag=f"{label}.{n}")
                with atomic_path(meta_path) as tmp:
                    tmp.write_text(json.dumps(metas[n], indent=1) + "\n", encoding="utf-8")
            done_pairs += len(keys)
            log.info("%s: variant %d/%d %s (%d LoRA layers off%s): %d pairs in %.1fs (%.0f pairs/s)",
                     name, k, len(distinct), v.name, len(v.off),
                     f"; also {', '.join(n for n in files if n != v.name)}" if len(files) > 1 else "",
                     len(keys), dt, len(keys) / max(dt, 1e-9))
        dt = time.perf_counter() - t_ds
        log.info("%s: scored %d pairs in %.1fs (%.0f pairs/s)", name, done_pairs, dt, done_pairs / max(dt, 1e-9))

    # every switch was restored: all LoRA layers on, the adapter (and its head) intact
    still_off = [n for n, m in _lora_layers(pm).items() if m.disable_adapters]
    if still_off:
        raise RuntimeError(f"LoRA layers left switched off after the sweep: {still_off[:5]}")
    check_active_adapter(pm, switcher.active, path)
    _prune(out_dir, ds, {v.name for v in variants})
    log.info("ablated %s: %d variants on %d datasets in %.1fs -> %s",
             adapter, len(variants), len(ds), time.perf_counter() - t_start, out_dir)
    return {"family": family, "adapter": str(adapter), "variants": [v.describe() for v in variants]}
