"""Remote models over the OpenAI-compatible API, and `tuitune serve`.

The real thing first: `tuitune serve` starts llama-cpp-python's own server on 127.0.0.1 with the SmolLM2
demo model, and a remote pane must write exactly what a local pane writes with the same greedy settings.
Then every failure, from a tiny local server that misbehaves on purpose (tests/support/openai_stub.py).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.support.openai_stub import ANSWER, OpenAIStub
from tests.support.pilot import type_and_send, wait_idle
from tests.support.serve import free_port, start_server, stop_server
from tuitune.engines import Message, Request, Sampling, open_engine, resolve_model
from tuitune.engines.openai import Endpoint, EndpointError, OpenAIEngine

pytestmark = pytest.mark.anyio

MODEL = "smollm2-135m-instruct"
GREEDY = Sampling(temperature=0.0, max_tokens=48, seed=7)
SECRET = "sk-tuitune-test-0123456789-SECRET"


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    pytest.importorskip("uvicorn", reason="needs the server extra: pip install 'tuitune[server]'")
    process, base_url = start_server(MODEL)
    yield base_url
    stop_server(process)


def remote(base_url: str, model: str = MODEL, **changes) -> OpenAIEngine:
    return OpenAIEngine(Endpoint(name="served", base_url=base_url, model=model, **changes))


def add_endpoint(name: str, base_url: str, *extra: str) -> None:
    result = run_cli("endpoint", "add", name, "--base-url", base_url, "--model", MODEL, *extra)
    assert result.returncode == 0, result.stderr


# -- the real server -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        Request.chat([Message("user", "What do you think of Mars?")], GREEDY),
        Request.raw("Tell me how to train my dog to sit.", GREEDY),
    ],
    ids=["chat", "raw"],
)
def test_remote_and_local_write_the_same_greedy_text(served: str, request_: Request):
    local = open_engine(resolve_model(MODEL))
    try:
        local_generation = local.generate(request_)
        local_text = local_generation.run()
    finally:
        local.close()
    remote_generation = remote(served).generate(request_)
    remote_text = remote_generation.run()
    assert len(local_text) > 40
    assert remote_text == local_text
    stats = remote_generation.stats
    assert stats.finish_reason == local_generation.stats.finish_reason
    assert stats.completion_tokens > 10 and stats.ttft_s is not None and stats.decode_tokens_per_s > 0


def test_endpoint_add_test_and_compare_from_the_cli(served: str, tuitune_dirs):
    add_endpoint("served-smol", served)
    tested = run_cli("endpoint", "test", "served-smol")
    assert tested.returncode == 0, tested.stderr
    assert f"{MODEL}   <- this entry" in tested.stdout and "chat check:" in tested.stdout

    result = run_cli("compare", "What is the capital of France?", "--models", f"{MODEL},served-smol",
                     "--temperature", "0", "--max-tokens", "32", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    answers = {row["model"]: row for row in json.loads(result.stdout)["results"]}
    assert answers["served-smol"]["text"] == answers[MODEL]["text"] and len(answers[MODEL]["text"]) > 20
    assert answers["served-smol"]["completion_tokens"] > 3 and answers["served-smol"]["ttft_s"] is not None


def test_cancel_stops_the_stream_and_the_server_keeps_serving(served: str):
    engine = remote(served)
    story = Request.chat([Message("user", "Write a very long story about a dragon.")],
                         Sampling(temperature=0.0, max_tokens=400))  # fmt: skip
    generation = engine.generate(story)
    chunks: list[str] = []
    two_chunks = threading.Event()

    def consume() -> None:
        for chunk in generation:
            chunks.append(chunk)
            if len(chunks) == 2:
                two_chunks.set()

    reader = threading.Thread(target=consume)
    reader.start()
    assert two_chunks.wait(60)
    generation.cancel()
    reader.join(30)
    assert not reader.is_alive()
    assert generation.stats.finish_reason == "cancelled" and len(chunks) < 400
    again = engine.generate(Request.chat([Message("user", "Say hi.")], Sampling(temperature=0.0, max_tokens=8)))
    assert again.run() and again.stats.finish_reason in ("stop", "length")


async def test_remote_pane_next_to_a_local_pane_in_the_tui(served: str, tuitune_dirs, tmp_path: Path):
    from tuitune.tui.app import TuituneApp

    add_endpoint("served-smol", served)
    app = TuituneApp(history_path=tmp_path / "history.sqlite3", compare_models=[MODEL, "served-smol"])
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+o")
        app.screen.query_one("#param-temperature").value = "0"
        app.screen.query_one("#param-max_tokens").value = "40"
        await pilot.press("ctrl+o")
        await type_and_send(pilot, "What do you think of Mars?")
        await wait_idle(pilot, app, timeout=120)
        local_pane, remote_pane = app.screen.panes
        assert remote_pane.turns[0].answer == local_pane.turns[0].answer and len(local_pane.turns[0].answer) > 20
        assert remote_pane.turns[0].stats.decode_tokens_per_s > 0


def test_serve_binds_to_loopback_and_refuses_what_it_cannot_serve(served: str, tuitune_dirs):
    port = int(served.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    result = run_cli("serve", MODEL, "--adapter-scale", "0.5", "--port", str(free_port()))
    assert result.returncode == 1 and "finetuned (LoRA) models" in result.stderr
    add_endpoint("served-smol", served)
    result = run_cli("serve", "served-smol", "--port", str(free_port()))
    assert result.returncode == 1 and "remote endpoint" in result.stderr


# -- failures, from a server that misbehaves -----------------------------------------------------


def stub_engine(stub: OpenAIStub, **changes) -> OpenAIEngine:
    return OpenAIEngine(Endpoint(name="stub", base_url=stub.base_url, model="stub-model", **changes))


def ask(engine: OpenAIEngine, mode: str = "chat") -> tuple[str, object]:
    request = Request.chat([Message("user", "hi")], GREEDY) if mode == "chat" else Request.raw("hi", GREEDY)
    generation = engine.generate(request)
    return generation.run(), generation


def test_stub_streams_chat_and_raw_with_stats():
    with OpenAIStub("ok") as stub:
        for mode in ("chat", "raw"):
            text, generation = ask(stub_engine(stub), mode)
            assert text == "".join(ANSWER)
            assert generation.stats.completion_tokens == len(ANSWER) and generation.stats.finish_reason == "stop"
        posted = [r for r in stub.requests if r.method == "POST"]
        assert [r.path for r in posted] == ["/v1/chat/completions", "/v1/completions"]
        body = posted[0].body
        assert body["model"] == "stub-model" and body["temperature"] == 0.0 and body["max_tokens"] == 48
        assert body["seed"] == 7 and body["stream"] is True and body["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("mode", "fragments"),
    [
        ("no-model", ["model 'stub-model' not found (404)", "does not exist", "tuitune endpoint test stub"]),
        ("rate-limited", ["rate limiting (429)", "retry in 30 s"]),
        ("garbage", ["malformed stream", "this is not an event stream", "/v1"]),
        ("bad-json", ["malformed stream", "{not json"]),
        ("dropped", ["connection closed mid-answer", "text so far is kept"]),
    ],
)
def test_each_failure_is_one_clear_message(mode: str, fragments: list[str]):
    with OpenAIStub(mode) as stub, pytest.raises(EndpointError) as caught:
        ask(stub_engine(stub))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("stub")
    for fragment in fragments:
        assert fragment in message


def test_dropped_stream_keeps_the_text_it_had():
    with OpenAIStub("dropped") as stub:
        generation = stub_engine(stub).generate(Request.chat([Message("user", "hi")], GREEDY))
        received = []
        with pytest.raises(EndpointError):
            for chunk in generation:
                received.append(chunk)
    assert received == [ANSWER[0]] and generation.text == ANSWER[0]


def test_timeout_and_refused_connection():
    stalled = pytest.raises(EndpointError, match=r"stopped sending mid-answer within 1 s \(timeout\)")
    with OpenAIStub("stall") as stub, stalled:
        ask(stub_engine(stub, timeout_s=1.0))
    with pytest.raises(EndpointError, match="connection refused; is the server running"):
        ask(OpenAIEngine(Endpoint(name="gone", base_url=f"http://127.0.0.1:{free_port()}/v1", model="m")))


def test_short_retry_after_is_waited_out_and_noted():
    with OpenAIStub("rate-limited-once") as stub:
        text, generation = ask(stub_engine(stub))
    assert text == "".join(ANSWER)
    assert any("429" in notice for notice in generation.notices)


def test_server_without_llama_samplers_gets_a_plain_openai_request():
    with OpenAIStub("no-extras") as stub:
        text, generation = ask(stub_engine(stub))
        assert text == "".join(ANSWER) and "top_k" not in stub.requests[-1].body
        assert any("top_k" in notice for notice in generation.notices)


def test_cancel_while_the_server_is_silent_returns_at_once():
    with OpenAIStub("stall") as stub:
        generation = stub_engine(stub, timeout_s=60.0).generate(Request.chat([Message("user", "hi")], GREEDY))
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.extend(generation))
        reader.start()
        deadline = time.monotonic() + 10
        while not chunks and time.monotonic() < deadline:
            time.sleep(0.02)
        generation.cancel()  # the reader is blocked in a read the server will not answer for 30 s
        reader.join(10)
        assert not reader.is_alive() and generation.stats.finish_reason == "cancelled"


def test_the_key_is_sent_to_the_server_and_nowhere_else(tuitune_dirs, tmp_path: Path):
    env = {"TUITUNE_TEST_KEY": SECRET}
    with OpenAIStub("unauthorized") as stub:
        result = run_cli("endpoint", "add", "stub-ep", "--base-url", stub.base_url, "--model", "stub-model",
                         "--api-key-env", "TUITUNE_TEST_KEY")  # fmt: skip
        assert result.returncode == 0, result.stderr
        refused = run_cli("chat", "stub-ep", "hello", env=env)
        assert refused.returncode == 1
        assert "refused the request (401, unauthorized)" in refused.stderr and "TUITUNE_TEST_KEY" in refused.stderr
        assert stub.requests[-1].headers["Authorization"] == f"Bearer {SECRET}"  # it was sent, to this server
        stub.mode = "ok"
        answered = run_cli("chat", "stub-ep", "hello", "--json", env=env)
        assert answered.returncode == 0 and "Hello from the stub." in answered.stdout
        missing = run_cli("chat", "stub-ep", "hello", env={"TUITUNE_TEST_KEY": ""})
        assert missing.returncode == 1 and "TUITUNE_TEST_KEY is not set" in missing.stderr
    pasted = run_cli("endpoint", "add", "oops", "--base-url", stub.base_url, "--model", "m", "--api-key-env", SECRET)
    assert pasted.returncode != 0 and "name of an environment variable" in pasted.stderr.lower()
    for output in (refused, answered, missing, pasted):
        assert SECRET not in output.stdout + output.stderr
    for directory in (tuitune_dirs["config"], tuitune_dirs["data"], tuitune_dirs["logs"], tmp_path):
        for path in directory.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path


async def test_endpoint_failure_stays_in_its_pane(tuitune_dirs, tmp_path: Path):
    from tuitune.tui.app import TuituneApp

    with OpenAIStub("rate-limited") as stub:
        result = run_cli("endpoint", "add", "stub-ep", "--base-url", stub.base_url, "--model", "stub-model")
        assert result.returncode == 0, result.stderr
        app = TuituneApp(history_path=tmp_path / "history.sqlite3", compare_models=["stub-ep", "stub-ep"])
        async with app.run_test(size=(120, 40)) as pilot:
            stub.mode = "ok"
            first, second = app.screen.panes
            await type_and_send(pilot, "hi")
            await wait_idle(pilot, app, timeout=30)
            assert first.turns[0].answer == "".join(ANSWER) == second.turns[0].answer
            stub.mode = "rate-limited"
            await type_and_send(pilot, "again")
            await wait_idle(pilot, app, timeout=30)
            for pane in (first, second):
                assert "rate limiting (429)" in (pane.turns[1].error or "")
            assert app.is_running  # the failure stayed in the panes
