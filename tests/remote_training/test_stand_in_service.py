"""Self-checks of the fine-tuning stand-in: plain urllib against the real server, to pin the protocol shapes."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request

import pytest

from tests.support.finetune_service import BASE_ANSWER, TUNED_ANSWER, FineTuneService, default_loss
from tuitune.engines import Message, Request, Sampling
from tuitune.engines.openai import Endpoint, OpenAIEngine

DATA = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n' * 10


def call(service: FineTuneService, method: str, path: str, body: dict | None = None, key: str | None = "sk-test"):
    """(status, parsed JSON, headers) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(service.base_url + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


def upload(service: FineTuneService, data: bytes = DATA, key: str | None = "sk-test", filename: str = "train.jsonl"):
    boundary = "----tuitune-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(service.base_url + "/files", data=body, method="POST")
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def create(service: FineTuneService, file_id: str, **extra) -> tuple[int, dict, object]:
    body = {"model": "stub-base", "training_file": file_id, "suffix": "mine",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}, **extra}  # fmt: skip
    return call(service, "POST", "/fine_tuning/jobs", body)


def started_job(service: FineTuneService) -> str:
    status, file = upload(service)
    assert status == 200
    status, job, _ = create(service, file["id"])
    assert status == 200, job
    return job["id"]


def test_upload_create_poll_to_success_with_events_and_checkpoints():
    with FineTuneService(steps=12, key="sk-test") as service:
        status, file = upload(service)
        assert status == 200
        assert file == {"id": file["id"], "object": "file", "bytes": len(DATA), "created_at": file["created_at"],
                        "filename": "train.jsonl", "purpose": "fine-tune", "status": "processed"}  # fmt: skip
        assert service.files[file["id"]] == DATA and [u.id for u in service.uploaded("fine-tune")] == [file["id"]]
        recorded = service.requests[-1]
        assert recorded.form == {"purpose": "fine-tune"} and recorded.filename == "train.jsonl"
        assert recorded.file_size == len(DATA) and recorded.file_bytes == DATA

        status, job, _ = create(service, file["id"])
        assert status == 200 and job["status"] == "validating_files" and job["object"] == "fine_tuning.job"
        assert job["hyperparameters"] == {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto"}
        assert job["fine_tuned_model"] is None and job["error"] is None and job["seed"] == 42
        assert service.requests[-1].body["method"]["type"] == "supervised"

        seen = []
        for _ in range(10):
            status, job, _ = call(service, "GET", f"/fine_tuning/jobs/{job['id']}")
            seen.append(job["status"])
            if job["status"] == "succeeded":
                break
        assert seen == ["queued", "running", "running", "running", "running", "succeeded"]
        assert job["fine_tuned_model"] == f"ft:stub-base:org-stub:mine:{job['id'].removeprefix('ftjob-')}"
        assert job["trained_tokens"] == len(DATA) // 4 * 2 == service.trained_tokens_for(service.jobs[job["id"]])
        assert job["hyperparameters"]["batch_size"] == 1 and job["finished_at"] is not None

        status, events, _ = call(service, "GET", f"/fine_tuning/jobs/{job['id']}/events?limit=100")
        messages = [e["message"] for e in events["data"]]
        assert messages[0] == "The job has successfully completed" and messages[-1].startswith("Created fine-tuning")
        assert events["has_more"] is False
        metrics = [e for e in reversed(events["data"]) if e["type"] == "metrics"]
        assert [e["data"]["step"] for e in metrics] == list(range(1, 13))
        assert metrics[2]["message"] == f"Step 3/12: training loss={default_loss(3):.2f}"
        assert "valid_loss" in metrics[3]["data"] and "valid_loss" not in metrics[2]["data"]
        assert metrics[-1]["data"]["train_loss"] < metrics[0]["data"]["train_loss"]

        # `after` pages towards older events, newest first
        status, page1, _ = call(service, "GET", f"/fine_tuning/jobs/{job['id']}/events?limit=5")
        status, page2, _ = call(
            service, "GET", f"/fine_tuning/jobs/{job['id']}/events?limit=5&after={page1['data'][-1]['id']}"
        )
        assert page1["has_more"] and page1["data"] + page2["data"] == events["data"][:10]

        status, checkpoints, _ = call(service, "GET", f"/fine_tuning/jobs/{job['id']}/checkpoints")
        assert [c["step_number"] for c in checkpoints["data"]] == [12, 8, 4]
        assert checkpoints["data"][0]["fine_tuned_model_checkpoint"].endswith(":ckpt-step-12")

        status, models, _ = call(service, "GET", "/models")
        assert job["fine_tuned_model"] in [m["id"] for m in models["data"]]
        status, jobs, _ = call(service, "GET", "/fine_tuning/jobs?limit=1")
        assert jobs["data"][0]["id"] == job["id"]


def stream_answer(service: FineTuneService, model: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "who?"}], "stream": True}
    request = urllib.request.Request(
        service.base_url + "/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        lines = [line.decode().strip() for line in response if line.strip()]
    assert lines[-1] == "data: [DONE]"
    return "".join(json.loads(line[5:])["choices"][0]["delta"].get("content", "") for line in lines[:-1])


def test_chat_answers_differ_between_base_and_tuned_models():
    with FineTuneService(steps=3) as service:
        job_id = started_job(service)
        while service.jobs[job_id].status != "succeeded":
            call(service, "GET", f"/fine_tuning/jobs/{job_id}")
        assert stream_answer(service, "stub-base") == BASE_ANSWER
        assert stream_answer(service, service.jobs[job_id].fine_tuned_model) == TUNED_ANSWER
        # and through tuitune's own engine, chat and raw, with the extras it sends
        engine = OpenAIEngine(
            Endpoint(name="ft", base_url=service.base_url, model=service.jobs[job_id].fine_tuned_model)
        )
        sampling = Sampling(temperature=0.0, max_tokens=8)
        assert engine.generate(Request.chat([Message("user", "who?")], sampling)).run() == TUNED_ANSWER
        assert engine.generate(Request.raw("who?", sampling)).run() == TUNED_ANSWER
        assert service.jobs[job_id].fine_tuned_model in engine.list_models()
        status, body, _ = call(service, "POST", "/chat/completions", {"model": "x", "messages": []})
        assert status == 404 and "`x` does not exist" in body["error"]["message"]


def test_cancel_running_job_then_cancel_again_is_rejected():
    with FineTuneService() as service:
        job_id = started_job(service)
        for _ in range(3):
            call(service, "GET", f"/fine_tuning/jobs/{job_id}")
        status, job, _ = call(service, "POST", f"/fine_tuning/jobs/{job_id}/cancel")
        assert status == 200 and job["status"] == "cancelled"
        status, job, _ = call(service, "GET", f"/fine_tuning/jobs/{job_id}")
        assert job["status"] == "cancelled"
        status, events, _ = call(service, "GET", f"/fine_tuning/jobs/{job_id}/events")
        assert events["data"][0]["message"] == "Job cancelled"
        status, body, _ = call(service, "POST", f"/fine_tuning/jobs/{job_id}/cancel")
        assert status == 400 and body["error"]["message"] == "Job has already completed"
        assert call(service, "GET", "/fine_tuning/jobs/ftjob-nope")[0] == 404


def test_wrong_key_and_unauthorized_echo_the_key_received():
    with FineTuneService(key="sk-right") as service:
        status, body, _ = call(service, "GET", "/models", key="sk-wrong")
        assert status == 401 and "sk-wrong" in body["error"]["message"]
        assert call(service, "GET", "/models", key="sk-right")[0] == 200
        service.mode = "unauthorized"
        assert call(service, "GET", "/models", key="sk-right")[0] == 401


@pytest.mark.parametrize("mode", ["forbidden", "no-finetuning"])
def test_finetuning_refused_but_chat_works(mode):
    with FineTuneService(mode=mode) as service:
        assert upload(service)[0] == (403 if mode == "forbidden" else 404)
        assert call(service, "GET", "/fine_tuning/jobs/ftjob-x")[0] == (403 if mode == "forbidden" else 404)
        assert call(service, "GET", "/models")[0] == 200


def test_create_errors_unknown_file_reject_rate_limit_quota():
    with FineTuneService() as service:
        status, file = upload(service)
        status, body, _ = create(service, "file-missing")
        assert status == 400 and body["error"]["param"] == "training_file"
        service.mode = "reject-file"
        status, body, _ = create(service, file["id"])
        assert status == 400 and "\x1b[31m" in body["error"]["message"] and "sk-test" in body["error"]["message"]
        assert "Line 3" in body["error"]["message"]
        service.mode = "rate-limited"
        status, body, headers = create(service, file["id"])
        assert status == 429 and headers["Retry-After"] == "7" and body["error"]["type"] == "rate_limit_error"
        service.mode = "quota"
        status, body, _ = create(service, file["id"])
        assert status == 429 and body["error"]["code"] == "insufficient_quota"
        assert service.jobs == {}


def test_job_fails_with_error_event():
    with FineTuneService(mode="job-fails", steps=12) as service:
        job_id = started_job(service)
        for _ in range(3):
            _, job, _ = call(service, "GET", f"/fine_tuning/jobs/{job_id}")
        assert job["status"] == "failed" and job["error"]["code"] == "invalid_training_file"
        assert job["error"]["param"] == "training_file" and job["fine_tuned_model"] is None
        _, events, _ = call(service, "GET", f"/fine_tuning/jobs/{job_id}/events")
        assert events["data"][0]["level"] == "error"


def test_drop_once_closes_one_poll_unanswered():
    with FineTuneService(mode="drop-once") as service:
        job_id = started_job(service)
        call(service, "GET", f"/fine_tuning/jobs/{job_id}")
        call(service, "GET", f"/fine_tuning/jobs/{job_id}")  # now running
        with pytest.raises((http.client.RemoteDisconnected, urllib.error.URLError, ConnectionError)):
            call(service, "GET", f"/fine_tuning/jobs/{job_id}")
        assert service.drops == 1
        assert call(service, "GET", f"/fine_tuning/jobs/{job_id}")[1]["status"] == "running"


def test_slow_mode_delays_polls():
    with FineTuneService(mode="slow") as service:
        job_id = started_job(service)
        assert service.effective_poll_delay_s == 0.3

        started = time.monotonic()
        call(service, "GET", f"/fine_tuning/jobs/{job_id}")
        assert time.monotonic() - started >= 0.3
