"""The rehearsal profile (paper route + workflow/rehearsal.yaml), its LLM server and its checks.

The whole rehearsal (`make rehearse`) is run by CI, not here; these tests check the parts on
small inputs: the profile resolves as the paper's values with the overlay on top, the server
answers the paper route's OpenAI client over real HTTP with injected 429/5xx, and each check
fails on the bug it exists for, naming the cause.
"""

import json
import threading
from pathlib import Path

import pytest
import yaml

from irrepro.params import REHEARSAL_OVERLAY, ParamsError, load_params, resolve_profile, route


# ----------------------------------------------------------------------------- profile
def test_rehearsal_is_the_paper_route_with_the_overlay_only(root):
    paper = load_params(root / "params.yaml", "paper")
    reh = load_params(root / "params.yaml", "rehearsal")
    overlay = yaml.safe_load(REHEARSAL_OVERLAY.read_text())
    assert route("rehearsal") == "paper" and route("mini") == "mini" and reh["profile"] == "rehearsal"

    def leaves(d, path=()):
        for k, v in d.items():
            if isinstance(v, dict) and path + (k,) != ("plan", "archs"):
                yield from leaves(v, path + (k,))
            else:
                yield path + (k,)

    overlaid = set(leaves(overlay))
    for key in leaves({k: v for k, v in paper.items() if k != "profile"}):
        got, want = reh, paper
        for k in key:
            got, want = got[k], want[k]
        if key not in overlaid and not any(key[:i] in overlaid for i in range(1, len(key))):
            assert got == want, f"{'.'.join(key)}: rehearsal {got!r} != paper {want!r} but not in the overlay"
    # the switches that break the paper route stay on
    F = reh["finetune"]
    assert F["bf16"] and F["gradient_checkpointing"] and F["launcher"] == "torchrun" and F["nproc_per_node"] == 2
    assert reh["train_data"]["source"] == "tevatron" and reh["bm25"]["corpus"] == "msmarco-passage"
    assert reh["rerank"]["final_datasets"] == ["dev"] and reh["syntod"]["llm"]["kind"] == "openai"
    assert reh["syntod"]["judge"]["kind"] == "openai" and reh["syntod"]["judge"]["prompt"] == "original"


def test_rehearsal_revisions_are_the_fixture_cache_commits(root):
    from irrepro.rehearsal.hubcache import fake_commit

    reh = load_params(root / "params.yaml", "rehearsal")
    for fam, spec in reh["models"].items():
        assert spec["revision"] == fake_commit(spec["id"]), fam
    assert reh["syntod"]["base"]["revision"] == fake_commit(reh["syntod"]["base"]["id"])


def test_overlay_key_unknown_to_params_is_refused(root, tmp_path, monkeypatch):
    import irrepro.params as params

    bad = tmp_path / "rehearsal.yaml"
    bad.write_text("finetune:\n  max_stepz: 3\n")
    monkeypatch.setattr(params, "REHEARSAL_OVERLAY", bad)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    with pytest.raises(ParamsError, match=r"finetune\.max_stepz: not a params.yaml key"):
        resolve_profile(raw, "rehearsal")


# ----------------------------------------------------------------------------- LLM server
@pytest.fixture
def server(monkeypatch):
    from irrepro.rehearsal.llmserve import make_server

    monkeypatch.setenv("REHEARSAL_TEST_KEY", "k-123")
    srv = make_server(0, fail_every=3, key="k-123")
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("REHEARSAL_TEST_URL", f"http://127.0.0.1:{srv.server_address[1]}/v1")
    yield srv
    srv.shutdown()
    srv.server_close()


def _client(monkeypatch, key_env="REHEARSAL_TEST_KEY"):
    from irrepro.syntod.llm import OpenAIChatBackend

    b = OpenAIChatBackend("gpt-4", api_key_env=key_env, base_url_env="REHEARSAL_TEST_URL", max_retries=3)
    b._sleep = lambda s: None  # the schedule is what is tested, not the waiting
    return b


def test_server_answers_the_openai_client_with_the_simulator_and_injected_errors(server, monkeypatch):
    from irrepro.syntod.llm import OfflineSimulator

    monkeypatch.setenv("IRREPRO_LLM_SEND_META", "1")
    b = _client(monkeypatch)
    meta = {"task": "user_turn", "intent": "search_recipe", "slots": {"query": "lemon pie"}}
    replies = [b.chat([{"role": "user", "content": f"turn {i}"}], json_mode=True, seed=i, meta=meta) for i in range(4)]
    sim = OfflineSimulator()
    assert replies == [sim.chat([{"role": "user", "content": "x"}], json_mode=True, seed=i, meta=meta) for i in range(4)]
    assert b.last_usage and b.last_usage["prompt_tokens"] == 2
    judged = b.chat([{"role": "user", "content": "judge"}], meta={"task": "judge", "style": "original", "context": "",
                                                                   "reference": "bake at 180 degrees",
                                                                   "candidate": "bake at 180 degrees"})
    assert judged == "2"
    stats = server.llm.stats
    assert stats["injected_429"] + stats["injected_5xx"] >= 1 and stats["replies"] == 5 and stats["with_meta"] == 5


def test_server_refuses_a_missing_key_and_answers_generically_without_meta(server, monkeypatch):
    from irrepro.syntod.llm import LLMHTTPError

    monkeypatch.delenv("IRREPRO_LLM_SEND_META", raising=False)
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(LLMHTTPError, match="HTTP 401"):
        _client(monkeypatch, key_env="NO_SUCH_KEY").chat([{"role": "user", "content": "hi"}])
    reply = _client(monkeypatch).chat([{"role": "user", "content": "say hello"}], json_mode=True)
    assert json.loads(reply) == {"text": "say hello"}


# ----------------------------------------------------------------------------- checks
def _save_adapter(path: Path, dtype):
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"base_model.model.score.weight": torch.ones(1, 4, dtype=dtype),
               "base_model.model.layers.0.q_proj.lora_A.weight": torch.zeros(2, 4, dtype=dtype)}, str(path))


def test_fp32_check_names_a_half_precision_trainable(tmp_path):
    import torch

    from irrepro.rehearsal.check import check_fp32_trainables

    _save_adapter(tmp_path / "models/r/lora/llama-r8-all/final/adapter_model.safetensors", torch.float32)
    assert check_fp32_trainables(tmp_path, "r") == []
    _save_adapter(tmp_path / "models/r/lora/pythia-r8-all/final/adapter_model.safetensors", torch.bfloat16)
    (msg,) = check_fp32_trainables(tmp_path, "r")
    assert "pythia-r8-all/final" in msg and "BF16" in msg and "fp32_trainables" in msg


def test_finite_check_names_a_nan_loss_and_score(tmp_path):
    import torch

    from irrepro.rehearsal.check import check_finite

    _save_adapter(tmp_path / "models/r/lora/a/final/adapter_model.safetensors", torch.float32)
    (tmp_path / "models/r/lora/a/train_summary.json").write_text(json.dumps(
        {"losses": [{"step": 1, "loss": 1.0}, {"step": 2, "loss": float("nan")}], "train_loss": 1.0}))
    run = tmp_path / "runs/r/rerank/a/dl19/step-2.trec"
    run.parent.mkdir(parents=True)
    run.write_text("1 Q0 d1 1 0.5 x\n1 Q0 d2 2 nan x\n")
    problems = check_finite(tmp_path, "r")
    assert any("step 2: loss = nan" in p for p in problems) and any("step-2.trec:2" in p for p in problems)


def _groups_and_corpus(root: Path, titled_corpus: bool):
    (root / "data/r/train").mkdir(parents=True)
    (root / "data/r/corpus").mkdir(parents=True)
    group = {"query_id": "1", "query": "q", "positive_passages": [{"docid": "7", "title": "Lemon-pie", "text": "t7"}],
             "negative_passages": [{"docid": "8", "title": "-", "text": "t8"}, {"docid": "9", "title": "Tarts", "text": "t9"}]}
    (root / "data/r/train/groups.jsonl").write_text(json.dumps(group) + "\n")
    lines = []
    for d, title in (("7", "Lemon-pie"), ("8", "-"), ("9", "Tarts")):
        rec = {"id": d, "contents": f"t{d}"}
        if titled_corpus:
            rec["title"] = title
        lines.append(json.dumps(rec))
    (root / "data/r/corpus/corpus.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("titled", [True, False])
def test_titles_check_fails_when_scoring_loses_the_training_titles(tmp_path, titled):
    from irrepro.rehearsal.check import check_titles

    _groups_and_corpus(tmp_path, titled)
    problems = check_titles(tmp_path, "r")
    if titled:
        assert problems == []
    else:
        (msg,) = problems
        assert "2 of 2 titled training passages are scored without their title" in msg
        assert "write_corpus_from_msmarco_tsv" in msg and "'Lemon pie'" in msg


def test_split_check_names_a_training_item_of_the_test_catalog(tmp_path, monkeypatch):
    from irrepro.download import load_sources
    from irrepro.rehearsal.check import check_split
    from irrepro.syntod.stages import SEED_SOURCES

    P = {"syntod": {"domains": ["cooking"]}}
    dest = {s.name: s.dest for s in load_sources()}[SEED_SOURCES["cooking"]]
    test_file = tmp_path / "data/r/raw" / dest
    test_file.parent.mkdir(parents=True, exist_ok=True)
    test_file.write_text(json.dumps({"id": 5, "title": "Lemon Pie"}) + "\n")
    items = tmp_path / "data/r/syntod/cooking/items/train.jsonl"
    items.parent.mkdir(parents=True)
    items.write_text(json.dumps({"id": 900000005, "title": "Lemon Pie (rehearsal)"}) + "\n")
    assert check_split(tmp_path, "r", P) == []
    items.write_text(json.dumps({"id": 77, "title": "lemon  pie"}) + "\n")
    (msg,) = check_split(tmp_path, "r", P)
    assert "1 of 1 training items are test-catalog items" in msg and "training_catalog" in msg


def test_job_durations_from_a_snakemake_log():
    from irrepro.rehearsal.check import job_durations

    log = """[Tue Dec  1 14:49:00 2026]
localrule a:
    output: a.txt
    jobid: 2
[Tue Dec  1 14:49:01 2026]
rule finetune:
    jobid: 5
[Tue Dec  1 14:49:03 2026]
Finished jobid: 2 (Rule: a)
[Tue Dec  1 14:50:01 2026]
Finished jobid: 5 (Rule: finetune)
"""
    assert job_durations(log.splitlines(True)) == {"a": [3.0], "finetune": [60.0]}
