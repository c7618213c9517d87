"""`tuitune serve` says no in one line: a taken port, and a model name it does not serve.

Real processes on real ports: `tuitune serve` with the SmolLM2 demo model, a real socket holding the port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import REPO, one_clear_error, run_cli
from tuitune.engines import Message, Request, Sampling
from tuitune.engines.openai import Endpoint, EndpointError, OpenAIEngine

MODEL = "smollm2-135m-instruct"
KEY_ENV = "TUITUNE_SERVE_TEST_KEY"
KEY = "serve-test-key-42"


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_a_taken_port_is_one_line_before_anything_is_served(host: str):
    pytest.importorskip("uvicorn", reason="needs the server extra: pip install 'tuitune[server]'")
    with socket.socket() as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", MODEL, "--host", host, "--port", str(port), timeout=120)
    one_clear_error(result, f"port {port} is in use; pick another with --port", code=1)
    assert result.stdout == ""  # no "serving … at" for a server that never served
    assert "Errno" not in result.stderr and "warning" not in result.stderr


def test_a_port_out_of_range_is_one_line():
    pytest.importorskip("uvicorn", reason="needs the server extra: pip install 'tuitune[server]'")
    result = run_cli("serve", MODEL, "--port", "70000", timeout=120)
    one_clear_error(result, "--port 70000 is not a port number", code=1)
    assert result.stdout == ""


def _request(base_url: str, path: str, body: dict | None = None, key: str | None = KEY) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base_url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """A real `tuitune serve` with a key; returns its base URL once GET /v1/models answers."""
    pytest.importorskip("uvicorn", reason="needs the server extra: pip install 'tuitune[server]'")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tuitune", "serve", MODEL, "--port", str(port), "--api-key-env", KEY_ENV],
        cwd=REPO, env={**os.environ, KEY_ENV: KEY}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    try:
        while True:
            assert process.poll() is None, f"tuitune serve exited: {process.stdout.read()}"
            assert time.monotonic() < deadline, "tuitune serve did not come up within 180 s"
            try:
                if _request(base_url, "/models")[0] == 200:
                    break
            except OSError:
                time.sleep(0.3)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _file_name() -> str:
    from tuitune.catalog import load_catalog
    from tuitune.sources import model_path

    return model_path(load_catalog().get(MODEL)).name


@pytest.mark.parametrize("path", ["/chat/completions", "/completions"])
def test_another_model_name_is_404_model_not_found(served: str, path: str):
    body = {"model": "gpt-4o", "max_tokens": 2, "temperature": 0}
    body.update({"messages": [{"role": "user", "content": "hi"}]} if path == "/chat/completions" else {"prompt": "hi"})
    status, answer = _request(served, path, body)
    assert status == 404
    error = answer["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "model_not_found"
    assert "'gpt-4o' does not exist" in error["message"] and MODEL in error["message"]


def test_the_served_names_and_no_name_are_answered(served: str):
    status, models = _request(served, "/models")
    assert status == 200 and [m["id"] for m in models["data"]] == [MODEL]
    for name in (MODEL, _file_name(), None):
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}
        if name is not None:
            body["model"] = name
        status, answer = _request(served, "/chat/completions", body)
        assert status == 200 and answer["choices"], (name, answer)


def test_the_key_is_checked_before_the_model_name(served: str):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert _request(served, "/chat/completions", body, key=None)[0] == 401
    assert _request(served, "/chat/completions", body, key="wrong")[0] == 401


@pytest.mark.parametrize("mode", ["chat", "raw"])
def test_tuitune_reports_the_404_as_a_missing_model(served: str, mode: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    engine = OpenAIEngine(Endpoint(name="served", base_url=served, model="gpt-4o", api_key_env=KEY_ENV))
    sampling = Sampling(temperature=0.0, max_tokens=4)
    request = Request.chat([Message("user", "hi")], sampling) if mode == "chat" else Request.raw("hi", sampling)
    with pytest.raises(EndpointError) as caught:
        engine.generate(request).run()
    message = str(caught.value)
    assert "model 'gpt-4o' not found (404)" in message and "tuitune endpoint test served" in message
