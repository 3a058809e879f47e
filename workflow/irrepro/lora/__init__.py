"""The LoRA training harness shared by the reranker (:mod:`irrepro.rerank.train`) and the SynTOD
TOD model (:mod:`irrepro.syntod.tod`); each trainer keeps only its data, model head and loss.

* :mod:`~irrepro.lora.run`: the run directory (``<out>.partial`` published onto ``out``, the
  settings recorded and checked on resume, the final adapter and ``train_summary.json``);
* :mod:`~irrepro.lora.checkpoints`: checkpoint listing, completeness, the resume point, pruning
  of the resume state, byte-stable ``adapter_config.json``;
* :mod:`~irrepro.lora.trainer`: ``TrainingArguments`` across transformers versions, the shared
  recipe, the pruning callback and the non-finite-guarded ``Trainer``;
* :mod:`~irrepro.lora.model`: Hugging Face token, tokenizer pad rule, dtype, activation
  checkpointing, the LoRA adapter with fp32 trainables;
* :mod:`~irrepro.lora.precision`: base dtype, fp32 trainables, the non-finite guard;
* :mod:`~irrepro.lora.config`: the knobs both trainers take (``LoraRecipe``, which each trainer's
  recipe extends) and the trainers' settings built from params ``finetune`` and ``syntod.finetune``.

Nothing heavy is imported here: torch and transformers load inside the functions that need them
(:mod:`~irrepro.lora.precision` imports torch at module level: import it lazily).
"""
