"""The run sidecar (circumstances beside the log) and canonical adapter configs: what keeps
timings, hosts, dates and per-process set orders out of the outputs."""

import json

from irrepro import sidecar
from irrepro.lora.checkpoints import canonical_adapter_config


def test_sidecar_sits_beside_the_log_and_collects_sections(tmp_path):
    log = tmp_path / "logs" / "mini" / "finetune" / "llama-r2-mha.log"
    assert sidecar.sidecar_path(log) == log.with_name("llama-r2-mha.run.json")
    assert sidecar.sidecar_path(None) is None
    path = sidecar.start("finetune", ["finetune", "--rank", "2"], log)
    sidecar.record("train", {"sec_per_step": 0.5})
    sidecar.record("train", {"wall_time_s": 3.0})
    sidecar.finish(0)
    doc = json.loads(path.read_text())
    assert doc["command"] == "finetune" and doc["argv"] == ["finetune", "--rank", "2"] and doc["returncode"] == 0
    assert doc["train"] == {"sec_per_step": 0.5, "wall_time_s": 3.0}
    assert doc["host"] and doc["started"] <= doc["finished"] and doc["seconds"] >= 0
    assert sidecar.read_sidecar(log) == doc
    sidecar.start("plan", [], None)  # no log: kept in memory only
    sidecar.record("x", {"y": 1})
    assert sidecar.current()["x"] == {"y": 1} and not (tmp_path / "x.run.json").exists()


def test_portable_path_names_hub_snapshots_by_repo_and_commit(tmp_path, monkeypatch):
    snap = "/root/.cache/huggingface/hub/models--meta-llama--Llama-3.1-8B/snapshots/0e9e39f249a16976918f6564b8830bc894c89659"
    assert sidecar.portable_path(snap) == "hf:meta-llama/Llama-3.1-8B@0e9e39f249a16976918f6564b8830bc894c89659"
    assert sidecar.portable_path(snap + "/sub") == "hf:meta-llama/Llama-3.1-8B@0e9e39f249a16976918f6564b8830bc894c89659:sub"
    monkeypatch.chdir(tmp_path)
    assert sidecar.portable_path(tmp_path / "models" / "mini" / "base" / "llama") == "models/mini/base/llama"
    assert sidecar.portable_path("models/mini/base/llama") == "models/mini/base/llama"
    assert sidecar.portable_path("/elsewhere/base") == "/elsewhere/base"


def test_canonical_adapter_config_is_order_free_portable_and_loadable(tmp_path):
    from peft import LoraConfig

    snap = "/root/.cache/huggingface/hub/models--EleutherAI--pythia-6.9b/snapshots/" + "a" * 40
    outs = []
    for i, modules in enumerate((["q_proj", "v_proj", "k_proj"], ["k_proj", "q_proj", "v_proj"])):
        d = tmp_path / f"a{i}"
        LoraConfig(r=2, target_modules=modules, modules_to_save=["score"], base_model_name_or_path=snap,
                   task_type="SEQ_CLS").save_pretrained(d)
        (d / "README.md").write_text(f"---\nbase_model: {snap}\n---\n")
        canonical_adapter_config(d)
        first = (d / "adapter_config.json").read_bytes()
        canonical_adapter_config(d)  # idempotent
        assert (d / "adapter_config.json").read_bytes() == first
        outs.append(first)
        assert snap not in (d / "README.md").read_text() and "EleutherAI/pythia-6.9b" in (d / "README.md").read_text()
    assert outs[0] == outs[1]
    cfg = json.loads(outs[0])
    assert cfg["target_modules"] == ["k_proj", "q_proj", "v_proj"]
    assert cfg["base_model_name_or_path"] == "EleutherAI/pythia-6.9b" and cfg["revision"] == "a" * 40
    loaded = LoraConfig.from_pretrained(tmp_path / "a0")
    assert set(loaded.target_modules) == {"q_proj", "k_proj", "v_proj"} and loaded.revision == "a" * 40
