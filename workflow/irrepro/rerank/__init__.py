"""Study 1: LoRA fine-tuned LLM rerankers (Tevatron's RankLLaMA recipe)."""
