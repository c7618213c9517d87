"""Remote models over the OpenAI-compatible HTTP API: streaming chat completions and completions.

Standard library only (``http.client``), so the app starts without an HTTP package and the request is
exactly what is written here. The API key is read from the environment variable the catalog names, at
request time, and goes only into the ``Authorization`` header of requests to ``base_url``: it is never
stored on the engine, printed, logged or written to history; a server that echoes it back (in an error, a
model id or the answer itself) has it replaced by a marker (``server_text``). Every failure becomes a one-line
``EndpointError`` that names the endpoint and what to do, shown inside the pane that asked.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuitune.engines.base import Generation, Request, Sampling
from tuitune.engines.server_text import (
    KeyScrubber,
    endpoint_key,
    error_text,
    one_line,
    retry_after_seconds,
    scrub,
)
from tuitune.errors import TuituneError

if TYPE_CHECKING:
    from tuitune.catalog import ModelEntry

DEFAULT_TIMEOUT_S = 60.0  # between two bytes of the answer, not for the whole answer
MAX_AUTO_RETRY_AFTER_S = 5.0  # a 429 asking to wait this long or less is retried; longer is reported
# llama.cpp, vLLM, Ollama… accept these; a strict server may answer 400, and then they are left out
OPTIONAL_FIELDS = ("top_k", "min_p", "repeat_penalty", "stream_options")


class EndpointError(TuituneError):
    """A remote endpoint failed: the message names it and says what to do."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one remote model. Holds the key's variable *name*, never the key."""

    name: str
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    api_key_env: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)  # merged into every request body
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_entry(cls, entry: ModelEntry) -> Endpoint:
        config = entry.endpoint
        return cls(
            name=entry.id,
            base_url=str(config["base_url"]).rstrip("/"),
            model=str(config["model"]),
            api_key_env=config.get("api_key_env"),
            headers={str(k): str(v) for k, v in (config.get("headers") or {}).items()},
            parameters=dict(config.get("parameters") or {}),
            timeout_s=float(config.get("timeout", DEFAULT_TIMEOUT_S)),
        )

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        value = os.environ.get(self.api_key_env, "").strip()
        if not value:
            raise EndpointError(
                f"{self.name}: the API key variable {self.api_key_env} is not set; "
                f"export {self.api_key_env}=… in the shell that runs tuitune"
            )
        return value


class _Http:
    """One request to the endpoint on its own connection, closable from another thread (cancel)."""

    def __init__(self, endpoint: Endpoint, timeout_s: float):
        parts = urllib.parse.urlsplit(endpoint.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EndpointError(f"{endpoint.name}: base_url '{endpoint.base_url}' is not an http(s) URL")
        self.endpoint = endpoint
        self.path_prefix = parts.path.rstrip("/")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.scheme == "https":
            self.connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, port, timeout=timeout_s, context=ssl.create_default_context()
            )
        else:
            self.connection = http.client.HTTPConnection(parts.hostname, port, timeout=timeout_s)
        self.closed = threading.Event()
        self.sock: socket.socket | None = None

    def close(self) -> None:
        """Unblocks a read in progress: used by cancel."""
        self.closed.set()
        sock = self.sock  # http.client drops its reference once a "Connection: close" response starts
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> http.client.HTTPResponse:
        headers = {"Accept": "text/event-stream" if body and body.get("stream") else "application/json"}
        headers.update(self.endpoint.headers)
        key = self.endpoint.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        self.connection.request(method, self.path_prefix + path, body=payload, headers=headers)
        self.sock = self.connection.sock
        if self.closed.is_set():  # cancelled while connecting
            self.close()
        return self.connection.getresponse()


def _scrub(text: str, endpoint: Endpoint) -> str:
    """Server text for a one-line message: printable, short, and never containing the key."""
    return one_line(text, endpoint_key(endpoint.api_key_env))


class OpenAIEngine:
    """A model behind an OpenAI-compatible server. Each request opens its own connection."""

    def __init__(self, endpoint: Endpoint, model_id: str | None = None, n_ctx: int | None = None):
        self.endpoint = endpoint
        self.model_id = model_id or endpoint.name
        self._n_ctx = n_ctx or 0
        self._send_extras = True  # dropped (once, with a note) if the server rejects non-OpenAI samplers
        self._send_schema = True  # a request's grammar as response_format; dropped (with a note) if rejected

    def __repr__(self) -> str:  # never the key
        return f"OpenAIEngine({self.endpoint.name!r}, {self.endpoint.base_url!r}, model={self.endpoint.model!r})"

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def has_chat_template(self) -> bool:
        return True  # the server applies its own template in chat mode

    @property
    def chat_template_name(self) -> str:
        return "server template"

    def close(self) -> None:
        pass

    # -- requests ----------------------------------------------------------------------------------
    def _body(self, request: Request, seed: int) -> tuple[str, dict[str, Any]]:
        sampling: Sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.endpoint.model,
            "stream": True,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": seed,
        }
        if sampling.max_tokens > 0:
            body["max_tokens"] = sampling.max_tokens
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if self._send_extras:
            body.update(top_k=sampling.top_k, min_p=sampling.min_p, repeat_penalty=sampling.repeat_penalty)
        grammar = request.grammar
        if grammar is not None and grammar.json_schema and self._send_schema:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": grammar.name, "schema": json.loads(grammar.json_schema)},
            }
        body.update(self.endpoint.parameters)
        if request.mode == "chat":
            if not request.messages:
                raise TuituneError("a chat request needs at least one message")
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            if self._send_extras:
                body["stream_options"] = {"include_usage": True}  # the exact token count in the last chunk
            return "/chat/completions", body
        if request.mode != "raw":
            raise TuituneError(f"unknown mode '{request.mode}': use raw or chat")
        body["prompt"] = request.prompt
        return "/completions", body

    def generate(self, request: Request) -> Generation:
        return Generation(lambda generation: self._produce(request, generation))

    def _open_stream(
        self, request: Request, generation: Generation, seed: int
    ) -> tuple[_Http, http.client.HTTPResponse]:
        """POST the request; retry a short 429 and a rejected non-OpenAI sampler; raise on any other error."""
        endpoint = self.endpoint
        retries = 0
        while True:
            path, body = self._body(request, seed)
            connection = _Http(endpoint, endpoint.timeout_s)
            generation.on_cancel(connection.close)
            try:
                response = connection.request("POST", path, body)
            except BaseException as error:
                connection.close()
                if generation.cancelled:
                    raise _Cancelled from None
                raise self._network_error(error) from None
            if response.status == 200:
                return connection, response
            text = _scrub(error_text(response.read()), endpoint)
            connection.close()
            if (
                response.status == 400
                and "response_format" in body
                and any(name in text for name in ("response_format", "json_schema"))
            ):  # the reply is then free text: the caller still parses it strictly
                self._send_schema = False
                generation.notices.append(
                    f"{endpoint.name} rejects response_format json_schema: sent without it, the reply is unconstrained"
                )
                continue
            if response.status == 400 and self._send_extras and any(name in text for name in OPTIONAL_FIELDS):
                self._send_extras = False
                generation.notices.append(
                    f"{endpoint.name} rejects top_k/min_p/repeat_penalty/stream_options: sent without them"
                )
                continue
            if response.status == 429:
                wait = retry_after_seconds(response.getheader("Retry-After"))
                if wait is not None and wait <= MAX_AUTO_RETRY_AFTER_S and retries < 2:
                    retries += 1
                    generation.notices.append(f"{endpoint.name} asked to wait {wait:g} s (429); retried")
                    if generation.wait_cancelled(wait):
                        raise _Cancelled
                    continue
            raise self._http_error(response.status, text, path, response.getheader("Retry-After"))

    def _produce(self, request: Request, generation: Generation) -> Iterator[str]:
        started = time.perf_counter()
        stats = generation.stats
        stats.seed = request.sampling.resolved_seed()
        count = 0
        first_at = last_at = None
        finish = "length"
        finished = False  # a finish_reason arrived
        usage: dict[str, Any] | None = None
        scrubber = KeyScrubber(endpoint_key(self.endpoint.api_key_env))  # a server may echo the key in the answer
        try:
            connection, response = self._open_stream(request, generation, stats.seed)
        except _Cancelled:
            stats.finish_reason = "cancelled"
            stats.total_s = time.perf_counter() - started
            return
        try:
            for event in self._events(response, connection, generation):
                if event.get("_eof"):
                    if not finished:
                        raise EndpointError(
                            f"{self.endpoint.name}: the connection closed mid-answer (no end of stream); "
                            "the text so far is kept, try again"
                        )
                    break
                if event.get("usage"):
                    usage = event["usage"]
                choices = event.get("choices")
                if not choices:
                    continue
                choice = choices[0]
                if not isinstance(choice, dict):
                    raise self._malformed(json.dumps(event))
                delta = choice.get("delta") if request.mode == "chat" else None
                piece = (delta or {}).get("content") if request.mode == "chat" else choice.get("text")
                if piece:
                    if not isinstance(piece, str):
                        raise self._malformed(json.dumps(event))
                    last_at = time.perf_counter()
                    if first_at is None:
                        first_at = last_at
                    count += 1
                    if shown := scrubber.feed(piece):
                        yield shown
                reason = choice.get("finish_reason")
                if reason:
                    finish = "length" if reason == "length" else "stop"
                    finished = True
            if generation.cancelled:
                finish = "cancelled"
        except _Cancelled:
            finish = "cancelled"
        except GeneratorExit:
            finish = "cancelled"
            raise
        except EndpointError:
            if tail := scrubber.finish():  # the text so far is kept, with the tail held back for the key check
                yield tail
            raise
        finally:
            connection.close()
            stats.finish_reason = "cancelled" if generation.cancelled else finish
            stats.total_s = time.perf_counter() - started
            stats.completion_tokens = count
            if usage:
                stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                stats.completion_tokens = int(usage.get("completion_tokens") or count)
            if first_at is not None:
                stats.ttft_s = first_at - started
                if count > 1 and last_at > first_at:
                    stats.decode_tokens_per_s = (stats.completion_tokens - 1) / (last_at - first_at)
        if tail := scrubber.finish():
            yield tail

    def _events(self, response, connection: _Http, generation: Generation) -> Iterator[dict[str, Any]]:
        """Server-sent events: ``data: {json}`` lines until ``data: [DONE]`` (or the stream simply ends)."""
        saw_event = False
        while True:
            try:
                raw = response.readline()
            except Exception as error:  # a socket closed under http.client by cancel fails in odd ways
                if generation.cancelled or connection.closed.is_set():
                    raise _Cancelled from None
                if isinstance(error, (OSError, http.client.HTTPException, ValueError)):
                    raise self._network_error(error, during_stream=True) from None
                raise
            if generation.cancelled:
                raise _Cancelled
            if not raw:
                if not saw_event:
                    raise self._malformed("(the stream ended before any event)")
                yield {"_eof": True}  # closed without [DONE]: the caller decides if the answer was complete
                return
            line = raw.decode("utf-8", "replace").strip()
            if not line or line.startswith(":"):
                continue  # blank separators and keep-alive comments
            if not line.startswith("data:"):
                if line.split(":", 1)[0] in ("event", "id", "retry"):
                    continue
                raise self._malformed(line)
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError:
                raise self._malformed(data) from None
            if not isinstance(event, dict):
                raise self._malformed(data)
            if "error" in event:
                message = _scrub(error_text(data.encode("utf-8")), self.endpoint)
                raise EndpointError(f"{self.endpoint.name}: the server reported an error mid-answer: {message}")
            saw_event = True
            yield event

    # -- errors ------------------------------------------------------------------------------------
    def _malformed(self, line: str) -> EndpointError:
        shown = _scrub(line, self.endpoint)
        return EndpointError(
            f"{self.endpoint.name}: malformed stream from {self.endpoint.base_url} (expected 'data: {{json}}' "
            f"server-sent events, got: {shown!r}); is base_url the OpenAI-compatible API root (often ending in /v1)?"
        )

    def _network_error(self, error: BaseException, during_stream: bool = False) -> EndpointError:
        where = f"{self.endpoint.name} ({self.endpoint.base_url})"
        if isinstance(error, (TimeoutError, socket.timeout)):
            what = "stopped sending mid-answer" if during_stream else "did not answer"
            return EndpointError(
                f"{where} {what} within {self.endpoint.timeout_s:g} s (timeout); check the server, "
                "or raise 'timeout' in its catalog entry"
            )
        if isinstance(error, ConnectionRefusedError):
            return EndpointError(f"cannot connect to {where}: connection refused; is the server running?")
        if isinstance(error, socket.gaierror):
            return EndpointError(f"cannot resolve the host of {where}; check base_url")
        if isinstance(error, ssl.SSLError):
            return EndpointError(f"TLS failed with {where}: {_scrub(str(error), self.endpoint)}")
        if isinstance(error, EndpointError):
            return error
        reason = _scrub(str(error) or type(error).__name__, self.endpoint)
        what = "the connection dropped mid-answer" if during_stream else "the request failed"
        return EndpointError(f"{where}: {what} ({reason}); try again")

    def _http_error(self, status: int, text: str, path: str, retry_after: str | None) -> EndpointError:
        endpoint = self.endpoint
        where = f"{endpoint.name} ({endpoint.base_url})"
        detail = f": {text}" if text else ""
        if status in (401, 403):
            if endpoint.api_key_env:
                fix = f"check the key in {endpoint.api_key_env}"
            else:
                fix = f"the server wants a key: `tuitune endpoint add {endpoint.name} … --api-key-env VAR`"
            return EndpointError(f"{where} refused the request ({status}, unauthorized){detail}; {fix}")
        if status == 404:
            if path == "/completions" and "does not exist" not in text:  # not the model: the route is missing
                return EndpointError(
                    f"{where} has no /completions for model '{endpoint.model}' (404){detail}; "
                    "raw mode needs it: use chat mode with this endpoint"
                )
            return EndpointError(
                f"{where}: model '{endpoint.model}' not found (404){detail}; "
                f"`tuitune endpoint test {endpoint.name}` lists the server's models"
            )
        if status == 429:
            wait = retry_after_seconds(retry_after)
            when = f"retry in {wait:g} s" if wait is not None else "wait a moment and retry"
            return EndpointError(f"{where} is rate limiting (429){detail}; {when}")
        if status >= 500:
            return EndpointError(f"{where} had a server error ({status}){detail}; try again later")
        return EndpointError(f"{where} rejected the request ({status}){detail}")

    # -- for `tuitune endpoint test` ---------------------------------------------------------------
    def list_models(self) -> list[str]:
        """The ids the server offers (``GET /models``)."""
        connection = _Http(self.endpoint, min(self.endpoint.timeout_s, 15.0))
        try:
            try:
                response = connection.request("GET", "/models")
                body = response.read()
            except (OSError, http.client.HTTPException) as error:
                raise self._network_error(error) from None
            if response.status != 200:
                text = _scrub(error_text(body), self.endpoint)
                raise self._http_error(response.status, text, "/models", response.getheader("Retry-After"))
            try:
                data = json.loads(body)
                key = endpoint_key(self.endpoint.api_key_env)
                return [scrub(str(item["id"]), key) for item in data["data"]]
            except (ValueError, KeyError, TypeError):
                raise self._malformed(body.decode("utf-8", "replace")) from None
        finally:
            connection.close()


class _Cancelled(Exception):
    """The request was cancelled while waiting on the network."""
