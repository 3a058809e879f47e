"""The relevance judge with the original SynTOD prompt, through a real HTTP server on 127.0.0.1:
the request (one user message, the history lines, GPT-4, temperature 0, max_tokens 3), the
original's reading of the reply, the history against an independent split of the published text,
the prompt file checks, and the runners' dependencies (editing the judge prompt reruns judging only)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from irrepro.params import load_params
from irrepro.syntod import evaluation as E
from irrepro.syntod.format import read_jsonl
from irrepro.syntod.judge import (
    HeuristicJudge, judge_relevance, load_judge_prompts, make_judge, original_history, read_original_reply)

ROOT = Path(__file__).resolve().parents[1]
QUESTION = ("How good is the response compared to the groundtruth? 0: not relevant or with major issues, "
            "1: worse than groundtruth, 2: as good as groundtruth or better. Return only the number.")


@pytest.fixture
def judge_server(monkeypatch):
    """A chat-completions endpoint answering the scripted replies in order; records every body."""
    seen, replies = [], []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            content = replies.pop(0)
            data = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": content}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-judge-test")
    monkeypatch.setenv("JUDGE_TEST_URL", f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    try:
        yield seen, replies
    finally:
        httpd.shutdown()
        httpd.server_close()


def paper_judge_spec():
    spec = dict(load_params(ROOT / "params.yaml", "paper")["syntod"]["judge"])
    assert spec["prompt"] == "original" and spec["model"] == "gpt-4"
    assert spec["temperature"] == 0 and spec["max_tokens"] == 3
    spec.update(api_key_env="JUDGE_TEST_KEY", base_url_env="JUDGE_TEST_URL", max_retries=1)
    return E.judge_spec(spec)


def test_original_prompt_over_http(judge_server):
    seen, replies = judge_server
    replies += ["2", "Score: 1", "10", "n/a"]
    backend = make_judge(paper_judge_spec())
    history = "user: I want soup\nretriever: 1. Tomato soup\nsystem: Here is a tomato soup."
    items = [("ctx", "The soup takes 20 minutes.", "It takes\n20 minutes.", history)] * 4
    assert judge_relevance(backend, items, style="original") == [2, 1, 0, None]  # "10" reads as 0, as there
    body = seen[0]
    assert body["model"] == "gpt-4" and body["temperature"] == 0 and body["max_tokens"] == 3
    assert body["messages"] == [{"role": "user", "content": (
        "Given the conversation history:\n" + history + "\nResponse: It takes 20 minutes.\n"
        "Groundtruth: The soup takes 20 minutes.\n" + QUESTION)}]
    assert "response_format" not in body  # a bare number, no JSON mode


def test_reply_reading_and_style_checks():
    assert [read_original_reply(x) for x in ("0", " 2\n", "1 or 2", "", None, "two")] == [0, 2, 1, None, None, None]
    with pytest.raises(ValueError, match="needs \\(context, reference, candidate, history\\)"):
        judge_relevance(HeuristicJudge(), [("c", "r", "x")], style="original")
    with pytest.raises(ValueError, match="style must be one of"):
        judge_relevance(HeuristicJudge(), [], style="gpt")
    # the heuristic answers both styles with the same score
    item = ("USER: a crumble recipe", "Bake the crumble for 40 minutes.", "Bake it for 40 minutes.")
    assert judge_relevance(HeuristicJudge(), [item + ("user: a crumble recipe",)], style="original") == \
        judge_relevance(HeuristicJudge(), [item], style="project")


def _independent_history(text: str, upto: int) -> str:
    """The original's history lines, by splitting the raw text on '###' (evaluation_states.py's
    ground_to_convlist with --type graph, then relevance_eval's role filter)."""
    roles = {"HUMAN": "user", "ASSISTANT": "system", "RESULTS": "retriever", "SUGGESTIONS": "suggestions"}
    lines = []
    for seg in text.split("###")[1:upto + 1]:
        mode, data = seg.split(":", 1)
        mode = mode.strip()
        if mode not in roles:
            continue
        content = data.split("##")[0].strip() if mode == "HUMAN" else data.strip()
        lines.append(f"{roles[mode]}: {content}".replace("\n", " "))
    return "\n".join(lines)


@pytest.mark.parametrize("name", ["recipe_test_gemini_v3.jsonl", "ecommerce_test_llama_v3.jsonl"])
def test_history_matches_the_original_split(shared_data, name):
    path = shared_data / "syntod" / name
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()[:5]]
    for conv, text in zip(read_jsonl(path)[:5], texts):
        for i, t in enumerate(conv.turns):
            if t.role == "assistant":
                assert original_history(conv.turns[:i]) == _independent_history(text, i), (conv.id, i)
    tasks = [t for t in E.tasks_for("x", read_jsonl(path)[:2]) if t.kind == "response"]
    assert tasks and all(t.history == _independent_history(texts[int(t.conversation.split(":")[1]) - 1], t.turn)
                         for t in tasks)


def test_judge_prompt_file_is_checked(tmp_path):
    prompts = load_judge_prompts()
    assert prompts["original"]["user"].endswith(QUESTION)
    data = yaml.safe_load((ROOT / "workflow/irrepro/resources/syntod/judge_prompts.yaml").read_text())
    bad = tmp_path / "judge_prompts.yaml"
    bad.write_text(yaml.safe_dump({**data, "original": {"user": "{history} {score}"}}))
    with pytest.raises(ValueError, match=r"judge_prompts.yaml: original.user: unknown field\(s\) \['score'\]"):
        load_judge_prompts(bad)
    bad.write_text(yaml.safe_dump({k: v for k, v in data.items() if k != "project"}))
    with pytest.raises(ValueError, match="project: expected a mapping with exactly"):
        load_judge_prompts(bad)


def test_judge_prompts_rerun_judging_only():
    """Both runners: evaluate_tod depends on the judge prompt file, the generation stages do not
    (and the judge no longer reads the generation prompts)."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    judge_file = "workflow/irrepro/resources/syntod/judge_prompts.yaml"
    assert judge_file in dvc["evaluate_tod"]["deps"]
    assert not [s for s, st in dvc.items() if s != "evaluate_tod" and judge_file in st.get("deps", [])]
    smk = (ROOT / "workflow/rules/syntod.smk").read_text()
    rules = {block.split(":", 1)[0].strip(): block for block in smk.split("\nrule ")[1:]}
    assert "resources/syntod/judge_prompts.yaml" in rules["evaluate_tod"]
    assert all("judge_prompts.yaml" not in body for name, body in rules.items() if name != "evaluate_tod")
    assert "from .generate" not in (ROOT / "workflow/irrepro/syntod/judge.py").read_text()
