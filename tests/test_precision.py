"""Precision of LoRA training and scoring on half-precision bases; non-finite guards; 2-logit head."""

import math
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from irrepro.rerank import data as D  # noqa: E402
from irrepro.lora.precision import NonFiniteError, base_dtype  # noqa: E402
from irrepro.rerank.precision import fp32_head  # noqa: E402

HEAD_COPY = "base_model.model.score.modules_to_save.default.weight"
WORDS = ("quick brown fox jumps lazy dog flea life cycle year hosts capital france paris machine "
         "learning models rank passages queries lorem ipsum dolor amet").split()


# training on one thread sets torch's thread count for the process: conftest gives it back
pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def half_base(tmp_path_factory):
    """Factory ``(family, dtype name) -> directory`` of a tiny base saved in that dtype."""
    from conftest import TINY_TEXTS, save_tiny_base
    from irrepro.tiny import train_tokenizer

    tok = train_tokenizer(TINY_TEXTS, vocab_size=300)
    cache = {}

    def make(family, dtype):
        if (family, dtype) not in cache:
            out = tmp_path_factory.mktemp(f"tiny-{family}-{dtype}")
            cache[family, dtype] = save_tiny_base(out, family, tok, dtype=getattr(torch, dtype))
        return cache[family, dtype]

    return make


@pytest.fixture(scope="module")
def groups_file(tmp_path_factory):
    rng = random.Random(0)
    records = []
    for q in range(6):
        qw = rng.sample(WORDS[::2], 3)
        pos = [{"docid": f"p{q}", "title": "", "text": " ".join(qw + rng.sample(WORDS[1::2], 3))}]
        neg = [{"docid": f"n{q}.{i}", "title": "", "text": " ".join(rng.sample(WORDS[1::2], 6))} for i in range(5)]
        records.append({"query_id": f"q{q}", "query": " ".join(qw), "positive_passages": pos, "negative_passages": neg})
    path = tmp_path_factory.mktemp("groups") / "groups.jsonl"
    D.write_groups(records, path)
    return path


def _callback(**events):
    """A TrainerCallback whose ``on_<event>`` methods are the given functions."""
    from transformers import TrainerCallback

    return type("TestCallback", (TrainerCallback,), {f"on_{k}": v for k, v in events.items()})()


def _train(base, groups, out, **kw):
    from irrepro.rerank.train import finetune

    args = dict(rank=2, targets="all", lr=1e-2, max_steps=3, queries_per_device=2, grad_accum=1, group_size=4,
                qmax=16, pmax=32, save_steps=3, warmup_ratio=0.0, threads=1, seed=0)
    args.update(kw)
    return finetune(base, groups, out, **args)


# ---------------------------------------------------------------------------- dtype rule


def test_base_dtype_auto_is_checkpoint_dtype_on_cuda_and_fp32_on_cpu():
    assert base_dtype("auto", "cuda") == "auto"
    assert base_dtype("auto", "cpu") is torch.float32
    assert base_dtype("bfloat16", "cpu") is torch.bfloat16
    assert base_dtype("float16", "cuda:0") is torch.float16
    with pytest.raises(ValueError, match="base_dtype must be one of"):
        base_dtype("half", "cpu")


def test_installed_peft_upcasts_lora_but_not_the_head_copy(half_base):
    """Why the rule exists: stock peft on an fp16 base leaves the trained head in fp16."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(half_base("pythia", "float16"), num_labels=1)
    assert model.dtype == torch.float16  # transformers 5: the checkpoint's dtype
    pm = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=2, target_modules=["query_key_value"],
                                          modules_to_save=["score"]))
    dtypes = {n: p.dtype for n, p in pm.named_parameters() if p.requires_grad}
    assert dtypes[HEAD_COPY] == torch.float16
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}


# ---------------------------------------------------------------------------- training on half bases


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("family", ["llama", "mistral", "pythia"])
def test_finetune_on_half_base_keeps_trainables_fp32_and_head_moves(half_base, groups_file, tmp_path, family, dtype):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from irrepro.rerank.evaluate import check_active_adapter

    seen = {}

    def on_train_begin(self, args, state, control, model=None, **kw):
        seen["trainable"] = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
        # the frozen original head (fp32 too: peft copies it) is used only with the adapter off
        seen["frozen"] = {p.dtype for n, p in model.named_parameters() if not p.requires_grad and ".score." not in n}
        seen["head0"] = dict(model.named_parameters())[HEAD_COPY].detach().clone()

    base = half_base(family, dtype)
    summary = _train(base, groups_file, tmp_path / f"{family}-r2-all", base_dtype=dtype,
                     callbacks=[_callback(train_begin=on_train_begin)])

    assert set(seen["trainable"].values()) == {torch.float32}, seen["trainable"]
    assert HEAD_COPY in seen["trainable"]
    assert seen["frozen"] == {getattr(torch, dtype)}  # the base stays half
    assert summary["base_dtype_loaded"] == f"torch.{dtype}"
    losses = [e["loss"] for e in summary["losses"]]
    assert len(losses) == 3 and all(math.isfinite(x) and x > 0 for x in losses), losses
    assert all(math.isfinite(e["grad_norm"]) for e in summary["losses"])

    final = tmp_path / f"{family}-r2-all" / "final"
    head = load_file(str(final / "adapter_model.safetensors"))["base_model.model.score.weight"]
    assert head.dtype == torch.float32 and torch.isfinite(head).all()
    assert not torch.equal(head, seen["head0"])
    # every element moved: in bf16 about 16% of them would round their updates away
    assert (head != seen["head0"]).float().mean().item() == 1.0

    # still a standard peft adapter: the stock loader on the stock base takes it, same key names
    stock = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    pm = PeftModel.from_pretrained(stock, str(final))
    check_active_adapter(pm, "default", final)


def test_head_forward_is_fp32_under_autocast_without_renaming_weights():
    lin = torch.nn.Linear(8, 1, bias=False).to(torch.bfloat16)
    keys = set(lin.state_dict())
    fp32_head(lin)
    assert set(lin.state_dict()) == keys and lin.weight.dtype == torch.float32
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin(x)
    assert y.dtype == torch.float32
    assert torch.allclose(y, x.double().float() @ lin.weight.T, atol=0, rtol=0)


# ---------------------------------------------------------------------------- non-finite guard


def test_nan_gradient_stops_the_run_naming_config_step_and_tensor(tiny_base_dir, groups_file, tmp_path):
    def on_step_begin(self, args, state, control, model=None, **kw):
        if state.global_step == 1:  # optimiser step 2 starts: poison the head's gradient
            dict(model.named_parameters())[HEAD_COPY].register_hook(lambda g: g * float("nan"))

    out = tmp_path / "llama-r8-all.partial"
    with pytest.raises(NonFiniteError) as err:
        _train(tiny_base_dir("llama"), groups_file, out, callbacks=[_callback(step_begin=on_step_begin)])
    assert str(err.value) == f"finetune llama-r8-all: non-finite gradient in {HEAD_COPY} at step 2"
    assert not (out / "train_summary.json").exists()


def test_corrupted_weight_stops_the_run_at_the_loss(tiny_base_dir, groups_file, tmp_path):
    def on_step_begin(self, args, state, control, model=None, **kw):
        if state.global_step == 2:  # optimiser step 3 starts: a frozen base weight goes NaN
            with torch.no_grad():
                model.get_input_embeddings().weight[:] = float("nan")

    out = tmp_path / "pythia-r1-mha"
    with pytest.raises(NonFiniteError, match=r"^finetune pythia-r1-mha: non-finite loss at step 3$"):
        _train(tiny_base_dir("pythia"), groups_file, out, targets="mha", rank=1,
               callbacks=[_callback(step_begin=on_step_begin)])
    assert not (out / "train_summary.json").exists()


def test_trainer_never_filters_nan_losses_from_the_log(tmp_path):
    from irrepro.lora.trainer import training_arguments as _training_arguments

    args = _training_arguments(output_dir=str(tmp_path), warmup_ratio=0.0, report_to="none", use_cpu=True)
    assert args.logging_nan_inf_filter is False


# ---------------------------------------------------------------------------- 2-logit head (authors' training build)


def test_two_logit_loss_is_ce_over_all_2g_logits_to_index_0(tiny_base_dir, groups_file, tmp_path):
    from irrepro.rerank.model import load_reranker
    from irrepro.lora.trainer import training_arguments as _training_arguments
    from irrepro.rerank.train import LCETrainer

    torch.manual_seed(0)
    model, tok = load_reranker(tiny_base_dir("mistral"), 2, "mha", head_labels=2)
    with torch.no_grad():  # a head that separates the two logits
        model.base_model.model.score.modules_to_save["default"].weight.normal_(0, 1.0)
    records = D.read_groups(groups_file)
    G = 4
    batch = D.GroupCollator(tok, G, qmax=16, pmax=32, seed=0)([D.GroupDataset(records)[i] for i in range(3)])
    model.eval()
    args = _training_arguments(output_dir=str(tmp_path), warmup_ratio=0.0, report_to="none", use_cpu=True)
    trainer = LCETrainer(model=model, args=args, group_size=G, head_labels=2)
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch).item()
        z = model(**batch).logits.double().numpy()  # [3*G, 2]
    assert z.shape == (3 * G, 2)
    per_query = z.reshape(3, G, 2)
    ref = np.mean([np.log(np.exp(q).sum()) - q[0, 0] for q in per_query])  # -log softmax over 2G, index 0
    assert loss == pytest.approx(ref, rel=1e-5)


def test_two_logit_adapter_trains_and_scores_by_logit_0(tiny_base_dir, groups_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from irrepro.rerank.evaluate import AdapterSwitcher, head_labels_of, load_base
    from irrepro.rerank.inputs import encode_pair
    from irrepro.rerank.score import _pad_token_id, score_encoded

    base = tiny_base_dir("llama")
    summary = _train(base, groups_file, tmp_path / "llama-r2-all", head_labels=2, max_steps=2, save_steps=2)
    assert summary["config"]["head_labels"] == 2
    final = tmp_path / "llama-r2-all" / "final"
    assert head_labels_of(final) == 2

    model, tok = load_base(base, device="cpu", dtype="float32", num_labels=head_labels_of(final))
    pm = AdapterSwitcher(model).attach(final)
    pairs = [("quick fox", "the quick brown fox jumps"), ("paris capital", "lorem ipsum dolor"),
             ("flea life", "a flea can live up to a year")]
    encoded = [encode_pair(tok, q, p, qmax=16, pmax=32) for q, p in pairs]
    scores = score_encoded(pm, encoded, _pad_token_id(pm, tok), batch_size=8, dtype="float32")

    # independent reference: the stock loaders, one unpadded sequence at a time, logit 0
    ref_model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=2),
                                          str(final)).eval()
    ref_model.config.pad_token_id = tok.pad_token_id
    with torch.no_grad():
        ref = [ref_model(input_ids=torch.tensor([ids])).logits[0, 0].item() for ids in encoded]
    np.testing.assert_allclose(scores, ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- scoring


def test_bf16_scoring_separates_scores_closer_than_bf16_resolution(half_base, tmp_path):
    """Head outputs 100.00 and 100.05 (bf16 spacing at 100 is 0.5) stay apart in bf16 scoring."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from irrepro.rerank.evaluate import AdapterSwitcher, load_base
    from irrepro.rerank.inputs import encode_pair
    from irrepro.rerank.model import load_reranker
    from irrepro.rerank.score import _pad_token_id, score_encoded

    base = half_base("llama", "bfloat16")
    torch.manual_seed(0)
    trained, _ = load_reranker(base, 1, "mha", dtype=torch.bfloat16)
    first = tmp_path / "adapter0"
    trained.save_pretrained(first)

    model, tok = load_base(base, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    pm = AdapterSwitcher(model).attach(first)
    encoded = [encode_pair(tok, "quick fox", "the quick brown fox jumps over", qmax=16, pmax=32),
               encode_pair(tok, "quick fox", "the lazy dog and a flea", qmax=16, pmax=32)]
    pad = _pad_token_id(pm, tok)

    head = pm.base_model.model.score.modules_to_save[pm.active_adapter]
    captured = []
    hook = head.register_forward_hook(lambda m, inp, out: captured.append(inp[0].detach().double()))
    score_encoded(pm, encoded, pad, batch_size=8, dtype="bfloat16")
    hook.remove()
    x = captured[0]
    # rows are sorted longest first (stable); the score position is each row's last real token
    order = sorted(range(2), key=lambda i: -len(encoded[i]))
    h = torch.stack([x[order.index(i), len(encoded[i]) - 1] for i in range(2)])  # [2, hidden]
    target = torch.tensor([100.0, 100.05], dtype=torch.float64)
    w = h.T @ torch.linalg.solve(h @ h.T, target)  # w in span(h1, h2) with w.h_i = target_i

    with torch.no_grad():
        trained.base_model.model.score.modules_to_save["default"].weight[0] = w.float()
    second = tmp_path / "adapter1"
    trained.save_pretrained(second)
    pm = AdapterSwitcher(model).attach(second)  # checks the live head equals the file's exactly
    scores = score_encoded(pm, encoded, pad, batch_size=8, dtype="bfloat16")
    assert scores[0] != scores[1]
    assert scores[1] - scores[0] == pytest.approx(0.05, abs=5e-3)
    assert scores[0] == pytest.approx(100.0, abs=5e-3)

    # control: the stock path (bf16 head copy, bf16 autocast) cannot represent the difference
    stock = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.bfloat16)
    stock.config.pad_token_id = pad
    stock_scores = score_encoded(PeftModel.from_pretrained(stock, str(second)), encoded, pad, batch_size=8,
                                 dtype="bfloat16")
    d = stock_scores[1] - stock_scores[0]
    assert d == 0 or abs(d) >= 0.25  # tied, or a whole bf16 step apart (here: tied)


def test_non_finite_score_names_query_and_doc(tiny_base_dir):
    from irrepro.rerank.evaluate import load_base
    from irrepro.rerank.inputs import encode_pair
    from irrepro.rerank.score import _pad_token_id, score_encoded

    model, tok = load_base(tiny_base_dir("pythia"), device="cpu", dtype="float32")
    with torch.no_grad():
        model.score.weight[:] = float("nan")
    encoded = [encode_pair(tok, "quick fox", "the quick brown fox", qmax=16, pmax=32),
               encode_pair(tok, "quick fox", "lorem ipsum", qmax=16, pmax=32)]
    with pytest.raises(NonFiniteError, match=r"non-finite score nan for query 'q7', doc 'D12' \(2 of 2"):
        score_encoded(model, encoded, _pad_token_id(model, tok), keys=[("q7", "D12"), ("q7", "D13")])


# ---------------------------------------------------------------------------- SynTOD TOD model


def test_tod_model_on_fp16_base_has_fp32_trainables(half_base):
    from irrepro.syntod.tod import load_tod_model

    model, _ = load_tod_model(half_base("pythia", "float16"), 2, "all")
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {torch.float16}
