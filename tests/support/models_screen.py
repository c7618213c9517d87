"""Driving the Models screen (F4) from pilot tests."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from tuitune.engines.scripted import ScriptedEngine
from tuitune.tui.app import TuituneApp
from tuitune.tui.screens.models import COLUMNS, ModelsScreen


def make_app(tmp_path: Path) -> TuituneApp:
    return TuituneApp(
        engine_factory=lambda model_id, **_: ScriptedEngine(model_id), history_path=tmp_path / "h.sqlite3"
    )


def row(screen: ModelsScreen, model_id: str) -> dict[str, str]:
    return dict(zip(COLUMNS, (str(cell) for cell in screen.query_one(DataTable).get_row(model_id)), strict=True))


def details(screen: ModelsScreen) -> str:
    """The details panel's content as plain text, laid out as at 120 columns."""
    console = Console(width=118, file=io.StringIO(), color_system=None)
    console.print(screen.query_one("#models-details-text", Static).content)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())


async def open_models(pilot: Pilot) -> ModelsScreen:
    await pilot.press("f4")
    screen = pilot.app.screen
    assert isinstance(screen, ModelsScreen)
    return screen


async def highlight(pilot: Pilot, screen: ModelsScreen, model_id: str) -> None:
    table = screen.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(model_id))
    await pilot.pause()
