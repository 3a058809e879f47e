"""The shared LoRA harness (irrepro.lora): checkpoints and resume point on real directories, the run
directory's settings check and publishing, settings from params, training arguments, the base-model
rules, and the package boundary (no module imports another package's private names)."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from irrepro.lora import checkpoints as C
from irrepro.lora import run as R
from irrepro.lora.config import PARAM_KEYS, RerankTraining, TodTraining
from irrepro.params import ParamsError, load_params

PKG = Path(__file__).resolve().parents[1] / "workflow" / "irrepro"


# ---------------------------------------------------------------------------- package boundary


def cross_package_private_imports(root: Path) -> list[str]:
    """``file:line: what`` for every ``from X import _name`` (X another package of ``root``'s
    tree, relative or absolute ``irrepro.``) whose name is private (one leading underscore)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        package = list(path.relative_to(root.parent).parts[:-1])  # e.g. ["irrepro", "syntod"]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                target = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == root.name:
                target = node.module.split(".")
            else:
                continue
            # `from ..rerank.model import _x`: _x belongs to package rerank; `from ..rerank import _x` too
            owner = target[:-1] if root.parent.joinpath(*target).with_suffix(".py").is_file() else target
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and owner != package:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}: "
                                 f"{'.' * node.level}{node.module or ''} import {alias.name}")
    return found


def test_no_module_imports_another_packages_private_names():
    assert cross_package_private_imports(PKG) == []


def test_the_private_import_scan_finds_what_it_should(tmp_path):
    root = tmp_path / "irrepro"
    for d in ("", "a", "b"):
        (root / d).mkdir(exist_ok=True)
        (root / d / "__init__.py").write_text("")
    (root / "a" / "m.py").write_text("def _p(): pass\ndef pub(): pass\n")
    (root / "a" / "same.py").write_text("from .m import _p\n")  # same package: allowed
    (root / "b" / "x.py").write_text("from ..a.m import _p, pub\nfrom irrepro.a.m import _p as q\nfrom ..a import _hidden\n"
                                     "from os import _exit\nfrom ..a.m import __doc__\n")
    assert cross_package_private_imports(root) == [
        "irrepro/b/x.py:1: ..a.m import _p", "irrepro/b/x.py:2: irrepro.a.m import _p", "irrepro/b/x.py:3: ..a import _hidden"]


# ---------------------------------------------------------------------------- checkpoints


def make_checkpoint(out: Path, step: int, *, state_step=None, adapter=True, resume=True) -> Path:
    """What Trainer leaves in ``checkpoint-{step}``: adapter, resume state, trainer_state.json."""
    p = out / f"checkpoint-{step}"
    p.mkdir(parents=True)
    if adapter:
        (p / "adapter_config.json").write_text("{}")
        (p / "adapter_model.safetensors").write_bytes(b"weights")
    if resume:
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            (p / name).write_bytes(b"state")
    if state_step is not False:
        (p / "trainer_state.json").write_text(json.dumps({"global_step": step if state_step is None else state_step}))
    return p


def test_checkpoints_listed_by_step_and_judged_by_their_files(tmp_path):
    make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 2, resume=False)        # pruned: an adapter, not a resume point
    make_checkpoint(tmp_path, 3, state_step=4)       # trainer_state names another step
    make_checkpoint(tmp_path, 100, state_step=False)  # killed before trainer_state.json
    (tmp_path / "checkpoint-7").write_text("a file, not a checkpoint")
    (tmp_path / "final").mkdir()
    assert [s for s, _ in C.list_checkpoints(tmp_path)] == [2, 3, 10, 100]
    assert C.list_checkpoints(tmp_path / "absent") == []
    assert [C.is_complete_adapter(tmp_path / f"checkpoint-{s}") for s in (2, 3, 10, 100)] == [True, False, True, False]
    assert [C.is_complete_checkpoint(tmp_path / f"checkpoint-{s}") for s in (2, 3, 10, 100)] == [False, False, True, False]
    assert C.latest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert C.checkpoint_step(tmp_path / "checkpoint-10") == 10 and C.checkpoint_step(tmp_path / "final") is None
    (tmp_path / "checkpoint-10" / "scheduler.pt").write_bytes(b"")  # an empty file is no state
    assert not C.is_complete_checkpoint(tmp_path / "checkpoint-10")


def test_resume_point_removes_newer_incomplete_checkpoints_and_pruning_keeps_the_newest(tmp_path):
    make_checkpoint(tmp_path, 4)
    make_checkpoint(tmp_path, 8)
    make_checkpoint(tmp_path, 2, adapter=False)      # older and broken: reported, kept
    make_checkpoint(tmp_path, 12, state_step=False)  # newer and incomplete: a run killed while saving
    assert C.resume_point(tmp_path) == (tmp_path / "checkpoint-8", 8)
    assert [s for s, _ in C.list_checkpoints(tmp_path)] == [2, 4, 8]
    deleted = C.prune_resume_state(tmp_path)
    assert sorted(f.relative_to(tmp_path).as_posix() for f in deleted) == [
        "checkpoint-4/optimizer.pt", "checkpoint-4/rng_state.pth", "checkpoint-4/scheduler.pt"]
    assert C.is_complete_adapter(tmp_path / "checkpoint-4") and C.is_complete_checkpoint(tmp_path / "checkpoint-8")
    assert (tmp_path / "checkpoint-2" / "optimizer.pt").exists()  # not an adapter: left alone
    assert C.resume_point(tmp_path / "empty") == (None, 0)


# ---------------------------------------------------------------------------- run directory


def test_run_directory_records_its_settings_and_refuses_others(tmp_path):
    out = tmp_path / "llama-r2-all.partial"
    config = {"rank": 2, "lr": 0.001, "base": "x"}
    run = R.start_run(out, config, t0=1.0)
    assert (run.resume, run.resume_step, run.t0) == (None, 0, 1.0)
    text = (out / R.CONFIG_NAME).read_text()
    assert text == json.dumps(config, indent=2, sort_keys=True) + "\n"
    R.start_run(out, config)  # same settings: resumes
    with pytest.raises(ValueError, match=r"other settings \{'rank': \(2, 4\)\}.*delete the directory"):
        R.start_run(out, {**config, "rank": 4})
    assert R.finished_summary(out, config, "finetune") is None
    (out / R.SUMMARY_NAME).write_text(json.dumps({"steps": 3, "config": config}))
    assert R.finished_summary(out, config, "finetune") == {"steps": 3, "config": config}
    with pytest.raises(ValueError, match="other settings"):
        R.finished_summary(out, {**config, "lr": 0.01}, "finetune")
    assert R.run_label(out) == "llama-r2-all" and R.run_label(tmp_path / "x") == "x"


def test_training_in_a_work_dir_publishes_only_what_finished(tmp_path):
    out = tmp_path / "lora" / "cfg"

    def crash(work):
        make_checkpoint(work, 5)
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        R.train_in_work_dir(out, crash)
    assert not out.exists() and (tmp_path / "lora" / "cfg.partial" / "checkpoint-5").is_dir()

    def finish(work):
        assert C.resume_point(work)[1] == 5  # the rerun finds the crashed run's checkpoint
        make_checkpoint(work, 10)
        return {"steps": 10}

    assert R.train_in_work_dir(out, finish) == {"steps": 10}
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-10", "checkpoint-5"]
    assert not (tmp_path / "lora" / "cfg.partial").exists()


# ---------------------------------------------------------------------------- settings from params


@pytest.mark.parametrize("profile", ["mini", "paper"])
def test_settings_from_params_are_the_trainers_arguments(root, profile):
    from irrepro.rerank.train import RerankRecipe
    from irrepro.syntod.tod import TodRecipe

    P = load_params(root / "params.yaml", profile)
    for cls, section, recipe, not_trainer_args in (
            (RerankTraining, P["finetune"], RerankRecipe, {"families", "ranks", "targets", "launcher", "nproc_per_node"}),
            (TodTraining, P["syntod"]["finetune"], TodRecipe, set())):
        kwargs = cls.from_params(section, "x").kwargs()
        assert set(kwargs) <= {f.name for f in dataclasses.fields(recipe)}, cls
        # every knob of the section reaches the trainer under its argument name, unchanged (type too)
        expected = {PARAM_KEYS.get(k, k): v for k, v in section.items() if k not in not_trainer_args}
        assert expected == kwargs
        assert [type(v) for v in expected.values()] == [type(kwargs[k]) for k in expected]
    assert RerankTraining.from_params(P["finetune"], "finetune").kwargs()["qmax"] == P["finetune"]["query_max_len"]


def test_the_knobs_are_listed_once_in_the_typed_sections():
    """The settings take their keys from param_sections (the schema's mirror), not a list of their own:
    a knob the section gains reaches the trainer."""
    from irrepro.param_sections import FinetuneParams, TodFinetuneParams

    assert RerankTraining.SECTION is FinetuneParams and TodTraining.SECTION is TodFinetuneParams
    assert RerankTraining.NOT_TRAINER_ARGS <= {f.name for f in dataclasses.fields(FinetuneParams)}


def test_a_missing_knob_is_an_error_naming_its_params_key(root):
    P = load_params(root / "params.yaml", "mini")
    F = {k: v for k, v in P["finetune"].items() if k not in ("passage_max_len", "seed")}
    with pytest.raises(ParamsError, match=r"^params: finetune: missing \['passage_max_len', 'seed'\]$"):
        RerankTraining.from_params(F, "finetune")
    with pytest.raises(ParamsError, match=r"^params: syntod.finetune: expected a mapping, got NoneType$"):
        TodTraining.from_params(None, "syntod.finetune")
    with pytest.raises(ParamsError, match=r"^params: finetune: unknown key\(s\) \['lr_typo'\]$"):
        RerankTraining.from_params({**P["finetune"], "lr_typo": 1}, "finetune")
    T = {k: v for k, v in P["syntod"]["finetune"].items() if k != "loss_on"}
    # optional: not passed, so the trainer's default (the original's choice) applies
    assert "loss_on" not in TodTraining.from_params(T, "syntod.finetune").kwargs()
    from irrepro.syntod.tod import DEFAULT_LOSS_ON, TodRecipe

    assert TodRecipe(rank=2, targets="all").loss_on == DEFAULT_LOSS_ON == "all"


def test_a_recipe_is_built_from_keywords_or_replaced_by_them():
    from irrepro.rerank.train import RerankRecipe
    from irrepro.syntod.tod import TodRecipe

    r = RerankRecipe.from_arguments(None, {"rank": 8, "targets": "mha", "lr": 1e-3})
    # the trainer's own defaults over the shared ones (LoraRecipe declares alpha, lr, warmup_ratio without one)
    assert (r.rank, r.targets, r.lr, r.alpha, r.warmup_ratio, r.dropout, r.qmax) == (8, "mha", 1e-3, 64, 0.1, 0.1, 32)
    assert (TodRecipe(rank=8, targets="all").alpha, TodRecipe(rank=8, targets="all").lr) == (16, 2e-4)
    assert RerankRecipe.from_arguments(r, {"rank": 4}) == RerankRecipe(rank=4, targets="mha", lr=1e-3)
    assert RerankRecipe.from_arguments(r, {}) is not None and r.rank == 8  # frozen: replaced, not changed
    with pytest.raises(TypeError, match="lr_typo"):
        RerankRecipe.from_arguments(None, {"rank": 8, "targets": "mha", "lr_typo": 1})
    with pytest.raises(TypeError, match="rank"):
        TodRecipe.from_arguments(None, {"targets": "all"})
    with pytest.raises(TypeError, match="expected a TodRecipe, got RerankRecipe"):
        TodRecipe.from_arguments(r, {})


# ---------------------------------------------------------------------------- Trainer and model set-up


def test_lora_arguments_are_the_recipe_on_this_transformers(tmp_path):
    pytest.importorskip("transformers")
    from irrepro.lora.trainer import length_grouping, lora_arguments, report_to_arg

    common = dict(batch_size=2, grad_accum=3, lr=1e-3, epochs=2, warmup_ratio=0.25, lr_scheduler="linear", bf16=False,
                  logging_steps=1, save_steps=5, seed=7, label_names=[])
    args = lora_arguments(tmp_path, max_steps=0, **common)
    assert (args.max_steps, args.per_device_train_batch_size, args.gradient_accumulation_steps, args.save_steps) == (-1, 2, 3, 5)
    assert (args.optim, args.weight_decay, args.save_total_limit, args.data_seed) == ("adamw_torch", 0.0, None, 7)
    assert args.logging_nan_inf_filter is False  # a NaN loss reaches the log and the guard
    assert getattr(args, "warmup_ratio", None) == 0.25 or args.warmup_steps == 0.25
    assert not getattr(args, "gradient_checkpointing", False) and not getattr(args, "activation_checkpointing", False)
    assert lora_arguments(tmp_path, max_steps=9, **common).max_steps == 9
    grouped = lora_arguments(tmp_path, max_steps=9, **common, **length_grouping(True))
    assert getattr(grouped, "group_by_length", None) is True or grouped.train_sampling_strategy == "group_by_length"
    with pytest.raises(ValueError, match="is not one of"):
        report_to_arg("wandb", None)


def test_token_and_dtype_rules(monkeypatch):
    torch = pytest.importorskip("torch")
    from irrepro.lora.model import hf_token, resolve_dtype
    from irrepro.lora.precision import base_dtype

    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert hf_token(None) is False and hf_token("hf_arg") == "hf_arg"
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert hf_token(None) == "hf_env" and hf_token("hf_arg") == "hf_arg"
    assert [resolve_dtype(d) for d in ("bf16", "fp16", "fp32", "bfloat16", "auto", None, torch.float16)] == [
        torch.bfloat16, torch.float16, torch.float32, torch.bfloat16, "auto", None, torch.float16]
    for bad in ("float33", "Tensor"):
        with pytest.raises(ValueError, match=f"unknown dtype '{bad}'"):
            resolve_dtype(bad)
    assert base_dtype("auto", "cpu") is torch.float32 and base_dtype("auto", "cuda") == "auto"


def test_pad_rule_prefers_pad_then_unk_then_eos_then_a_new_pad():
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from irrepro.lora.model import choose_pad

    vocab = {"<unk>": 0, "<eos>": 1, "<pad>": 2, "a": 3}

    def tok(**specials):
        return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")), **specials)

    assert choose_pad(tok(pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")) == ("<pad>", False)
    assert choose_pad(tok(unk_token="<unk>", eos_token="<eos>")) == ("<unk>", False)
    assert choose_pad(tok(eos_token="<eos>")) == ("<eos>", False)
    assert choose_pad(tok()) == ("<pad>", True)
