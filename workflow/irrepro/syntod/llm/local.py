"""A local causal LM directory behind the backend interface (greedy, or sampled with a seed)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from .base import Backend

log = logging.getLogger("irrepro.syntod.llm")


def build_prompt(tokenizer, messages: list[dict]) -> str:
    """The tokenizer's chat template if it has one, else plain ``role: content`` lines."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def _dir_fingerprint(path: Path) -> str:
    """sha256 over the names and contents of a model directory's files (the weights' identity)."""
    from ...utils import sha256_file

    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


class TransformersBackend(Backend):
    """A local causal LM (``AutoModelForCausalLM`` + tokenizer) loaded on first use.

    Greedy at temperature 0, otherwise sampled with ``torch`` seeded per call (the global RNG
    state is restored afterwards). ``json_mode`` cannot be enforced on a local model; callers
    use ``chat_json`` which repairs or re-asks. Prompts longer than the model's context minus
    ``max_tokens`` are cut from the left (``truncate="left"``, logged) or rejected ("error").
    """

    name = "transformers"

    def __init__(self, model_dir: str | os.PathLike, *, model_name: str | None = None, device: str = "cpu",
                 dtype: str = "float32", truncate: str = "left", defaults: dict | None = None):
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a transformers model directory (no config.json)")
        if truncate not in ("left", "error"):
            raise ValueError(f"truncate must be 'left' or 'error', got {truncate!r}")
        super().__init__(model_name or path.resolve().name, defaults)
        self.model_dir = path
        self.device = device
        self.dtype = dtype
        self.truncate = truncate
        self.fingerprint = _dir_fingerprint(path)
        self.truncated = 0
        self._tok = self._lm = None

    def _load(self):
        if self._lm is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.model_dir)
            self._lm = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=getattr(torch, self.dtype))
            self._lm.to(self.device).eval()
            log.info("transformers: loaded %s (%s, %s)", self.model_dir, self.device, self.dtype)
        return self._tok, self._lm

    def cache_identity(self) -> dict:
        return {"backend": self.name, "model": self.model, "fingerprint": self.fingerprint}

    def describe(self) -> dict:
        return {"kind": self.name, "model": self.model, "model_dir": str(self.model_dir),
                "fingerprint": self.fingerprint, "device": self.device, "dtype": self.dtype,
                "defaults": dict(self.defaults)}

    def _chat(self, messages, *, temperature, max_tokens, seed, json_mode, meta) -> str:
        import torch

        tok, lm = self._load()
        templated = bool(getattr(tok, "chat_template", None))
        ids = tok(build_prompt(tok, messages), return_tensors="pt", add_special_tokens=not templated)["input_ids"]
        limit = getattr(lm.config, "max_position_embeddings", None)
        if limit is not None and ids.shape[1] + max_tokens > limit:
            keep = limit - max_tokens
            if self.truncate == "error" or keep < 1:
                raise ValueError(f"{self.model}: prompt of {ids.shape[1]} tokens + max_tokens {max_tokens} "
                                 f"exceeds the model's {limit} positions")
            log.warning("%s: prompt of %d tokens cut to its last %d", self.model, ids.shape[1], keep)
            ids = ids[:, -keep:]
            self.truncated += 1
        ids = ids.to(self.device)
        gen = {"max_new_tokens": max_tokens, "do_sample": temperature > 0,
               "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id}
        if temperature > 0:
            gen["temperature"] = float(temperature)
        with torch.random.fork_rng(devices=[] if self.device == "cpu" else None), torch.no_grad():
            torch.manual_seed(seed)
            out = lm.generate(ids, attention_mask=torch.ones_like(ids), **gen)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()

