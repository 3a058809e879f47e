"""irrepro: reproducible LoRA-reranker and SynTOD studies (package behind the Snakemake/DVC workflow)."""

__version__ = "0.1.0"
