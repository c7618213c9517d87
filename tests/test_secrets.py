"""An API key a server echoes back never reaches the screen, the terminal or the history file.

A real local OpenAI-compatible server (tests/support/openai_stub.py, mode ``echo-key``) repeats the key it received
in its streamed answer, split across chunks, and lists it as a model id; the real engine, the real CLI and
the real app (with its real SQLite history) must show the marker instead.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.support.openai_stub import OpenAIStub, echo_key_pieces
from tests.support.pilot import type_and_send, wait_idle
from tuitune.engines import Message, Request, Sampling
from tuitune.engines.openai import Endpoint, OpenAIEngine

pytestmark = pytest.mark.anyio

SECRET = "sk-tuitune-test-0123456789-SECRET"
KEY_ENV = "TUITUNE_TEST_KEY"
KEY_REMOVED = "[api key removed]"  # the marker is what the user reads, so it is spelled out here
# What the echo-key answer must read as: each whole key, and the half key the answer ends with, removed.
SHOWN = f"Your key: {KEY_REMOVED} and again: {KEY_REMOVED}{KEY_REMOVED} ok near miss {SECRET[:10]}! end {KEY_REMOVED}"


def engine(stub: OpenAIStub) -> OpenAIEngine:
    return OpenAIEngine(Endpoint(name="stub", base_url=stub.base_url, model="stub-model", api_key_env=KEY_ENV))


def test_the_stub_really_echoes_the_key_split_across_chunks():
    pieces = echo_key_pieces(SECRET)
    assert SECRET in "".join(pieces) and not any(SECRET in piece for piece in pieces[:4])


@pytest.mark.parametrize("mode", ["chat", "raw"])
def test_streamed_answer_never_carries_the_key(monkeypatch: pytest.MonkeyPatch, mode: str):
    monkeypatch.setenv(KEY_ENV, f"  {SECRET}\n")  # sent stripped, so it must be removed stripped too
    sampling = Sampling(temperature=0.0, max_tokens=48)
    request = Request.chat([Message("user", "hi")], sampling) if mode == "chat" else Request.raw("hi", sampling)
    with OpenAIStub("echo-key") as stub:
        generation = engine(stub).generate(request)
        chunks = list(generation)
        assert stub.requests[-1].headers["Authorization"] == f"Bearer {SECRET}"  # it did reach the server
    assert "".join(chunks) == generation.text == SHOWN
    assert generation.stats.finish_reason == "stop" and generation.stats.completion_tokens == len(echo_key_pieces(""))
    for chunk in chunks:  # no chunk carries a piece of the key longer than the near miss shows
        assert SECRET[:11] not in chunk and SECRET[11:] not in chunk


def test_model_list_never_carries_the_key(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    with OpenAIStub("echo-key") as stub:
        assert engine(stub).list_models() == ["stub-model", "other-model", KEY_REMOVED]


def test_scrubber_matches_a_whole_text_replace_wherever_the_pieces_split():
    from tuitune.engines.server_text import KeyScrubber

    text = f"a{SECRET}b{SECRET[:5]}c{SECRET}{SECRET}d s"
    for size in range(1, len(text) + 1):
        scrubber = KeyScrubber(SECRET)
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        shown = [scrubber.feed(piece) for piece in pieces] + [scrubber.finish()]
        assert "".join(shown) == text.replace(SECRET, KEY_REMOVED)


def test_cli_chat_prints_the_marker_not_the_key(tuitune_dirs):
    env = {KEY_ENV: SECRET}
    with OpenAIStub("echo-key") as stub:
        added = run_cli("endpoint", "add", "stub-ep", "--base-url", stub.base_url, "--model", "stub-model",
                        "--api-key-env", KEY_ENV)  # fmt: skip
        assert added.returncode == 0, added.stderr
        answered = run_cli("chat", "stub-ep", "hello", env=env)
        tested = run_cli("endpoint", "test", "stub-ep", env=env)
    assert answered.returncode == 0, answered.stderr
    assert KEY_REMOVED in answered.stdout and SECRET[:11] not in answered.stdout + answered.stderr
    assert KEY_REMOVED in tested.stdout and SECRET not in tested.stdout + tested.stderr


async def test_app_shows_and_saves_the_marker_not_the_key(tuitune_dirs, tmp_path: Path, monkeypatch):
    from tuitune.tui.app import TuituneApp

    monkeypatch.setenv(KEY_ENV, SECRET)
    history = tmp_path / "history.sqlite3"
    with OpenAIStub("echo-key") as stub:
        added = run_cli("endpoint", "add", "stub-ep", "--base-url", stub.base_url, "--model", "stub-model",
                        "--api-key-env", KEY_ENV)  # fmt: skip
        assert added.returncode == 0, added.stderr
        app = TuituneApp(history_path=history, compare_models=["stub-ep", "stub-ep"])
        async with app.run_test(size=(120, 40)) as pilot:
            await type_and_send(pilot, "what is my key?")
            await wait_idle(pilot, app, timeout=30)
            for pane in app.screen.panes:
                assert pane.turns[0].answer == SHOWN
            assert SECRET not in app.export_screenshot()
    with sqlite3.connect(history) as db:
        answers = [row[0] for row in db.execute("SELECT content FROM messages WHERE role = 'assistant'")]
    assert answers == [SHOWN, SHOWN]
    for path in tmp_path.rglob("*"):  # the database, its journal, logs, config: nowhere on disk
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
