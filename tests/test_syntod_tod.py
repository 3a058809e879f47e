"""SynTOD TOD model: label masking, LoRA causal-LM SFT that learns a planted pattern,
teacher-forced intent prediction, crash-resume from checkpoints, all three families, CLI."""

import json
import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from irrepro.syntod import tod  # noqa: E402
from irrepro.syntod.tod import parse_prediction  # noqa: E402

# the planted pattern: each intent has its own utterance, and the query slot is the dish named
from conftest import SYNTOD_HEADER as HEADER  # noqa: E402
from conftest import cooking_conversation as conversation  # noqa: E402
from conftest import tiny_base_factory  # noqa: E402


def user_turns(text: str) -> list[tuple[str, str]]:
    """(prompt ending in '## ', gold annotation) per human turn (a local splitter)."""
    out, pos = [], 0
    while (i := text.find(" ## {", pos)) >= 0:
        j = text.find(" ###", i)
        j = len(text) if j < 0 else j
        out.append((text[: i + 4], text[i + 4: j]))
        pos = j
    return out


def system_turns(text: str) -> list[tuple[str, str]]:
    """(prompt ending in '### ASSISTANT: ', gold response) per assistant turn."""
    out, pos = [], 0
    while (i := text.find("### ASSISTANT: ", pos)) >= 0:
        start = i + len("### ASSISTANT: ")
        j = text.find(" ###", start)
        j = len(text) if j < 0 else j
        out.append((text[:start], text[start:j]))
        pos = j
    return out


_rng = random.Random(0)
CONVS = [conversation(_rng) for _ in range(6)]


# training on one thread sets torch's thread count for the process: conftest gives it back
pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tod-data") / "train.jsonl"
    path.write_text("".join(json.dumps({"text": c}) + "\n" for c in CONVS))
    return path


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """Factory: a random tiny causal LM of a family, with a BPE tokenizer trained on the conversations."""
    return tiny_base_factory(tmp_path_factory, CONVS, "tod", vocab_size=400, hidden=64, intermediate=128,
                             max_positions=512)


def lm_loss(model, tokenizer, texts):
    """Mean next-token loss over whole conversations (independent of Trainer's logging)."""
    model.eval()
    losses = []
    with torch.no_grad():
        for text in texts:
            ids, _, _ = tod.encode_conversation(tokenizer, text, 10_000)
            x = torch.tensor([ids])
            losses.append(model(input_ids=x, labels=x).loss.item())
    return sum(losses) / len(losses)


# ---------------------------------------------------------------------------- parsing


def test_parse_prediction_valid_and_invalid():
    assert parse_prediction('{"intent": "next_step"}') == ("next_step", {}, True)
    assert parse_prediction(' {"intent": "search_recipe", "query": "soup"} ### ASSISTANT') == \
        ("search_recipe", {"query": "soup"}, True)
    assert parse_prediction('## {"intent": "select_i", "selection": 2}') == ("select_i", {"selection": 2}, True)
    for bad in ('', 'next_step', '{"intent": "next_step"', '{"intent": 3}', '{"query": "soup"}',
                '["intent"]', '{intent: next_step}', None):
        assert parse_prediction(bad) == (None, {}, False), bad


def test_read_conversations_names_the_bad_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": CONVS[0]}) + "\n\n" + json.dumps({"txt": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"t\.jsonl:3: expected an object with a non-empty string 'text'"):
        tod.read_conversations(path)
    path.write_text(json.dumps({"text": CONVS[0]}) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"t\.jsonl:2: not valid JSON"):
        tod.read_conversations(path)


# ---------------------------------------------------------------------------- masking


HAND = (f"{HEADER} ### ASSISTANT: Hello! ### HUMAN: what comes next ## {{\"intent\": \"next_step\"}}"
        " ### RESULTS: id: 1, soup ### ASSISTANT: now stir ## {\"selected_ids\": [1]}"
        "\n### HUMAN: bye ## {\"intent\": \"chitchat\"}")


def trained_runs(tokenizer, ids, labels):
    """Decoded runs of consecutive trained tokens (special tokens left out), stripped."""
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != -100:
            assert lab == i
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tokenizer.decode(r, skip_special_tokens=True).strip() for r in runs]


def test_labels_mask_exactly_the_annotations_and_responses(base_dir):
    from irrepro.rerank.model import load_tokenizer

    tok = load_tokenizer(base_dir("llama"))
    ids, labels, truncated = tod.encode_conversation(tok, HAND, 1000, "annotations_and_responses")
    assert not truncated and len(ids) == len(labels)
    assert ids[0] == tok.bos_token_id and labels[0] == -100
    assert ids[-1] == tok.eos_token_id and labels[-1] == tok.eos_token_id   # the end is learnt
    assert tok.decode(ids[1:-1]) == HAND                                    # the text, byte for byte
    assert trained_runs(tok, ids[:-1], labels[:-1]) == [
        "Hello! ###",
        '## {"intent": "next_step"} ###',
        'now stir ## {"selected_ids": [1]}\n###',  # also without a space before the marker
        '## {"intent": "chitchat"}',
    ]
    # loss on everything: all tokens but bos, as the original's oasst1 SFT
    ids_all, labels_all, _ = tod.encode_conversation(tok, HAND, 1000, "all")
    assert ids_all == ids and labels_all == [-100] + ids[1:]
    # truncation keeps the first max_len tokens and says so
    ids_cut, labels_cut, truncated = tod.encode_conversation(tok, HAND, 20, "annotations_and_responses")
    assert truncated and ids_cut == ids[:20] and labels_cut == labels[:20]
    with pytest.raises(ValueError, match="loss_on"):
        tod.encode_conversation(tok, HAND, 1000, "responses")


def test_collator_pads_right_and_masks_padding(base_dir):
    from irrepro.rerank.model import load_tokenizer

    tok = load_tokenizer(base_dir("llama"))
    a = dict(zip(("input_ids", "labels"), tod.encode_conversation(tok, CONVS[0], 1000)[:2]))
    b = dict(zip(("input_ids", "labels"), tod.encode_conversation(tok, "### HUMAN: hi ## {}", 1000)[:2]))
    batch = tod._Collator(tok.pad_token_id)([a, b])
    n = len(b["input_ids"])
    assert batch["input_ids"].shape == (2, len(a["input_ids"]))
    assert batch["input_ids"][1, :n].tolist() == b["input_ids"] and (batch["input_ids"][1, n:] == tok.pad_token_id).all()
    assert (batch["labels"][1, n:] == -100).all() and batch["attention_mask"][1].sum() == n
    assert batch["labels"][0].tolist() == a["labels"]


# ---------------------------------------------------------------------------- training + inference


def test_sft_learns_the_planted_intents(base_dir, train_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from irrepro.rerank.model import load_tokenizer
    from irrepro.lora.checkpoints import is_complete_adapter, is_complete_checkpoint

    base = base_dir("llama")
    examples = [e for c in CONVS for e in user_turns(c)]
    gold = [json.loads(t)["intent"] for _, t in examples]
    before = [parse_prediction(p)[0] for p in tod.teacher_forced(base, None, examples, max_new_tokens=24)]
    assert sum(b == g for b, g in zip(before, gold)) < len(gold) // 2

    out = tmp_path / "run"
    summary = tod.finetune_tod(base, train_file, out, rank=8, targets="all", alpha=16, dropout=0.0, lr=1e-2,
                               max_steps=100, batch_size=6, grad_accum=1, max_len=512, save_steps=50,
                               warmup_ratio=0.0, seed=0, threads=1, logging_steps=10)
    assert summary["steps"] == 100 and len(summary["losses"]) == 10
    assert summary["n_conversations"] == 6 and summary["n_truncated"] == 0
    assert summary["checkpoints"] == ["checkpoint-50", "checkpoint-100"]
    # every checkpoint is an adapter; only the newest keeps the optimizer/scheduler state to resume from
    assert all(is_complete_adapter(out / c) for c in summary["checkpoints"])
    assert [is_complete_checkpoint(out / c) for c in summary["checkpoints"]] == [False, True]
    assert not (out / "checkpoint-50" / "optimizer.pt").exists() and (out / "checkpoint-100" / "optimizer.pt").exists()
    # the file holds results; the timings and resume details (returned too) go to the run sidecar
    from irrepro.lora.run import CIRCUMSTANCES

    assert json.loads((out / "train_summary.json").read_text()) == {k: v for k, v in summary.items()
                                                                     if k not in CIRCUMSTANCES}
    assert summary["losses"][-1]["loss"] < summary["losses"][0]["loss"] - 0.5

    # the loss, measured independently: base alone (= the fresh adapter, LoRA B = 0) vs trained
    tok = load_tokenizer(base)
    plain = AutoModelForCausalLM.from_pretrained(base)
    loss_before = lm_loss(plain, tok, CONVS)
    loss_after = lm_loss(PeftModel.from_pretrained(plain, out / "final"), tok, CONVS)
    assert loss_after < loss_before - 0.5, (loss_before, loss_after)

    model = tod.TODModel(base, out / "final")
    # the adapter is merged into the weights (as the original's vLLM inference) and computes what peft's does
    assert not any("lora" in name for name, _ in model.model.named_parameters())
    ids = torch.tensor([tok(CONVS[0])["input_ids"][:48]])
    with torch.no_grad():
        torch.testing.assert_close(model.model(input_ids=ids).logits,
                                   PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out / "final")(
                                       input_ids=ids).logits, rtol=1e-4, atol=1e-5)
    preds = model.complete(examples, max_new_tokens=24, batch_size=8)
    parsed = [parse_prediction(p) for p in preds]
    assert all(ok for _, _, ok in parsed), preds
    assert [intent for intent, _, _ in parsed] == gold
    assert preds == [t for _, t in examples]  # slots too: the whole annotation, cut before ' ###'
    # deterministic, and left padding is right: one prompt at a time gives the same intents
    assert model.complete(examples, max_new_tokens=24, batch_size=8) == preds
    singles = model.complete(examples[:8], max_new_tokens=24, batch_size=1)
    assert [parse_prediction(p)[0] for p in singles] == gold[:8]
    # responses: prompts ending '### ASSISTANT: ', cut at the next marker
    replies = [e for c in CONVS[:2] for e in system_turns(c)]
    got = model.complete(replies, max_new_tokens=16, stop=tod.RESPONSE_STOP)
    assert sum(g == t for g, (_, t) in zip(got, replies)) >= len(replies) - 2, list(zip(got, replies))


def test_prompts_longer_than_the_model_keep_their_end(base_dir):
    model = tod.TODModel(base_dir("llama"))
    long_prompt = HEADER + " ### HUMAN: what comes next" * 200 + " ## "
    # the model would fail on positions beyond its 512; the prompt is cut to bos + its last tokens
    out = model.complete([long_prompt, "### HUMAN: hi ## "], max_new_tokens=4, max_len=64)
    assert len(out) == 2 and all(isinstance(o, str) and "###" not in o for o in out)  # cut at the stop marker
    with pytest.raises(ValueError, match="no room"):
        model.complete(["x"], max_new_tokens=64, max_len=64)


def test_interrupted_run_resumes_from_its_checkpoint(base_dir, train_file, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from irrepro.lora.checkpoints import is_complete_checkpoint

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 4:
                raise RuntimeError("simulated crash after saving checkpoint-4")

    base = base_dir("llama")
    kw = dict(rank=4, targets="all", alpha=8, dropout=0.1, lr=5e-3, max_steps=6, batch_size=2, grad_accum=2,
              max_len=96, save_steps=2, warmup_ratio=0.2, seed=3, threads=1, loss_on="annotations_and_responses")
    ref = tod.finetune_tod(base, train_file, tmp_path / "ref", **kw)
    assert ref["n_truncated"] == 6  # every conversation is longer than 96 tokens

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        tod.finetune_tod(base, train_file, out, callbacks=[Crash()], **kw)
    assert not (out / "train_summary.json").exists() and not (out / "final").exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    partial = out / "checkpoint-6"  # a save cut short: adapter written, no optimizer/trainer state
    partial.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (partial / name).write_bytes((out / "checkpoint-4" / name).read_bytes())
    kept = {s: (out / f"checkpoint-{s}" / "adapter_model.safetensors").stat().st_mtime_ns for s in (2, 4)}

    summary = tod.finetune_tod(base, train_file, out, **kw)
    assert summary["resumed_from"] == "checkpoint-4" and summary["resumed_from_step"] == 4
    assert summary["steps"] == 6 and summary["checkpoints"] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert kept == {s: (out / f"checkpoint-{s}" / "adapter_model.safetensors").stat().st_mtime_ns for s in (2, 4)}
    assert is_complete_checkpoint(out / "checkpoint-6")
    # the resumed run is the uninterrupted one: same loss curve, same final adapter
    assert [e["loss"] for e in summary["losses"]] == pytest.approx([e["loss"] for e in ref["losses"]], abs=1e-6)
    got, want = load_file(str(out / "final/adapter_model.safetensors")), load_file(
        str(tmp_path / "ref/final/adapter_model.safetensors"))
    assert got.keys() == want.keys() and any("lora_B" in k for k in got)
    assert all(torch.allclose(got[k], want[k], rtol=0, atol=1e-7) for k in want)
    # done means done (the saved summary: results, no timings); other settings are refused
    from irrepro.lora.run import CIRCUMSTANCES

    assert tod.finetune_tod(base, train_file, out, **kw) == {k: v for k, v in summary.items() if k not in CIRCUMSTANCES}
    # the settings as one recipe are the same run; keywords beside it replace its fields
    assert tod.finetune_tod(base, train_file, out, tod.TodRecipe(**kw)) == tod.finetune_tod(base, train_file, out, **kw)
    with pytest.raises(ValueError, match="other settings"):
        tod.finetune_tod(base, train_file, out, **{**kw, "loss_on": "all"})
    with pytest.raises(ValueError, match="other settings"):
        tod.finetune_tod(base, train_file, out, tod.TodRecipe(**kw), loss_on="all")


@pytest.mark.parametrize("family", ["mistral", "pythia"])
def test_other_families_train(base_dir, train_file, tmp_path, family):
    from irrepro.rerank import targets as T

    summary = tod.finetune_tod(base_dir(family), train_file, tmp_path / family, rank=2, targets="all", lr=1e-3,
                               max_steps=2, batch_size=2, grad_accum=1, max_len=64, save_steps=2,
                               warmup_ratio=0.0, seed=0, threads=1)
    assert summary["steps"] == 2 and len(summary["losses"]) == 2
    cfg = json.loads((tmp_path / family / "final" / "adapter_config.json").read_text())
    assert cfg["task_type"] == "CAUSAL_LM"
    assert set(cfg["target_modules"]) == set(T.target_modules(family, "all"))
    preds = tod.teacher_forced(base_dir(family), tmp_path / family / "final", user_turns(CONVS[0])[:2],
                               max_new_tokens=4, batch_size=2)
    assert len(preds) == 2


# ---------------------------------------------------------------------------- stage + CLI


PARAMS = {
    "finetune": {"launcher": "none", "nproc_per_node": 1},
    "syntod": {"finetune": {"rank": 2, "targets": "mha", "lora_alpha": 16, "lora_dropout": 0.1, "lr": 1e-3,
                            "epochs": 1, "max_steps": 2, "batch_size": 3, "grad_accum": 1, "max_len": 64,
                            "save_steps": 1, "warmup_ratio": 0.0, "lr_scheduler": "constant", "max_grad_norm": 0.3,
                            "group_by_length": True, "bf16": False, "gradient_checkpointing": True,
                            "seed": 0, "threads": 1}},
}


def test_cli_finetune_tod(base_dir, train_file, tmp_path):
    from irrepro import cli

    out = tmp_path / "models" / "tod"
    argv = ["finetune-tod", "--base", str(base_dir("llama")), "--train", str(train_file), "--out", str(out)]
    a = cli.make_parser().parse_args(argv)
    a.argv = argv
    assert a.spec(a, PARAMS) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["checkpoints"] == ["checkpoint-1", "checkpoint-2"]
    assert summary["config"]["targets"] == "mha" and summary["config"]["gradient_checkpointing"] is True
    assert (out / "final" / "adapter_model.safetensors").exists()
    assert not out.with_name("tod.partial").exists()
    # the stage names the arguments it needs (argparse: exit 2)
    with pytest.raises(SystemExit):
        cli.make_parser().parse_args(["finetune-tod", "--base", "b", "--out", "o"])
    with pytest.raises(ValueError, match=r"^params: syntod\.finetune: missing \['max_len'\]$"):
        from irrepro.syntod.stages import finetune_tod_stage

        bad = {"syntod": {"finetune": {k: v for k, v in PARAMS["syntod"]["finetune"].items() if k != "max_len"}}}
        finetune_tod_stage(bad, str(base_dir("llama")), str(train_file), str(tmp_path / "x"))


def test_release_schedule_constant_lr_clipping_and_length_grouping(base_dir, train_file, tmp_path):
    """The release's fine-tune.sh knobs reach the Trainer: constant lr with no warm-up at every
    logged step, max_grad_norm, length-grouped batches; a warm-up with `constant` is refused."""
    import torch

    from irrepro.syntod.stages import finetune_tod_stage

    F = {**PARAMS["syntod"]["finetune"], "max_steps": 3, "lr": 1e-3, "max_grad_norm": 0.25}
    out = tmp_path / "tod"
    finetune_tod_stage({**PARAMS, "syntod": {"finetune": F}}, str(base_dir("llama")), str(train_file), str(out))
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    lrs = [e["learning_rate"] for e in state["log_history"] if "learning_rate" in e]
    assert len(lrs) == 3 and all(lr == pytest.approx(1e-3, rel=0, abs=1e-12) for lr in lrs)
    args = torch.load(out / "checkpoint-3" / "training_args.bin", weights_only=False)
    assert args.lr_scheduler_type == "constant" and args.max_grad_norm == 0.25
    assert getattr(args, "group_by_length", None) is True or getattr(args, "train_sampling_strategy", None) == "group_by_length"
    config = json.loads((out / "train_summary.json").read_text())["config"]
    assert (config["lr_scheduler"], config["max_grad_norm"], config["group_by_length"]) == ("constant", 0.25, True)
    with pytest.raises(ValueError, match="lr_scheduler constant has no warm-up"):
        finetune_tod_stage({**PARAMS, "syntod": {"finetune": {**F, "warmup_ratio": 0.03}}}, str(base_dir("llama")),
                           str(train_file), str(tmp_path / "x"))
    with pytest.raises(ValueError, match="lr_scheduler must be one of"):
        finetune_tod_stage({**PARAMS, "syntod": {"finetune": {**F, "lr_scheduler": "step"}}}, str(base_dir("llama")),
                           str(train_file), str(tmp_path / "y"))


def test_decode_completion_keeps_a_sentencepiece_leading_space():
    """New tokens are decoded after the prompt's last tokens: a SentencePiece (Llama-2 style,
    "▁" word marker) tokenizer drops the leading space of a sequence decoded alone."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁##": 3, "▁{": 4, "\"": 5, "next": 6, "_step": 7, "\"}": 8,
             "▁###": 9, "▁ok": 10, "▁then": 11}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace()
    core.decoder = decoders.Metaspace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="</s>")
    assert tok.decode([10, 11]) == "ok then"  # alone: the leading space is gone
    assert tod.decode_completion(tok, [3, 10], [11, 9, 10], stop=tod.INTENT_STOP) == " then"
    assert tod.decode_completion(tok, [1, 3], [6, 7, 8, 9], stop=tod.INTENT_STOP) == 'next_step"}'
    assert tod.decode_completion(tok, [3], [6, 2, 7], stop=tod.INTENT_STOP) == "next"  # eos ends it
