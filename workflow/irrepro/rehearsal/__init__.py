"""Fixtures of the `rehearsal` scale: the paper route's inputs, tiny, offline.

* :mod:`.hubcache`: tiny models of the paper's hub repos, saved as the hub serves the real ones
  (dtype, sharded safetensors + index, the real config fields and tokenizers) in a Hugging Face
  hub cache under fixed revisions, so ``from_pretrained(repo_id, revision=...)`` works with
  ``HF_HUB_OFFLINE=1``.
* :mod:`.upstream`: small files in the exact formats and mirror paths of the paper's downloads
  (MS MARCO ``collection.tar.gz``, the Tevatron training groups and titled corpus, dev-small
  subsets, SynTOD training catalogs) plus the checksum overlay the download stage needs for them.
"""
