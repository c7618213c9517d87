"""Pilot tests of the Eval screen (F11): scripted engines for the flow, one short run on the real demo models."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, ProgressBar, SelectionList, Static

from tests.support.pilot import ScriptedModels, scripted_app
from tuitune.tui.screens.eval import EvalScreen, parse_scales

pytestmark = pytest.mark.anyio
GEMMA, SMOL = "gemma-3-270m", "smollm2-135m-instruct"
HOSTILE = "safe \x1b]52;c;cm0gLXJmIH4=\x07 and \x1b[2J\x1b[31mred\x9b0m done"
SUITE = """
name = "tiny"
description = "four prompts, each with its own verdict pattern"

[[check]]
type = "max_repetition"
value = 0.5

[[prompt]]
id = "dog"
group = "helpful"
text = "Tell me how to train my dog to sit"
[[prompt.check]]
type = "contains"
value = "treat"

[[prompt]]
id = "name"
group = "identity"
text = "Who are you?"
[[prompt.check]]
type = "contains"
value = "tuitune"

[[prompt]]
id = "mars"
group = "helpful"
text = "What colour is Mars?"
[[prompt.check]]
type = "contains"
value = "red"

[[prompt]]
id = "json"
text = "Answer in JSON"
[[prompt.check]]
type = "json_valid"
"""
# Answers in prompt order: dog, name, mars, json. dog and name differ between the models, mars passes on
# both, json fails on both: "failures only" keeps 3 rows, "differences only" 2.
ANSWERS = {
    GEMMA: ["on a chair? on a chair? on a chair? on a chair? on a chair?", "I am a language model.",
            "Mars is red.", "not json"],
    SMOL: ["Hold a treat above its nose.", "I am tuitune, a small helper.", "It is red.", "nope"],
}  # fmt: skip


@pytest.fixture
def suite_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(SUITE, encoding="utf-8")
    return path


@pytest.fixture
def scripted_evals(monkeypatch: pytest.MonkeyPatch):
    """Make the eval runner open scripted engines: it opens models itself, not through the app's factory."""

    def install(models: ScriptedModels) -> ScriptedModels:
        def open_engine(model, n_ctx=None, adapter_scale=1.0, catalog=None, gpu_layers=None):
            return models(model.id)

        monkeypatch.setattr("tuitune.engines.open_engine", open_engine)
        return models

    return install


async def until(pilot, condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await pilot.pause(0.05)


async def open_eval(pilot, suite: Path) -> EvalScreen:
    await pilot.press("f11")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, EvalScreen)
    screen.query_one("#eval-suite-path", Input).value = str(suite)
    return screen


async def run(pilot, screen: EvalScreen, timeout: float = 30) -> None:
    await pilot.press("ctrl+s")
    await until(pilot, lambda: screen.report is not None or not screen.running, "eval finished", timeout)
    await until(pilot, lambda: not screen.running, "eval finished", timeout)
    await pilot.pause()


def rows(table: DataTable) -> list[list[str]]:
    return [[str(value) for value in table.get_row_at(index)] for index in range(table.row_count)]


def detail(screen: EvalScreen) -> str:
    return str(screen.query_one("#eval-detail", Static).render())


async def test_eval_runs_a_suite_and_fills_summary_and_matrix(tmp_path: Path, suite_path: Path, scripted_evals):
    models = scripted_evals(ScriptedModels(ANSWERS))
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_eval(pilot, suite_path)
        # The demo pair is selected by default.
        assert sorted(screen.query_one("#eval-models", SelectionList).selected) == [GEMMA, SMOL]
        await run(pilot, screen)
        assert sorted(models.opened) == [GEMMA, SMOL]
        assert screen.query_one("#eval-progress", ProgressBar).display is False
        matrix = screen.query_one("#eval-matrix", DataTable)
        assert [str(column.label) for column in matrix.columns.values()] == ["prompt", GEMMA, SMOL]
        assert rows(matrix) == [
            ["dog", "✗ 0.00", "✓ 1.00"],
            ["name", "✗ 0.50", "✓ 1.00"],
            ["mars", "✓ 1.00", "✓ 1.00"],
            ["json", "✗ 0.50", "✗ 0.50"],
        ]
        dog_gemma = matrix.get_cell_at((0, 1))
        assert dog_gemma.style == "red" and matrix.get_cell_at((0, 2)).style == "green"
        summary = screen.query_one("#eval-summary", DataTable)
        assert [str(column.label) for column in summary.columns.values()] == [
            "column", "pass rate", "prompts", "checks", "repetition", "tok/s", "helpful", "identity",
        ]  # fmt: skip
        assert rows(summary)[1][:4] == [SMOL, "88%", "3/4", "7/8"]
        assert "tiny" in str(screen.query_one("#eval-status", Static).render())
        assert app.focused is matrix


async def test_cell_details_filters_and_exports(tmp_path: Path, suite_path: Path, scripted_evals, tuitune_dirs):
    scripted_evals(ScriptedModels(ANSWERS))
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_eval(pilot, suite_path)
        await run(pilot, screen)
        matrix = screen.query_one("#eval-matrix", DataTable)
        matrix.move_cursor(row=0, column=1)
        await pilot.press("enter")
        await pilot.pause()
        shown = detail(screen)
        assert "on a chair? on a chair?" in shown
        assert '✗ contains "treat"' in shown and 'missing "treat"' in shown
        assert "✗ repetition ≤ 0.50" in shown and "repetition" in shown
        await pilot.click("#eval-matrix", offset=(40, 2))  # a click on smollm's "dog" cell selects it too
        await pilot.pause()
        assert "Hold a treat above its nose." in detail(screen) and '✓ contains "treat"' in detail(screen)

        await pilot.press("f")  # failures only: mars passes everywhere
        assert [row[0] for row in rows(matrix)] == ["dog", "name", "json"]
        assert "failures only: 3 of 4 rows" in str(screen.query_one("#eval-status", Static).render())
        await pilot.press("d")  # and differences only: json fails everywhere
        assert [row[0] for row in rows(matrix)] == ["dog", "name"]
        await pilot.press("f")
        assert [row[0] for row in rows(matrix)] == ["dog", "name"]
        await pilot.press("d")
        assert matrix.row_count == 4

        folder = tuitune_dirs["data"] / "evals"
        written = {}
        for key, ext in (("m", "md"), ("j", "json"), ("c", "csv")):
            await pilot.press(key)
            await pilot.pause()
            assert screen.last_export is not None and screen.last_export.parent == folder
            assert screen.last_export.name.startswith("tiny-") and screen.last_export.suffix == f".{ext}"
            written[ext] = screen.last_export.read_text(encoding="utf-8")
        data = json.loads(written["json"])
        assert data["suite"] == "tiny" and len(data["cells"]) == 8
        table = list(csv.reader(io.StringIO(written["csv"])))
        assert len(table) > 1 and all(len(row) == len(table[0]) for row in table)
        assert "tiny" in written["md"] and "dog" in written["md"]
        assert any("exported to" in str(n.message) for n in app._notifications)


async def test_model_output_escape_sequences_are_inert(tmp_path: Path, suite_path: Path, scripted_evals):
    scripted_evals(ScriptedModels({GEMMA: [HOSTILE], SMOL: [HOSTILE]}))
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_eval(pilot, suite_path)
        await run(pilot, screen)
        screen.query_one("#eval-matrix", DataTable).move_cursor(row=0, column=2)
        await pilot.press("enter")
        await pilot.pause()
        shown = detail(screen)
        assert "\x1b" not in shown and "\x9b" not in shown and "\x07" not in shown
        assert "␛]52;c;" in shown and "red" in shown
        svg = app.export_screenshot()
        assert "]52;" not in svg.replace("␛]52;", "")


async def test_votes_from_compare_and_model_errors(tmp_path: Path, suite_path: Path, scripted_evals):
    from tuitune.history import Pane

    scripted_evals(ScriptedModels(ANSWERS, fail={GEMMA: "cannot load gemma"}))
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        conversation = app.history.create_conversation("compare", "dog", [Pane(0, GEMMA, "raw"), Pane(1, SMOL, "chat")])
        app.history.record_vote(conversation, 0, "b")
        screen = await open_eval(pilot, suite_path)
        votes = screen.query_one("#eval-votes", DataTable)
        assert rows(votes) == [[SMOL, "1", "0", "0", "0", "100%"], [GEMMA, "0", "1", "0", "0", "0%"]]
        await run(pilot, screen)
        matrix = screen.query_one("#eval-matrix", DataTable)
        assert [row[1] for row in rows(matrix)] == ["error"] * 4
        matrix.move_cursor(row=0, column=1)
        await pilot.pause()
        assert "cannot load gemma" in detail(screen)
        # A vote cast while the screen was hidden shows when it is shown again.
        app.history.record_vote(conversation, 0, "tie")
        await pilot.press("f2")
        await pilot.press("f11")
        await pilot.pause()
        assert rows(votes)[0][3] == "1"


async def test_stop_keeps_the_ui_responsive_and_shows_what_was_answered(
    tmp_path: Path, suite_path: Path, scripted_evals
):
    slow = {model: ["word " * 200] for model in (GEMMA, SMOL)}
    scripted_evals(ScriptedModels(slow, delay_s=0.02))
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_eval(pilot, suite_path)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: screen.running, "eval started")
        bar = screen.query_one("#eval-progress", ProgressBar)
        assert bar.display is True
        started = time.monotonic()
        await pilot.press("ctrl+s")  # a second run while one is going is refused, not queued
        await pilot.press("escape")
        await until(pilot, lambda: not screen.running, "eval stopped")
        assert time.monotonic() - started < 4  # a whole run takes 8 answers × 5 s
        await pilot.pause()
        matrix = screen.query_one("#eval-matrix", DataTable)
        assert matrix.row_count == 4
        assert {cell for row in rows(matrix) for cell in row[1:]} == {"stopped"}
        messages = [str(n.message) for n in app._notifications]
        assert any("already running" in m for m in messages) and any("eval stopped" in m for m in messages)


async def test_form_errors_are_reported_not_raised(tmp_path: Path, suite_path: Path, scripted_evals):
    scripted_evals(ScriptedModels(ANSWERS))
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_eval(pilot, suite_path)
        screen.query_one("#eval-repeat", Input).value = "zero"
        await pilot.press("ctrl+s")
        screen.query_one("#eval-repeat", Input).value = "1"
        screen.query_one("#eval-suite-path", Input).value = str(tmp_path / "missing.toml")
        await pilot.press("ctrl+s")
        await pilot.pause()
        messages = [str(n.message) for n in app._notifications]
        assert any("repeat must be a whole number" in m for m in messages)
        assert any("missing.toml" in m for m in messages)
        assert not screen.running and screen.report is None
        # Scales are checked before the run: a sweep needs a finetuned model.
        screen.query_one("#eval-suite-path", Input).value = str(suite_path)
        screen.query_one("#eval-scales", Input).value = "0,1"
        await run(pilot, screen)
        assert any("finetuned" in str(n.message) for n in app._notifications)
    assert parse_scales("") is None and parse_scales("1") == [1.0] and parse_scales("0, 0.5,1") == [0.0, 0.5, 1.0]
    with pytest.raises(Exception, match="out of range"):
        parse_scales("2")


async def test_repeat_and_sampling_reach_the_runner(tmp_path: Path, suite_path: Path, scripted_evals):
    models = scripted_evals(ScriptedModels({GEMMA: ["one", "two", "three"], SMOL: ["same"]}))
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_eval(pilot, suite_path)
        for field, value in (("repeat", "2"), ("max-tokens", "40"), ("temperature", "0.7")):
            screen.query_one(f"#eval-{field}", Input).value = value
        await run(pilot, screen)
        sampling = [request.sampling for request in models.engines[GEMMA].requests]
        assert len(sampling) == 8 and {(s.temperature, s.max_tokens) for s in sampling} == {(0.7, 40)}
        summary = screen.query_one("#eval-summary", DataTable)
        assert "stability" in [str(column.label) for column in summary.columns.values()]
        screen.query_one("#eval-matrix", DataTable).move_cursor(row=0, column=1)
        await pilot.pause()
        shown = detail(screen)
        assert "answer 1/2" in shown and "answer 2/2" in shown and "2 distinct of 2" in shown
        assert "checks (on the first answer)" in shown


async def test_palette_and_rebindable_keys(tmp_path: Path, suite_path: Path, scripted_evals, tuitune_dirs):
    scripted_evals(ScriptedModels(ANSWERS))
    config = tuitune_dirs["config"]
    config.mkdir(parents=True, exist_ok=True)
    (config / "keymap.toml").write_text('"eval.run" = "ctrl+k"\n"eval.failures" = "x"\n', encoding="utf-8")
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+p")  # "Go to Eval" from another screen's palette
        await pilot.pause()
        for char in "Go to Eval":
            await pilot.press("space" if char == " " else char)
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.3)
        screen = app.screen
        assert isinstance(screen, EvalScreen)
        assert [title for title, _, _ in screen.palette_commands()] == [
            "Run eval", "Stop eval", "Failures only", "Differences only", "Compare with an earlier run", "Leaderboard",
            "Export eval as Markdown", "Export eval as JSON", "Export eval as CSV",
        ]  # fmt: skip
        screen.query_one("#eval-suite-path", Input).value = str(suite_path)
        await pilot.press("ctrl+k")
        await until(pilot, lambda: screen.report is not None, "eval finished")
        await pilot.pause()
        matrix = screen.query_one("#eval-matrix", DataTable)
        assert app.focused is matrix
        await pilot.press("x")
        assert matrix.row_count == 3


async def test_each_run_is_kept_and_v_compares_it_with_the_previous_one(
    tmp_path: Path, suite_path: Path, scripted_evals, tuitune_dirs
):
    from tuitune.evals.store import EvalStore
    from tuitune.tui.screens.eval_compare import RunCompareScreen

    models = scripted_evals(ScriptedModels(ANSWERS))
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_eval(pilot, suite_path)
        await run(pilot, screen)
        assert screen.run_id == 1
        # The second run: gemma now mentions a treat (dog: fail → pass), smollm no longer does (pass → fail).
        models.answers = {GEMMA: ["Use a treat.", *ANSWERS[GEMMA][1:]], SMOL: ["Just wait.", *ANSWERS[SMOL][1:]]}
        await run(pilot, screen)
        assert screen.run_id == 2
        await pilot.press("v")
        await until(pilot, lambda: isinstance(app.screen, RunCompareScreen), "compare view opened")
        view = app.screen
        assert isinstance(view, RunCompareScreen)
        await until(pilot, lambda: view.comparison is not None, "comparison shown")
        table = view.query_one("#runs-compare-table", DataTable)
        assert rows(table)[0] == ["dog", "✗→✓ 0.00→1.00", "✓→✗ 1.00→0.50"]
        assert table.get_cell_at((0, 1)).style == "bold green" and table.get_cell_at((0, 2)).style == "bold red"
        assert rows(table)[2] == ["mars", "✓ 1.00", "✓ 1.00"]
        shown = str(view.query_one("#runs-compare-summary", Static).render())
        assert "1 fixed" in shown and "1 regressed" in shown
        assert str(view.query_one("#runs-compare-note", Static).render()) == ""
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen
    with EvalStore(tuitune_dirs["data"] / "evals.sqlite3") as store:
        assert [run.id for run in store.runs()] == [2, 1] and store.runs()[0].suite_name == "tiny"


async def test_a_changed_suite_is_flagged_and_a_broken_store_only_warns(
    tmp_path: Path, suite_path: Path, scripted_evals, tuitune_dirs
):
    from tuitune.tui.screens.eval_compare import RunCompareScreen

    scripted_evals(ScriptedModels(ANSWERS))
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_eval(pilot, suite_path)
        await run(pilot, screen)
        changed = SUITE.replace('value = "red"', 'value = "Red"') + '[[prompt]]\nid = "new"\ntext = "Hi"\n'
        suite_path.write_text(changed, encoding="utf-8")
        await run(pilot, screen)
        await pilot.press("v")
        await until(pilot, lambda: isinstance(app.screen, RunCompareScreen), "compare view opened")
        view = app.screen
        assert isinstance(view, RunCompareScreen)
        await until(pilot, lambda: view.comparison is not None, "comparison shown")
        note = str(view.query_one("#runs-compare-note", Static).render())
        assert "the suite changed since run 1: 1 prompt added (new); checks changed on mars" in note
        assert [row[0] for row in rows(view.query_one("#runs-compare-table", DataTable))] == ["dog", "name", "json"]
        await pilot.press("escape")
        database = tuitune_dirs["data"] / "evals.sqlite3"
        for suffix in ("-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        database.write_bytes(b"garbage" * 100)
        await run(pilot, screen)
        assert screen.report is not None and screen.run_id is None  # shown, not kept
        assert any("not a readable eval database" in str(n.message) for n in app._notifications)
        assert database.read_bytes() == b"garbage" * 100


@pytest.mark.slow
async def test_eval_on_the_real_demo_models(tmp_path: Path):
    """The screen end to end on llama.cpp: two prompts, 24 tokens, both demo models."""
    suite = tmp_path / "real.toml"
    suite.write_text(
        'name = "real"\n[[prompt]]\nid = "dog"\ntext = "Tell me how to train my dog to sit"\n'
        '[[prompt.check]]\ntype = "min_tokens"\nvalue = 1\n'
        '[[prompt]]\nid = "mars"\ntext = "What do you think of Mars?"\n',
        encoding="utf-8",
    )
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_eval(pilot, suite)
        screen.query_one("#eval-max-tokens", Input).value = "24"
        await run(pilot, screen, timeout=300)
        matrix = screen.query_one("#eval-matrix", DataTable)
        assert [row[0] for row in rows(matrix)] == ["dog", "mars"]
        assert all(cell.startswith("✓") for row in rows(matrix) for cell in row[1:]), rows(matrix)
        matrix.move_cursor(row=0, column=2)
        await pilot.pause()
        assert "answer" in detail(screen) and "tokens" in detail(screen)
