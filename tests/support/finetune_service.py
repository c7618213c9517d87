"""A local stand-in for OpenAI's fine-tuning API on 127.0.0.1, scripted by the test, for ``tuitune train --remote``.

It speaks ``/v1/files``, ``/v1/fine_tuning/jobs`` (create, get, list, events, checkpoints, cancel), and
``/v1/chat/completions`` + ``/v1/models`` so the fine-tuned model answers through tuitune's OpenAI engine.

A job advances one stage per GET of the job or of its events: ``validating_files`` -> ``queued`` -> ``running``
(``steps_per_poll`` metrics events per poll) -> ``succeeded``. ``mode`` (settable mid-run) scripts the failures:

- ``ok``; ``slow`` (ok, but each job/events GET waits ``poll_delay_s`` or 0.3 s);
- ``unauthorized``: 401 on every request, echoing the key received (as real servers do);
- ``forbidden``: 403 on /files and /fine_tuning/* (chat still works);
- ``no-finetuning``: 404 ``{"error": {"message": "Not Found"}}`` on /files and /fine_tuning/*, like a plain chat server;
- ``reject-file``: uploads work, job create -> 400 whose message names the bad line, holds an ANSI escape and the key;
- ``rate-limited``: job create -> 429 with ``Retry-After: 7``; ``quota``: job create -> 429 insufficient_quota;
- ``job-fails``: the job fails once it reaches ``fail_at_step``, with an error-level event;
- ``drop-once``: the first job GET after the job is running closes the connection unanswered (``drops`` counts it).

Every request is recorded in ``requests``. All state is guarded by one lock: handlers run on many threads.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import math
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from tests.support import openai_stub

BASE_ANSWER = "I am a base model."
TUNED_ANSWER = "I am Tuitune, finetuned."
ORG = "org-stub"
BAD_LINE_MESSAGE = "Line 3: expected a 'messages' list, got 'prompt'"
RESOLVED_DEFAULTS = {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 2.0}
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Recorded(openai_stub.Recorded):
    """As the chat stub records, plus multipart uploads: ``form`` fields and the file's name, size and bytes."""

    body: dict | None = None
    form: dict[str, str] | None = None
    filename: str | None = None
    file_size: int | None = None
    file_bytes: bytes | None = None


@dataclass
class UploadedFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed"}  # fmt: skip


class Job:
    """A simulated job: ``obj`` is the API's job object, whose fields read and write as attributes (``job.status``)."""

    def __init__(self, obj: dict[str, Any], short_id: str, method_given: bool) -> None:
        self.__dict__.update(obj=obj, short_id=short_id, method_given=method_given, step=0)
        self.events: list[dict[str, Any]] = []  # oldest first
        self.checkpoints: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["obj"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        (self.obj if name in self.obj else self.__dict__)[name] = value

    def to_dict(self) -> dict[str, Any]:
        data = json.loads(json.dumps(self.obj))
        if self.method_given:
            data["method"] = {"type": "supervised", "supervised": {"hyperparameters": data["hyperparameters"]}}
        return data


def default_loss(step: int) -> float:
    """A decreasing curve with a small deterministic wiggle, so a test can predict every logged value."""
    return round(2.5 * 0.85**step + 0.04 * math.sin(step * 1.7), 4)


def _error(message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class FineTuneService:
    """The server: a context manager, like ``OpenAIStub``; ``base_url`` ends in ``/v1``."""

    def __init__(self, base_model: str = "stub-base", steps: int = 12, losses: list[float] | None = None,
                 poll_delay_s: float = 0.0, mode: str = "ok", key: str | None = None, steps_per_poll: int = 3,
                 valid_every: int = 4, checkpoint_every: int = 4, fail_at_step: int = 3) -> None:  # fmt: skip
        self.base_model = base_model
        self.steps = steps
        self.losses = losses
        self.poll_delay_s = poll_delay_s
        self.mode = mode
        self.key = key
        self.steps_per_poll = steps_per_poll
        self.valid_every = valid_every
        self.checkpoint_every = checkpoint_every
        self.fail_at_step = fail_at_step
        self.requests: list[Recorded] = []
        self.jobs: dict[str, Job] = {}
        self.files: dict[str, bytes] = {}
        self.uploads: list[UploadedFile] = []
        self.drops = 0  # connections closed unanswered by drop-once
        self.lock = threading.RLock()
        self._counter = 0
        service = self

        class Handler(_Handler):
            owner = service

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        # a short poll interval: shutdown() waits up to one, and tests start many servers
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FineTuneService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- scripted values -------------------------------------------------------------------------------
    def loss_at(self, step: int) -> float:
        """The training loss logged at ``step`` (1-based): ``losses[step-1]`` (last repeats) or ``default_loss``."""
        if self.losses:
            return self.losses[min(step, len(self.losses)) - 1]
        return default_loss(step)

    def valid_loss_at(self, step: int) -> float:
        return round(self.loss_at(step) * 1.1 + 0.05, 4)

    def trained_tokens_for(self, job: Job) -> int:
        """Training file bytes // 4, times the resolved epochs."""
        return len(self.files[job.training_file]) // 4 * int(job.hyperparameters["n_epochs"])

    def uploaded(self, purpose: str = "fine-tune") -> list[UploadedFile]:
        with self.lock:
            return [upload for upload in self.uploads if upload.purpose == purpose]

    def tuned_models(self) -> list[str]:
        """Models that answer as fine-tuned: each succeeded job's model and its checkpoints."""
        with self.lock:
            names = [job.fine_tuned_model for job in self.jobs.values() if job.fine_tuned_model]
            names += [c["fine_tuned_model_checkpoint"] for job in self.jobs.values() for c in job.checkpoints]
            return names

    @property
    def effective_poll_delay_s(self) -> float:
        return self.poll_delay_s or (0.3 if self.mode == "slow" else 0.0)

    # -- state changes (callers hold the lock) ---------------------------------------------------------
    def _next(self) -> int:
        self._counter += 1
        return self._counter

    def _event(self, job: Job, message: str, level: str = "info", data: dict | None = None) -> None:
        job.events.append({"object": "fine_tuning.job.event", "id": f"ftevent-{self._next():06d}",
                           "created_at": int(time.time()), "level": level, "message": message,
                           "type": "metrics" if data else "message", "data": data or {}})  # fmt: skip

    def advance(self, job: Job) -> None:
        """One poll's worth of progress."""
        if job.status in TERMINAL:
            return
        if job.status == "validating_files":
            job.status = "queued"
            self._event(job, "Files validated, moving job to queued state")
            return
        if job.status == "queued":
            for name, value in RESOLVED_DEFAULTS.items():
                if job.hyperparameters.get(name) in (None, "auto"):
                    job.hyperparameters[name] = value
            job.status = "running"
            job.estimated_finish = int(time.time()) + self.steps
            self._event(job, "Fine-tuning job started")
            return
        for _ in range(self.steps_per_poll):
            if job.step >= self.steps:
                break
            job.step += 1
            self._metrics(job, job.step)
            if self.mode == "job-fails" and job.step >= self.fail_at_step:
                message = f"The job failed due to an invalid training file. {BAD_LINE_MESSAGE}."
                job.error = {"code": "invalid_training_file", "message": message, "param": "training_file"}
                self._finish(job, "failed")
                self._event(job, message, level="error")
                return
        if job.step >= self.steps:
            job.fine_tuned_model = f"ft:{job.model}:{ORG}:{job.user_provided_suffix or 'tuitune'}:{job.short_id}"
            job.trained_tokens = self.trained_tokens_for(job)
            self._event(job, f"New fine-tuned model created: {job.fine_tuned_model}")
            self._finish(job, "succeeded")
            self._event(job, "The job has successfully completed")

    def _metrics(self, job: Job, step: int) -> None:
        loss = self.loss_at(step)
        data: dict[str, Any] = {"step": step, "train_loss": loss, "total_steps": self.steps,
                                "train_mean_token_accuracy": round(max(0.0, min(0.99, 1 - loss / 3)), 4)}  # fmt: skip
        if self.valid_every and step % self.valid_every == 0:
            data["valid_loss"] = self.valid_loss_at(step)
        self._event(job, f"Step {step}/{self.steps}: training loss={loss:.2f}", data=data)
        if step == self.steps or (self.checkpoint_every and step % self.checkpoint_every == 0):
            metrics = {k: data[k] for k in ("step", "train_loss", "valid_loss") if k in data}
            model = f"ft:{job.model}:{ORG}:{job.user_provided_suffix or 'tuitune'}:{job.short_id}:ckpt-step-{step}"
            job.checkpoints.append({"object": "fine_tuning.job.checkpoint", "id": f"ftckpt-{self._next():06d}",
                                    "created_at": int(time.time()), "fine_tuned_model_checkpoint": model,
                                    "step_number": step, "metrics": metrics, "fine_tuning_job_id": job.id})  # fmt: skip
            self._event(job, f"Checkpoint created at step {step}")

    def _finish(self, job: Job, status: str) -> None:
        job.status = status
        job.finished_at = int(time.time())
        job.estimated_finish = None

    def create_job(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Validate a create request like the real API; returns (status, payload)."""
        if body.get("model") != self.base_model:
            return 400, _error(f"Model {body.get('model')} is not available for fine-tuning or does not exist.",
                               param="model", code="model_not_available")  # fmt: skip
        for name in ("training_file", "validation_file"):
            value = body.get(name)
            if (value is not None or name == "training_file") and value not in self.files:
                return 400, _error(f"invalid {name}: {value}", param=name)
        suffix = body.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or len(suffix) > 64):
            return 400, _error("suffix must be a string of at most 64 characters", param="suffix")
        method = body.get("method")
        if method is not None:
            hyper = ((method or {}).get("supervised") or {}).get("hyperparameters") or {}
        else:
            hyper = body.get("hyperparameters") or {}
        n = self._next()
        obj = {"object": "fine_tuning.job", "id": f"ftjob-tt{n:06d}", "model": self.base_model,
               "created_at": int(time.time()), "finished_at": None, "fine_tuned_model": None, "organization_id": ORG,
               "result_files": [], "status": "validating_files", "validation_file": body.get("validation_file"),
               "training_file": body["training_file"], "trained_tokens": None, "error": None,
               "hyperparameters": {k: hyper.get(k, "auto") for k in RESOLVED_DEFAULTS}, "estimated_finish": None,
               "seed": 42, "user_provided_suffix": suffix}  # fmt: skip
        job = Job(obj, short_id=f"tt{n:06d}", method_given=method is not None)
        self.jobs[job.id] = job
        self._event(job, f"Created fine-tuning job: {job.id}")
        self._event(job, f"Validating training file: {job.training_file}")
        return 200, job.to_dict()

    def cancel(self, job: Job) -> tuple[int, dict[str, Any]]:
        if job.status in TERMINAL:
            return 400, _error("Job has already completed")
        self._finish(job, "cancelled")
        self._event(job, "Job cancelled")
        return 200, job.to_dict()


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Newest-first list pages: ``after`` returns the items older than that id, ``limit`` caps the page."""
    newest_first = list(reversed(items))
    after = query.get("after")
    if after:
        ids = [item["id"] for item in newest_first]
        if after not in ids:
            return 400, _error(f"No such cursor: {after}", param="after")
        newest_first = newest_first[ids.index(after) + 1 :]
    limit = int(query["limit"]) if query.get("limit", "").isdigit() else 20
    return 200, {"object": "list", "data": newest_first[:limit], "has_more": len(newest_first) > limit}


class _Handler(openai_stub._Handler):
    """Reuses the chat stub's JSON and SSE writers; routes everything through ``_handle``."""

    owner: FineTuneService

    def _record(self) -> Recorded:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        record = Recorded(self.command, self.path, dict(self.headers))
        ctype = self.headers.get("Content-Type", "")
        if raw and ctype.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode() + raw
            )
            record.form = {}
            for part in message.iter_parts() if message.is_multipart() else []:
                name = part.get_param("name", header="content-disposition")
                data = part.get_payload(decode=True) or b""
                if part.get_filename() is not None:
                    record.filename, record.file_size, record.file_bytes = part.get_filename(), len(data), data
                elif name:
                    record.form[str(name)] = data.decode("utf-8", "replace")
        elif raw:
            try:
                record.body = json.loads(raw)
            except ValueError:
                record.body = None
        with self.owner.lock:
            self.owner.requests.append(record)
        return record

    def _handle(self) -> None:
        owner = self.owner
        record = self._record()
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path.rstrip("/")
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
        got_key = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        mode = owner.mode
        if mode == "unauthorized" or (owner.key is not None and got_key != owner.key):
            self._json(401, _error(f"Incorrect API key provided: {got_key}.", code="invalid_api_key"))
            return
        if path.startswith(("/v1/files", "/v1/fine_tuning")):
            if mode == "no-finetuning":
                self._json(404, {"error": {"message": "Not Found"}})
                return
            if mode == "forbidden":
                self._json(403, _error("You are not allowed to fine-tune models in this project.",
                                       type_="invalid_request_error", code="forbidden"))  # fmt: skip
                return
        route = (self.command, path)
        if route == ("GET", "/v1/models"):
            models = [{"id": owner.base_model, "object": "model", "created": 0, "owned_by": "system"}]
            models += [{"id": name, "object": "model", "created": 0, "owned_by": ORG} for name in owner.tuned_models()]
            self._json(200, {"object": "list", "data": models})
        elif route in (("POST", "/v1/chat/completions"), ("POST", "/v1/completions")):
            self._complete(record.body or {})
        elif route == ("POST", "/v1/files"):
            self._upload(record)
        elif path.startswith("/v1/fine_tuning/jobs"):
            self._jobs(path.removeprefix("/v1/fine_tuning/jobs"), record.body, query, got_key)
        else:
            self._json(404, {"error": {"message": "Not Found"}})

    do_GET = do_POST = _handle

    def _upload(self, record: Recorded) -> None:
        owner = self.owner
        if record.file_bytes is None or not (record.form or {}).get("purpose"):
            self._json(400, _error("a multipart body with 'purpose' and 'file' is required", param="file"))
            return
        with owner.lock:
            upload = UploadedFile(f"file-tt{owner._next():06d}", record.filename or "upload", record.form["purpose"],
                                  record.file_bytes, int(time.time()))  # fmt: skip
            owner.uploads.append(upload)
            owner.files[upload.id] = upload.data
        self._json(200, upload.to_dict())

    def _jobs(self, rest: str, body: dict | None, query: dict[str, str], got_key: str) -> None:
        owner = self.owner
        mode = owner.mode
        if self.command == "POST" and rest == "":
            if mode == "reject-file":
                message = f"\x1b[31mInvalid file format.\x1b[0m {BAD_LINE_MESSAGE} (request made with key {got_key})"
                self._json(400, _error(message, param="training_file", code="invalid_file_format"))
            elif mode == "rate-limited":
                self._json(429, _error("Rate limit reached", type_="rate_limit_error"), {"Retry-After": "7"})
            elif mode == "quota":
                message = "You exceeded your current quota, please check your plan and billing details."
                self._json(429, _error(message, type_="insufficient_quota", code="insufficient_quota"))
            elif not isinstance(body, dict):
                self._json(400, _error("the body must be a JSON object"))
            else:
                with owner.lock:
                    status, payload = owner.create_job(body)
                self._json(status, payload)
            return
        if self.command == "GET" and rest == "":
            with owner.lock:
                status, payload = _page([job.to_dict() for job in owner.jobs.values()], query)
            self._json(status, payload)
            return
        match = re.fullmatch(r"/([^/]+)(/events|/checkpoints|/cancel)?", rest)
        job = owner.jobs.get(match.group(1)) if match else None
        if job is None:
            self._json(404, _error(f"No fine-tuning job found with id {rest.strip('/').split('/')[0]}", param="id"))
            return
        action = (self.command, match.group(2) if match else None)
        if action in (("GET", None), ("GET", "/events")) and owner.effective_poll_delay_s:
            time.sleep(owner.effective_poll_delay_s)
        with owner.lock:
            if action == ("GET", None) and mode == "drop-once" and owner.drops == 0 and job.status == "running":
                owner.drops += 1
                self.close_connection = True
                return  # the socket closes with no response at all
            if action in (("GET", None), ("GET", "/events")):
                owner.advance(job)
            if action == ("GET", None):
                status, payload = 200, job.to_dict()
            elif action == ("GET", "/events"):
                status, payload = _page(job.events, query)
            elif action == ("GET", "/checkpoints"):
                status, payload = _page(job.checkpoints, query)
            elif action == ("POST", "/cancel"):
                status, payload = owner.cancel(job)
            else:
                status, payload = 405, _error("Method not allowed")
        self._json(status, payload)

    def _complete(self, body: dict[str, Any]) -> None:
        """Chat/completions: the base model and each fine-tuned model answer a fixed, different text."""
        owner = self.owner
        model = body.get("model")
        if model == owner.base_model:
            answer = BASE_ANSWER
        elif model in owner.tuned_models():
            answer = TUNED_ANSWER
        else:
            self._json(404, _error(f"The model `{model}` does not exist", param="model", code="model_not_found"))
            return
        chat = "messages" in body
        if not body.get("stream"):
            choice = {"index": 0, "finish_reason": "stop"}
            choice.update({"message": {"role": "assistant", "content": answer}} if chat else {"text": answer})
            words = len(answer.split())
            usage = {"prompt_tokens": 5, "completion_tokens": words, "total_tokens": 5 + words}
            self._json(200, {"id": "chatcmpl-stub", "object": "chat.completion" if chat else "text_completion",
                             "model": model, "choices": [choice], "usage": usage})  # fmt: skip
            return
        self._start_stream()
        words = answer.split(" ")
        for piece in [words[0]] + [" " + word for word in words[1:]]:
            self._event(body, piece)
        self._event(body, None, "stop")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
