import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "workflow"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} (the offline data mirror) is absent")
    return SHARED_DATA


@pytest.fixture
def no_network(monkeypatch):
    """Point every proxy at a closed loopback port so an accidental download fails fast."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    return os.environ


TINY_TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "how long is the life cycle of a flea",
    "a flea can live up to a year depending on its hosts",
    "what is the capital of france paris is the capital",
    "machine learning models rank passages for queries",
    "lorem ipsum dolor sit amet consectetur adipiscing elit",
] * 20


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory):
    """Factory: a randomly initialised tiny base model directory (model + tokenizer) per family."""
    from irrepro.tiny import init_model, train_tokenizer

    cache = {}

    def make(family: str):
        if family not in cache:
            out = tmp_path_factory.mktemp(f"tiny-{family}")
            tok = train_tokenizer(TINY_TEXTS, vocab_size=300)
            init_model(family, tok, seed=0, hidden=32, layers=2, heads=4, intermediate=64).save_pretrained(out)
            tok.save_pretrained(out)
            cache[family] = out
        return cache[family]

    return make
