"""No run clobbers another, resumable state is keyed on content, no secret is written (issue 12).

Real processes hold the locks, real HTTP servers on 127.0.0.1 echo credentials back, real
tiny models train.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from irrepro.cli import main

from conftest import send_json

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-H15-echoed-key-0123456789"
USER, PASSWORD = "gateway-user", "h15-basic-pass-987"


# ---------------------------------------------------------------------------------- the lock
def test_second_job_on_a_locked_output_fails_at_once_naming_the_holder(tiny_base_dir, tmp_path, capsys):
    out = tmp_path / "lora" / "llama-r2-mha"
    groups = _groups(tmp_path / "g.jsonl", flip=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
         "from irrepro.locking import output_lock\n"
         "with output_lock(sys.argv[2], 'finetune'):\n print('locked', flush=True); time.sleep(60)",
         str(ROOT / "workflow"), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["finetune", "--params", str(ROOT / "params.yaml"), "--family", "llama", "--rank", "2",
                     "--targets", "mha", "--base", str(tiny_base_dir("llama")), "--groups", str(groups),
                     "--out", str(out), "--log", str(tmp_path / "ft.log")])
        err = capsys.readouterr().err
        assert code == 1
        line = next(x for x in err.splitlines() if x.startswith("irrepro finetune: "))
        assert str(out) in line and f"pid {holder.pid}" in line
        assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: the kernel released its lock, the next job takes it
    from irrepro.locking import output_lock

    with output_lock(out):
        pass


def test_lock_is_released_and_removed_after_the_job(tmp_path):
    from irrepro.errors import LockedError
    from irrepro.locking import lock_path, output_lock

    out = tmp_path / "x"
    with output_lock(out):
        with pytest.raises(LockedError, match="another job"):
            with output_lock(out):
                pass
    assert not lock_path(out).exists()


# ------------------------------------------------------------------- fingerprinted resume
def _groups(path: Path, flip: bool) -> Path:
    recs = []
    for q in range(8):
        pos, neg = (f"flea {q} bites", f"capital {q} city") if not flip else (f"capital {q} city", f"flea {q} bites")
        recs.append({"query_id": str(q), "query": f"flea question {q}", "positive_passages": [{"docid": f"p{q}", "text": pos}],
                     "negative_passages": [{"docid": f"n{q}{i}", "text": f"{neg} {i}"} for i in range(3)]})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _finetune_params(tmp_path: Path) -> Path:
    import yaml

    P = yaml.safe_load((ROOT / "params.yaml").read_text())
    P["finetune"].update(max_steps={"mini": 2, "paper": -1}, save_steps={"mini": 1, "paper": 50},
                         group_size={"mini": 4, "paper": 16}, queries_per_device={"mini": 2, "paper": 16},
                         grad_accum={"mini": 1, "paper": 4})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(P, sort_keys=False))
    return path


def test_partial_run_of_other_groups_content_is_restarted_not_resumed(tiny_base_dir, tmp_path, caplog):
    from irrepro.params import load_params
    from irrepro.study1.finetune_inputs import prepare_finetune
    from irrepro.study1.training import finetune

    base = tiny_base_dir("llama")
    params = _finetune_params(tmp_path)
    P = load_params(params)
    groups = _groups(tmp_path / "groups.jsonl", flip=False)
    out = tmp_path / "lora" / "llama-r2-mha"
    partial = out.with_name(out.name + ".partial")
    # a kept .partial of the old groups content, as a run killed just before publishing leaves it
    args = argparse.Namespace(task="rerank", family="llama", rank=2, targets="mha", base=str(base),
                              groups=str(groups), out=str(out))
    prepare_finetune(P, args)()
    marker = (partial / "RUN.json").read_text()
    finetune(P, "llama", 2, "mha", str(base), str(groups), str(out))
    shutil.move(out, partial)
    (partial / "RUN.json").write_text(marker)
    # same path, other content
    _groups(groups, flip=True)
    code = main(["finetune", "--params", str(params), "--family", "llama", "--rank", "2", "--targets", "mha",
                 "--base", str(base), "--groups", str(groups), "--out", str(out), "--log", str(tmp_path / "ft.log")])
    assert code == 0
    log_text = (tmp_path / "ft.log").read_text()
    assert "starting afresh" in log_text and "(groups changed)" in log_text
    assert "resuming from" not in log_text
    # the same as a clean run on the new content
    clean = tmp_path / "clean" / "llama-r2-mha"
    assert main(["finetune", "--params", str(params), "--family", "llama", "--rank", "2", "--targets", "mha",
                 "--base", str(base), "--groups", str(groups), "--out", str(clean)]) == 0
    from safetensors.numpy import load_file

    a = load_file(out / "checkpoint-2" / "adapter_model.safetensors")
    b = load_file(clean / "checkpoint-2" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


# --------------------------------------------------------------- syntod-generate directory rule
def _gen_params(tmp_path: Path, n: int) -> Path:
    import yaml

    P = yaml.safe_load((ROOT / "params.yaml").read_text())
    P["syntod"]["n_conversations"] = {"mini": n, "paper": 5000}
    P["syntod"]["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / f"params-{n}.yaml"
    path.write_text(yaml.safe_dump(P, sort_keys=False))
    return path


def _generate(tmp_path, raw, params, out, log=None) -> int:
    argv = ["syntod-generate", "--params", str(params), "--domain", "cooking", "--method", "naive",
            "--raw", str(raw), "--out-dir", str(out)]
    return main(argv + (["--log", str(log)] if log else []))


@pytest.fixture(scope="module")
def raw(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("raw") / "raw"
    assert main(["download", "--params", str(ROOT / "params.yaml"), "--out", str(out)]) == 0
    return out


def _snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_generate_never_mixes_two_runs_in_one_directory(tmp_path, raw):
    out = tmp_path / "gen"
    assert _generate(tmp_path, raw, _gen_params(tmp_path, 4), out) == 0
    before = _snapshot(out)
    # a second run with other settings is stopped half-way: the old directory stays whole
    partial = out.with_name(out.name + ".partial")
    partial.mkdir()
    (partial / "RUN.json").write_text(json.dumps({"fingerprint": "from another run"}))
    (partial / "conversations.jsonl").write_text('{"id": "stale"}\n')
    log = tmp_path / "gen.log"
    assert _generate(tmp_path, raw, _gen_params(tmp_path, 6), out, log) == 0
    assert "starting afresh" in log.read_text()
    after = _snapshot(out)
    assert set(after) == set(before)
    stats = json.loads(after["stats.json"])
    assert stats["conversations"] == 6 and b"stale" not in after["conversations.jsonl"]
    n = lambda name: len(after[name].decode().splitlines())  # noqa: E731
    assert n("conversations.jsonl") == 6 and n("train.jsonl") + n("heldout.jsonl") == 6
    assert not partial.exists()


def test_generate_failing_midway_leaves_the_previous_output_untouched(tmp_path, raw, monkeypatch):
    out = tmp_path / "gen"
    assert _generate(tmp_path, raw, _gen_params(tmp_path, 4), out) == 0
    before = _snapshot(out)
    import yaml

    params = _gen_params(tmp_path, 6)
    P = yaml.safe_load(params.read_text())
    P["syntod"]["llm"].update(kind={"mini": "openai", "paper": "openai"}, model="m", timeout_s=2, max_retries=0)
    params.write_text(yaml.safe_dump(P, sort_keys=False))
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens: every call fails
    assert _generate(tmp_path, raw, params, out) != 0
    assert _snapshot(out) == before


# -------------------------------------------------------------------------------- secrets
class _Echo(BaseHTTPRequestHandler):
    """Echoes the request's Authorization header: in a 401 error (mode 'error') or inside a
    successful reply's text (mode 'reply')."""

    mode = "error"

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        auth = self.headers.get("Authorization", "")
        raw = auth.split(" ", 1)[-1]
        if self.mode == "error":
            body = {"error": {"message": f"bad credentials: header {auth!r}, raw {raw}"}}
            code = 401
        else:
            body = {"choices": [{"message": {"content": f"hello, your header was {auth} ({raw})"},
                                 "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
            code = 200
        send_json(self, code, body)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_server():
    servers = []

    def start(mode):
        handler = type("H", (_Echo,), {"mode": mode})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return httpd.server_address[1]

    yield start
    for s in servers:
        s.shutdown()


def _llm_check(tmp_path, extra=()) -> tuple[int, str]:
    log = tmp_path / "llm.log"
    code = main(["tools", "syntod-llm-check", "--params", str(ROOT / "params.yaml"), "--kind", "openai", "--model", "m",
                 "--base-url-env", "H15_URL", "--api-key-env", "H15_KEY", "--timeout", "5", "--max-retries", "0",
                 "--log", str(log), *extra])
    return code, log.read_text()


def test_basic_auth_echoed_by_the_server_is_masked_raw_and_base64(tmp_path, echo_server, monkeypatch, capsys):
    port = echo_server("error")
    monkeypatch.setenv("H15_URL", f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/v1")
    monkeypatch.delenv("H15_KEY", raising=False)
    code, logged = _llm_check(tmp_path)
    out, err = capsys.readouterr()
    b64 = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert code == 1 and "HTTP 401" in err
    for text in (out, err, logged):
        assert PASSWORD not in text and b64 not in text


def test_bearer_key_echoed_in_an_error_is_masked(tmp_path, echo_server, monkeypatch, capsys):
    port = echo_server("error")
    monkeypatch.setenv("H15_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("H15_KEY", KEY)
    code, logged = _llm_check(tmp_path)
    out, err = capsys.readouterr()
    assert code == 1
    for text in (out, err, logged):
        assert KEY not in text and base64.b64encode(KEY.encode()).decode() not in text


def test_key_reflected_in_a_successful_reply_is_not_cached(tmp_path, echo_server, monkeypatch, capsys):
    port = echo_server("reply")
    monkeypatch.setenv("H15_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("H15_KEY", KEY)
    cache = tmp_path / "cache"
    code, logged = _llm_check(tmp_path, ["--cache-dir", str(cache)])
    out, err = capsys.readouterr()
    assert code == 0
    entries = [p.read_text() for p in cache.rglob("*.json")]
    assert entries and all(KEY not in e for e in entries) and "Bearer ***" in entries[0]
    for text in (out, err, logged):
        assert KEY not in text


def test_forbidden_key_in_params_is_named_not_printed(tmp_path, capsys):
    text = (ROOT / "params.yaml").read_text().replace(
        "    api_key_env: OPENAI_API_KEY\n", f"    api_key_env: OPENAI_API_KEY\n    api_key: {KEY}\n", 1)
    (tmp_path / "params.yaml").write_text(text)
    code = main(["check-params", "--params", str(tmp_path / "params.yaml"), "--log", str(tmp_path / "p.log")])
    err = capsys.readouterr().err
    assert code == 2 and "api_key" in err
    assert KEY not in err and KEY not in (tmp_path / "p.log").read_text()
