"""Pilot tests of the leaderboard opened from the Eval screen: real history and eval store files, fit in a worker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Select, Static

from tests.support.outcomes import HOSTILE, compare, fill_evals, fill_history
from tests.support.pilot import scripted_app
from tuitune.evals.store import default_eval_store_path
from tuitune.history import HistoryStore
from tuitune.tui.screens.eval import EvalScreen
from tuitune.tui.screens.leaderboard import LeaderboardScreen

pytestmark = pytest.mark.anyio


async def until(pilot, condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await pilot.pause(0.05)


def rows(table: DataTable) -> list[list[str]]:
    return [[str(value) for value in table.get_row_at(index)] for index in range(table.row_count)]


async def open_leaderboard(pilot) -> LeaderboardScreen:
    await pilot.press("f11")
    await pilot.pause()
    assert isinstance(pilot.app.screen, EvalScreen)
    await pilot.press("l")
    await until(pilot, lambda: isinstance(pilot.app.screen, LeaderboardScreen), "leaderboard opened")
    screen = pilot.app.screen
    await until(pilot, lambda: not screen.computing, "leaderboard computed")
    await pilot.pause()
    return screen


async def test_l_on_the_eval_screen_ranks_votes_and_judge_and_filters_by_source(tmp_path: Path):
    fill_history(tmp_path / "history.sqlite3")
    with HistoryStore(tmp_path / "history.sqlite3") as store:
        compare(store, [HOSTILE, "base"], ["a"])
    fill_evals(default_eval_store_path())
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_leaderboard(pilot)
        table = screen.query_one("#leaderboard-table", DataTable)
        shown = rows(table)
        assert [row[1] for row in shown] == ["evil␛]52;c;cm0gLXJmIH4=␇␛[31m", "tuned", "chat", "base"]
        assert [row[0] for row in shown] == ["1", "2", "3", "4"]
        assert shown[1][4:] == ["6", "4/0/2"] and "–" in shown[1][3]
        status = str(screen.query_one("#leaderboard-status", Static).render())
        assert "11 outcomes (8 Compare votes, 3 judge verdicts)" in status and "3 judge verdict(s) left out" in status

        screen.query_one("#leaderboard-source", Select).value = "judge"
        await until(pilot, lambda: screen.board is not None and screen.board.counts["votes"] == 0, "judge only")
        assert [row[1] for row in rows(table)] == ["tuned", "base"]
        assert rows(table)[0][4:] == ["3", "2/0/1"]

        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, EvalScreen)


async def test_empty_history_says_what_to_do_and_palette_opens_it(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_leaderboard(pilot)
        status = str(screen.query_one("#leaderboard-status", Static).render())
        assert status.startswith("No outcomes yet: vote in Compare")
        assert not screen.query_one("#leaderboard-table", DataTable).display
        assert not default_eval_store_path().exists()  # looking does not create the eval store
        await pilot.press("q")
        await pilot.pause()
        eval_screen = app.screen
        assert isinstance(eval_screen, EvalScreen)
        commands = {title: callback for title, _, callback in eval_screen.palette_commands()}
        commands["Leaderboard"]()
        await until(pilot, lambda: isinstance(app.screen, LeaderboardScreen), "opened from the palette")


async def test_a_broken_eval_store_is_one_red_line_not_a_crash(tmp_path: Path):
    default_eval_store_path().parent.mkdir(parents=True, exist_ok=True)
    default_eval_store_path().write_bytes(b"not a database" * 200)
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_leaderboard(pilot)
        status = str(screen.query_one("#leaderboard-status", Static).render())
        assert "is not a readable eval database" in status
        screen.query_one("#leaderboard-source", Select).value = "votes"  # votes alone do not need the eval store
        await until(pilot, lambda: screen.board is not None, "votes only")
        assert str(screen.query_one("#leaderboard-status", Static).render()).startswith("No outcomes yet")
