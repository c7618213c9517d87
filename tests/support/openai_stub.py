"""A tiny OpenAI-compatible server on 127.0.0.1 that misbehaves on purpose, for the endpoint error tests.

``mode`` picks the behaviour of ``POST /v1/chat/completions`` and ``/v1/completions``:

- ``ok``: streams "Hello from the stub." in SSE chunks, then ``[DONE]``;
- ``unauthorized``: 401 whose message echoes the key it received (as some servers do);
- ``no-model``: 404 model not found;
- ``rate-limited``: 429 with ``Retry-After: 30``;
- ``rate-limited-once``: 429 with ``Retry-After: 1`` on the first request, then ``ok``;
- ``garbage``: 200 with a body that is not server-sent events;
- ``bad-json``: ``data: {not json``;
- ``stall``: one chunk, then silence for 30 s;
- ``dropped``: one chunk, then the connection closes without an end of stream;
- ``no-extras``: 400 "Unrecognized request argument supplied: top_k" whenever the body has top_k, else ``ok``;
- ``echo-key``: streams ``echo_key_pieces(key)``, an answer that repeats the key it received split across
  chunks (as a leaky proxy or a model with the key in its prompt might), and lists the key as a model id.

Every request is recorded (path, headers, JSON body) for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = ["Hello", " from", " the", " stub", "."]


def echo_key_pieces(key: str) -> list[str]:
    """The key whole, split over three chunks, twice in one chunk, a near miss, and cut off at the very end."""
    return ["Your key: ", key[:4], key[4:11], key[11:] + " and", " again: ", f"{key}{key} ok",
            f" near miss {key[:10]}!", " end ", key[: len(key) // 2]]  # fmt: skip


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None


@dataclass
class OpenAIStub:
    mode: str = "ok"
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        stub = self

        class Handler(_Handler):
            server_stub = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    server_stub: OpenAIStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _record(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server_stub.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
        return body

    def _json(self, status: int, data: dict, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _event(self, body: dict, text: str | None, finish: str | None = None) -> None:
        if "messages" in body:
            choice = {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish}
        self.wfile.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
        self.wfile.flush()

    def do_GET(self) -> None:
        self._record()
        if self.path == "/v1/models":
            models = [{"id": "stub-model"}, {"id": "other-model"}]
            if self.server_stub.mode == "echo-key":
                models.append({"id": self.headers.get("Authorization", "").removeprefix("Bearer ")})
            self._json(200, {"object": "list", "data": models})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        stub = self.server_stub
        body = self._record() or {}
        mode = stub.mode
        if mode == "rate-limited-once":
            mode = "ok" if len([r for r in stub.requests if r.method == "POST"]) > 1 else "rate-limited-short"
        if mode == "no-extras":
            if "top_k" in body:
                self._json(400, {"error": {"message": "Unrecognized request argument supplied: top_k"}})
                return
            mode = "ok"
        if mode == "unauthorized":
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            self._json(401, {"error": {"message": f"Incorrect API key provided: {key}."}})
        elif mode == "no-model":
            self._json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist"}})
        elif mode == "rate-limited":
            self._json(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "30"})
        elif mode == "rate-limited-short":
            self._json(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "1"})
        elif mode == "garbage":
            self._start_stream()
            self.wfile.write(b"<html>this is not an event stream</html>\n")
        elif mode == "bad-json":
            self._start_stream()
            self.wfile.write(b"data: {not json\n\n")
        elif mode == "echo-key":
            self._start_stream()
            for piece in echo_key_pieces(self.headers.get("Authorization", "").removeprefix("Bearer ")):
                self._event(body, piece)
            self._event(body, None, "stop")
            self.wfile.write(b"data: [DONE]\n\n")
        elif mode in ("stall", "dropped"):
            self._start_stream()
            self._event(body, ANSWER[0])
            if mode == "stall":
                time.sleep(30)
        else:
            self._start_stream()
            for piece in ANSWER:
                self._event(body, piece)
            self._event(body, None, "stop")
            self.wfile.write(b"data: [DONE]\n\n")
