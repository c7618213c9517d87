"""The OpenAI fine-tuning API over ``http.client``: upload a file, create, follow and cancel a job.

Standard library only, as the chat engine (engines/openai.py): the app starts without an HTTP package and each
request is exactly what is written here. The key is read from the endpoint's environment variable per request,
goes only into the ``Authorization`` header, and is scrubbed from anything the service sends back.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuitune.engines.openai import Endpoint
from tuitune.engines.server_text import endpoint_key, error_text, one_line, retry_after_seconds
from tuitune.errors import TuituneError

UPLOAD_BLOCK = 256 * 1024
MAX_ANSWER_BYTES = 16 * 1024**2  # a job, a page of events: kilobytes; more is a broken or hostile service
REQUEST_TIMEOUT_S = 60.0


class RemoteTrainingError(TuituneError):
    """The service refused or failed: one line naming the endpoint and what to do. ``retry_after`` (seconds)
    when the service asked to wait; ``transient`` when trying again later may work (a dropped connection)."""

    def __init__(self, message: str, retry_after: float | None = None, transient: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.transient = transient


class FineTuningClient:
    def __init__(self, endpoint: Endpoint, timeout_s: float = REQUEST_TIMEOUT_S):
        parts = urllib.parse.urlsplit(endpoint.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteTrainingError(f"{endpoint.name}: base_url '{endpoint.base_url}' is not an http(s) URL")
        self.endpoint = endpoint
        self._parts = parts
        self._timeout_s = timeout_s

    @property
    def where(self) -> str:
        return f"{self.endpoint.name} ({self.endpoint.base_url})"

    # -- the API ----------------------------------------------------------------------------------
    def upload_file(self, path: Path, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """POST /files (purpose fine-tune) as multipart, streamed in blocks; ``progress(sent, total)``."""
        boundary = f"tuitune-{uuid.uuid4().hex}"
        name = Path(path).name.replace('"', "_")
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = os.path.getsize(path)
        total = len(head) + size + len(tail)

        def send(connection: http.client.HTTPConnection) -> None:
            sent = 0
            connection.send(head)
            with open(path, "rb") as handle:
                while block := handle.read(UPLOAD_BLOCK):
                    connection.send(block)
                    sent += len(block)
                    if progress is not None:
                        progress(sent, size)
            connection.send(tail)

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(total)}
        return self._call("POST", "/files", headers=headers, send=send, what="upload the data")

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/fine_tuning/jobs", body, what="create the fine-tuning job")

    def retrieve_job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/fine_tuning/jobs/{_quote(job_id)}", None, what="read the job")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/fine_tuning/jobs/{_quote(job_id)}/cancel", None, what="cancel the job")

    def new_events(self, job_id: str, seen: str | None, limit: int = 100) -> list[dict[str, Any]]:
        """Events newer than ``seen``, oldest first. The API lists newest first and pages backwards with
        ``after``, so pages are read until the last event already seen (or the first event of the job)."""
        found: list[dict[str, Any]] = []
        cursor = None
        for _ in range(1000):  # a bound: a service that pages forever is not followed forever
            query = {"limit": str(limit), **({"after": cursor} if cursor else {})}
            page = self._json("GET", f"/fine_tuning/jobs/{_quote(job_id)}/events?{urllib.parse.urlencode(query)}",
                              None, what="read the job's events")  # fmt: skip
            events = [event for event in page.get("data") or [] if isinstance(event, dict)]
            for event in events:
                if seen is not None and event.get("id") == seen:
                    return found[::-1]
                found.append(event)
            if not page.get("has_more") or not events or str(events[-1].get("id")) == cursor:
                break  # the end, or a service that hands out the same page again
            cursor = str(events[-1].get("id"))
        return found[::-1]

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """The job's checkpoints, or [] where the service does not list them (many compatible ones don't)."""
        try:
            page = self._json("GET", f"/fine_tuning/jobs/{_quote(job_id)}/checkpoints", None, what="list checkpoints")
        except RemoteTrainingError:
            return []
        return [item for item in page.get("data") or [] if isinstance(item, dict)]

    # -- plumbing ---------------------------------------------------------------------------------
    def _json(self, method: str, path: str, body: dict[str, Any] | None, what: str) -> dict[str, Any]:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}

        def send(connection: http.client.HTTPConnection) -> None:
            if payload is not None:
                connection.send(payload)

        if payload is not None:
            headers["Content-Length"] = str(len(payload))
        return self._call(method, path, headers=headers, send=send, what=what)

    def _connection(self) -> http.client.HTTPConnection:
        parts = self._parts
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(
                parts.hostname, port, timeout=self._timeout_s, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(parts.hostname, port, timeout=self._timeout_s)

    def _call(self, method: str, path: str, headers: dict[str, str], send, what: str) -> dict[str, Any]:
        key = self.endpoint.api_key()  # a missing variable is its own clear error, before any request
        headers = {"Accept": "application/json", **self.endpoint.headers, **headers}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        connection = self._connection()
        try:
            connection.putrequest(method, self._parts.path.rstrip("/") + path, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            if method == "POST" and "Content-Length" not in headers:
                connection.putheader("Content-Length", "0")
            connection.endheaders()
            send(connection)
            response = connection.getresponse()
            data = response.read(MAX_ANSWER_BYTES + 1)
        except (OSError, http.client.HTTPException) as error:
            reason = one_line(str(error) or type(error).__name__, self._key())
            raise RemoteTrainingError(
                f"{self.where}: could not {what} ({reason}); check the connection", transient=True
            ) from None
        finally:
            connection.close()
        if len(data) > MAX_ANSWER_BYTES:
            raise RemoteTrainingError(f"{self.where}: the answer to '{what}' is over 16 MB; is base_url right?")
        if response.status >= 400:
            raise self._http_error(response.status, data, path, response.getheader("Retry-After"), what)
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise RemoteTrainingError(
                f"{self.where}: the answer to '{what}' is not a JSON object; is base_url an OpenAI-compatible API?"
            )
        return parsed

    def _key(self) -> str:
        return endpoint_key(self.endpoint.api_key_env)

    def _http_error(self, status: int, body: bytes, path: str, retry_after: str | None, what: str) -> Exception:
        text = one_line(error_text(body), self._key()).rstrip(" .")  # ". ;" reads badly before "; what to do"
        detail = f": {text}" if text else ""
        where = self.where
        if status in (401, 403):
            variable = self.endpoint.api_key_env
            fix = f"check the key in {variable}" if variable else "the service wants a key: endpoint --api-key-env VAR"
            if status == 403:
                fix += " (and that it may fine-tune)"
            return RemoteTrainingError(f"{where} refused to {what} ({status}){detail}; {fix}")
        if status == 404 and path in ("/fine_tuning/jobs", "/files"):
            return RemoteTrainingError(
                f"{where} does not implement fine-tuning (404 on {path}); it may serve chat only — "
                "train locally (tuitune train --base MODEL) or use a service with /v1/fine_tuning/jobs"
            )
        if status == 429:
            wait = retry_after_seconds(retry_after)
            if b"insufficient_quota" in body or "quota" in text.lower():
                return RemoteTrainingError(f"{where}: quota exceeded (429){detail}; add credit or raise the limit")
            when = f"retry in {wait:g} s" if wait is not None else "wait a moment and retry"
            return RemoteTrainingError(f"{where} is rate limiting (429){detail}; {when}", retry_after=wait)
        if status >= 500:
            return RemoteTrainingError(f"{where} had a server error ({status}){detail}; try later", transient=True)
        if status == 404 and path.startswith("/fine_tuning/jobs/"):
            return RemoteTrainingError(f"{where} has no such job (404){detail}; `tuitune runs --training` lists runs")
        return RemoteTrainingError(f"{where} rejected the request to {what} ({status}){detail}")


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def wait_backoff(attempt: int, base: float = 2.0, cap: float = 30.0) -> float:
    """Seconds before poll ``attempt`` (0, 1, 2…) while nothing changes: 2, 4, 8… up to ``cap``."""
    return min(cap, base * (2**attempt))


def sleep_until(deadline: float, stopped: Callable[[], bool]) -> bool:
    """Sleep until ``deadline`` (monotonic), waking early when ``stopped()``; True if it was."""
    while time.monotonic() < deadline:
        if stopped():
            return True
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    return stopped()
