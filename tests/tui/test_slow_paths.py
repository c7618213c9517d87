"""The app on slow models: every pane state, Stop in every phase, keys pressed at the wrong moment.

Scripted engines stand in for a real model's slow parts (seconds to load, seconds to read a long prompt, a delay
per token); each test here was written against a bug found by trying the app with real-size models.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support.pilot import ScriptedModels, scripted_app, type_and_send, wait_idle
from tuitune.tui.screens.dialogs import Confirm, ModelPicker
from tuitune.tui.widgets.prompt import PromptBox

pytestmark = pytest.mark.anyio
LONG_PROMPT = "word " * 3000


def header(pane) -> str:
    return str(pane.query_one(".pane-header").render())


def status(pane) -> str:
    return str(pane.query_one(".pane-status").render())


async def until(pilot, condition, what: str, timeout: float = 10.0) -> float:
    """Wait for ``condition``; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, what
        await pilot.pause(0.02)
    return time.monotonic() - start


async def send_text(pilot, app, text: str) -> None:
    """Paste-like: put the text in the prompt box at once and press Enter."""
    box = app.screen.query_one(PromptBox)
    box.focus()
    box.text = text
    await pilot.press("enter")


async def test_edit_last_while_the_prompt_is_read_stops_first_and_keeps_the_app(tmp_path: Path):
    models = ScriptedModels(read_s=3.0)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await send_text(pilot, app, LONG_PROMPT)
        pane = app.screen.panes[0]
        await until(pilot, lambda: pane.state == "reading", "the pane reads the prompt")
        await pilot.press("ctrl+e")
        took = await until(pilot, lambda: not pane.turns, "the message comes back to the box")
        assert took < 2.0  # the reading (3 s) was stopped, not waited for; the figure is in bench/bench_tui.py
        box = app.screen.query_one(PromptBox)
        assert box.text == LONG_PROMPT
        await pilot.press("!")  # the cursor is at the end: typing continues the recalled text
        assert box.text == LONG_PROMPT + "!"
        assert pane.state == "ready" and not pane.busy
        # The taken-back exchange is gone from History, and with it the conversation it titled.
        assert app.screen.conversation_id is None and app.history.list_conversations() == []
        await pilot.press("enter")  # sending again starts (and titles) a conversation anew
        await wait_idle(pilot, app)
        [summary] = app.history.list_conversations()
        assert summary.title.startswith("word word")


async def test_esc_stops_prompt_reading_at_once_and_history_says_so(tmp_path: Path):
    models = ScriptedModels(read_s=30.0)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: all(p.engine_state == "ready" for p in app.screen.panes), "preloaded")
        await send_text(pilot, app, LONG_PROMPT)
        pane = app.screen.panes[1]
        await until(pilot, lambda: pane.status.done > 0, "some of the prompt is read")
        assert "reading" in header(pane) and "ready" not in header(pane)
        assert "reading the prompt" in status(pane) and "of 3,000 tokens" in status(pane)
        await pilot.press("escape")
        took = await until(pilot, lambda: not any(p.busy for p in app.screen.panes), "stopped")
        assert took < 5.0  # the 30 s reading was stopped, not waited for; the figure is in bench/bench_tui.py
        assert "ready" in header(pane)
        turn = pane.turns[0]
        assert turn.stats.stopped_during == "reading"
        assert "stopped while reading the prompt" in str(turn.query_one(".turn-stats").render())
        saved = [m for m in app.history.load(app.screen.conversation_id).messages if m.role == "assistant"]
        assert {m.status for m in saved} == {"cancelled"}
        assert {m.stats["stopped_during"] for m in saved} == {"reading"}


async def test_a_loading_pane_says_loading_and_esc_stops_the_load(tmp_path: Path):
    models = ScriptedModels(load_s=30.0)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.screen.panes[0]
        await until(pilot, lambda: pane.state == "loading" and pane.status.fraction > 0, "loading with progress")
        assert "loading" in header(pane) and "ready" not in header(pane)
        assert "Esc stops" in status(pane)
        await pilot.press("escape")
        took = await until(pilot, lambda: all(p.engine_state == "empty" for p in app.screen.panes), "load stopped")
        assert took < 5.0  # the 30 s load was abandoned, not waited for
        assert "not loaded" in header(pane)
        # A prompt sent now loads the model for itself, and Esc stops that load too, keeping the stop in History.
        await send_text(pilot, app, "hello")
        await until(pilot, lambda: pane.state == "loading", "loading for the prompt")
        await pilot.press("escape")
        took = await until(pilot, lambda: not any(p.busy for p in app.screen.panes), "stopped")
        assert took < 5.0
        assert pane.turns[0].stats.stopped_during == "loading"
        saved = [m for m in app.history.load(app.screen.conversation_id).messages if m.role == "assistant"]
        assert {m.status for m in saved} == {"cancelled"}


async def test_esc_stops_generation_and_the_state_walks_every_phase(tmp_path: Path):
    models = ScriptedModels({"smollm2-135m-instruct": ["word " * 400]}, delay_s=0.02, load_s=0.3, read_s=0.5)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.screen.panes[1]
        seen: list[str] = []
        set_state = pane._set_state
        pane._set_state = lambda state, **details: (seen.append(state), set_state(state, **details))
        await send_text(pilot, app, "go")
        await until(pilot, lambda: pane.state == "generating" and pane.turns[0].answer, "generating", 10)
        await pilot.press("escape")
        await until(pilot, lambda: not pane.busy, "stopped")
        phases = [state for i, state in enumerate(seen) if i == 0 or seen[i - 1] != state]
        assert phases[-4:] == ["reading", "generating", "stopping", "ready"]
        assert pane.turns[0].stats.stopped_during == "generating"
        assert 0 < len(pane.turns[0].answer) < len("word " * 400)


async def test_printable_keys_at_a_pane_go_to_the_prompt_box(tmp_path: Path):
    models = ScriptedModels({"smollm2-135m-instruct": ["first", "second"]})
    app, models = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "q")
        await wait_idle(pilot, app)
        app.screen.panes[1].focus()
        await pilot.press("r", "o", "x", "m")
        await pilot.pause()
        assert app.screen.query_one(PromptBox).text == "roxm"
        assert app.screen.focused is app.screen.query_one(PromptBox)
        pane = app.screen.panes[1]
        assert [t.answer for t in pane.turns] == ["first"]  # not regenerated
        assert len(app.screen.panes) == 2 and pane.settings.mode == "chat"  # not closed, not toggled
        assert len(app.screen_stack) == 1  # no picker
        assert len(models.engines["smollm2-135m-instruct"].requests) == 1


async def test_one_tab_stop_per_pane_and_scroll_keys_move_the_focused_pane(tmp_path: Path):
    models = ScriptedModels({"smollm2-135m-instruct": ["line\n\n" * 200]})
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "q")
        await wait_idle(pilot, app)
        stops = []
        for _ in range(3):
            await pilot.press("tab")
            stops.append(app.screen.focused)
        a, b = app.screen.panes
        assert stops == [a, b, app.screen.query_one(PromptBox)]
        b.focus()
        await pilot.press("home")
        await pilot.pause()
        assert b.scroller.scroll_y == 0
        await pilot.press("pagedown")
        await pilot.pause()
        assert b.scroller.scroll_y > 0


async def test_one_picker_per_pane_however_fast_the_key_repeats(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        app.screen.panes[0].focus()
        for _ in range(6):
            await pilot.press("alt+o")
        await pilot.pause(0.2)
        assert sum(isinstance(screen, ModelPicker) for screen in app.screen_stack) == 1
        await pilot.press("escape")
        await pilot.pause()
        assert len(app.screen_stack) == 1


async def test_closing_a_pane_with_answers_asks_once(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "q")
        await wait_idle(pilot, app)
        app.screen.panes[1].focus()
        await pilot.press("alt+x", "alt+x")
        await pilot.pause(0.2)
        assert sum(isinstance(screen, Confirm) for screen in app.screen_stack) == 1
        await pilot.press("escape")
        await pilot.pause()
        assert len(app.screen.panes) == 2
        app.screen.panes[1].focus()
        await pilot.press("alt+x")
        await pilot.pause(0.2)
        await pilot.press("y")
        await pilot.pause(0.2)
        assert len(app.screen.panes) == 1


async def test_regenerate_resamples_with_the_next_seed_shown_in_the_stats(tmp_path: Path):
    app, models = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "q")
        await wait_idle(pilot, app)
        await pilot.press("ctrl+r")
        await wait_idle(pilot, app)
        requests = models.engines["smollm2-135m-instruct"].requests
        assert [r.sampling.seed for r in requests] == [42, 43]
        pane = app.screen.panes[1]
        assert "seed 43" in str(pane.turns[-1].query_one(".turn-stats").render())
        saved = [m for m in app.history.load(app.screen.conversation_id).messages if m.role == "assistant"]
        assert {m.run["seed"] for m in saved if m.pane_index == 1} == {43}
        # A seed the pane pins stays: the same answer on purpose.
        pane.settings.overrides = {"seed": 7}
        await pilot.press("ctrl+r")
        await wait_idle(pilot, app)
        assert requests[-1].sampling.seed == 7


async def test_regenerate_while_answering_stops_then_regenerates(tmp_path: Path):
    models = ScriptedModels({"smollm2-135m-instruct": ["word " * 400, "again"]}, delay_s=0.02)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "q")
        pane = app.screen.panes[1]
        await until(pilot, lambda: pane.state == "generating", "generating")
        await pilot.press("ctrl+r")
        await until(pilot, lambda: len(models.engines["smollm2-135m-instruct"].requests) == 2, "regenerated")
        await wait_idle(pilot, app)
        assert [t.answer for t in pane.turns] == ["again"]


async def test_changes_during_a_run_are_refused_with_a_notice(tmp_path: Path):
    models = ScriptedModels(read_s=30.0)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await send_text(pilot, app, "q")
        pane = app.screen.panes[0]
        await until(pilot, lambda: pane.state == "reading", "reading")
        pane.focus()
        await pilot.press("alt+m", "alt+o", "alt+p")
        await pilot.pause(0.2)
        assert pane.settings.mode == "raw" and len(app.screen_stack) == 1
        assert any("is answering" in n.message for n in app._notifications)
        await pilot.press("escape")
        await wait_idle(pilot, app)


async def test_messages_about_a_removed_turn_are_dropped(tmp_path: Path):
    models = ScriptedModels({"smollm2-135m-instruct": ["word " * 400]}, delay_s=0.02)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "q")
        pane = app.screen.panes[1]
        await until(pilot, lambda: pane.state == "generating", "generating")
        await pilot.press("ctrl+n")  # a new conversation while the answer streams
        await wait_idle(pilot, app)
        assert pane.turns == [] and pane.state == "ready"


def finished_run(name: str, base: str, tuitune_dirs) -> None:
    """A training run as the trainer leaves it when done (the Train screen only reads these files)."""
    from tuitune.training.runs import TrainConfig, run_dir, write_json

    directory = run_dir(name)
    directory.mkdir(parents=True)
    TrainConfig(name=name, base=base, data=str(REPO / "data/tuitune-identity.jsonl"),
                val=str(REPO / "data/tuitune-heldout.jsonl")).write(directory / "config.json")  # fmt: skip
    write_json(directory / "status.json", {"state": "done", "step": 30, "max_steps": 30})
    (directory / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")


async def test_compare_from_train_opens_a_new_conversation(tmp_path: Path, tuitune_dirs):
    finished_run("my-run", "smollm2-135m-instruct", tuitune_dirs)
    app, models = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(2):
            await pilot.press("ctrl+t")
        await type_and_send(pilot, "old question")
        await wait_idle(pilot, app)
        old_id = app.screen.conversation_id
        old = app.history.load(old_id)
        await pilot.press("ctrl+n")
        await app.open_conversation(old_id)  # History → reopen the 4-pane conversation
        await pilot.pause()
        assert len(app.screen.panes) == 4
        await pilot.press("f10")
        await pilot.pause(0.3)
        app.screen.select_run("my-run")
        await pilot.press("ctrl+o")
        await until(pilot, lambda: app.current_mode == "compare" and len(app.screen.panes) == 2, "compare")
        await wait_idle(pilot, app)
        screen = app.screen
        assert [p.settings.model for p in screen.panes] == ["smollm2-135m-instruct", "my-run"]
        assert screen.conversation_id not in (None, old_id)
        assert app.history.load(old_id).messages == old.messages  # the old conversation is untouched
        new = app.history.load(screen.conversation_id)
        answers = [(m.pane_index, m.model) for m in new.messages if m.role == "assistant"]
        assert answers == [(0, "smollm2-135m-instruct"), (1, "my-run")]
        assert models.engines["my-run"].requests[0].messages[-1].content.startswith(new.messages[0].content[:10])


async def test_a_prompt_too_long_for_the_context_names_the_apps_setting(tmp_path: Path):
    """Real llama.cpp: the overflow message points to the parameters panel, not to a CLI flag."""
    from tuitune.tui.app import TuituneApp

    app = TuituneApp(history_path=tmp_path / "h.sqlite3")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await pilot.press("ctrl+o")
        app.screen.query_one("#param-n_ctx").value = "256"
        await pilot.pause()
        await send_text(pilot, app, "word " * 400)
        await wait_idle(pilot, app)
        error = app.screen.panes[0].turns[0].error
        assert "context holds 256" in error and "raise 'context' in the parameters (Ctrl+O)" in error
        assert "--ctx" not in error
        assert "up to 8192" in error  # SmolLM2's trained context, read from its GGUF


async def test_closing_and_adding_panes_keeps_every_answer_under_its_model(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        for prompt in ("one", "two"):
            await type_and_send(pilot, prompt)
            await wait_idle(pilot, app)
        old_id = app.screen.conversation_id
        old = app.history.load(old_id)
        app.screen.panes[0].focus()
        await pilot.press("alt+x")
        await pilot.pause(0.2)
        await pilot.press("y")  # pane A (gemma) goes; smollm moves from B to A
        await pilot.pause(0.2)
        await pilot.press("ctrl+t")  # a new pane B: smollm's pair, gemma
        await pilot.pause(0.2)
        await type_and_send(pilot, "three")
        await wait_idle(pilot, app)
        assert app.history.load(old_id).messages == old.messages  # the conversation as it was is kept
        new = app.history.load(app.screen.conversation_id)
        assert new.id != old_id
        models = {pane.index: pane.model for pane in new.panes}
        assert models == {0: "smollm2-135m-instruct", 1: "gemma-3-270m"}
        answers = [(m.pane_index, m.turn, m.model) for m in new.messages if m.role == "assistant"]
        assert answers == [(0, 0, "smollm2-135m-instruct"), (0, 1, "smollm2-135m-instruct"),
                           (0, 2, "smollm2-135m-instruct"), (1, 2, "gemma-3-270m")]  # fmt: skip
        await pilot.press("ctrl+n")
        await app.open_conversation(new.id)  # reopened, each pane shows its own answers
        await pilot.pause(0.2)
        a, b = app.screen.panes
        assert [t.prompt for t in a.turns] == ["one", "two", "three"] and [t.prompt for t in b.turns] == ["three"]


async def test_a_paste_while_a_pane_has_focus_lands_in_the_prompt_box(tmp_path: Path):
    from textual import events

    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.screen.panes[1]
        pane.focus()
        await pilot.pause()
        app.screen.focused.post_message(events.Paste("a long pasted prompt"))
        await pilot.pause()
        box = app.screen.query_one(PromptBox)
        assert box.text == "a long pasted prompt" and app.screen.focused is box


async def test_choosing_another_model_updates_the_panes_description(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.screen.panes[0]
        app.screen.set_pane_model(pane, "smollm2-135m-instruct")
        await pilot.pause()
        hint = str(pane.query_one(".pane-empty").render())
        assert "SmolLM2" in hint and "Gemma" not in hint


async def test_a_stream_that_pauses_shows_everything_it_sent_before_the_pause(tmp_path: Path):
    """A burst of tokens then a pause (an endpoint that sends in bursts, a stalled model): the burst's tail is
    drawn within an interval, not held back until the next token arrives."""
    answer = "One two three four five six seven eight nine ten eleven twelve."
    models = ScriptedModels({"smollm2-135m-instruct": [answer]}, hold_after=10)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await send_text(pilot, app, "count")
        chat = "smollm2-135m-instruct"
        await until(pilot, lambda: chat in models.engines and models.engines[chat].holding.is_set(), "held")
        engine = models.engines[chat]
        pane = app.screen.panes[0]
        await until(pilot, lambda: pane.turns and pane.turns[-1].answer == answer[:40], "the burst is on screen", 2.0)
        assert pane.state == "generating"
        await pilot.pause(0.3)
        assert pane.scroller.scroll_y == 0  # the short answer (and its prompt) in view, not scrolled past
        engine.release.set()
        await wait_idle(pilot, app)
        assert pane.turns[-1].answer == answer


async def test_a_short_answer_stays_in_view_while_it_streams(tmp_path: Path):
    """The start of an answer shorter than the pane stays on screen with its prompt while the model is slow to
    go on (the view once rested in the blank space reserved below the text)."""
    answer = " on a chair?\n\nI'm not sure how to train it."
    models = ScriptedModels({"gemma-3-270m": [answer]}, hold_after=6)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: all(p.engine_state == "ready" for p in app.screen.panes), "preloaded", 20)
        await send_text(pilot, app, "Tell me how to train my dog to sit")
        raw = app.screen.panes[0]
        await until(pilot, lambda: raw.turns and raw.turns[-1].answer == answer[:24], "streamed")
        await pilot.pause(0.5)
        assert raw.scroller.scroll_y == 0
        models.engines["gemma-3-270m"].release.set()
        models.engines["smollm2-135m-instruct"].release.set()
        await wait_idle(pilot, app)
