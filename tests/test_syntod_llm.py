"""SynTOD LLM backends against a real HTTP server on 127.0.0.1, a tiny local model and the simulator.

The server speaks ``/v1/chat/completions`` and plays a script per test (429 with Retry-After,
500, 503, a read timeout, malformed JSON content, error bodies), recording every request, so
retry bounds are asserted as exact request counts. A canary API key must reach the server's
Authorization header and nowhere else (logs, exception texts, cache files, describe()).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from irrepro.errors import InputError
from irrepro.syntod.cache import CachedBackend, request_key
from irrepro.syntod.judge import JUDGE_KINDS
from irrepro.syntod.llm import (
    BACKEND_KINDS,
    FORBIDDEN_KEYS,
    JSONReplyError,
    LLMError,
    LLMHTTPError,
    OfflineSimulator,
    OpenAIChatBackend,
    TransformersBackend,
    all_spec_keys,
    build_prompt,
    chat_json,
    make_backend,
    repair_json,
    select_spec,
    user_templates,
)
from irrepro.syntod.llm.simulator import load_user_templates
from irrepro.yamlio import load_yaml

from conftest import send_body

CANARY = "sk-canary-7f3a9c1e5b2d4f6a8c0e"
MSGS = [{"role": "system", "content": "You write SynTOD turns."}, {"role": "user", "content": "Say hello."}]


# --------------------------------------------------------------------------- scripted server


class Script:
    """What the server answers, one action per request, and what it received."""

    def __init__(self):
        self.actions: list[tuple] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def play(self, *actions):
        self.actions.extend(actions)

    def next(self, record: dict) -> tuple:
        with self.lock:
            self.requests.append(record)
            return self.actions.pop(0) if self.actions else ("status", 500, {"error": {"message": "script exhausted"}}, {})


def ok(content: str, finish: str = "stop") -> tuple:
    return ("ok", content, finish)


def status(code: int, message: str = "", headers: dict | None = None) -> tuple:
    return ("status", code, {"error": {"message": message or f"scripted {code}"}}, headers or {})


def stall(seconds: float) -> tuple:
    return ("sleep", seconds)


class Handler(BaseHTTPRequestHandler):
    script: Script

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code: int, body: bytes, headers: dict | None = None):
        try:
            send_body(self, code, body, headers)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        action = self.script.next({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.path != "/v1/chat/completions":
            return self._send(404, b'{"error": {"message": "no such route"}}')
        kind = action[0]
        if kind == "ok":
            reply = {"id": "x", "object": "chat.completion", "model": body["model"],
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": action[1]},
                                  "finish_reason": action[2]}]}
            self._send(200, json.dumps(reply).encode())
        elif kind == "status":
            self._send(action[1], json.dumps(action[2]).encode(), action[3])
        elif kind == "sleep":
            time.sleep(action[1])
            self._send(200, json.dumps({"choices": [{"message": {"content": "too late"}}]}).encode())
        elif kind == "raw":
            self._send(200, action[1].encode())


@pytest.fixture
def server():
    script = Script()
    handler = type("ScriptedHandler", (Handler,), {"script": script})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", script
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def env(monkeypatch, server):
    """The canary key and the server's URL in the environment, under non-default names."""
    url, _ = server
    monkeypatch.setenv("TEST_LLM_KEY", CANARY)
    monkeypatch.setenv("TEST_LLM_URL", url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return url


def client(**kw) -> OpenAIChatBackend:
    args = dict(api_key_env="TEST_LLM_KEY", base_url_env="TEST_LLM_URL", timeout=2.0, max_retries=3,
                backoff_base=0.01, backoff_max=0.05)
    args.update(kw)
    return OpenAIChatBackend("test-model", **args)


def record_sleeps(backend) -> list[float]:
    delays: list[float] = []

    def sleep(d):
        delays.append(d)
        time.sleep(d)

    backend._sleep = sleep
    return delays


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG)  # everything, urllib3's request lines included
    return caplog


# --------------------------------------------------------------------------- retries


def test_transient_errors_are_retried_then_succeed(env, server, logs):
    _, script = server
    script.play(status(429, "slow down", {"Retry-After": "0"}), status(500), status(503), stall(0.3), ok("Hello!"))
    b = client(timeout=0.1, max_retries=4)
    delays = record_sleeps(b)
    t0 = time.perf_counter()
    assert b.chat(MSGS, temperature=0.0, max_tokens=20, seed=7) == "Hello!"
    assert time.perf_counter() - t0 < 3
    assert len(script.requests) == 5 == b.requests
    assert delays[0] == 0.0  # Retry-After: 0 honoured instead of the backoff
    assert all(0.005 <= d <= 0.05 for d in delays[1:]) and len(delays) == 4  # capped, jittered
    for r in script.requests:
        assert r["headers"]["Authorization"] == f"Bearer {CANARY}"
        assert r["body"] == {"model": "test-model", "messages": MSGS, "temperature": 0.0, "max_tokens": 20, "seed": 7}
    assert "retry 1/4" in logs.text and "HTTP 429: slow down" in logs.text and "timeout" in logs.text
    assert CANARY not in logs.text


def test_retry_after_seconds_are_honoured(env, server):
    _, script = server
    script.play(status(429, headers={"Retry-After": "0.2"}), ok("fine"))
    b = client(backoff_base=30.0, backoff_max=60.0)  # a backoff this long would hang the test
    delays = record_sleeps(b)
    assert b.chat(MSGS) == "fine"
    assert delays == [0.2] and len(script.requests) == 2


def test_backoff_is_exponential_capped_and_jittered(monkeypatch):
    monkeypatch.setenv("TEST_LLM_URL", "http://127.0.0.1:1/v1")
    b = client(backoff_base=1.0, backoff_max=10.0)
    for attempt, cap in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)):
        delays = [b.backoff(attempt) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays) and len(set(delays)) > 100


@pytest.mark.parametrize("failure", [status(503, "overloaded"), status(429, "rate limited"), stall(0.3)])
def test_gives_up_after_the_bound(env, server, failure, logs):
    _, script = server
    script.play(*[failure] * 5)
    b = client(timeout=0.1, max_retries=2)
    with pytest.raises(LLMError) as err:
        b.chat(MSGS)
    assert len(script.requests) == 3 == b.requests
    text = str(err.value)
    assert "gave up after 3 attempt(s)" in text and "max_retries=2" in text
    if failure[0] == "status":
        assert f"HTTP {failure[1]}: {failure[2]['error']['message']}" in text
    else:
        assert "timeout" in text
    assert CANARY not in text + logs.text


def test_other_4xx_fails_fast_with_the_servers_message(env, server):
    _, script = server
    script.play(status(400, "The model `nope` does not exist"))
    with pytest.raises(LLMHTTPError) as err:
        client().chat(MSGS)
    assert err.value.status == 400 and len(script.requests) == 1
    assert "HTTP 400" in str(err.value) and "The model `nope` does not exist" in str(err.value)


def test_key_echoed_by_the_server_is_masked(env, server, logs):
    _, script = server
    script.play(status(401, f"Incorrect API key provided: {CANARY}."))
    b = client()
    with pytest.raises(LLMHTTPError) as err:
        b.chat(MSGS)
    assert len(script.requests) == 1
    assert "Incorrect API key provided: ***." in str(err.value)
    for text in (str(err.value), repr(err.value), logs.text, json.dumps(b.describe()), repr(b)):
        assert CANARY not in text
    assert b.describe()["api_key_env"] == "TEST_LLM_KEY" and b.describe()["api_key_set"] is True


def test_connection_errors_are_retried(monkeypatch):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    monkeypatch.setenv("TEST_LLM_KEY", CANARY)
    monkeypatch.setenv("TEST_LLM_URL", f"http://127.0.0.1:{port}/v1")
    b = client(max_retries=2)
    with pytest.raises(LLMError) as err:
        b.chat(MSGS)
    assert b.requests == 3 and "connection error" in str(err.value) and CANARY not in str(err.value)


def test_non_completion_200_is_a_clear_error(env, server):
    _, script = server
    script.play(("raw", "<html>gateway</html>"))
    with pytest.raises(LLMError, match="not a chat-completions response.*gateway"):
        client().chat(MSGS)


def test_json_mode_and_credentials_in_the_base_url(monkeypatch, server):
    url, script = server
    monkeypatch.delenv("TEST_LLM_KEY", raising=False)
    monkeypatch.setenv("TEST_LLM_URL", url.replace("http://", "http://gw-user:gw-pass-123@"))
    script.play(ok('{"a": 1}'))
    b = client()
    assert b.chat(MSGS, json_mode=True) == '{"a": 1}'
    sent = script.requests[0]
    assert sent["body"]["response_format"] == {"type": "json_object"}
    assert sent["headers"]["Authorization"].startswith("Basic ")  # gateway basic auth, no key set
    assert b.endpoint == url and "gw-pass-123" not in json.dumps(b.describe())


# --------------------------------------------------------------------------- JSON repair / re-ask


@pytest.mark.parametrize("reply, expected", [
    ('{"intent": "select_i", "selection": 2}', {"intent": "select_i", "selection": 2}),
    ('```json\n{"intent": "next_step",}\n```', {"intent": "next_step"}),
    ("Sure! Here you go: {'intent': 'chitchat', 'text': \"it's fine\", 'ok': True} Anything else?",
     {"intent": "chitchat", "text": "it's fine", "ok": True}),
    ('{"intent": "search_recipe", "query": "apple pie", "ids": [1, 2,],}', {"intent": "search_recipe", "query": "apple pie", "ids": [1, 2]}),
    ('{"intent": "compare_products", "list_of_products": ["A", "B"', {"intent": "compare_products", "list_of_products": ["A", "B"]}),
    ('{"intent": "set_timer", "duration": "10 min', {"intent": "set_timer", "duration": "10 min"}),
    ('{"intent": "buy_cart", "addr', {"intent": "buy_cart"}),
    ('{"a": {"b": null}} and then {"c": 1}', {"a": {"b": None}}),
])
def test_repair_json(reply, expected):
    assert repair_json(reply) == expected


def test_repair_json_rejects_prose():
    with pytest.raises(ValueError, match="no JSON"):
        repair_json("I am sorry, I cannot help with that.")


def test_malformed_json_is_repaired_without_a_new_request(env, server):
    _, script = server
    script.play(ok("Here is the turn:\n```json\n{'intent': 'search_recipe', 'query': 'pear crumble',}\n```"))
    got = chat_json(client(), MSGS, required_keys=["intent", "query"], seed=1)
    assert got == {"intent": "search_recipe", "query": "pear crumble"} and len(script.requests) == 1


def test_unrepairable_json_is_re_asked_then_ok(env, server):
    _, script = server
    script.play(ok("I think the user wants a recipe."), ok('{"intent": "suggest_recipe"}'),
                ok('{"intent": "suggest_recipe", "query": "vanilla"}'))
    got = chat_json(client(), MSGS, required_keys=["intent", "query"])
    assert got == {"intent": "suggest_recipe", "query": "vanilla"} and len(script.requests) == 3
    second, third = script.requests[1]["body"], script.requests[2]["body"]
    assert second["messages"][:2] == MSGS and second["messages"][2] == {"role": "assistant", "content": "I think the user wants a recipe."}
    assert second["messages"][3]["role"] == "user" and "no JSON object" in second["messages"][3]["content"]
    assert "['query']" in third["messages"][-1]["content"]  # says which key was missing
    assert all(r["body"]["response_format"] == {"type": "json_object"} for r in script.requests)


def test_json_gives_up_after_the_repair_bound(env, server):
    _, script = server
    script.play(*[ok(f"no idea {i}") for i in range(5)])
    with pytest.raises(JSONReplyError) as err:
        chat_json(client(), MSGS, required_keys=["intent"], max_repairs=2)
    assert len(script.requests) == 3
    assert "after 3 replies" in str(err.value) and "'no idea 2'" in str(err.value) and CANARY not in str(err.value)


# --------------------------------------------------------------------------- cache


def test_cache_second_pass_makes_no_requests(env, server, tmp_path, logs):
    _, script = server
    script.play(ok("one"), ok("two"), ok("not json"), ok('{"intent": "chitchat"}'))
    spec = {"kind": "openai", "model": "test-model", "api_key_env": "TEST_LLM_KEY", "base_url_env": "TEST_LLM_URL",
            "timeout_s": 2, "max_retries": 1, "backoff_base_s": 0.01, "temperature": 0.7, "seed": 3}

    def run_pass():
        b = make_backend(spec, tmp_path / "cache")
        assert isinstance(b, CachedBackend)
        out = [b.chat(MSGS), b.chat(MSGS, temperature=0.0), chat_json(b, MSGS, required_keys=["intent"], max_tokens=64)]
        return b, out

    b1, first = run_pass()
    assert first == ["one", "two", {"intent": "chitchat"}] and len(script.requests) == 4
    assert b1.stats() == {"hits": 0, "misses": 4, "calls": 4}
    assert script.requests[0]["body"]["temperature"] == 0.7 and script.requests[0]["body"]["seed"] == 3
    b2, second = run_pass()
    assert second == first and len(script.requests) == 4  # zero HTTP requests
    assert b2.stats() == {"hits": 4, "misses": 0, "calls": 0} and b2.inner.requests == 0
    files = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 4 and all(f.parent.name == f.stem[:2] for f in files)
    entry = json.loads(files[0].read_text())
    assert entry["identity"] == {"backend": "openai", "model": "test-model", "endpoint": env}
    for f in files:
        assert CANARY not in f.read_text()
    assert CANARY not in logs.text + json.dumps(b2.describe())


def test_cache_key_covers_what_changes_the_reply(monkeypatch):
    monkeypatch.setenv("K", CANARY)
    monkeypatch.setenv("U", "http://alice:secret-1@example.org:8000/v1/")
    a = OpenAIChatBackend("m", api_key_env="K", base_url_env="U")
    monkeypatch.setenv("U", "http://bob:secret-2@example.org:8000/v1")
    same_host = OpenAIChatBackend("m", api_key_env="K", base_url_env="U")
    monkeypatch.setenv("U", "http://example.org:9000/v1")
    other_port = OpenAIChatBackend("m", api_key_env="K", base_url_env="U")
    s = a.sampling()
    key = request_key(a, MSGS, s, False, None)[0]
    assert request_key(same_host, MSGS, s, False, {"task": "x"})[0] == key  # credentials and meta not keyed
    assert request_key(other_port, MSGS, s, False, None)[0] != key
    assert request_key(OpenAIChatBackend("m2", api_key_env="K", base_url_env="U"), MSGS, s, False, None)[0] != \
        request_key(other_port, MSGS, s, False, None)[0]
    assert request_key(a, MSGS, {**s, "temperature": 0.5}, False, None)[0] != key
    assert request_key(a, MSGS, {**s, "seed": 1}, False, None)[0] != key
    assert request_key(a, MSGS, s, True, None)[0] != key
    assert request_key(a, MSGS[:1], s, False, None)[0] != key
    blob = json.dumps(request_key(a, MSGS, s, False, None)[1])
    assert "secret-1" not in blob and CANARY not in blob
    sim = OfflineSimulator()
    assert request_key(sim, MSGS, s, False, {"task": "a"})[0] != request_key(sim, MSGS, s, False, {"task": "b"})[0]


def test_corrupt_cache_entry_is_refetched(tmp_path, caplog):
    b = CachedBackend(OfflineSimulator(), tmp_path)
    meta = {"task": "user_turn", "intent": "chitchat"}
    first = b.chat(MSGS, meta=meta)
    (path,) = list(tmp_path.rglob("*.json"))
    path.write_text('{"key": "trunc')
    again = CachedBackend(OfflineSimulator(), tmp_path)
    assert again.chat(MSGS, meta=meta) == first and again.stats()["calls"] == 1
    assert "unreadable entry" in caplog.text
    assert json.loads(path.read_text())["reply"] == first


def _fill(cache_dir, worker):
    b = CachedBackend(OfflineSimulator(seed=5), cache_dir)
    for i in range(60):
        j = (i + worker * 30) % 60  # the two workers start at different keys and overlap
        b.chat(MSGS, meta={"task": "user_turn", "intent": "search_recipe", "slots": {"query": f"dish {j}"}})


def test_cache_two_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_fill, args=(tmp_path, w)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 60 and not list(tmp_path.rglob(".*tmp*"))
    assert all(isinstance(json.loads(f.read_text())["reply"], str) for f in files)
    b = CachedBackend(OfflineSimulator(seed=5), tmp_path)
    for j in range(60):
        assert f"dish {j}" in b.chat(MSGS, meta={"task": "user_turn", "intent": "search_recipe", "slots": {"query": f"dish {j}"}})
    assert b.stats() == {"hits": 60, "misses": 0, "calls": 0}


# --------------------------------------------------------------------------- offline simulator

SLOTS = {
    "query": "vegan pear crumble", "selection": 2, "duration": "12 minutes", "step": 4,
    "question": "Can I use butter instead of coconut oil?", "product_name": "Lugz Men's Chukka Boot",
    "attributes_list": [{"Type": "Chukka"}, {"Color": "Brown"}], "list_of_products": ["Key Notes", "Happy Any Day Now"],
    "address": {"country": "France"}, "product_ids": [1, 2],
}


def _slot_strings(value):
    if isinstance(value, dict):
        return [f"{k}: {v}" for k, v in value.items()]
    if isinstance(value, list):
        return [s for v in value for s in _slot_strings(v)]
    return [str(value)]


@pytest.mark.parametrize("intent", sorted(user_templates()) + ["some_new_intent"])
def test_simulator_user_turns_contain_their_slots(intent):
    sim = OfflineSimulator(seed=0)
    for name, value in SLOTS.items():
        for slots in ({name: value}, {k: v for k, v in SLOTS.items() if k != name}):
            reply = json.loads(sim.chat(MSGS, json_mode=True, meta={"task": "user_turn", "intent": intent, "slots": slots}))
            assert reply["intent"] == intent and reply["slots"] == slots
            for v in slots.values():
                for s in _slot_strings(v):
                    assert s in reply["text"], (intent, slots, reply["text"])


def test_simulator_templates_file_is_checked(tmp_path):
    assert all(isinstance(t, str) for ts in user_templates().values() for t in ts) and "search_recipe" in user_templates()
    bad = tmp_path / "templates.yaml"
    bad.write_text('search_recipe: ["Find {query}."]\nnext_step: "What\'s next?"\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"templates.yaml: next_step: expected a non-empty list"):
        load_user_templates(bad)
    bad.write_text('- "Find {query}."\n', encoding="utf-8")
    with pytest.raises(InputError, match="templates.yaml: expected a mapping"):
        load_user_templates(bad)


def test_simulator_is_deterministic_and_order_independent():
    metas = [{"task": "user_turn", "intent": i, "slots": {"query": f"q{n}"}} for n, i in enumerate(sorted(user_templates()))]
    a = [OfflineSimulator(seed=1).chat(MSGS, meta=m, seed=s) for s in (0, 1) for m in metas]
    sim = OfflineSimulator(seed=1)
    b = [sim.chat(MSGS, meta=m, seed=s) for s in (1, 0) for m in reversed(metas)]
    assert a == list(reversed(b))
    c = [OfflineSimulator(seed=2).chat(MSGS, meta=m, seed=s) for s in (0, 1) for m in metas]
    assert c != a  # the seed picks among the templates


def test_simulator_system_turns_mention_their_grounding():
    sim = OfflineSimulator()
    results = [{"title": "Baked Pear Crumble"}, {"title": "Apple Pie"}, "Whipped Cream"]
    r = json.loads(sim.chat(MSGS, json_mode=True, meta={"task": "system_turn", "state": "show_results",
                                                         "query": "pear dessert", "results": results}))
    assert all(t in r["text"] for t in ("Baked Pear Crumble", "Apple Pie", "Whipped Cream", "pear dessert"))
    assert r["selected_ids"] == [1, 2, 3]
    text = sim.chat(MSGS, meta={"task": "system_turn", "item": {"title": "Baked Pear Crumble"},
                                "step": {"number": 3, "text": "Slice the pears."}})
    assert "Baked Pear Crumble" in text and "Step 3: Slice the pears." in text
    cart = json.loads(sim.chat(MSGS, json_mode=True, meta={"task": "system_turn", "cart": [{"title": "Boot"}]}))
    assert "Boot" in cart["text"] and cart["product_ids"] == [1]
    assert "Hello" in sim.chat(MSGS, meta={"task": "system_turn", "state": "start", "domain": "recipes"})


def test_simulator_describes_itself_and_rejects_bad_requests():
    d = OfflineSimulator().describe()
    assert d["kind"] == "offline" and "template simulator" in d["note"] and "not an LLM" in d["note"]
    with pytest.raises(ValueError, match="task"):
        OfflineSimulator().chat(MSGS)
    with pytest.raises(ValueError, match="intent"):
        OfflineSimulator().chat(MSGS, meta={"task": "user_turn"})
    with pytest.raises(ValueError, match=r"messages\[1\]"):
        OfflineSimulator().chat([MSGS[0], {"role": "bot", "content": "x"}], meta={"task": "user_turn", "intent": "x"})


def test_simulator_through_cache_and_chat_json(tmp_path):
    meta = {"task": "user_turn", "intent": "select_i", "slots": {"selection": 3}}
    b = make_backend({"kind": "offline", "simulator_seed": 4}, tmp_path)
    got = chat_json(b, MSGS, required_keys=["text", "intent"], meta=meta)
    assert got["intent"] == "select_i" and "3" in got["text"] and b.stats()["calls"] == 1
    b2 = make_backend({"kind": "offline", "simulator_seed": 4}, tmp_path)
    assert chat_json(b2, MSGS, required_keys=["text"], meta=meta) == got and b2.stats()["calls"] == 0


def test_simulator_cache_key_follows_the_templates_file(tmp_path, monkeypatch):
    """An edit of the templates file misses the reply cache (its sha256 is in the key)."""
    from irrepro.syntod import cache
    from irrepro.syntod.llm import simulator

    sim = OfflineSimulator(seed=4)
    assert sim.cache_identity()["user_templates_sha256"] == hashlib.sha256(
        simulator.USER_TEMPLATES_PATH.read_bytes()).hexdigest()
    meta = {"task": "user_turn", "intent": "select_i", "slots": {"selection": 3}}
    key, _ = cache.request_key(sim, MSGS, {}, False, meta)
    monkeypatch.setattr(simulator, "user_templates_sha256", lambda: "0" * 64)  # the file as edited
    assert cache.request_key(sim, MSGS, {}, False, meta)[0] != key


# --------------------------------------------------------------------------- make_backend


def test_make_backend_validates_the_spec(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="kind"):
        make_backend({"kind": "claude"})
    with pytest.raises(ValueError, match=r"\['api_key'\].*environment"):
        make_backend({"kind": "openai", "model": "m", "api_key": CANARY})
    with pytest.raises(ValueError, match=r"\['base_url'\]"):
        make_backend({"kind": "openai", "model": "m", "base_url": "http://x"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['timeout'\]"):
        make_backend({"kind": "openai", "model": "m", "timeout": 3})
    with pytest.raises(ValueError, match="model_dir"):
        make_backend({"kind": "transformers"})
    with pytest.raises(ValueError, match="max_tokens"):
        make_backend({"kind": "offline", "max_tokens": 0}).chat(MSGS, meta={"task": "user_turn", "intent": "x"})
    monkeypatch.setenv("MY_KEY", CANARY)
    monkeypatch.setenv("MY_URL", "http://127.0.0.1:1/v1")
    b = make_backend({"kind": "openai", "model": "m", "api_key_env": "MY_KEY", "base_url_env": "MY_URL",
                      "timeout_s": 5, "max_retries": 2, "temperature": 0.3, "max_tokens": 99})
    assert isinstance(b, OpenAIChatBackend) and b.endpoint == "http://127.0.0.1:1/v1"
    assert b.timeout == 5 and b.max_retries == 2 and b.sampling() == {"temperature": 0.3, "max_tokens": 99, "seed": 0}
    assert CANARY not in json.dumps(b.describe()) + repr(b)
    monkeypatch.delenv("MY_URL")
    assert make_backend({"kind": "openai", "model": "m", "base_url_env": "MY_URL"}).endpoint == "https://api.openai.com/v1"


# --------------------------------------------------------------------------- local transformers


def test_transformers_backend_generates_with_a_tiny_model(tiny_base_dir, tmp_path, caplog):
    model_dir = tiny_base_dir("llama")
    b = TransformersBackend(model_dir, defaults={"max_tokens": 8})
    greedy = b.chat(MSGS)
    assert isinstance(greedy, str) and b.chat(MSGS) == greedy
    sampled = [b.chat(MSGS, temperature=1.0, seed=s) for s in (1, 1, 2)]
    assert sampled[0] == sampled[1]  # seeded sampling is reproducible
    tok = b._tok
    ids = tok(build_prompt(tok, MSGS), return_tensors="pt")["input_ids"]
    import torch

    with torch.no_grad():  # the reference: greedy decoding by hand, argmax of the next-token logits
        cur = ids
        for _ in range(8):
            nxt = b._lm(cur).logits[0, -1].argmax().view(1, 1)
            cur = torch.cat([cur, nxt], dim=1)
            if nxt.item() == tok.eos_token_id:
                break
    assert greedy == tok.decode(cur[0, ids.shape[1]:], skip_special_tokens=True).strip()
    # long prompts are cut from the left to fit the 256 positions, or rejected
    long = [{"role": "user", "content": "the quick brown fox " * 200}]
    assert isinstance(b.chat(long), str) and b.truncated == 1 and "cut to its last" in caplog.text
    strict = TransformersBackend(model_dir, truncate="error", defaults={"max_tokens": 8})
    with pytest.raises(ValueError, match="exceeds the model's 256 positions"):
        strict.chat(long)
    # cached: a second backend over the same cache never loads or calls the model
    c1 = CachedBackend(b, tmp_path / "c")
    assert c1.chat(MSGS) == greedy
    c2 = CachedBackend(TransformersBackend(model_dir, defaults={"max_tokens": 8}), tmp_path / "c")
    assert c2.chat(MSGS) == greedy and c2.stats()["calls"] == 0 and c2.inner._lm is None
    d = b.describe()
    assert d["kind"] == "transformers" and len(d["fingerprint"]) == 64


def test_transformers_chat_template_is_used(tiny_base_dir, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    src = tiny_base_dir("llama")
    dst = tmp_path / "templated"
    shutil.copytree(src, dst)
    tok = AutoTokenizer.from_pretrained(dst)
    assert build_prompt(tok, MSGS) == "system: You write SynTOD turns.\nuser: Say hello.\nassistant:"
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    tok.save_pretrained(dst)
    tok = AutoTokenizer.from_pretrained(dst)
    assert build_prompt(tok, MSGS) == "<|system|>You write SynTOD turns.\n<|user|>Say hello.\n<|assistant|>"
    b = TransformersBackend(dst, defaults={"max_tokens": 4})
    assert isinstance(b.chat(MSGS), str)
    assert b.fingerprint != TransformersBackend(src).fingerprint  # the cache would not mix them up


def test_cli_llm_check(env, server, capsys, root):
    from irrepro.cli import main

    _, script = server
    script.play(ok('Reply: {"text": "Hi, what shall we cook?",}'))
    rc = main(["tools", "syntod-llm-check", "--params", str(root / "params.yaml"), "--kind", "openai", "--model", "m",
               "--api-key-env", "TEST_LLM_KEY", "--base-url-env", "TEST_LLM_URL", "--max-retries", "0", "--json"])
    out = capsys.readouterr()
    assert rc == 0 and json.loads(out.out)["reply"] == {"text": "Hi, what shall we cook?"}
    assert script.requests[0]["body"]["max_tokens"] == 64 and CANARY not in out.out + out.err
    script.play(status(404, "model 'm' not found"))
    assert main(["tools", "syntod-llm-check", "--params", str(root / "params.yaml"), "--kind", "openai", "--model", "m",
                 "--api-key-env", "TEST_LLM_KEY", "--base-url-env", "TEST_LLM_URL"]) == 1
    assert "model 'm' not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- spec keys: one home


def test_params_schema_lists_the_spec_keys_of_the_code(root):
    """The schema is YAML and cannot import irrepro.syntod.llm.spec: its key lists must be the code's."""
    syntod = load_yaml(root / "workflow" / "schemas" / "params.schema.yaml")["properties"]["syntod"]["properties"]
    llm, judge = syntod["llm"], syntod["judge"]
    assert set(llm["properties"]) == all_spec_keys()
    assert set(llm["properties"]["kind"]["enum"]) == set(BACKEND_KINDS)
    assert set(judge["properties"]["kind"]["enum"]) == set(JUDGE_KINDS)
    for spec in (llm, judge):
        assert {key for alt in spec["not"]["anyOf"] for key in alt["required"]} == FORBIDDEN_KEYS


def test_a_params_spec_keeps_the_keys_of_its_kind():
    """params.yaml's syntod.llm carries openai keys in both profiles; the offline kind drops them."""
    spec = {"kind": "offline", "model": "m", "api_key_env": "K", "timeout_s": 5, "simulator_seed": 3, "seed": None}
    assert select_spec(spec, "params: syntod.llm") == {"kind": "offline", "model": "m", "simulator_seed": 3}
    with pytest.raises(ValueError, match=r"params: syntod\.llm: unknown key\(s\) \['temprature'\]"):
        select_spec({**spec, "temprature": 1.0}, "params: syntod.llm")
    with pytest.raises(ValueError, match=r"syntod\.llm\.kind must be openai \| transformers \| offline"):
        select_spec({"kind": "heuristic"}, "params: syntod.llm")
