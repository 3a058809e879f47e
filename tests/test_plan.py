"""irrepro plan: counting rules against hand-computed numbers, LoRA sizes against peft, the
runtime check (API, CLI and Snakefile), output formats, calibration files, LLM usage records."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from irrepro import plan
from irrepro.cli import main
from irrepro.params import load_params

from conftest import send_json

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small():
    """The mini params cut to one config with round numbers, and a throughput entry whose reference
    size is the tiny Llama itself (so rates apply unscaled)."""
    P = copy.deepcopy(load_params(ROOT / "params.yaml", "mini"))
    P["finetune"].update(families=["llama"], ranks=[8], targets=["mha"], queries_per_device=4, grad_accum=2,
                         nproc_per_node=1, epochs=1, max_steps=-1, save_steps=5, group_size=8,
                         query_max_len=32, passage_max_len=64)
    P["rerank"].update(checkpoint_datasets=["dl19"], final_datasets=["dl20"], depth=10)
    P["ablate"].update(families=["llama"], ranks=[8], targets=["mha"], datasets=["dl19"], depth=10, band_size=2)
    P["plan"].update(train_queries=100, score_tokens_per_pair=50, gpu="test")
    P["plan"]["throughput"] = {"test": {"ref_params": 606208, "train_tokens_s": 1000, "score_tokens_s": 5000,
                                        "decode_tokens_s": 100, "job_overhead_s": 0}}
    return P


def row(p, prefix):
    return next(r for r in p["rows"] if r["stage"].startswith(prefix))


def test_counting_rules_match_hand_computed_numbers(small):
    assert plan.optimiser_steps(100, 4, 2, 1, 1, -1) == 13  # ceil(100 / 8)
    assert plan.optimiser_steps(100, 4, 2, 2, 2, -1) == 14  # ceil(100 / 16) * 2 epochs
    assert plan.optimiser_steps(100, 4, 2, 1, 1, 7) == 7  # max_steps wins
    assert plan.n_checkpoints(13, 5) == 3  # 5, 10 and the last step 13
    assert plan.n_checkpoints(15, 5) == 3  # 5, 10, 15: the last step is already one

    p = plan.build_plan(small)
    ft = row(p, "finetune")
    assert (ft["jobs"], ft["steps"], ft["checkpoints"]) == (1, 13, 3)
    assert ft["tokens"] == 13 * 4 * 2 * 8 * (32 + 64 + 2)  # steps x queries x group x padded length
    assert ft["gpu_hours"] == pytest.approx(ft["tokens"] / 1000 / 3600)
    # tiny Llama (hidden 64, 2 layers, MHA kv = hidden): r8 on q,k,v,o = 2 * 8 * 4 * (64 + 64), + the score head
    trainable = 2 * 8 * 4 * 128 + 64
    assert ft["disk_gb"] == pytest.approx((4 * trainable * (3 + 1) + 8 * trainable) / 1e9)
    every, final = row(p, "rerank_eval (every"), row(p, "rerank_eval (final")
    assert every["pairs"] == 43 * 10 * 3 and final["pairs"] == 54 * 10
    assert every["gpu_hours"] == pytest.approx(43 * 10 * 3 * 50 / 5000 / 3600)
    assert p["totals"]["evaluation"]["gpu_hours"] == pytest.approx((1290 + 540) * 50 / 5000 / 3600)
    ab = row(p, "ablate")
    # 2 layers, band 2, mha only: full, head_only, layer-0, layer-1, band-0-1 (= head_only), 4 proj,
    # mha (= head_only), 8 cells -> 1 + 1 + 2 + 4 + 8 = 16 distinct variants
    assert "16 variants" in ab["stage"] and ab["pairs"] == 16 * 43 * 10


def test_old_single_dataset_list_is_scored_at_every_checkpoint():
    assert plan.eval_schedule({"datasets": ["dl19", "dev"]}) == (["dl19", "dev"], [])
    assert plan.eval_schedule({"checkpoint_datasets": ["dl19"], "final_datasets": ["dev"]}) == (["dl19"], ["dev"])


@pytest.mark.parametrize("family, config_cls, targets, rank", [
    ("llama", "LlamaConfig", "all", 8), ("mistral", "MistralConfig", "mha", 2), ("pythia", "GPTNeoXConfig", "mlp", 4)])
def test_sizes_agree_with_real_transformers_and_peft(small, family, config_cls, targets, rank):
    import transformers
    from peft import LoraConfig, get_peft_model

    from irrepro.rerank.targets import target_modules

    T = small["tiny"]
    extra = {"num_key_value_heads": max(1, T["heads"] // 2)} if family == "mistral" else {}
    cfg = getattr(transformers, config_cls)(vocab_size=T["vocab_size"], hidden_size=T["hidden"],
                                            num_hidden_layers=T["layers"], num_attention_heads=T["heads"],
                                            intermediate_size=T["intermediate"], tie_word_embeddings=False, **extra)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    arch = plan.arch_of("tiny", small, family, "models.x.id")
    matrices = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2)  # norms/biases left out
    assert arch.params == matrices
    peft_model = get_peft_model(model, LoraConfig(r=rank, target_modules=target_modules(family, targets)))
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert plan.lora_params(arch, rank, plan.modules_for(arch, targets)) == lora


def test_runtime_check_names_the_rule_and_both_numbers(small):
    p = plan.build_plan(small)
    need = math.ceil(row(p, "finetune")["job_hours"] * 60)
    runtimes = {r: {"mini": 10_000, "paper": 10_000} for r in plan.load_runtimes()}
    assert plan.runtime_problems(p, runtimes) == []
    runtimes["finetune"]["mini"] = need - 1
    (msg,) = plan.runtime_problems(p, runtimes, source="rt.yaml")
    assert msg.startswith(f"rule finetune: estimated job time {need} min exceeds its declared runtime {need - 1} min")
    with pytest.raises(plan.PlanError, match="rule finetune"):
        plan.check_runtimes(small, runtimes)


def test_runtime_table_is_complete_and_rules_read_it():
    table = plan.load_runtimes()
    used = set()
    for f in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = f.read_text()
        assert not re.search(r"(runtime|mem_mb|gpu)=\s*\d|ROUTE ==", text), f"{f.name}: a rule sizes itself inline"
        used |= set(re.findall(r'resources_of\("(\w+)"', text))
    assert {"finetune", "rerank_eval", "ablate", "finetune_tod", "evaluate_tod"} <= used <= set(table)


def test_real_params_pass_and_paper_evaluation_is_at_most_a_tenth_of_training():
    for profile in ("mini", "paper"):
        plan.check_runtimes(load_params(ROOT / "params.yaml", profile))
    p = plan.build_plan(load_params(ROOT / "params.yaml", "paper"))
    t = p["totals"]
    assert t["evaluation"]["gpu_hours"] <= 0.10 * t["training"]["gpu_hours"], p["eval_over_training"]


def _slow_params(tmp_path) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["plan"]["throughput"]["a100-80gb"]["train_tokens_s"] = 10  # 300x slower: weeks per job
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def test_check_params_cli_refuses_a_too_slow_profile(tmp_path, capsys, caplog):
    assert main(["check-params", "--params", str(ROOT / "params.yaml")]) == 0
    assert main(["check-params", "--params", str(_slow_params(tmp_path))]) == 2
    text = caplog.text + capsys.readouterr().err
    assert "rule finetune: estimated job time" in text and "declared runtime 10080 min" in text


def test_snakefile_refuses_a_too_slow_profile(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(ROOT / "Snakefile", proj / "Snakefile")
    shutil.copytree(ROOT / "workflow", proj / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(_slow_params(tmp_path), proj / "params.yaml")
    snakemake = Path(sys.executable).parent / "snakemake"
    res = subprocess.run([str(snakemake), "-n", "--config", "profile=paper"], cwd=proj, capture_output=True, text=True)
    assert res.returncode != 0
    assert "rule finetune: estimated job time" in res.stdout + res.stderr


def test_plan_cli_formats(capsys):
    assert main(["plan", "--profile", "paper", "--params", str(ROOT / "params.yaml"), "--root", str(ROOT)]) == 0
    md = capsys.readouterr().out
    assert "| stage | jobs | steps/job |" in md and "| finetune | 36 | 6,263 | 126 |" in md
    assert "checkpoint evaluation" in md
    assert main(["plan", "--profile", "paper", "--format", "json", "--params", str(ROOT / "params.yaml")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["profile"] == "paper" and data["gpu"] == "a100-80gb" and data["rows"][0]["stage"] == "finetune"
    assert main(["plan", "--profile", "mini", "--format", "tsv", "--params", str(ROOT / "params.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t")[:3] == ["stage", "jobs", "steps"]
    assert all(len(line.split("\t")) == len(plan.COLUMNS) for line in lines)


def test_measured_files_calibrate_the_plan(small, tmp_path):
    lora = tmp_path / "models/mini/lora/llama-r8-mha"
    lora.mkdir(parents=True)
    (lora / "train_summary.json").write_text(json.dumps({"sec_per_step": 0.5, "world_size": 1}))
    logs = tmp_path / "logs/mini/rerank_eval"
    logs.mkdir(parents=True)
    (logs / "llama-r8-mha.log").write_text("x step 5 on dl19: scored 430 pairs in 2.0s (215 pairs/s)\n"
                                           "x step 10 on dl19: scored 430 pairs in 2.3s (187 pairs/s)\n")
    gen = tmp_path / "data/mini/syntod/cooking/graph"
    gen.mkdir(parents=True)
    (gen / "stats.json").write_text(json.dumps({"llm_usage": {"replies": 3, "prompt_tokens": 30,
                                                               "completion_tokens": 12}}))
    walks = tmp_path / "results/mini/metrics"
    walks.mkdir(parents=True)
    (walks / "syntod_walks_cooking.json").write_text(json.dumps({"length": {"mean": 12.4}}))
    (tmp_path / "data/mini/train").mkdir(parents=True)
    (tmp_path / "data/mini/train/groups.jsonl").write_text("{}\n" * 24)

    facts = plan.measured_facts(small, tmp_path)
    assert facts["train_queries"] == 24 and facts["walk_length"]["cooking"] == 12.4
    assert row(plan.build_plan(small, facts), "finetune")["steps"] == 3  # ceil(24 / 8)
    cal = {c["what"]: c for c in plan.calibration(small, tmp_path)}
    assert cal["finetune llama"]["measured_tokens_s"] == pytest.approx(4 * 2 * 8 * 98 / 0.5)
    assert cal["rerank_eval llama"]["measured_tokens_s"] == pytest.approx(860 * 50 / 4.3)
    assert cal["syntod_generate cooking/graph"]["prompt_tokens"] == 30
    assert "measured 12,544 tokens/s" in plan.render(plan.build_plan(small, facts), "md", list(cal.values()))


# ----------------------------------------------------------------------------- LLM usage records
class _UsageHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = len(body["messages"][-1]["content"])
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": n, "completion_tokens": 1, "total_tokens": n + 1}}
        send_json(self, 200, reply)

    def log_message(self, *args):
        pass


def test_reply_usage_is_kept_in_the_cache_and_summed(tmp_path, monkeypatch):
    from irrepro.syntod.cache import CachedBackend
    from irrepro.syntod.llm import OpenAIChatBackend

    server = ThreadingHTTPServer(("127.0.0.1", 0), _UsageHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        first = CachedBackend(OpenAIChatBackend("m", base_url=url), tmp_path / "cache")
        for text in ("abc", "hello"):
            assert first.chat([{"role": "user", "content": text}]) == "ok"
        assert first.usage_totals() == {"replies": 2, "prompt_tokens": 8, "completion_tokens": 2,
                                        "replies_without_usage": 0}
        entries = [json.loads(f.read_text()) for f in (tmp_path / "cache").rglob("*.json")]
        assert sorted(e["usage"]["prompt_tokens"] for e in entries) == [3, 5]
        again = CachedBackend(OpenAIChatBackend("m", base_url=url), tmp_path / "cache")
        again.chat([{"role": "user", "content": "hello"}])
        assert again.stats()["calls"] == 0 and again.usage_totals()["prompt_tokens"] == 5
        assert again.last_usage == {"prompt_tokens": 5, "completion_tokens": 1}
    finally:
        server.shutdown()
        server.server_close()
