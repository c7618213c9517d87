"""The History screen, driven through Textual's pilot with scripted engines (no model is loaded)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from tests.support.pilot import scripted_app, type_and_send, wait_idle
from tuitune.history import HistoryStore, Pane
from tuitune.tui.screens.history import HistoryScreen, HistoryTable, VoteTally

DOG = "Tell me how to train my dog to sit"
SMOL = "smollm2-135m-instruct"
GEMMA = "gemma-3-270m"
ESC_ANSWER = "Training a dog to sit takes patience.\x1b]52;c;aGk=\x07 Reward every sit with a treat."
# Fixed "updated" times (UTC), newest last: the list shows them in reverse.
PINNED = {
    1: "2025-05-10T09:15:00.000000+00:00",
    2: "2025-05-11T18:40:00.000000+00:00",
    3: "2025-05-12T07:05:00.000000+00:00",
}


def seed(path: Path, pin: bool = False) -> dict[str, int]:
    """Three saved conversations: a voted dog comparison, a Mars chat, a story comparison (newest)."""
    with HistoryStore(path) as store:
        dog = store.create_conversation(
            "compare", DOG, [Pane(0, GEMMA, "raw"), Pane(1, SMOL, "chat")], {"temperature": 0.0}
        )
        for pane in (0, 1):
            store.add_message(dog, pane, 0, "user", DOG)
        store.add_message(dog, 0, 0, "assistant", " on a chair?\n\nI'm not sure how to train my dog to sit on a chair.")
        store.add_message(dog, 1, 0, "assistant", ESC_ANSWER)
        store.record_vote(dog, 0, "b")
        mars = store.create_conversation("chat", "What do you think of Mars?", [Pane(0, SMOL, "chat")])
        store.add_message(mars, 0, 0, "user", "What do you think of Mars?")
        store.add_message(
            mars, 0, 0, "assistant", "Mars is a cold desert world with the tallest volcano, Olympus Mons."
        )
        story = store.create_conversation(
            "compare", "Once upon a time", [Pane(0, GEMMA, "raw"), Pane(1, GEMMA, "chat")]
        )
        for pane, answer in (
            (0, ", there was a little girl who lived in a village."),
            (1, "…a dragon [b]guarded[/b] a [B]hill[/B] [$accent]."),
        ):
            store.add_message(story, pane, 0, "user", "Once upon a time")
            store.add_message(story, pane, 0, "assistant", answer)
    if pin:
        with sqlite3.connect(path) as db:
            for conversation_id, moment in PINNED.items():
                db.execute(
                    "UPDATE conversations SET created_at = ?, updated_at = ? WHERE id = ?",
                    (moment, moment, conversation_id),
                )
        db.close()
    return {"dog": dog, "mars": mars, "story": story}


def titles(app) -> list[str]:
    screen = app.screen
    assert isinstance(screen, HistoryScreen)
    return [row.title for row in screen.rows]


def table_titles(app) -> list[str]:
    table = app.screen.query_one(HistoryTable)
    return [str(table.get_row_at(i)[2]) for i in range(table.row_count)]


async def open_history(pilot) -> HistoryScreen:
    await pilot.press("f5")
    await pilot.pause()
    assert pilot.app.current_mode == "history"
    return pilot.app.screen


async def select(pilot, title: str) -> None:
    screen = pilot.app.screen
    index = [row.title for row in screen.rows].index(title)
    screen.query_one(HistoryTable).move_cursor(row=index)
    await pilot.pause()


async def search_for(pilot, text: str) -> None:
    """Esc to the list, / back to the search box (which selects its text), then type over it."""
    await pilot.press("escape", "slash")
    assert isinstance(pilot.app.focused, Input)
    for char in text:
        await pilot.press("space" if char == " " else char)
    await pilot.pause(0.3)  # past the debounce


@pytest.mark.anyio
async def test_lists_conversations_newest_first(tmp_path: Path) -> None:
    seed(tmp_path / "history.sqlite3")
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_history(pilot)
        assert titles(app) == ["Once upon a time", "What do you think of Mars?", DOG]
        assert table_titles(app) == titles(app)
        table = screen.query_one(HistoryTable)
        assert app.focused is table
        assert [str(c) for c in table.get_row_at(2)[1:]] == ["compare", DOG, f"{GEMMA}, {SMOL}", "4"]
        await select(pilot, DOG)
        preview = str(screen.query_one("#history-preview", Static).render())
        assert "votes: turn 1: B better" in preview and f"A {GEMMA}" in preview and "Reward every sit" in preview
        assert "\x1b" not in preview and "␛" in preview
        await select(pilot, "Once upon a time")
        preview = str(screen.query_one("#history-preview", Static).render())
        assert "[b]guarded[/b] a [B]hill[/B] [$accent]." in preview  # shown literally, never parsed as markup


@pytest.mark.anyio
async def test_search_filters_by_title_model_and_content(tmp_path: Path) -> None:
    seed(tmp_path / "history.sqlite3")
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_history(pilot)
        await search_for(pilot, "mars")
        assert titles(app) == ["What do you think of Mars?"]
        assert table_titles(app) == titles(app)
        await search_for(pilot, "smollm2")  # a model name
        assert titles(app) == ["What do you think of Mars?", DOG]
        await search_for(pilot, "treat")  # only in an answer; "r", "d", "m"… went to the input, not the keys
        assert titles(app) == [DOG]
        await pilot.press("escape")
        assert app.focused is screen.query_one(HistoryTable)
        await search_for(pilot, "zebra")
        assert titles(app) == []
        assert "Nothing matches" in str(screen.query_one("#history-preview", Static).render())


@pytest.mark.anyio
async def test_rename_and_delete(tmp_path: Path) -> None:
    ids = seed(tmp_path / "history.sqlite3")
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_history(pilot)
        await select(pilot, "What do you think of Mars?")
        await pilot.press("r")
        await pilot.pause()
        dialog_input = app.screen.query_one("#text-value", Input)
        assert dialog_input.value == "What do you think of Mars?"
        for char in "Red planet":
            await pilot.press("space" if char == " " else char)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen
        assert titles(app) == ["Once upon a time", "Red planet", DOG]
        assert "Red planet" in table_titles(app)
        assert screen.selected_id() == ids["mars"]  # the cursor stays on the renamed conversation

        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert titles(app) == ["Once upon a time", DOG]
        assert [s.id for s in app.history.list_conversations()] == [ids["story"], ids["dog"]]
        assert screen.selected_id() == ids["dog"]  # the cursor stays where the deleted row was

        await pilot.press("d")  # Esc answers no
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert len(titles(app)) == 2


@pytest.mark.anyio
async def test_exports_markdown_and_json(tmp_path: Path, tuitune_dirs: dict[str, Path]) -> None:
    ids = seed(tmp_path / "history.sqlite3")
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_history(pilot)
        await select(pilot, DOG)
        await pilot.press("m")
        await pilot.press("j")
        await pilot.pause()
        exports = tuitune_dirs["data"] / "exports"
        markdown = (exports / f"{ids['dog']}-tell-me-how-to-train-my-dog-to-sit.md").read_text(encoding="utf-8")
        assert DOG in markdown and "on a chair?" in markdown and "Reward every sit with a treat." in markdown
        assert "\x1b" not in markdown and "\x07" not in markdown and "␛]52;c;aGk=␇" in markdown
        raw_json = (exports / f"{ids['dog']}-tell-me-how-to-train-my-dog-to-sit.json").read_text(encoding="utf-8")
        assert "\x1b" not in raw_json
        data = json.loads(raw_json)
        contents = [m["content"] for m in data["messages"]]
        assert DOG in contents and ESC_ANSWER in contents  # the data itself is kept exactly
        assert any(str(exports) in str(n.message) for n in app._notifications)


@pytest.mark.anyio
async def test_enter_reopens_a_comparison(tmp_path: Path) -> None:
    seed(tmp_path / "history.sqlite3")
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_history(pilot)
        await select(pilot, DOG)
        await pilot.press("enter")
        for _ in range(40):
            await pilot.pause(0.05)
            if app.current_mode == "compare" and len(app.screen.panes) == 2 and app.screen.panes[0].turns:
                break
        assert app.current_mode == "compare"
        panes = app.screen.panes
        assert [(p.settings.model, p.settings.mode) for p in panes] == [(GEMMA, "raw"), (SMOL, "chat")]
        assert panes[0].turns[0].prompt == DOG
        assert "train my dog to sit on a chair" in panes[0].turns[0].answer
        assert panes[1].turns[0].answer == ESC_ANSWER


@pytest.mark.anyio
async def test_a_comparison_sent_in_compare_appears_in_history(tmp_path: Path) -> None:
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await type_and_send(pilot, "Why is the sky blue")
        await wait_idle(pilot, app)
        screen = await open_history(pilot)
        assert titles(app) == ["Why is the sky blue"]
        assert screen.rows[0].kind == "compare" and screen.rows[0].message_count == 4
        preview = str(screen.query_one("#history-preview", Static).render())
        assert "Scripted answer from" in preview
        await pilot.press("f2")  # a second prompt in the same conversation: still one entry, listed again on F5
        await type_and_send(pilot, "And at sunset")
        await wait_idle(pilot, app)
        await open_history(pilot)
        assert titles(app) == ["Why is the sky blue"] and screen.rows[0].message_count == 8


@pytest.mark.anyio
async def test_vote_tally_and_palette(tmp_path: Path) -> None:
    seed(tmp_path / "history.sqlite3")
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_history(pilot)
        assert [title for title, _, _ in screen.palette_commands()] == [
            "Reopen conversation",
            "Rename conversation",
            "Delete conversation",
            "Export as Markdown",
            "Export as JSON",
            "Vote tally",
        ]
        await pilot.press("v")
        await pilot.pause()
        assert isinstance(app.screen, VoteTally)
        table = app.screen.query_one(DataTable)
        rows = {str(table.get_row_at(i)[0]): [str(c) for c in table.get_row_at(i)[1:]] for i in range(table.row_count)}
        assert rows == {SMOL: ["1", "0", "0", "0"], GEMMA: ["0", "1", "0", "0"]}
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen

        await pilot.press("ctrl+p")  # the same tally from the command palette
        await pilot.pause()
        for char in "Vote tally":
            await pilot.press("space" if char == " " else char)
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, VoteTally)


@pytest.mark.anyio
async def test_fits_80x24(tmp_path: Path) -> None:
    seed(tmp_path / "history.sqlite3")
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_history(pilot)
        table = screen.query_one(HistoryTable)
        assert table.max_scroll_x == 0  # every column fits: no sideways scrolling
        assert table.size.height >= 5 and screen.query_one("#history-preview-box").size.height >= 5


@pytest.mark.anyio
async def test_history_off_shows_a_message(tmp_path: Path) -> None:
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.history.close()
        app.history = None
        screen = await open_history(pilot)
        assert screen.query_one("#history-off", Static).display
        assert "History is off" in str(screen.query_one("#history-off", Static).render())
        assert not screen.query_one(HistoryTable).display
        screen.action_export("md")
        screen.action_votes()  # no crash, a notice instead


@pytest.mark.anyio
async def test_store_errors_become_notifications(tmp_path: Path) -> None:
    seed(tmp_path / "history.sqlite3")
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_history(pilot)
        app.history.delete(screen.selected_id())  # deleted behind the screen's back
        await pilot.press("enter")
        await pilot.pause()
        assert app.current_mode == "history"
        assert any("no conversation" in str(n.message) and n.severity == "error" for n in app._notifications)


def test_snapshot(tmp_path: Path, snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(tmp_path / "history.sqlite3", pin=True)
    monkeypatch.setattr(HistoryScreen, "timezone", UTC)
    app, _ = scripted_app(tmp_path)

    async def show_history(pilot) -> None:
        await pilot.press("f5")
        await pilot.pause()
        await pilot.press("down")
        await pilot.press("down")  # the dog comparison: two panes and a vote in the preview
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=show_history)
