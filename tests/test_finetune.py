"""LoRA reranker fine-tuning: training groups, model set-up, LCE training, kill -9 resume."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from irrepro.rerank import data as D  # noqa: E402
from irrepro.rerank import targets as T  # noqa: E402
from irrepro.rerank.inputs import encode_pair  # noqa: E402

WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"

# words the conftest's tiny tokenizer has seen (so they are few tokens each)
WORDS = ("quick brown fox jumps lazy dog flea life cycle year hosts capital france paris machine "
         "learning models rank passages queries lorem ipsum dolor amet").split()


# training on one thread sets torch's thread count for the process: conftest gives it back
pytestmark = pytest.mark.usefixtures("restore_torch_threads")


def synthetic_groups(n_queries=8, n_pos=2, n_neg=6, seed=0):
    """Planted signal: a positive contains the query's words, a negative none of them.

    Query words come from one half of the vocabulary and filler words from the other,
    so the signal is visible even to a bag-of-words score: a random 32-dim model learns
    it in a few dozen steps (word *overlap* alone would need far more).
    """
    rng = random.Random(seed)
    query_vocab, filler = WORDS[::2], WORDS[1::2]
    records = []
    for q in range(n_queries):
        qw = rng.sample(query_vocab, 3)
        pos = [{"docid": f"p{q}.{i}", "title": "", "text": " ".join(qw + rng.sample(filler, 3))} for i in range(n_pos)]
        neg = [{"docid": f"n{q}.{i}", "title": "", "text": " ".join(rng.sample(filler, 6))} for i in range(n_neg)]
        records.append({"query_id": f"q{q}", "query": " ".join(qw), "positive_passages": pos, "negative_passages": neg})
    return records


@pytest.fixture(scope="module")
def groups_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("groups") / "groups.jsonl"
    D.write_groups(synthetic_groups(), path)
    return path


def lce_on_all(model, tokenizer, records, group_size=4):
    """Deterministic LCE loss of ``model`` over one group per record (eval mode)."""
    import torch.nn.functional as F

    batch = D.GroupCollator(tokenizer, group_size, qmax=16, pmax=32, seed=0)(
        [D.GroupDataset(records)[i] for i in range(len(records))])
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits.view(-1, group_size)
    return F.cross_entropy(logits, torch.zeros(len(records), dtype=torch.long)).item()


RESUME_FILES = ["optimizer.pt", "rng_state.pth", "scheduler.pt"]


def resume_state_files(directory):
    """The optimizer / scheduler / RNG / scaler files of a checkpoint, sorted."""
    return sorted(p.name for p in Path(directory).iterdir()
                  if p.name in ("optimizer.pt", "scheduler.pt", "scaler.pt") or p.name.startswith("rng_state"))


def adapter_tensors(directory):
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / "adapter_model.safetensors"))


# ---------------------------------------------------------------------------- data


def test_build_groups_from_qrels_negatives_and_determinism():
    topics = {"1": "flea life cycle", "2": "capital of france", "3": "no judgments"}
    qrels = {
        "1": {"a": 3, "b": 2, "c": 1, "d": 0},       # a,b positive; c "related" (neither); d judged 0
        "2": {"x": 1},                                 # no positive at min_grade 2 -> skipped
    }
    run = {"1": {d: 100.0 - i for i, d in enumerate("abcdefghij")}, "2": {"x": 5.0, "y": 4.0}}
    passages = {d: f"text {d}" for d in "abcdefghijxy"}
    recs = D.build_groups_from_qrels(topics, qrels, run, passages, n_negatives=4, min_grade=2, seed=7)
    assert [r["query_id"] for r in recs] == ["1"]
    r = recs[0]
    assert [p["docid"] for p in r["positive_passages"]] == ["a", "b"]          # grade order
    negs = [p["docid"] for p in r["negative_passages"]]
    assert len(negs) == 4 == len(set(negs))                                     # without replacement
    assert not {"a", "b", "c"} & set(negs)                                      # judged >= 1 excluded
    assert set(negs) <= set("defghij")
    assert negs == sorted(negs, key=lambda d: -run["1"][d])                     # run order kept
    assert D.build_groups_from_qrels(topics, qrels, run, passages, 4, 2, seed=7) == recs
    others = {tuple(p["docid"] for p in D.build_groups_from_qrels(topics, qrels, run, passages, 4, 2, seed=s)[0]
                    ["negative_passages"]) for s in range(8)}
    assert len(others) > 1                                                      # the seed matters
    # fewer candidates than asked: all of them, no duplicates
    few = D.build_groups_from_qrels(topics, qrels, run, passages, n_negatives=50, seed=0)[0]
    assert sorted(p["docid"] for p in few["negative_passages"]) == list("defghij")
    split = D.build_groups_from_qrels(topics, qrels, run, passages, 4, seed=7, split_positives=True)
    assert [[p["docid"] for p in s["positive_passages"]] for s in split] == [["a"], ["b"]]


def test_group_files_roundtrip_and_bad_line(tmp_path):
    recs = synthetic_groups(n_queries=3)
    path = tmp_path / "g.jsonl"
    assert D.write_groups(recs, path) == 3
    assert D.read_groups(path) == recs
    gz = tmp_path / "train.jsonl.gz"
    D.write_groups(recs, gz)
    assert D.load_tevatron_groups(gz) == recs
    lines = path.read_text().splitlines()
    (tmp_path / "bad.jsonl").write_text(lines[0] + "\n" + '{"query_id": "x", "query": "q"\n' + lines[1] + "\n")
    with pytest.raises(D.GroupFormatError, match=r"bad\.jsonl:2: not valid JSON"):
        D.read_groups(tmp_path / "bad.jsonl")
    (tmp_path / "nopos.jsonl").write_text(json.dumps({**recs[0], "positive_passages": []}) + "\n")
    with pytest.raises(D.GroupFormatError, match=r"nopos\.jsonl:1: 'positive_passages' is empty"):
        D.read_groups(tmp_path / "nopos.jsonl")


def test_collator_positive_first_padding_and_seeded_sampling(tiny_base_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base_dir("llama"))
    recs = synthetic_groups(n_queries=3, n_pos=2, n_neg=6)
    ds = D.GroupDataset(recs)
    col = D.GroupCollator(tok, group_size=4, qmax=16, pmax=32, seed=5)
    batch = col([ds[0], ds[1]])
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[0] == 2 * 4
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == -(-int(lengths.max()) // 16) * 16    # longest, rounded up to 16
    for row, n in zip(batch["input_ids"], lengths):
        assert (row[n:] == tok.pad_token_id).all() and (row[:n] != tok.pad_token_id).all()
    for b, rec in enumerate(recs[:2]):
        group = D.sample_group(rec, b, 0, 4, seed=5)
        assert group[0] in rec["positive_passages"]                             # positive first
        assert all(n in rec["negative_passages"] for n in group[1:])
        assert len({n["docid"] for n in group[1:]}) == 3                        # no replacement
        for g, psg in enumerate(group):
            ids = encode_pair(tok, rec["query"], psg["text"], 16, 32, title=psg.get("title"))
            assert batch["input_ids"][b * 4 + g, : len(ids)].tolist() == ids
    # deterministic given (seed, index, epoch); other epochs rotate positives and negatives
    assert torch.equal(col([ds[0], ds[1]])["input_ids"], batch["input_ids"])
    ds.set_epoch(1)
    g0, g1 = D.sample_group(recs[0], 0, 0, 4, 5), D.sample_group(recs[0], 0, 1, 4, 5)
    assert g0[0] != g1[0] and g0[1:] != g1[1:]
    # too few negatives: sampled with replacement, still positive first
    tiny = {**recs[0], "negative_passages": recs[0]["negative_passages"][:2]}
    g = D.sample_group(tiny, 0, 0, 4, 5)
    assert len(g) == 4 and g[0] in tiny["positive_passages"]


# ---------------------------------------------------------------------------- model


@pytest.mark.parametrize("family", ["llama", "mistral", "pythia"])
def test_reranker_saves_score_head_with_adapter(tiny_base_dir, tmp_path, family):
    from irrepro.rerank.model import load_reranker

    model, tok = load_reranker(tiny_base_dir(family), rank=2, targets="all")
    assert model.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["task_type"] == "SEQ_CLS" and "score" in cfg["modules_to_save"]
    assert set(cfg["target_modules"]) == set(T.target_modules(T.family_of(model.config.model_type), "all"))
    keys = adapter_tensors(tmp_path)
    assert any("score" in k for k in keys)
    assert any("lora_A" in k for k in keys)


def test_pad_token_when_the_tokenizer_has_none(tiny_base_dir, tmp_path):
    """No pad token: unk (Mistral/Pythia, as the authors), else eos (Llama 3, as the authors'
    collator); the config gets the same id, so the score is read at the last real token (no
    EOS is appended, and a row that ends with the pad id is refused)."""
    import shutil

    from irrepro.rerank.inputs import encode_pair
    from irrepro.rerank.model import load_reranker

    def variant(name, **changes):
        d = tmp_path / name
        shutil.copytree(tiny_base_dir("llama"), d)
        cfg = json.loads((d / "tokenizer_config.json").read_text())
        for key, value in changes.items():
            cfg.pop(key) if value is None else cfg.__setitem__(key, value)
        (d / "tokenizer_config.json").write_text(json.dumps(cfg))
        return d

    model, tok = load_reranker(variant("nopad", pad_token=None), rank=1, targets="mha")
    assert tok.pad_token == "<unk>" and model.config.pad_token_id == tok.unk_token_id
    model, tok = load_reranker(variant("nopad_nounk", pad_token=None, unk_token=None), rank=1, targets="mha")
    assert tok.pad_token == "</s>" and model.config.pad_token_id == tok.eos_token_id
    ids = encode_pair(tok, "fox", "the quick brown fox", 16, 32)
    assert tok.eos_token_id not in ids and ids[-1] != model.config.pad_token_id
    with pytest.raises(ValueError, match="ends with the pad token id"):
        encode_pair(tok, "fox", "the quick brown fox </s>", 16, 32)


def test_wrong_targets_and_unknown_architecture_fail_clearly(tiny_base_dir, tmp_path, monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    from irrepro.rerank.model import load_reranker

    # llama weights, but the table says it is a GPT-NeoX: its module names do not exist
    monkeypatch.setitem(T.FAMILY_OF_MODEL_TYPE, "llama", "pythia")
    with pytest.raises(ValueError, match=r"query_key_value.*not found"):
        load_reranker(tiny_base_dir("llama"), rank=2, targets="mha")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unknown LoRA target set"):
        load_reranker(tiny_base_dir("llama"), rank=2, targets="attention")
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(gpt2)
    with pytest.raises(T.UnknownArchitecture, match=r"no LoRA target table for model_type 'gpt2'"):
        load_reranker(gpt2, rank=2, targets="all")


# ---------------------------------------------------------------------------- training


def test_training_reduces_lce_and_saves_loadable_checkpoints(tiny_base_dir, groups_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, set_seed

    from irrepro.rerank.model import load_reranker
    from irrepro.lora.checkpoints import is_complete_adapter, is_complete_checkpoint
    from irrepro.rerank.train import RerankRecipe, finetune

    base = tiny_base_dir("llama")
    records = D.read_groups(groups_file)
    set_seed(3)  # the state finetune starts from (fresh score head, LoRA B = 0)
    fresh, tok = load_reranker(base, rank=8, targets="all")
    before = lce_on_all(fresh, tok, records)

    out = tmp_path / "run"
    kw = dict(rank=8, targets="all", lr=5e-3, max_steps=24, queries_per_device=4, grad_accum=1, group_size=4,
              qmax=16, pmax=32, save_steps=8, warmup_ratio=0.0, seed=3, threads=1)
    summary = finetune(base, groups_file, out, **kw)
    assert summary["steps"] == 24 and len(summary["losses"]) == 24
    assert summary["checkpoints"] == ["checkpoint-8", "checkpoint-16", "checkpoint-24"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-16", "checkpoint-24", "checkpoint-8"]
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 24
    for step in (8, 16, 24):
        ckpt = out / f"checkpoint-{step}"
        assert is_complete_adapter(ckpt)
        # the resume state is kept only in the newest checkpoint
        assert is_complete_checkpoint(ckpt) == (step == 24)
        assert resume_state_files(ckpt) == ([] if step < 24 else RESUME_FILES)
        assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == step
        assert any("score" in k for k in adapter_tensors(ckpt))
    # a standard peft adapter: loads onto the plain base classifier with peft's own API
    plain = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    trained = PeftModel.from_pretrained(plain, out / "final")
    after = lce_on_all(trained, tok, records)
    assert after < before - 0.2, (before, after)
    last = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=1),
                                     out / "checkpoint-24")
    assert lce_on_all(last, tok, records) == pytest.approx(after, abs=1e-6)
    # done means done: a second call returns the saved summary without training; other settings are refused.
    # The file holds results only (same inputs, same bytes); this call's timings were returned beside them.
    from irrepro.lora.run import CIRCUMSTANCES

    saved = json.loads((out / "train_summary.json").read_text())
    assert not set(CIRCUMSTANCES) & set(saved) and summary["sec_per_step"] > 0
    assert finetune(base, groups_file, out, **kw) == saved == {k: v for k, v in summary.items() if k not in CIRCUMSTANCES}
    assert finetune(base, groups_file, out, RerankRecipe(**kw)) == saved  # the same settings as one recipe
    with pytest.raises(ValueError, match="other settings"):
        finetune(base, groups_file, out, **{**kw, "rank": 4})
    with pytest.raises(ValueError, match="other settings"):
        finetune(base, groups_file, out, RerankRecipe(**kw), rank=4)


KILL_SCRIPT = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from transformers import TrainerCallback
from irrepro.rerank.train import finetune

class HangAfterSave(TrainerCallback):  # makes the kill land at a known point
    def on_save(self, args, state, control, **kw):
        if state.global_step == int(sys.argv[5]):
            print("SAVED", state.global_step, flush=True)
            time.sleep(600)

# the resuming process is started early (imports take ~10 s here) and waits for a go file
go = sys.argv[6] if len(sys.argv) > 6 else None
deadline = time.time() + 300
while go and not os.path.exists(go):
    if time.time() > deadline:
        sys.exit("no go file")
    time.sleep(0.02)
s = finetune(sys.argv[2], sys.argv[3], sys.argv[4], callbacks=[HangAfterSave()], **KW)
print("DONE", s["resumed_from_step"], s["steps"], flush=True)
"""

KW = dict(rank=4, targets="all", lr=5e-3, max_steps=12, queries_per_device=1, grad_accum=2, group_size=4,
          qmax=16, pmax=32, save_steps=3, warmup_ratio=0.1, seed=3, threads=1, logging_steps=1)


def test_kill9_resume_matches_uninterrupted_run(tiny_base_dir, groups_file, tmp_path):
    from irrepro.lora.checkpoints import is_complete_adapter, is_complete_checkpoint
    from irrepro.rerank.train import finetune

    base = tiny_base_dir("llama")
    script = tmp_path / "run.py"
    script.write_text(f"KW = {KW!r}\n" + KILL_SCRIPT)
    out = tmp_path / "killed"

    go = tmp_path / "go"

    def launch(*extra):
        return subprocess.Popen(
            [sys.executable, str(script), str(WORKFLOW), str(base), str(groups_file), str(out), *map(str, extra)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    proc = launch(6)
    resumer = launch(-1, go)  # a fresh process; it starts training only once `go` exists
    try:
        # the reference run, uninterrupted, in this process while the other one trains
        ref = finetune(base, groups_file, tmp_path / "ref", **KW)
        deadline = time.time() + 120
        # kill once checkpoint-6 is complete and checkpoint-3's resume state is pruned
        while not is_complete_checkpoint(out / "checkpoint-6") or resume_state_files(out / "checkpoint-3"):
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "checkpoint-6 never appeared"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except BaseException:
        resumer.kill()
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "train_summary.json").exists() and not (out / "final").exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    # a save cut short by the kill: a newer checkpoint without optimizer/trainer state
    partial = out / "checkpoint-9"
    partial.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (partial / name).write_bytes((out / "checkpoint-6" / name).read_bytes())
    kept = {s: (out / f"checkpoint-{s}" / "adapter_model.safetensors").stat().st_mtime_ns for s in (3, 6)}
    # a kill in the middle of pruning: checkpoint-3 got part of its resume state back; it is
    # still a complete adapter, never the resume point, and is pruned again at the next save
    (out / "checkpoint-3" / "optimizer.pt").write_bytes((out / "checkpoint-6" / "optimizer.pt").read_bytes())
    assert is_complete_adapter(out / "checkpoint-3") and not is_complete_checkpoint(out / "checkpoint-3")

    go.touch()
    output, _ = resumer.communicate(timeout=120)
    assert resumer.returncode == 0, output
    assert "DONE 6 12" in output
    summary = json.loads((out / "train_summary.json").read_text())
    # where it resumed is a circumstance: returned ("DONE 6 12" above) and in the run sidecar, not in the file
    assert "resumed_from" not in summary and "resumed_from_step" not in summary
    assert summary["steps"] == 12
    # checkpoints up to 6 were not rewritten (training did not restart from 0) ...
    assert kept == {s: (out / f"checkpoint-{s}" / "adapter_model.safetensors").stat().st_mtime_ns for s in (3, 6)}
    # ... the partial one was redone, and the loss curve is the uninterrupted one
    assert is_complete_adapter(out / "checkpoint-9")  # (its resume state since pruned: 12 is newer)
    assert [e["loss"] for e in summary["losses"]] == pytest.approx([e["loss"] for e in ref["losses"]], abs=1e-6)
    for d in ("final", "checkpoint-3", "checkpoint-6", "checkpoint-9", "checkpoint-12"):
        got, want = adapter_tensors(out / d), adapter_tensors(tmp_path / "ref" / d)
        assert got.keys() == want.keys() and any("score" in k for k in got)
        for k in want:
            assert torch.equal(got[k], want[k]), (d, k)  # bit-identical to the uninterrupted run
    # both runs end with the resume state in the newest checkpoint only, adapters in all
    for run in (out, tmp_path / "ref"):
        for step in (3, 6, 9, 12):
            ckpt = run / f"checkpoint-{step}"
            assert is_complete_adapter(ckpt), ckpt
            assert resume_state_files(ckpt) == ([] if step < 12 else RESUME_FILES), ckpt
