"""The Models screen (F4): catalog table, GGUF headers read in the background, chat/compare shortcuts.

pytest-asyncio is not a dependency, so each scenario is a coroutine run with ``asyncio.run``. Engines are
scripted (no model loads); GGUF headers are read from the real demo files.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from tests.support.models_screen import details, highlight, make_app, open_models, row
from tuitune.tui.app import TuituneApp
from tuitune.tui.screens.models import PENDING, ModelsScreen
from tuitune.tui.widgets.found_models import FOUND_COLUMNS, FoundModels

GEMMA, SMOLLM = "gemma-3-270m", "smollm2-135m-instruct"
HEADER_TIMEOUT_S = 120  # the first test of a session may assemble the 250 MB Gemma file


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """LM Studio's folder is under HOME: the Found on disk table must never list the developer's own models."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def run(app: TuituneApp, scenario: Callable[[Pilot], Awaitable[None]], size: tuple[int, int] = (120, 40)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)

    asyncio.run(main())


async def wait_for_headers(pilot: Pilot, screen: ModelsScreen) -> None:
    deadline = time.monotonic() + HEADER_TIMEOUT_S
    while any(PENDING in row(screen, model_id).values() for model_id in screen.entries):
        assert time.monotonic() < deadline, "GGUF headers were not read in time"
        await pilot.pause(0.1)
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
            f"Cancel the download of {GEMMA}", f"Delete the file of {GEMMA}", "Add a model found on disk",
            "Refresh models",
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


def test_snapshot(tmp_path: Path, snap_compare, monkeypatch: pytest.MonkeyPatch, stores: dict) -> None:
    monkeypatch.setattr(ModelsScreen, "show_directories", False)  # keep machine-specific paths out

    async def run_before(pilot: Pilot) -> None:
        screen = await open_models(pilot)
        await wait_for_headers(pilot, screen)
        await wait_for_scan(pilot, screen)
        await highlight(pilot, screen, SMOLLM)

    assert snap_compare(make_app(tmp_path), terminal_size=(120, 40), run_before=run_before)


# -- found on disk ---------------------------------------------------------------------------------------------
SMOL_OLLAMA, BROKEN, HOSTILE = "ollama:smol:q4", "ollama:truncated:latest", "ollama:[red]evil\x1b[31m:latest"
HOSTILE_LMS = "lmstudio:pub/repo/[bold]x\x07.gguf"
SCAN_TIMEOUT_S = 30


@pytest.fixture
def stores(private_home: Path, smollm_path: Path) -> dict[str, Path]:
    """A fake HF cache, Ollama store and LM Studio folder (the env vars conftest set): good, broken, hostile."""
    from tests.support.model_files import COMMIT, link_or_copy, ollama_manifest

    home = private_home
    hf, ollama = Path(os.environ["HF_HUB_CACHE"]), Path(os.environ["OLLAMA_MODELS"])
    repo = hf / "models--someorg--smol-GGUF"
    blob = link_or_copy(smollm_path, repo / "blobs" / ("f" * 64))
    snapshot = repo / "snapshots" / COMMIT / "smol.Q8_0.gguf"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))  # HF's own layout: snapshot → blob
    link_or_copy(smollm_path, ollama / "blobs" / f"sha256-{'a' * 64}")
    ollama_manifest(ollama, "registry.ollama.ai/library/smol/q4", "sha256:" + "a" * 64)
    (ollama / "blobs" / f"sha256-{'1' * 64}").write_bytes(smollm_path.read_bytes()[:100_000])
    ollama_manifest(ollama, "registry.ollama.ai/library/truncated/latest", "sha256:" + "1" * 64)
    ollama_manifest(ollama, "registry.ollama.ai/library/[red]evil\x1b[31m/latest", "sha256:" + "1" * 64)
    lms = home / ".lmstudio" / "models" / "pub" / "repo"
    lms.mkdir(parents=True)
    (lms / "[bold]x\x07.gguf").write_text("not a model")
    return {"hf": hf, "ollama": ollama, "home": home, "hf_reference": f"hf:someorg/smol-GGUF/smol.Q8_0.gguf@{COMMIT}"}


def found_table(screen: ModelsScreen) -> FoundModels:
    return screen.query_one(FoundModels)


def found_row(screen: ModelsScreen, reference: str) -> dict[str, str]:
    cells = found_table(screen).get_row(reference)
    return dict(zip(FOUND_COLUMNS, (cell.plain for cell in cells), strict=True))


async def wait_for_scan(pilot: Pilot, screen: ModelsScreen) -> FoundModels:
    table = found_table(screen)
    deadline = time.monotonic() + SCAN_TIMEOUT_S
    while table.scanning:
        assert time.monotonic() < deadline, "the scan for models on disk did not end in time"
        await pilot.pause(0.05)
    await pilot.pause()
    return table


async def highlight_found(pilot: Pilot, screen: ModelsScreen, reference: str) -> None:
    table = found_table(screen)
    table.focus()
    table.move_cursor(row=table.get_row_index(reference))
    await pilot.pause()


def notes_of(app: TuituneApp, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    notes: list[tuple[str, str | None]] = []
    monkeypatch.setattr(app, "notify", lambda message, **kwargs: notes.append((str(message), kwargs.get("severity"))))
    return notes


def test_found_models_are_listed_with_their_problems_literally(tmp_path: Path, stores: dict) -> None:
    async def scenario(pilot: Pilot) -> None:
        screen = await open_models(pilot)
        table = await wait_for_scan(pilot, screen)
        assert set(table.shown) == {stores["hf_reference"], SMOL_OLLAMA, BROKEN, HOSTILE, HOSTILE_LMS}
        assert table.row_count == 5
        smol = found_row(screen, SMOL_OLLAMA)
        assert (smol["source"], smol["model"], smol["template"], smol["problem"]) == ("Ollama", "smol:q4", "yes", "-")
        assert (smol["size"], smol["quant"]) == ("98 MB", "Q4_1")
        hf = found_row(screen, stores["hf_reference"])
        assert (hf["source"], hf["model"]) == ("HF cache", "someorg/smol-GGUF/smol.Q8_0.gguf")
        assert "truncated" in found_row(screen, BROKEN)["problem"]
        hostile = found_row(screen, HOSTILE)
        assert hostile["model"] == "[red]evil␛[31m:latest" and "truncated" in hostile["problem"]
        lms = found_row(screen, HOSTILE_LMS)
        assert lms["source"] == "LM Studio" and lms["model"] == "pub/repo/[bold]x␇.gguf"
        assert "not a GGUF file" in lms["problem"]
        await highlight_found(pilot, screen, HOSTILE)
        text = details(screen)
        assert (
            "[red]evil␛[31m" in text
            and "\x1b" not in text
            and re.search(r"^problem +", text, re.M)
            and "truncated" in text
        )
        await highlight_found(pilot, screen, SMOL_OLLAMA)
        text = details(screen)
        assert re.search(r"architecture +llama$", text, re.M) and "as 'smol-q4'" in text
        assert str(stores["ollama"] / "blobs") in text
        screen.query_one("#models-table", DataTable).focus()  # back to the catalog: its details again
        await pilot.pause()
        assert re.search(r"^id +gemma-3-270m$", details(screen), re.M)

    run(make_app(tmp_path), scenario)


def test_a_adds_a_found_model_and_refuses_a_used_id(
    tmp_path: Path, stores: dict, tuitune_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from textual.widgets import Input, Select

    from tuitune.tui.screens.dialogs import AddFoundModel

    user_catalog = tuitune_dirs["config"] / "models.toml"
    app = make_app(tmp_path)
    notes = notes_of(app, monkeypatch)

    async def open_dialog(pilot: Pilot, screen: ModelsScreen, reference: str) -> AddFoundModel:
        await highlight_found(pilot, screen, reference)
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(pilot.app.screen, AddFoundModel)
        return pilot.app.screen

    async def scenario(pilot: Pilot) -> None:
        screen = await open_models(pilot)
        await wait_for_scan(pilot, screen)
        await highlight_found(pilot, screen, BROKEN)  # a broken file cannot be added: said at once, no dialog
        await pilot.press("a")
        await pilot.pause()
        assert pilot.app.screen is screen
        assert any("cannot be added" in m and "truncated" in m and s == "warning" for m, s in notes)

        dialog = await open_dialog(pilot, screen, stores["hf_reference"])  # an id in use: one line, nothing written
        assert dialog.query_one("#add-kind", Select).value == "chat"  # guessed from its chat template
        assert dialog.query_one("#add-id", Input).value == "smol.q8_0"
        dialog.query_one("#add-id", Input).value = GEMMA
        await pilot.click("#add")
        await pilot.pause()
        assert pilot.app.screen is dialog
        error = dialog.query_one("#add-error", Static).content
        assert f"'{GEMMA}' is already in the catalog" in str(error) and "\n" not in str(error)
        assert not user_catalog.exists()
        await pilot.press("escape")  # cancelled: nothing written, the model still found
        await pilot.pause()
        assert pilot.app.screen is screen and not user_catalog.exists()
        assert stores["hf_reference"] in found_table(screen).shown

        dialog = await open_dialog(pilot, screen, SMOL_OLLAMA)
        assert dialog.query_one("#add-id", Input).value == "smol-q4"
        dialog.query_one("#add-kind", Select).value = "base"
        dialog.query_one("#add-id", Input).value = "my-smol"
        dialog.query_one("#add-pair", Select).value = SMOLLM
        await pilot.click("#add")
        await pilot.pause()
        assert pilot.app.screen is screen
        written = user_catalog.read_text()
        blob = stores["ollama"] / "blobs" / f"sha256-{'a' * 64}"
        assert 'id = "my-smol"' in written and 'kind = "base"' in written and f'pair = "{SMOLLM}"' in written
        assert f'path = "{blob}"' in written
        assert "my-smol" in screen.entries and screen.highlighted_id() == "my-smol"
        assert row(screen, "my-smol")["kind"] == "base"
        assert SMOL_OLLAMA not in found_table(screen).shown  # listed once: in the catalog now
        assert stores["hf_reference"] in found_table(screen).shown  # the same bytes, another file: still found
        assert any(m.startswith("added 'my-smol' (base) to ") and str(user_catalog) in m for m, _ in notes)
        await pilot.press("r")  # a rescan still leaves it out
        await wait_for_scan(pilot, screen)
        assert SMOL_OLLAMA not in found_table(screen).shown and "my-smol" in screen.entries

    run(app, scenario)


def test_keys_during_a_slow_scan_neither_crash_nor_duplicate_rows(
    tmp_path: Path, stores: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuitune import discovery

    real_discover = discovery.discover
    release = threading.Event()  # a big store: each scan takes until the test lets it end (10 s at most)
    calls: list[float] = []

    def slow_discover() -> list:
        calls.append(time.monotonic())
        release.wait(10)
        return real_discover()

    monkeypatch.setattr(discovery, "discover", slow_discover)
    app = make_app(tmp_path)
    notes = notes_of(app, monkeypatch)

    async def scenario(pilot: Pilot) -> None:
        screen = await open_models(pilot)
        table = found_table(screen)
        assert table.scanning and table.row_count == 0
        await pilot.press("a")  # nothing to add yet: said, not crashed
        assert any("still looking for models on disk" in m for m, _ in notes)
        for key in ("r", "down", "escape", "tab", "down", "up", "a", "escape", "r", "shift+tab", "down"):
            await pilot.press(key)
        assert table.scanning and table.row_count == 0 and pilot.app.screen is screen
        release.set()
        await wait_for_scan(pilot, screen)
        assert len(calls) == 3
        assert table.row_count == len(table.shown) == 5  # the last scan's rows, once each
        release.clear()
        await pilot.press("r")  # a rescan keeps the rows it had until the new ones come
        await highlight_found(pilot, screen, SMOL_OLLAMA)
        for key in ("down", "a", "escape", "r", "up", "a", "escape"):
            await pilot.press(key)
        assert table.scanning and table.row_count == 5 and pilot.app.screen is screen
        release.set()
        await wait_for_scan(pilot, screen)
        assert len(calls) == 5 and table.row_count == len(table.shown) == 5

    run(app, scenario)


def test_a_hostile_gguf_in_the_hf_cache_is_a_problem_row_and_the_app_runs_on(tmp_path: Path, stores: dict) -> None:
    """Issue 17: a tiny file declaring 2^40 FLOAT64 values once meant MemoryError in the header read; the row
    now says what is wrong and the rest of the scan, and the app, go on."""
    from tests.support.gguf_bytes import ARCH, FLOAT64, array, gguf
    from tests.support.model_files import COMMIT

    repo = stores["hf"] / "models--evil--bomb-GGUF" / "snapshots" / COMMIT
    repo.mkdir(parents=True)
    (repo / "bomb.gguf").write_bytes(gguf([ARCH, array("tokenizer.ggml.scores", FLOAT64, 2**40)]) + bytes(16))
    reference = f"hf:evil/bomb-GGUF/bomb.gguf@{COMMIT}"

    async def scenario(pilot: Pilot) -> None:
        screen = await open_models(pilot)
        table = await wait_for_scan(pilot, screen)
        assert reference in table.shown and SMOL_OLLAMA in table.shown
        assert found_row(screen, reference)["problem"].startswith("is truncated inside its GGUF header, or corrupt")
        await highlight_found(pilot, screen, reference)
        assert "1,099,511,627,776 FLOAT64 values" in " ".join(details(screen).split())  # unwrapped
        await pilot.press("r")  # a rescan reads it again: still a row, still running
        await wait_for_scan(pilot, screen)
        assert pilot.app.is_running and reference in found_table(screen).shown

    run(make_app(tmp_path), scenario)
