"""A fine-tuning job kept as a tuitune run: started, followed, cancelled, and registered when it succeeds.

The run directory is a local run's (training/runs.py): ``config.json`` (with a ``remote`` table: endpoint,
model, file and job ids), ``status.json`` (state, step, total steps, the follower's pid), ``metrics.jsonl``
(one line per metrics event: step, loss, eval_loss) and ``train.log`` (every event), so the CLI and the Train
screen read a remote run as they read a local one. Only the follower writes ``status.json`` and the metrics;
a run nobody follows is "detached" until ``tuitune train --name NAME --resume`` (or the Train screen) follows
it again, reading the events it missed: the service keeps them.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from tuitune.atomic import atomic_open
from tuitune.engines.openai import Endpoint
from tuitune.engines.server_text import endpoint_key, scrub
from tuitune.errors import TuituneError
from tuitune.remote_training.client import FineTuningClient, RemoteTrainingError, sleep_until, wait_backoff
from tuitune.safe_text import inert
from tuitune.training.runs import TrainConfig, read_json, write_json

JOB_STATES = {"validating_files": "queued", "queued": "queued", "running": "running", "succeeded": "done",
              "failed": "failed", "cancelled": "cancelled"}  # fmt: skip
FINAL_STATES = ("done", "failed", "cancelled")
POLL_ENV = "TUITUNE_REMOTE_POLL_S"  # the first wait between polls (tests make it short); backoff doubles it
DEFAULT_POLL_S = 2.0
MAX_POLL_S = 30.0
_SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,40}")


def poll_seconds() -> float:
    try:
        return max(0.01, float(os.environ.get(POLL_ENV, DEFAULT_POLL_S)))
    except ValueError:
        return DEFAULT_POLL_S


def is_remote(directory: Path) -> bool:
    config = read_json(directory / "config.json") or {}
    return isinstance(config.get("remote"), dict)


def client_for(config: TrainConfig) -> FineTuningClient:
    remote = config.remote or {}
    endpoint = Endpoint(name=str(remote.get("endpoint", "?")), base_url=str(remote.get("base_url", "")),
                        model=str(remote.get("model", "")), api_key_env=remote.get("api_key_env") or None,
                        headers={str(k): str(v) for k, v in (remote.get("headers") or {}).items()})  # fmt: skip
    return FineTuningClient(endpoint)


def check_settings(
    epochs: float | None, lr_multiplier: float | None, batch_size: int | None, suffix: str | None
) -> None:
    problems = []
    if epochs is not None and (epochs != int(epochs) or not 1 <= epochs <= 50):
        problems.append("--epochs for a service is a whole number from 1 to 50")
    if lr_multiplier is not None and not 0 < lr_multiplier <= 10:
        problems.append("--lr-multiplier must be > 0 (the service scales its own learning rate by it; e.g. 2)")
    if batch_size is not None and not 1 <= batch_size <= 256:
        problems.append("--batch-size must be from 1 to 256")
    if suffix is not None and not _SUFFIX.fullmatch(suffix):
        problems.append("--suffix takes up to 40 letters, digits, '-' or '_' (it becomes part of the model id)")
    if problems:
        raise TuituneError("; ".join(problems))


def hyperparameters(config: TrainConfig) -> dict[str, Any]:
    remote = config.remote or {}
    chosen = {"n_epochs": int(config.epochs) if config.epochs else None, "batch_size": remote.get("batch_size"),
              "learning_rate_multiplier": remote.get("lr_multiplier")}  # fmt: skip
    return {key: value for key, value in chosen.items() if value is not None}


def job_body(config: TrainConfig) -> dict[str, Any]:
    """The job as OpenAI's API takes it (method: supervised), with the older top-level hyperparameters too."""
    remote = config.remote or {}
    body: dict[str, Any] = {"model": remote["model"], "training_file": remote["training_file"]}
    if remote.get("validation_file"):
        body["validation_file"] = remote["validation_file"]
    if remote.get("suffix"):
        body["suffix"] = remote["suffix"]
    chosen = hyperparameters(config)
    if chosen:
        body["method"] = {"type": "supervised", "supervised": {"hyperparameters": chosen}}
    return body


def upload_and_create(directory: Path, config: TrainConfig, out: TextIO) -> str:
    """Upload the file(s), create the job; the ids go into config.json as soon as they exist (nothing lost)."""
    client = client_for(config)
    remote = config.remote
    assert remote is not None
    _status(directory, "uploading", message=f"uploading to {remote['endpoint']}")
    for field_name, path in (("training_file", config.data), ("validation_file", config.val)):
        if not path or remote.get(field_name):
            continue
        shown = [-1]

        def progress(sent: int, total: int, shown: list[int] = shown, name: str = Path(path).name) -> None:
            percent = sent * 100 // max(1, total)
            if percent // 10 != shown[0] // 10 or sent == total:
                shown[0] = percent
                print(inert(f"uploading {name}: {percent}% of {total:,} bytes"), file=out, flush=True)

        uploaded = client.upload_file(Path(path), progress)
        remote[field_name] = str(uploaded.get("id", ""))
        config.write(directory / "config.json")
    job = client.create_job(job_body(config))
    remote["job_id"] = str(job.get("id", ""))
    if not remote["job_id"]:
        raise RemoteTrainingError(f"{client.where}: the job was created without an id; see the service's console")
    config.write(directory / "config.json")
    _log(directory, f"job {remote['job_id']} created on {remote['endpoint']} for {remote['model']}")
    _status(directory, JOB_STATES.get(str(job.get("status")), "queued"), job_status=job.get("status"))
    return remote["job_id"]


def follow(directory: Path, out: TextIO | None = None, stopped: Callable[[], bool] = lambda: False) -> str:
    """Follow the job until it ends (or ``stopped()``: the job keeps running); returns the run's state.

    Events become metrics lines and log lines; a dropped connection or a 5xx is retried with backoff and
    said once in the log, a rate limit waits as long as the service asks."""
    config = TrainConfig.from_json(directory / "config.json")
    client = client_for(config)
    remote = config.remote or {}
    job_id = str(remote.get("job_id") or "")
    if not job_id:  # stopped while uploading: nothing runs on the service, and nothing is left to follow
        message = f"stopped before the job was created; `tuitune train --name {config.name} --resume` creates it"
        _status(directory, "failed", message=message)
        raise TuituneError(f"run '{config.name}' {message}")
    status = read_json(directory / "status.json") or {}
    seen, step, total = status.get("last_event"), int(status.get("step") or 0), status.get("total_steps")
    attempt, trouble = 0, False
    key = endpoint_key(client.endpoint.api_key_env)

    def clean(value: Any) -> str:  # what the service sends, fit for a terminal and a file: inert, keyless
        return inert(scrub(str(value), key))

    while True:
        try:
            job = client.retrieve_job(job_id)
            events = client.new_events(job_id, seen)
        except RemoteTrainingError as error:
            if not (error.transient or error.retry_after is not None):
                _status(directory, "failed", message=str(error), step=step, total_steps=total, last_event=seen)
                raise
            if not trouble:
                _log(directory, f"following paused: {error}; still following")
                _say(out, f"{error}; still following")
            trouble = True
            wait = error.retry_after if error.retry_after is not None else wait_backoff(attempt, poll_seconds())
            attempt += 1
            if sleep_until(time.monotonic() + min(wait, MAX_POLL_S * 4), stopped):
                return _detach(directory, out)
            continue
        if trouble:
            _log(directory, "following again")
            trouble = False
        for event in events:
            seen = str(event.get("id") or seen)
            row = _metrics_row(event, total, config)
            if row is not None and row["step"] <= step and _has_metrics(directory):
                row = None  # read before (a service that lost our place sends old events again): the line is there
            if row is not None:
                step, total = row["step"], row.get("total_steps") or total
                _append_metrics(directory, row)
                _say(out, _progress_line(row, total))
            text = clean(event.get("message") or "")
            level = str(event.get("level") or "info")
            _log(directory, text if level == "info" else f"{clean(level)}: {text}")
            if row is None and text:
                _say(out, text)
        state = JOB_STATES.get(str(job.get("status")), "running")
        extra = _final(directory, config, job, client, state)
        if events and "checkpoints" not in extra:  # the service's checkpoints so far, where it lists them
            extra["checkpoints"] = [_checkpoint(item, key) for item in client.checkpoints(job_id)] or None
        tuned = clean(job["fine_tuned_model"]) if job.get("fine_tuned_model") else None
        _status(directory, state, step=step, total_steps=total, last_event=seen, job_status=clean(job.get("status")),
                fine_tuned_model=tuned, **extra)  # fmt: skip
        if state in FINAL_STATES:
            if state == "done":  # a failure's message is the caller's one error line
                _say(out, extra.get("message") or "done")
            return state
        attempt = 0 if events else attempt + 1
        longest = MAX_POLL_S if state == "queued" else MAX_POLL_S / 3  # a running job's curve stays close to live
        if sleep_until(time.monotonic() + wait_backoff(attempt, poll_seconds(), longest), stopped):
            return _detach(directory, out)


def cancel(directory: Path) -> str:
    """Ask the service to cancel the job; a run nobody follows is marked cancelled here (else its follower does)."""
    from tuitune.training.runs import pid_alive

    config = TrainConfig.from_json(directory / "config.json")
    job_id = (config.remote or {}).get("job_id")
    if not job_id:
        raise TuituneError(f"run '{config.name}' has no job on the service to cancel")
    job = client_for(config).cancel_job(str(job_id))
    status = read_json(directory / "status.json") or {}
    if not pid_alive(status.get("pid")):
        _status(directory, JOB_STATES.get(str(job.get("status")), "cancelled"), job_status=job.get("status"),
                message="the job was cancelled on the service")  # fmt: skip
    return str(job.get("status", "cancelled"))


# -- files -------------------------------------------------------------------------------------------
def _status(directory: Path, state: str, **fields: Any) -> None:
    status = read_json(directory / "status.json") or {}
    status.update({key: value for key, value in fields.items() if value is not None})
    status.update(state=state, pid=os.getpid(), remote=True, updated=time.time())
    if state not in FINAL_STATES and "message" not in fields:
        status.pop("message", None)
    write_json(directory / "status.json", status)


def _detach(directory: Path, out: TextIO | None) -> str:
    status = read_json(directory / "status.json") or {}
    status["pid"] = None
    write_json(directory / "status.json", status)
    name = directory.name
    _say(out, f"stopped following; the job keeps running on the service. `tuitune train --name {name} --resume` "
              f"follows it again, `tuitune train --name {name} --cancel` cancels it")  # fmt: skip
    return "detached"


def _has_metrics(directory: Path) -> bool:
    try:
        return (directory / "metrics.jsonl").stat().st_size > 0
    except OSError:
        return False


def _append_metrics(directory: Path, row: dict[str, Any]) -> None:
    with open(directory / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def _log(directory: Path, line: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    with open(directory / "train.log", "a", encoding="utf-8") as handle:
        handle.write(f"{stamp} {line}\n")


def _say(out: TextIO | None, line: str) -> None:
    if out is not None:
        print(inert(line), file=out, flush=True)


def _number(value: Any) -> float | None:
    """A finite number from the service's JSON, else None (a NaN loss would break the curve and the JSON)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too big for a float
        return None
    return number if math.isfinite(number) else None


def _metrics_row(event: dict[str, Any], total: Any, config: TrainConfig) -> dict[str, Any] | None:
    """A metrics event as a metrics.jsonl line (the keys a local run writes), or None for other events."""
    data = event.get("data")
    if event.get("type") != "metrics" or not isinstance(data, dict):
        return None
    step, loss = _number(data.get("step")), _number(data.get("train_loss"))
    if step is None or loss is None:
        return None
    total = _number(data.get("total_steps")) or _number(total)
    row: dict[str, Any] = {"step": int(step), "loss": loss, "remote": True}
    if total:
        row["total_steps"] = int(total)
        if config.epochs:
            row["epoch"] = step / total * config.epochs
    valid = _number(data.get("valid_loss"))
    if valid is not None:
        row["eval_loss"] = valid
    accuracy = _number(data.get("train_mean_token_accuracy"))
    if accuracy is not None:
        row["accuracy"] = accuracy
    return row


def _progress_line(row: dict[str, Any], total: Any) -> str:
    parts = [f"step {row['step']}/{total or '?'}", f"loss {row['loss']:.4f}"]
    if row.get("eval_loss") is not None:
        parts.append(f"eval {row['eval_loss']:.4f}")
    return "  ".join(parts)


def _final(directory: Path, config: TrainConfig, job: dict[str, Any], client: FineTuningClient, state: str) -> dict:
    """What a finished job adds to status.json: its checkpoints, its error, or the catalog entry it became."""
    if state not in FINAL_STATES:
        return {}
    key = endpoint_key(client.endpoint.api_key_env)
    listed = client.checkpoints(str(job.get("id")))
    extra: dict[str, Any] = {"checkpoints": [_checkpoint(item, key) for item in listed]}
    if state == "failed":
        error = job.get("error") if isinstance(job.get("error"), dict) else {}
        from tuitune.engines.server_text import one_line

        reason = one_line(str(error.get("message") or "no reason given"), endpoint_key(client.endpoint.api_key_env))
        extra["message"] = f"the job failed on the service: {reason}"
    elif state == "cancelled":
        extra["message"] = "the job was cancelled on the service"
    elif state == "done":
        from tuitune.remote_training.register import register

        extra["message"] = register(config, inert(scrub(str(job.get("fine_tuned_model") or ""), key)))
        extra["trained_tokens"] = job.get("trained_tokens")
    return extra


def _checkpoint(item: dict[str, Any], key: str) -> dict[str, Any]:
    metrics = item.get("metrics") if isinstance(item.get("metrics"), dict) else {}
    model = inert(scrub(str(item.get("fine_tuned_model_checkpoint", "")), key))
    return {"step": item.get("step_number"), "model": model,
            "loss": _number(metrics.get("train_loss")), "eval_loss": _number(metrics.get("valid_loss"))}  # fmt: skip


def new_run_directory(directory: Path, config: TrainConfig) -> None:
    """The run's folder (0700) and config.json, written before any upload so nothing is lost if it fails."""
    from tuitune.paths import private_app_dir

    private_app_dir(directory)
    config.write(directory / "config.json")
    with atomic_open(directory / "metrics.jsonl", "w"):
        pass
