"""An OpenAI-compatible chat-completions server on 127.0.0.1 for the rehearsal (``irrepro tools llm-serve``).

The rehearsal runs SynTOD generation and judging through the paper route's
:class:`~irrepro.syntod.llm.OpenAIChatBackend` (key and URL from the environment, retries,
reply cache, ``usage`` accounting). This server answers it offline:

* the reply is the offline template simulator's (:class:`~irrepro.syntod.llm.OfflineSimulator`)
  or, for judge requests, the heuristic judge's (:class:`~irrepro.syntod.judge.HeuristicJudge`),
  computed from the structured request the client adds as ``irrepro_meta`` when
  ``$IRREPRO_LLM_SEND_META`` is ``1`` (set by ``make rehearse`` only). A request without it
  gets a generic reply that has the asked shape (``{"text": ...}`` in JSON mode, else a line);
* every ``fail_every``-th request is refused, alternately with HTTP 429 (``Retry-After: 0``)
  and 503, so the client's retry path runs;
* every reply carries ``usage`` (whitespace-token counts of the prompt and the reply);
* a request without ``Authorization: Bearer <key>`` is refused with 401 when the server was
  started with a key (``--key-env``), as the real API does; the key is never logged.

Contract: POST ``/v1/chat/completions`` (or ``/chat/completions``); GET ``/v1/models`` lists the
one model name. Counts of requests, failures injected and replies are written to ``stats_path``
(JSON) after every request, so the rehearsal check can read them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger("irrepro.rehearsal")

META_FIELD = "irrepro_meta"
SEND_META_ENV = "IRREPRO_LLM_SEND_META"


class RehearsalLLM:
    """The reply logic (no HTTP): template simulator + heuristic judge + fault schedule."""

    def __init__(self, fail_every: int = 0, seed: int = 0):
        from ..syntod.judge import HeuristicJudge
        from ..syntod.llm import OfflineSimulator

        if fail_every < 0:
            raise ValueError(f"fail_every must be >= 0, got {fail_every}")
        self.sim, self.judge = OfflineSimulator(seed=seed), HeuristicJudge()
        self.fail_every = fail_every
        self.lock = threading.Lock()
        self.stats = {"requests": 0, "replies": 0, "injected_429": 0, "injected_5xx": 0, "with_meta": 0,
                      "generic": 0, "unauthorised": 0}

    def fault(self) -> int | None:
        """The status to inject for this request (429 / 503 alternately), or None."""
        with self.lock:
            self.stats["requests"] += 1
            n = self.stats["requests"]
            if not self.fail_every or n % self.fail_every:
                return None
            code = 429 if (n // self.fail_every) % 2 else 503
            self.stats["injected_429" if code == 429 else "injected_5xx"] += 1
            return code

    def reply(self, body: dict) -> str:
        messages = body.get("messages") or []
        json_mode = (body.get("response_format") or {}).get("type") == "json_object"
        meta = body.get(META_FIELD)
        seed = body.get("seed") if isinstance(body.get("seed"), int) else 0
        with self.lock:
            self.stats["replies"] += 1
            self.stats["with_meta" if meta else "generic"] += 1
        if isinstance(meta, dict) and meta.get("task") == "judge":
            return self.judge.chat(messages, meta=meta, json_mode=json_mode)
        if isinstance(meta, dict) and meta.get("task") in self.sim.TASKS:
            return self.sim.chat(messages, seed=seed, meta=meta, json_mode=json_mode)
        last = str(messages[-1].get("content", "")) if messages else ""
        text = " ".join(last.split()[:24]) or "..."
        return json.dumps({"text": text}) if json_mode else text


def usage(body: dict, reply: str) -> dict:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
    completion = len(reply.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def make_server(port: int = 0, fail_every: int = 0, key: str | None = None, model: str = "rehearsal",
                stats_path: str | os.PathLike | None = None) -> ThreadingHTTPServer:
    """A bound (not yet serving) server on 127.0.0.1:``port`` (0: a free port)."""
    llm = RehearsalLLM(fail_every)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet; the stats file has the counts
            log.debug("llm-serve: " + fmt, *args)

        def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _dump_stats(self) -> None:
            if stats_path:
                tmp = Path(f"{stats_path}.tmp")
                with llm.lock:
                    tmp.write_text(json.dumps(llm.stats, indent=1) + "\n")
                os.replace(tmp, stats_path)

        def do_GET(self):
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                return self._send(200, {"object": "list", "data": [{"id": model, "object": "model"}]})
            self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            n = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(n) or b"{}")
            except ValueError:
                return self._send(400, {"error": {"message": "request body is not JSON"}})
            if key and self.headers.get("Authorization") != f"Bearer {key}":
                with llm.lock:
                    llm.stats["unauthorised"] += 1
                self._dump_stats()
                return self._send(401, {"error": {"message": "missing or wrong API key"}})
            code = llm.fault()
            if code:
                self._dump_stats()
                return self._send(code, {"error": {"message": f"injected {code} (rehearsal)"}},
                                  {"Retry-After": "0"} if code == 429 else None)
            try:
                text = llm.reply(body)
            except Exception as exc:  # a malformed request: say so, as a real server would
                self._dump_stats()
                return self._send(400, {"error": {"message": f"{type(exc).__name__}: {exc}"[:300]}})
            self._dump_stats()
            self._send(200, {"id": "rehearsal", "object": "chat.completion", "model": body.get("model", model),
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop"}],
                             "usage": usage(body, text)})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.llm = llm
    return server


def serve(port: int, fail_every: int, key_env: str | None, url_file: str | None, stats_path: str | None) -> None:
    """Serve until SIGTERM / SIGINT; the base URL (``http://127.0.0.1:<port>/v1``) goes to ``url_file``."""
    import signal

    key = os.environ.get(key_env) if key_env else None
    server = make_server(port, fail_every, key, stats_path=stats_path)
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    if url_file:
        tmp = Path(f"{url_file}.tmp")
        tmp.write_text(url + "\n")
        os.replace(tmp, url_file)
    log.info("llm-serve: %s (fail every %s, key %s)", url, fail_every or "never", "required" if key else "not required")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
