"""The Models screen (F4): catalog table, GGUF headers read in the background, chat/compare shortcuts.

pytest-asyncio is not a dependency, so each scenario is a coroutine run with ``asyncio.run``. Engines are
scripted (no model loads); GGUF headers are read from the real demo files.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from tuitune.engines.scripted import ScriptedEngine
from tuitune.tui.app import TuituneApp
from tuitune.tui.screens.models import COLUMNS, PENDING, ModelsScreen

GEMMA, SMOLLM = "gemma-3-270m", "smollm2-135m-instruct"
HEADER_TIMEOUT_S = 120  # the first test of a session may assemble the 250 MB Gemma file


def make_app(tmp_path: Path) -> TuituneApp:
    return TuituneApp(
        engine_factory=lambda model_id, **_: ScriptedEngine(model_id), history_path=tmp_path / "h.sqlite3"
    )


def run(app: TuituneApp, scenario: Callable[[Pilot], Awaitable[None]], size: tuple[int, int] = (120, 40)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)

    asyncio.run(main())


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


async def wait_for_headers(pilot: Pilot, screen: ModelsScreen) -> None:
    deadline = time.monotonic() + HEADER_TIMEOUT_S
    while any(PENDING in row(screen, model_id).values() for model_id in screen.entries):
        assert time.monotonic() < deadline, "GGUF headers were not read in time"
        await pilot.pause(0.1)
    await pilot.pause()


async def highlight(pilot: Pilot, screen: ModelsScreen, model_id: str) -> None:
    table = screen.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(model_id))
    await pilot.pause()


def test_table_shows_demo_models_with_header_facts(tmp_path: Path) -> None:
    async def scenario(pilot: Pilot) -> None:
        screen = await open_models(pilot)
        assert {GEMMA, SMOLLM} <= set(screen.entries)
        await wait_for_headers(pilot, screen)
        gemma, smollm = row(screen, GEMMA), row(screen, SMOLLM)
        assert (gemma["context"], gemma["template"], gemma["installed"]) == ("32768", "no", "yes")
        assert (smollm["context"], smollm["template"], smollm["installed"]) == ("8192", "yes", "yes")
        assert (gemma["size"], gemma["quant"], smollm["size"], smollm["quant"]) == ("253 MB", "Q4_K_M", "98 MB", "Q4_1")
        await highlight(pilot, screen, GEMMA)
        assert re.search(r"architecture +gemma3$", details(screen), re.M)
        await highlight(pilot, screen, SMOLLM)
        text = details(screen)
        assert re.search(r"architecture +llama$", text, re.M)
        assert re.search(r"chat template +yes \(368 characters\)", text) and "<|im_start|>" in text

    run(make_app(tmp_path), scenario)


def test_c_opens_the_highlighted_model_in_chat(tmp_path: Path) -> None:
    async def scenario(pilot: Pilot) -> None:
        screen = await open_models(pilot)
        await highlight(pilot, screen, SMOLLM)
        await pilot.press("c")
        await pilot.pause()
        assert pilot.app.current_mode == "chat"
        assert pilot.app.screen.panes[0].settings.model == SMOLLM

    run(make_app(tmp_path), scenario)


def test_p_compares_the_pair_base_first(tmp_path: Path) -> None:
    async def scenario(pilot: Pilot) -> None:
        screen = await open_models(pilot)
        await highlight(pilot, screen, SMOLLM)
        await pilot.press("p")
        await pilot.pause()
        assert pilot.app.current_mode == "compare"
        assert [pane.settings.model for pane in pilot.app.screen.panes] == [GEMMA, SMOLLM]

    run(make_app(tmp_path), scenario)


def test_missing_user_model_shows_not_installed_and_still_opens(
    tmp_path: Path, tuitune_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tuitune_dirs["config"]
    config.mkdir(parents=True, exist_ok=True)
    (config / "models.toml").write_text(
        '[[model]]\nid = "ghost"\nname = "Ghost [b]7B[/b]"\nkind = "chat"\nfamily = "llama"\n'
        'source = { path = "missing/ghost.gguf" }\n',
        encoding="utf-8",
    )
    app = make_app(tmp_path)
    notes: list[tuple[str, str]] = []
    monkeypatch.setattr(app, "notify", lambda message, **kwargs: notes.append((message, kwargs.get("severity"))))

    async def scenario(pilot: Pilot) -> None:
        screen = await open_models(pilot)
        await wait_for_headers(pilot, screen)
        ghost = row(screen, "ghost")
        assert (ghost["installed"], ghost["context"], ghost["template"], ghost["size"]) == ("no", "-", "-", "-")
        await highlight(pilot, screen, "ghost")
        assert "Ghost [b]7B[/b]" in details(screen)  # shown literally, not as markup
        assert "not installed" in details(screen)
        await pilot.press("p")
        assert any("has no pair" in message and severity == "warning" for message, severity in notes)
        await pilot.press("enter")
        await pilot.pause()
        assert any("ghost is not installed" in m and "missing/ghost.gguf" in m for m, _ in notes)
        assert pilot.app.current_mode == "chat"
        assert pilot.app.screen.panes[0].settings.model == "ghost"

    run(app, scenario)


def test_palette_commands_and_small_terminal(tmp_path: Path) -> None:
    async def scenario(pilot: Pilot) -> None:
        screen = await open_models(pilot)
        titles = [title for title, _, callback in screen.palette_commands() if callable(callback)]
        assert titles == [
            f"Chat with {GEMMA}", f"Compare {GEMMA} with its pair", f"Download {GEMMA}",
            f"Cancel the download of {GEMMA}", f"Delete the file of {GEMMA}", "Refresh models",
        ]  # fmt: skip
        table, panel = screen.query_one(DataTable), screen.query_one("#models-details")
        assert table.region.height >= 3 and panel.region.height >= 8
        assert panel.region.bottom <= 23  # above the footer
        await wait_for_headers(pilot, screen)
        await pilot.press("r")
        assert screen.generation == 2  # a fresh read; results of the first one would now be dropped
        await wait_for_headers(pilot, screen)
        assert row(screen, GEMMA)["context"] == "32768"

    run(make_app(tmp_path), scenario, size=(80, 24))


def test_snapshot(tmp_path: Path, snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ModelsScreen, "show_directories", False)  # keep machine-specific paths out

    async def run_before(pilot: Pilot) -> None:
        screen = await open_models(pilot)
        await wait_for_headers(pilot, screen)
        await highlight(pilot, screen, SMOLLM)

    assert snap_compare(make_app(tmp_path), terminal_size=(120, 40), run_before=run_before)
