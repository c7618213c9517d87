"""Pilot tests of the Compare and Chat screens: scripted engines for layout and flows, real models for answers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DOG_PROMPT, REPO
from tests.support.pilot import ScriptedModels, scripted_app, type_and_send, wait_idle
from tuitune.tui.widgets.pane import ComparePane
from tuitune.tui.widgets.prompt import PromptBox

pytestmark = pytest.mark.anyio
HOSTILE = "safe \x1b]52;c;cm0gLXJmIH4=\x07 and \x1b[2J\x1b[31mred\x9b0m done"


def pane_texts(app) -> list[str]:
    return [pane.turns[-1].answer if pane.turns else "" for pane in app.screen.panes]


async def test_prompt_goes_to_every_pane_and_is_saved(tmp_path: Path):
    models = ScriptedModels(
        {"gemma-3-270m": ["on a chair? on a chair?"], "smollm2-135m-instruct": ["Sit: hold a treat."]}
    )
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "Hi dog")
        await wait_idle(pilot, app)
        a, b = app.screen.panes
        assert (a.settings.model, a.settings.mode, b.settings.model, b.settings.mode) == (
            "gemma-3-270m", "raw", "smollm2-135m-instruct", "chat",
        )  # fmt: skip
        assert pane_texts(app) == ["on a chair? on a chair?", "Sit: hold a treat."]
        assert "tok/s" in str(a.turns[0].query_one(".turn-stats").render())
        assert app.screen.query_one(PromptBox).text == ""
        # Raw pane got the text as a completion prompt; chat pane got a message list.
        assert models.engines["gemma-3-270m"].requests[0].prompt == "Hi dog"
        assert models.engines["smollm2-135m-instruct"].requests[0].messages[-1].content == "Hi dog"
        conversation = app.history.load(app.screen.conversation_id)
        answers = [m.content for m in conversation.messages if m.role == "assistant"]
        assert answers == ["on a chair? on a chair?", "Sit: hold a treat."]
        assert {m.status for m in conversation.messages} == {"done"}


async def test_model_output_escape_sequences_are_inert(tmp_path: Path):
    models = ScriptedModels({"gemma-3-270m": [HOSTILE], "smollm2-135m-instruct": [HOSTILE]})
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "x")
        await wait_idle(pilot, app)
        for pane in app.screen.panes:
            shown = pane.turns[0].markdown.source
            assert "\x1b" not in shown and "\x9b" not in shown and "\x07" not in shown
            assert "␛]52;c;" in shown and "red" in shown
        # Nothing the screen would write to the terminal carries the model's escape sequences.
        svg = app.export_screenshot()
        assert "]52;" not in svg.replace("␛]52;", "")


async def test_toggle_mode_in_a_pane_is_two_keys_away(tmp_path: Path):
    app, models = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.click("#prompt")
        await pilot.press("tab", "alt+m")  # focus pane A, toggle raw → chat
        assert app.screen.panes[0].settings.mode == "chat"
        await type_and_send(pilot, "Hi")
        await wait_idle(pilot, app)
        assert models.engines["gemma-3-270m"].requests[0].mode == "chat"


async def test_multi_turn_keeps_each_panes_conversation(tmp_path: Path):
    app, models = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "one")
        await wait_idle(pilot, app)
        await type_and_send(pilot, "two")
        await wait_idle(pilot, app)
        chat_request = models.engines["smollm2-135m-instruct"].requests[1]
        assert [m.role for m in chat_request.messages] == ["user", "assistant", "user"]
        raw_request = models.engines["gemma-3-270m"].requests[1]
        assert raw_request.prompt.startswith("one") and raw_request.prompt.endswith("two")
        assert [len(p.turns) for p in app.screen.panes] == [2, 2]


async def test_stop_all_cancels_and_keeps_what_was_shown(tmp_path: Path):
    models = ScriptedModels({"smollm2-135m-instruct": ["word " * 400]}, delay_s=0.01)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "go")
        await pilot.pause(0.3)
        await pilot.press("escape")
        await wait_idle(pilot, app)
        pane = app.screen.panes[1]
        assert pane.turns[0].stats.finish_reason == "cancelled"
        assert 0 < len(pane.turns[0].answer) < len("word " * 400)
        saved = app.history.load(app.screen.conversation_id).messages
        assert any(m.status == "cancelled" and m.content == pane.turns[0].answer for m in saved)


async def test_partial_answers_are_in_the_database_while_streaming(tmp_path: Path):
    models = ScriptedModels({"smollm2-135m-instruct": ["token " * 300]}, delay_s=0.01)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "go")
        await pilot.pause(0.8)
        # Read with a separate connection, as a process restarted after kill -9 would.
        with sqlite3.connect(tmp_path / "history.sqlite3") as db:
            rows = db.execute("SELECT content, status FROM messages WHERE role = 'assistant'").fetchall()
        streaming = [content for content, status in rows if status == "streaming"]
        assert streaming and streaming[0].startswith("token token")
        await pilot.press("escape")
        await wait_idle(pilot, app)


async def test_regenerate_replaces_the_last_answer(tmp_path: Path):
    models = ScriptedModels({"smollm2-135m-instruct": ["first", "second"]})
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "q")
        await wait_idle(pilot, app)
        await pilot.press("ctrl+r")
        await wait_idle(pilot, app)
        pane = app.screen.panes[1]
        assert [t.answer for t in pane.turns] == ["second"]
        saved = [m.content for m in app.history.load(app.screen.conversation_id).messages if m.pane_index == 1]
        assert saved == ["q", "second"]


async def test_a_pane_that_fails_to_load_shows_the_error_and_the_other_answers(tmp_path: Path):
    models = ScriptedModels(fail={"gemma-3-270m": "model file /x.gguf is truncated (1 of 2 bytes)"})
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "hello")
        await wait_idle(pilot, app)
        broken, working = app.screen.panes
        assert "truncated" in broken.turns[0].error
        assert "truncated" in str(broken.turns[0].query_one(".turn-stats").render())
        assert working.turns[0].answer and working.turns[0].error is None


async def test_add_and_close_panes(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(3):
            await pilot.press("ctrl+t")
        await pilot.pause()
        assert len(app.screen.panes) == 4  # capped at four
        await type_and_send(pilot, "all four")
        await wait_idle(pilot, app)
        assert all(pane.turns[0].answer for pane in app.screen.panes)
        app.screen.panes[3].focus()
        await pilot.press("alt+x")
        await pilot.pause()
        await pilot.press("y")  # it holds an answer: asked once
        await pilot.pause()
        assert [pane.letter for pane in app.screen.panes] == ["A", "B", "C"]


async def test_pane_parameters_override_and_badge(tmp_path: Path):
    app, models = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        app.screen.panes[0].focus()
        await pilot.press("alt+p")
        await pilot.pause()
        await pilot.click("#pane-temperature")
        await pilot.press("0", "enter")
        await pilot.pause()
        pane = app.screen.panes[0]
        assert pane.settings.overrides == {"temperature": 0.0}
        assert "≠ params" in str(pane.query_one(".pane-header").render())
        await type_and_send(pilot, "hi")
        await wait_idle(pilot, app)
        assert models.engines["gemma-3-270m"].requests[0].sampling.temperature == 0.0
        assert models.engines["smollm2-135m-instruct"].requests[0].sampling.temperature == 0.7


async def test_shared_parameters_panel_applies_to_every_pane(tmp_path: Path):
    app, models = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+o")
        field = app.screen.query_one("#param-max_tokens")
        field.value = "3"
        app.screen.query_one("#param-system").value = "Be brief."
        await pilot.pause()
        await pilot.press("ctrl+o")
        await type_and_send(pilot, "hi")
        await wait_idle(pilot, app)
        for engine in models.engines.values():
            assert engine.requests[0].sampling.max_tokens == 3
        assert models.engines["smollm2-135m-instruct"].requests[0].messages[0].content == "Be brief."


async def test_votes_are_stored_with_the_comparison(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "judge")
        await wait_idle(pilot, app)
        assert app.screen.query_one("#vote-bar").display
        await pilot.press("f7")
        await pilot.pause()
        votes = app.history.load(app.screen.conversation_id).votes
        assert [(v.turn, v.verdict) for v in votes] == [(0, "b")]
        assert app.history.vote_tally()["smollm2-135m-instruct"]["wins"] == 1


async def test_example_prompts_are_one_key_away(tmp_path: Path):
    app, models = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+g")
        await pilot.pause()
        await pilot.press("enter")
        await wait_idle(pilot, app)
        assert models.engines["gemma-3-270m"].requests[0].prompt == DOG_PROMPT


async def test_copy_answer(tmp_path: Path):
    app, _ = scripted_app(tmp_path, ScriptedModels({"smollm2-135m-instruct": ["copy me"]}))
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "x")
        await wait_idle(pilot, app)
        app.screen.panes[1].focus()
        await pilot.press("alt+c")
        assert app.clipboard == "copy me"


async def test_switching_a_panes_model_frees_the_old_one(tmp_path: Path):
    app, models = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "x")
        await wait_idle(pilot, app)
        old = models.engines["gemma-3-270m"]
        app.screen.panes[0].focus()
        await pilot.press("alt+o")
        await pilot.pause()
        await pilot.press("down", "enter")  # the other installed model
        await pilot.pause(0.3)
        assert app.screen.panes[0].settings.model == "smollm2-135m-instruct"
        assert old.closed
        assert models.opened.count("smollm2-135m-instruct") == 2  # one engine per pane


async def test_chat_screen_edit_and_resend(tmp_path: Path):
    app, models = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        assert app.current_mode == "chat" and len(app.screen.panes) == 1
        await type_and_send(pilot, "typo")
        await wait_idle(pilot, app)
        await pilot.press("ctrl+e")
        await pilot.pause()
        assert app.screen.query_one(PromptBox).text == "typo"
        assert app.screen.panes[0].turns == []
        await pilot.press("end", "s", "enter")
        await wait_idle(pilot, app)
        requests = models.engines["smollm2-135m-instruct"].requests
        assert requests[-1].messages[-1].content == "typos"
        assert next(m.content for m in app.history.load(app.screen.conversation_id).messages) == "typos"


async def test_compare_opens_with_models_and_prompt(tmp_path: Path):
    app, _models = scripted_app(tmp_path, compare_models=["smollm2-135m-instruct", "gemma-3-270m"], prompt="start")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        await wait_idle(pilot, app)
        assert [p.settings.model for p in app.screen.panes] == ["smollm2-135m-instruct", "gemma-3-270m"]
        assert all(p.turns and p.turns[0].prompt == "start" for p in app.screen.panes)


async def test_compare_fits_80x24(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await type_and_send(pilot, "small")
        await wait_idle(pilot, app)
        panes = app.screen.panes
        assert all(pane.region.width >= 30 and pane.region.height >= 8 for pane in panes)
        assert app.screen.query_one(PromptBox).region.bottom <= 23


async def test_help_shows_where_files_live(tmp_path: Path, tuitune_dirs):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        text = " ".join(str(w.render()) for w in app.screen.query("Static"))
        assert str(tuitune_dirs["data"]) in text and str(tuitune_dirs["logs"]) in text


async def test_command_palette_lists_pane_actions(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)):
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert "Pane A: toggle raw/chat" in commands and "Vote: A is better" in commands
        assert "Go to History" in commands


async def test_real_models_show_the_why_finetune_difference(tmp_path: Path):
    """The lab on the real demo models, greedy: the base pane rambles, the chat pane answers."""
    from tuitune.tui.app import TuituneApp

    app = TuituneApp(history_path=tmp_path / "history.sqlite3")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+o")
        temperature = app.screen.query_one("#param-temperature")
        temperature.value = "0"
        app.screen.query_one("#param-max_tokens").value = "60"
        await pilot.press("ctrl+o")
        await type_and_send(pilot, DOG_PROMPT)
        await wait_idle(pilot, app, timeout=120)
        base, chat = app.screen.panes
        assert "train my dog to sit" in base.turns[0].answer
        assert "sit" in chat.turns[0].answer.lower() and chat.turns[0].answer != base.turns[0].answer
        assert base.turns[0].stats.decode_tokens_per_s > 1 and chat.turns[0].stats.completion_tokens > 10


def test_tui_startup_imports_no_heavy_library(tmp_path: Path):
    probe = (
        "import sys\n"
        "from tuitune.tui.app import TuituneApp\n"
        "from tests.support.pilot import ScriptedModels\n"
        "import asyncio\n"
        f"app = TuituneApp(engine_factory=ScriptedModels(), history_path='{tmp_path / 'h.sqlite3'}')\n"
        "async def run():\n"
        "    async with app.run_test() as pilot:\n"
        "        await pilot.pause(0.2)\n"
        "asyncio.run(run())\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_pane_is_focusable_and_has_rebindable_keys():
    ids = {binding.id for binding in ComparePane.BINDINGS}
    assert {"pane.toggle_mode", "pane.stop", "pane.copy"} <= ids


async def test_synced_scrolling_moves_the_other_pane(tmp_path: Path):
    long = "\n\n".join(f"paragraph {i}" for i in range(60))
    app, _ = scripted_app(tmp_path, ScriptedModels({"gemma-3-270m": [long], "smollm2-135m-instruct": [long]}))
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "scroll")
        await wait_idle(pilot, app)
        await pilot.press("ctrl+l")
        first, second = (pane.query_one(".pane-turns") for pane in app.screen.panes)
        first.scroll_to(y=0, animate=False)
        await pilot.pause(0.2)
        assert second.max_scroll_y > 10 and second.scroll_y < second.max_scroll_y / 4
        await pilot.press("ctrl+l")  # off again: the panes scroll on their own
        first.scroll_to(y=first.max_scroll_y, animate=False)
        await pilot.pause(0.2)
        assert second.scroll_y < second.max_scroll_y / 4


async def test_view_follows_the_text_while_streaming_until_the_user_scrolls_up(tmp_path: Path):
    lines = "".join(f"line {n}\n\n" for n in range(100))  # < 256 scripted chunks
    models = ScriptedModels({"smollm2-135m-instruct": [lines]}, delay_s=0.002, hold_after=120)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "go")
        pane = app.screen.panes[1]
        container = pane.query_one(".pane-turns")
        engine = models.engines["smollm2-135m-instruct"]
        for _ in range(100):  # the stream stops mid-answer (about line 60), far below the first screenful
            if engine.holding.is_set():
                break
            await pilot.pause(0.05)
        assert engine.holding.is_set()
        live = pane.turns[0].live
        assert live is not None

        # The last line of text is on screen, in the lower part of the view (the view moves a third of a screen
        # at a time), not scrolled into the blank lines reserved below the text.
        def last_line_on_screen() -> bool:
            last_text_row = live.region.y + live.text_lines - 1
            step = container.scrollable_content_region.height // container.FOLLOW_STEP_FRACTION
            return container.region.bottom - 4 - step <= last_text_row < container.region.bottom

        for _ in range(40):  # the view follows at the next refresh (100 ms), later on a loaded machine
            if last_line_on_screen() and container.scroll_y > 0:
                break
            await pilot.pause(0.05)
        assert last_line_on_screen() and container.scroll_y > 0
        assert "tok/s" in str(pane.query_one(".pane-status").render())  # live counter in the status line
        container.scroll_to(y=0, animate=False, immediate=True)
        await pilot.pause(0.2)
        engine.release.set()
        await wait_idle(pilot, app)
        assert "line 99" in pane.turns[0].answer
        assert container.scroll_y == 0  # the user is reading the top: streaming did not pull the view down
        assert "ready" in str(pane.query_one(".pane-status").render())


async def test_adapter_strength_keys_on_a_finetuned_pane(tmp_path: Path, tuitune_dirs):
    config = tuitune_dirs["config"]
    config.mkdir(parents=True, exist_ok=True)
    (config / "models.toml").write_text(
        '[[model]]\nid = "my-finetune"\nname = "Mine"\nkind = "finetuned"\nfamily = "llama"\n'
        'base = "smollm2-135m-instruct"\nadapter = "mine.gguf"\n',
        encoding="utf-8",
    )
    app, _ = scripted_app(tmp_path, compare_models=["smollm2-135m-instruct", "my-finetune"])
    async with app.run_test(size=(120, 40)) as pilot:
        finetuned = app.screen.panes[1]
        assert "strength 1.00" in str(finetuned.query_one(".pane-header").render())
        finetuned.focus()
        await pilot.press("alt+minus", "alt+minus")
        assert finetuned.settings.adapter_scale == 0.5
        assert "strength 0.50" in str(finetuned.query_one(".pane-header").render())
        for _ in range(4):
            await pilot.press("alt+minus")
        assert finetuned.settings.adapter_scale == 0.0  # clamped: 0 is exactly the base
        await pilot.press("alt+plus")
        assert finetuned.settings.adapter_scale == 0.25
        base = app.screen.panes[0]
        base.focus()
        await pilot.press("alt+minus")
        assert base.settings.adapter_scale == 1.0  # a model without an adapter has no strength
        assert "strength" not in str(base.query_one(".pane-header").render())
