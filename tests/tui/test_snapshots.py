"""Snapshot tests of the Compare, Chat and Help screens (scripted engines, so every run is identical).

Update after an intended UI change with `pytest tests/tui/test_snapshots.py --snapshot-update`, then look
at the SVGs under tests/tui/__snapshots__/.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.pilot import ScriptedModels, scripted_app, type_and_send, wait_idle

BASE_ANSWER = " on a chair?\n\nI'm not sure how to train my dog to sit on a chair.\n\nI'm not sure how to train my dog to sit on a chair."
CHAT_ANSWER = "Training a dog to sit takes patience:\n\n1. **Hold a treat** above its nose.\n2. **Move it back** slowly.\n3. **Reward** the moment it sits."


@pytest.fixture
def fixed_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Paths shown on screen are the same on every machine."""
    for name, value in (
        ("CONFIG", "~/.config/tuitune"),
        ("CACHE", "~/.cache/tuitune"),
        ("LOG", "~/.local/state/tuitune/log"),
    ):
        monkeypatch.setenv(f"TUITUNE_{name}_DIR", value)
    monkeypatch.setenv("TUITUNE_DATA_DIR", "~/.local/share/tuitune")


def lab_models() -> ScriptedModels:
    return ScriptedModels({"gemma-3-270m": [BASE_ANSWER], "smollm2-135m-instruct": [CHAT_ANSWER]})


async def settled(pilot) -> None:
    """Every pane has loaded its (scripted) model and the start-up preload has run."""
    await pilot.pause(0.8)
    while any(pane.engine_state != "ready" for pane in pilot.app.screen.panes):
        await pilot.pause(0.05)
    await pilot.pause(0.1)


async def answer_dog_prompt(pilot) -> None:
    await settled(pilot)
    await type_and_send(pilot, "Tell me how to train my dog to sit")
    await wait_idle(pilot, pilot.app)
    await pilot.pause(0.5)  # the final Markdown render and the scroll that follows it


def test_compare_screen_120x40(snap_compare, tmp_path: Path):
    app, _ = scripted_app(tmp_path, lab_models())
    assert snap_compare(app, terminal_size=(120, 40), run_before=answer_dog_prompt)


def test_compare_screen_80x24(snap_compare, tmp_path: Path):
    # Answers that fit the small panes: a scrollbar's colour depends on when the last scroll happened.
    short = ScriptedModels(
        {"gemma-3-270m": [" on a chair?\n\nI'm not sure."], "smollm2-135m-instruct": ["Hold a treat; say **sit**."]}
    )
    app, _ = scripted_app(tmp_path, short)
    assert snap_compare(app, terminal_size=(80, 24), run_before=answer_dog_prompt)


def test_chat_screen_120x40(snap_compare, tmp_path: Path):
    app, _ = scripted_app(tmp_path, lab_models())

    async def chat(pilot) -> None:
        await pilot.press("f3")
        await pilot.pause()
        await answer_dog_prompt(pilot)

    assert snap_compare(app, terminal_size=(120, 40), run_before=chat)


def test_help_screen_120x40(snap_compare, tmp_path: Path, fixed_dirs):
    app, _ = scripted_app(tmp_path, lab_models())

    async def help_screen(pilot) -> None:
        await settled(pilot)
        await pilot.press("f1")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(120, 40), run_before=help_screen)


# -- mid-stream states: each frozen by a scripted engine that holds until released ------------------------------
async def held(pilot, models: ScriptedModels, ready) -> None:
    """Wait until an engine holds and the panes show ``ready(pane)``; the held engines are let go at teardown."""
    deadline = time.monotonic() + 20
    while not (models.holding.is_set() and all(ready(pane) for pane in pilot.app.screen.panes)):
        assert time.monotonic() < deadline, [pane.state for pane in pilot.app.screen.panes]
        await pilot.pause(0.05)
    await pilot.pause(0.3)


def test_compare_loading_snapshot(snap_compare, tmp_path: Path):
    models = ScriptedModels(load_s=1.0, hold_load_at=0.4)
    app, _ = scripted_app(tmp_path, models)

    async def loading(pilot) -> None:
        await held(pilot, models, lambda pane: pane.state == "loading" and pane.status.fraction >= 0.4)

    try:
        assert snap_compare(app, terminal_size=(100, 30), run_before=loading)
    finally:
        models.release.set()


def test_compare_reading_a_prompt_snapshot(snap_compare, tmp_path: Path):
    models = ScriptedModels(hold_read_at=3)
    app, _ = scripted_app(tmp_path, models)

    async def reading(pilot) -> None:
        await settled(pilot)
        await type_and_send(pilot, "Tell me how to train my dog to sit")
        await held(
            pilot, models, lambda pane: pane.state == "reading" and 0 < pane.status.done == pane.status.total * 3 // 8
        )

    try:
        assert snap_compare(app, terminal_size=(100, 30), run_before=reading)
    finally:
        models.release.set()


def test_compare_streaming_snapshot(snap_compare, tmp_path: Path):
    """Half an answer on each side, a code fence still open on the right (its comment line is code, not a heading)."""
    streaming_chat = "Sure:\n\n```python\n# teach sit\ndog.sit()\nreward(dog)\n```\n\nRepeat daily."
    models = ScriptedModels({"gemma-3-270m": [BASE_ANSWER], "smollm2-135m-instruct": [streaming_chat]}, hold_after=9)
    app, _ = scripted_app(tmp_path, models)

    async def streaming(pilot) -> None:
        await settled(pilot)
        await type_and_send(pilot, "Tell me how to train my dog to sit")
        deadline = time.monotonic() + 20
        while not all(engine.holding.is_set() for engine in models.engines.values()):
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await pilot.pause(0.6)
        for pane in pilot.app.screen.panes:  # the rate is wall-clock time: pin it so every machine draws the same
            pane._set_state("generating", tokens=9, rate=50.0)
        await pilot.pause(0.2)

    try:
        assert snap_compare(app, terminal_size=(100, 30), run_before=streaming)
    finally:
        for engine in models.engines.values():
            engine.release.set()


def test_compare_load_error_snapshot(snap_compare, tmp_path: Path):
    error = "gemma-3-270m-q4_k_m.gguf: the file ends inside its tensor table (a cut-off download?) · pull it again"
    models = ScriptedModels({"smollm2-135m-instruct": [CHAT_ANSWER]}, fail={"gemma-3-270m": error})
    app, _ = scripted_app(tmp_path, models)

    async def failed(pilot) -> None:
        await held_until(pilot, lambda: [pane.state for pane in pilot.app.screen.panes] == ["error", "ready"])

    assert snap_compare(app, terminal_size=(100, 30), run_before=failed)


async def held_until(pilot, condition) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline
        await pilot.pause(0.05)
    await pilot.pause(0.3)
