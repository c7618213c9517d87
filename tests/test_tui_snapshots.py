"""Snapshot tests of the Compare, Chat and Help screens (scripted engines, so every run is identical).

Update after an intended UI change with `pytest tests/test_tui_snapshots.py --snapshot-update`, then look
at the SVGs under tests/__snapshots__/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tui_helpers import ScriptedModels, scripted_app, type_and_send, wait_idle

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
