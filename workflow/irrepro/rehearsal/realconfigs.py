"""The paper's hub repos as the hub serves them: config fields, dtypes, tokenizer settings.

Each :class:`RepoSpec` holds the field set and values of the repo's published ``config.json``,
``generation_config.json`` and tokenizer config, written down from the hub's files as the
project knows them: no machine here can fetch them, so these values are NOT verified against
the hub here (a paper run loads the real files; compare its logged configs with these). :func:`tiny_config` keeps every field and
replaces only the size fields (hidden size, layers, heads, MLP width), keeping the
query-to-key/value head ratio; ``vocab_size``, positions, RoPE, ids, dtype and
``tie_word_embeddings`` stay the real values, so the tiny model's embedding matrix has the real
row count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The rehearsal's size fields (every other field is the real checkpoint's).
TINY = {"hidden": 32, "layers": 2, "heads": 4, "intermediate": 64}


@dataclass(frozen=True)
class RepoSpec:
    repo_id: str
    family: str  # llama | mistral | pythia (irrepro.rerank.targets families)
    tokenizer: str  # llama3 | sentencepiece | neox
    config: dict
    generation_config: dict
    tokenizer_config: dict
    special_tokens_map: dict = field(default_factory=dict)
    tokenizer_model: bool = False  # the repo ships the SentencePiece tokenizer.model too

    @property
    def dtype(self) -> str:
        return self.config["torch_dtype"]


LLAMA31 = RepoSpec(
    repo_id="meta-llama/Llama-3.1-8B", family="llama", tokenizer="llama3",
    config={
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
        "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
        "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
        "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256,
    },
    generation_config={"bos_token_id": 128000, "do_sample": True, "eos_token_id": 128001, "temperature": 0.6,
                       "top_p": 0.9, "transformers_version": "4.43.0.dev0"},
    tokenizer_config={"bos_token": "<|begin_of_text|>", "clean_up_tokenization_spaces": True,
                      "eos_token": "<|end_of_text|>", "model_input_names": ["input_ids", "attention_mask"],
                      "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"},
    special_tokens_map={"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
)

MISTRAL = RepoSpec(
    repo_id="mistralai/Mistral-7B-v0.1", family="mistral", tokenizer="sentencepiece", tokenizer_model=True,
    config={
        "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
        "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "sliding_window": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000,
    },
    generation_config={"bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.34.0.dev0"},
    tokenizer_config={"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                      "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": True,
                      "model_max_length": 1000000000000000019884624838656, "pad_token": None, "sp_model_kwargs": {},
                      "spaces_between_special_tokens": False, "tokenizer_class": "LlamaTokenizer",
                      "unk_token": "<unk>", "use_default_system_prompt": False},
    special_tokens_map={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
)

PYTHIA = RepoSpec(
    repo_id="EleutherAI/pythia-6.9b", family="pythia", tokenizer="neox",
    config={
        "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 16384, "layer_norm_eps": 1e-05,
        "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": 32,
        "num_hidden_layers": 32, "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False,
        "torch_dtype": "float16", "transformers_version": "4.24.0", "use_cache": True,
        "use_parallel_residual": True, "vocab_size": 50432,
    },
    generation_config={"bos_token_id": 0, "eos_token_id": 0, "transformers_version": "4.24.0"},
    tokenizer_config={"add_prefix_space": False, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                      "name_or_path": "EleutherAI/gpt-neox-20b", "tokenizer_class": "GPTNeoXTokenizer",
                      "unk_token": "<|endoftext|>"},
    special_tokens_map={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
)

# The SynTOD TOD base (params syntod.base): Llama-2 layout, stored in fp16 on the hub. Its
# SentencePiece model is not on PyPI: the tokenizer files carry Mistral-7B-v0.1's SentencePiece
# model (mistral_common's tokenizer.model.v1), which has the same layout (32,000 pieces, BPE with
# byte fallback, <unk>/<s>/</s> = 0/1/2) but a different vocabulary.
LLAMA2 = RepoSpec(
    repo_id="meta-llama/Llama-2-7b-hf", family="llama", tokenizer="sentencepiece", tokenizer_model=True,
    config={
        "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008,
        "max_position_embeddings": 4096, "model_type": "llama", "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 32, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": None, "tie_word_embeddings": False, "torch_dtype": "float16",
        "transformers_version": "4.31.0.dev0", "use_cache": True, "vocab_size": 32000,
    },
    generation_config={"bos_token_id": 1, "do_sample": True, "eos_token_id": 2, "pad_token_id": 0,
                       "temperature": 0.6, "max_length": 4096, "top_p": 0.9,
                       "transformers_version": "4.31.0.dev0"},
    tokenizer_config={"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                      "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": False,
                      "model_max_length": 1000000000000000019884624838656, "pad_token": None,
                      "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
                      "unk_token": "<unk>"},
    special_tokens_map={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
)

SPECS = {s.repo_id: s for s in (LLAMA31, MISTRAL, PYTHIA, LLAMA2)}


def tiny_config(spec: RepoSpec, hidden: int = TINY["hidden"], layers: int = TINY["layers"],
                heads: int = TINY["heads"], intermediate: int = TINY["intermediate"]) -> dict:
    """The real ``config.json`` fields with the size fields replaced (KV heads keep the real
    query/KV ratio, at least 1)."""
    real = spec.config
    cfg = dict(real)
    cfg.update(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate)
    if "num_key_value_heads" in real:
        ratio = real["num_attention_heads"] // real["num_key_value_heads"]
        cfg["num_key_value_heads"] = max(1, heads // ratio)
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not a multiple of heads {heads}")
    return cfg
