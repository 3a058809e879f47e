"""Model / dataset cards and `irrepro push` against a Hub API stand-in on 127.0.0.1."""

import base64
import hashlib
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import shutil

import pytest

from irrepro import cards, push
from irrepro.params import load_params

from conftest import send_json

COMMIT = "c0ffee" + "0" * 34
BASE_REV = "a" * 40


class FakeHub(BaseHTTPRequestHandler):
    """The three endpoints huggingface_hub's create_repo / create_commit use, recording what
    arrives: POST /api/repos/create, POST /api/<type>s/<repo>/preupload/<rev> (everything
    'regular', so no LFS/xet transfer), POST /api/<type>s/<repo>/commit/<rev> (NDJSON)."""

    received: dict = {}

    def log_message(self, *a):  # keep pytest output clean
        pass

    def _reply(self, code, doc):
        send_json(self, code, doc)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        rec = self.received
        rec.setdefault("auth", set()).add(self.headers.get("Authorization"))
        if self.path == "/api/repos/create":
            doc = json.loads(body)
            rec.setdefault("created", []).append((doc.get("organization"), doc["name"], doc.get("type"),
                                                  doc.get("visibility") or doc.get("private")))
            prefix = "datasets/" if doc.get("type") == "dataset" else ""
            return self._reply(200, {"url": f"http://{self.headers['Host']}/{prefix}{doc.get('organization')}/{doc['name']}"})
        if self.path == "/api/validate-yaml":  # the Hub checks a README's front matter
            import yaml

            content = json.loads(body)["content"]
            try:
                meta = yaml.safe_load(content.split("---")[1])
                ok = isinstance(meta, dict)
            except (yaml.YAMLError, IndexError):
                ok = False
            rec.setdefault("validated", []).append(ok)
            return self._reply(200 if ok else 400, {"errors": [] if ok else [{"message": "bad yaml"}], "warnings": []})
        parts = self.path.split("?")[0].split("/")
        if "preupload" in parts:
            files = json.loads(body)["files"]
            return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                               for f in files]})
        if "commit" in parts:
            repo = "/".join(parts[3:5])
            files = {}
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            rec.setdefault("commits", {})[repo] = files
            return self._reply(200, {"commitUrl": f"http://{self.headers['Host']}/{repo}/commit/{COMMIT}", "commitOid": COMMIT})
        return self._reply(404, {"error": self.path})


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub.utils import close_session

    # loopback never through a proxy, and a fresh client: huggingface_hub keeps one HTTP session
    # per process, built with the proxy settings of whichever test used it first
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    close_session()
    FakeHub.received = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeHub.received
    server.shutdown()
    close_session()


@pytest.fixture
def project(tmp_path, root, tiny_base_dir):
    """A profile's finished outputs: one real peft adapter config (final + 2 checkpoints, the
    newest with resume state) and one generated SynTOD set."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    P = load_params(str(root / "params.yaml"), "mini")
    P["finetune"].update(families=["llama"], ranks=[8], targets=["mha"])
    P["syntod"].update(domains=["cooking"], methods=["graph"])
    lora = tmp_path / "models/mini/lora/llama-r8-mha"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_base_dir("llama"), num_labels=1)
    model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj"], modules_to_save=["score"]))
    for sub in ("final", "checkpoint-5", "checkpoint-10"):
        model.save_pretrained(lora / sub)
        (lora / sub / "trainer_state.json").write_text("{}")
    (lora / "checkpoint-10" / "optimizer.pt").write_bytes(b"resume state")
    summary = {"steps": 10, "train_loss": 1.2345, "losses": [{"step": 5, "loss": 1.5}, {"step": 10, "loss": 1.0}],
               "config": {"base": f"/h/.cache/huggingface/hub/models--meta-llama--Llama-3.1-8B/snapshots/{BASE_REV}",
                          "groups": "data/mini/train/groups.jsonl", "rank": 8, "targets": "mha", "alpha": 64, "lr": 1e-3,
                          "seed": 42},
               "n_queries": 10, "wall_time_s": 1.0}
    (lora / "train_summary.json").write_text(json.dumps(summary))
    tod = tmp_path / "models/mini/tod/cooking-graph"  # a TOD adapter (same layout, card task tod)
    shutil.copytree(lora / "final", tod / "final")
    (tod / "train_summary.json").write_text(json.dumps(
        {"steps": 4, "train_loss": 3.5, "losses": [{"step": 4, "loss": 3.2}], "n_conversations": 12,
         "config": {"base": "models/mini/syntod_base", "train": "data/mini/syntod/cooking/graph/train.jsonl",
                    "rank": 8, "lr": 2e-4}}))
    metrics = tmp_path / "results/mini/metrics"
    metrics.mkdir(parents=True)
    (metrics / "rerank.json").write_text(json.dumps({"rerank-llama-r8-mha": {"dl19": {"ndcg@10": 0.4321}}}))
    (metrics / "syntod.json").write_text(json.dumps(
        {"cooking": {"graph": {"heldout": {"strict": {"intent_acc": 0.5, "relevance_mean": None}}}}}))
    gen = tmp_path / "data/mini/syntod/cooking/graph"
    gen.mkdir(parents=True)
    for name in ("conversations.jsonl", "conversations.txt.jsonl", "train.jsonl", "heldout.jsonl"):
        (gen / name).write_text('{"x": 1}\n')
    (gen / "stats.json").write_text(json.dumps({"failed": 0, "split": {"train": 48, "heldout": 12}}))
    return P, tmp_path


def test_model_card_replaces_peft_stub_and_is_deterministic(project):
    P, root = project
    summary = json.loads((root / "models/mini/lora/llama-r8-mha/train_summary.json").read_text())
    final = root / "models/mini/lora/llama-r8-mha/final"
    assert "[More Information Needed]" in (final / "README.md").read_text()  # peft's stub
    path = cards.write_model_card(final, "llama-r8-mha", summary, metrics={"dl19": {"ndcg@10": 0.4321}})
    text = path.read_text()
    assert "[More Information Needed]" not in text
    assert "base_model: \"meta-llama/Llama-3.1-8B\"" in text and f"revision `{BASE_REV}`" in text
    assert "data/mini/train/groups.jsonl" in text and "| `alpha` | `64` |" in text and "| `seed` | `42` |" in text
    assert "| dl19 | ndcg@10 | 0.4321 |" in text and "mean training loss: 1.2345" in text
    assert f'from_pretrained("meta-llama/Llama-3.1-8B", revision="{BASE_REV}", num_labels=1)' in text
    assert "wall" not in text and "/h/.cache" not in text  # no timings, no machine paths
    assert cards.write_model_card(final, "llama-r8-mha", summary, metrics={"dl19": {"ndcg@10": 0.4321}}).read_text() == text
    assert cards.base_identity(f"hf:EleutherAI/pythia-6.9b@{BASE_REV}") == ("EleutherAI/pythia-6.9b", BASE_REV)
    assert cards.base_identity("models/mini/base/llama") == ("models/mini/base/llama", None)


def test_plan_and_dry_run_need_no_token(project, monkeypatch, capsys):
    P, root = project
    monkeypatch.delenv("HF_TOKEN", raising=False)
    ups = push.plan(P, "me", root=root)
    assert [(u.repo_id, u.repo_type) for u in ups] == [("me/irrepro-mini-llama-r8-mha", "model"),
                                                       ("me/irrepro-mini-tod-cooking-graph", "model"),
                                                       ("me/irrepro-mini-syntod-cooking-graph", "dataset")]
    tod_card = ups[1].files["README.md"].decode()
    assert "task-oriented-dialogue" in tod_card and "AutoModelForCausalLM" in tod_card
    assert "| heldout | intent_acc | 0.5000 |" in tod_card and "| heldout | relevance_mean | - |" in tod_card
    files = set(ups[0].files)
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "train_summary.json",
            "checkpoint-5/adapter_model.safetensors", "checkpoint-10/adapter_config.json",
            "checkpoint-10/trainer_state.json"} <= files
    assert not any("optimizer" in f for f in files), "resume state is not published"
    assert ups[0].checkpoints == ["checkpoint-5", "checkpoint-10"]
    card = ups[2].files["README.md"].decode()
    assert "Warning: not LLM data" in card and "template simulator" in card
    from pathlib import Path

    res = Path(push.__file__).parent / "resources/syntod"
    assert hashlib.sha256((res / "cooking.yaml").read_bytes()).hexdigest() in card
    assert hashlib.sha256((res / "prompts.yaml").read_bytes()).hexdigest() in card
    text = push.describe(ups)
    assert "model me/irrepro-mini-llama-r8-mha" in text and "checkpoint-5/adapter_model.safetensors" in text
    with pytest.raises(PermissionError, match="HF_TOKEN"):
        push.push(ups, endpoint="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="namespace"):
        push.plan(P, "me/x", root=root)


def test_push_uploads_every_file_and_prints_hf_specs(project, hub, monkeypatch):
    P, root = project
    endpoint, received = hub
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    ups = push.plan(P, "me", root=root)
    out = push.push(ups, endpoint=endpoint)
    assert out == [f"hf:me/irrepro-mini-llama-r8-mha@{COMMIT}",
                   f"hf:me/irrepro-mini-llama-r8-mha@{COMMIT}:checkpoint-5",
                   f"hf:me/irrepro-mini-llama-r8-mha@{COMMIT}:checkpoint-10",
                   f"hf:me/irrepro-mini-tod-cooking-graph@{COMMIT}",
                   f"hf:datasets/me/irrepro-mini-syntod-cooking-graph@{COMMIT}"]
    assert received["auth"] == {"Bearer hf_test_token"}
    assert received.get("validated") in (None, [True, True, True])  # cards' front matter is valid YAML
    assert [c[:3] for c in received["created"]] == [("me", "irrepro-mini-llama-r8-mha", "model"),
                                                    ("me", "irrepro-mini-tod-cooking-graph", "model"),
                                                    ("me", "irrepro-mini-syntod-cooking-graph", "dataset")]
    sent = received["commits"]["me/irrepro-mini-llama-r8-mha"]
    lora = root / "models/mini/lora/llama-r8-mha"
    assert sent["checkpoint-5/adapter_model.safetensors"] == (lora / "checkpoint-5/adapter_model.safetensors").read_bytes()
    assert sent["adapter_model.safetensors"] == (lora / "final/adapter_model.safetensors").read_bytes()
    assert b"| dl19 | ndcg@10 | 0.4321 |" in sent["README.md"]
    assert set(sent) == set(ups[0].files)
    from irrepro.rerank.hub import parse_spec

    assert parse_spec(out[1]).subfolder == "checkpoint-5"  # the printed specs are what --adapters accepts


def test_cli_push_dry_run(project, root, monkeypatch):
    P, proj = project
    monkeypatch.delenv("HF_TOKEN", raising=False)
    import yaml

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["finetune"].update(families=["llama"], ranks=[8], targets=["mha"])
    params["ablate"].update(families=["llama"], ranks=[8], targets=["mha"])
    params["syntod"].update(domains=["cooking"], methods=["graph"])
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    res = subprocess.run([sys.executable, "-m", "irrepro", "push", "--namespace", "me", "--dry-run",
                          "--params", "params.yaml"], cwd=proj, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "model me/irrepro-mini-llama-r8-mha" in res.stdout and "dry run: nothing uploaded" in res.stdout


def test_finetune_writes_the_model_card_into_final_byte_identically(tiny_base_dir, tmp_path):
    """A real (2-step) LoRA run: final/README.md is our card, not peft's stub, and two runs
    with the same inputs write the same bytes."""
    from irrepro.rerank import data as D
    from irrepro.rerank.train import finetune

    groups = tmp_path / "groups.jsonl"
    words = [f"w{i}" for i in range(40)]
    D.write_groups([{"query_id": f"q{q}", "query": " ".join(words[q:q + 2]),
                     "positive_passages": [{"docid": f"p{q}", "title": "", "text": " ".join(words[q:q + 5])}],
                     "negative_passages": [{"docid": f"n{q}.{i}", "title": "", "text": " ".join(words[20 + i:25 + i])}
                                           for i in range(3)]} for q in range(4)], groups)
    kw = dict(rank=2, targets="mha", lr=1e-3, max_steps=2, queries_per_device=2, grad_accum=1, group_size=4,
              qmax=8, pmax=16, save_steps=1, warmup_ratio=0.0, seed=0, threads=1)
    cards_seen = []
    for run in ("a", "b"):
        out = tmp_path / run / "llama-r2-mha"
        finetune(tiny_base_dir("llama"), groups, out, **kw)
        cards_seen.append((out / "final" / "README.md").read_text())
    card = cards_seen[0]
    assert card == cards_seen[1]
    assert card.startswith("---\nlibrary_name: \"peft\"") and "# llama-r2-mha" in card
    assert "[More Information Needed]" not in card
    assert "| `rank` | `2` |" in card and "| `targets` | `mha` |" in card and "optimiser steps: 2" in card
    assert "PeftModel.from_pretrained" in card
