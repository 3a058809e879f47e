"""Progress: rate-limited log lines off a terminal, nothing when disabled, the loop unchanged."""

from __future__ import annotations

import logging
import time

import pytest

from irrepro import progress as P


def test_not_a_tty_gives_rate_limited_log_lines(monkeypatch, caplog):
    monkeypatch.setenv("IRREPRO_PROGRESS_INTERVAL", "0.05")
    monkeypatch.setattr(P, "_stderr_is_tty", lambda: False)
    caplog.set_level(logging.INFO, logger="irrepro.progress")
    seen = [i for i in P.progress(_slow(range(12), 0.02), desc="scoring dl19", total=12, unit="batches")]
    assert seen == list(range(12))  # the loop is unchanged
    lines = [r.getMessage() for r in caplog.records if r.name == "irrepro.progress"]
    assert lines and all(line.startswith("scoring dl19: ") and "\r" not in line for line in lines)
    assert lines[-1].startswith("scoring dl19: 12/12 batches")  # the final state is logged once
    assert len(lines) == len(set(lines)) and len(lines) < 12  # rate-limited, no repeats
    with P.progress(desc="pairs", total=100, unit="pairs") as bar:  # manual counter
        for _ in range(4):
            time.sleep(0.03)
            bar.update(25)
    assert [r.getMessage() for r in caplog.records][-1].startswith("pairs: 100/100 pairs")


def test_short_loops_and_disabled_progress_stay_silent(monkeypatch, caplog):
    monkeypatch.setattr(P, "_stderr_is_tty", lambda: False)
    caplog.set_level(logging.INFO, logger="irrepro.progress")
    monkeypatch.setenv("IRREPRO_PROGRESS_INTERVAL", "30")
    assert list(P.progress(range(5), desc="quick")) == list(range(5))
    monkeypatch.setenv("IRREPRO_PROGRESS_INTERVAL", "0")
    monkeypatch.setenv("IRREPRO_PROGRESS", "0")
    assert list(P.progress(range(5), desc="off")) == list(range(5))
    assert not [r for r in caplog.records if r.name == "irrepro.progress"]


def test_bad_interval_is_named(monkeypatch):
    monkeypatch.setenv("IRREPRO_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ValueError, match="IRREPRO_PROGRESS_INTERVAL must be a number"):
        P.interval_s()


def _slow(it, dt):
    for x in it:
        time.sleep(dt)
        yield x


def test_scoring_reports_pairs(monkeypatch, caplog, tiny_base_dir):
    """The reranker's scoring loop (used by rerank-eval, ablate and irrepro rerank) reports pairs."""
    pytest.importorskip("torch")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from irrepro.rerank.score import score_pairs

    monkeypatch.setattr(P, "_stderr_is_tty", lambda: False)
    monkeypatch.setenv("IRREPRO_PROGRESS_INTERVAL", "0")
    caplog.set_level(logging.INFO, logger="irrepro.progress")
    base = tiny_base_dir("llama")
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).eval()
    tok = AutoTokenizer.from_pretrained(base)
    model.config.pad_token_id = tok.pad_token_id
    pairs = [("fox", "the quick brown fox"), ("flea", "a flea can live up to a year")] * 5
    with_bar = score_pairs(model, tok, pairs, batch_size=3)
    lines = [r.getMessage() for r in caplog.records if r.name == "irrepro.progress"]
    assert lines and lines[-1].startswith("scoring: 10/10 pairs")
    monkeypatch.setenv("IRREPRO_PROGRESS", "0")
    assert (score_pairs(model, tok, pairs, batch_size=3) == with_bar).all()  # progress changes nothing
