"""Pilot tests of four Compare-screen bugs: synced scrolling that looped forever, a page key that crashed a list
before its first layout, four panes squeezed into one row, and final answers that lost their line breaks."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from textual import events
from textual.command import CommandList, CommandPalette
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import OptionList
from textual.widgets.markdown import MarkdownFence

from tests.support.pilot import ScriptedModels, scripted_app, type_and_send, wait_idle
from tuitune.tui.screens.conversation import ConversationScreen
from tuitune.tui.screens.dialogs import ExamplePicker, ModelPicker

pytestmark = pytest.mark.anyio


def rendered_lines(widget: Widget) -> list[str]:
    """The text of every line ``widget`` draws (its own lines, not its children's), right-stripped."""
    width, height = widget.size
    return [strip.text.rstrip() for strip in widget.render_lines(Region(0, 0, width, height))]


# -- 1. synced scrolling -------------------------------------------------------------------------------


def long_answer(seed: int, paragraphs: int = 90) -> str:
    """Paragraphs of varied length: panes of different heights once wrapped (scripted answers stop at 1 KiB)."""
    return "\n\n".join(f"line {n} " + "word " * ((n * seed) % 9) for n in range(paragraphs))


async def test_synced_scrolling_with_four_panes_follows_the_keys_and_settles(tmp_path: Path):
    """Four panes of different heights, synced: Up ×3 in one pane and PageUp in another move every pane once.

    Before the fix the followers' scrolls landed after the sync's guard was reset and re-synced the others, and
    positions that do not round-trip exactly (63.0 vs 62.999…) bounced between the panes for ever: the UI loop
    spun at 100 % and ignored Ctrl+Q. Bounded: a runaway is cut off (sync turned off) and reported.
    """
    ids = ["gemma-3-270m", "smollm2-135m-instruct", "smollm2-360m", "qwen2.5-0.5b"]
    models = ScriptedModels({model: [long_answer(seed)] for seed, model in enumerate(ids, 1)})
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+t", "ctrl+t")
        await pilot.pause()
        screen = app.screen
        panes = screen.panes
        assert len(panes) == 4
        for pane, model in zip(panes, ids, strict=True):
            screen.set_pane_model(pane, model)
        await pilot.pause(0.3)
        await type_and_send(pilot, "long answers please")
        await wait_idle(pilot, app)
        await pilot.pause(0.3)
        scrollers = [pane.query_one(".pane-turns") for pane in panes]
        assert all(s.max_scroll_y > 20 for s in scrollers)
        assert len({s.max_scroll_y for s in scrollers}) > 1  # panes of different heights
        await pilot.press("ctrl+l")
        assert screen.sync_scroll

        changes = 0

        def counted() -> None:
            nonlocal changes
            changes += 1
            if changes > 2000:  # a runaway: stop it so the test can fail instead of spinning
                screen.sync_scroll = False

        for scroller in scrollers:
            screen.watch(scroller, "scroll_y", counted, init=False)

        async def keys() -> None:
            panes[0].focus()
            await pilot.pause()
            await pilot.press("up", "up", "up")
            await pilot.pause(0.1)
            panes[1].focus()
            await pilot.pause()
            await pilot.press("pageup")
            await pilot.pause(0.3)

        try:
            await asyncio.wait_for(keys(), timeout=20)
        except TimeoutError:
            screen.sync_scroll = False
            pytest.fail(f"synced scrolling did not settle ({changes} scroll changes)")
        assert screen.sync_scroll, f"runaway synced scrolling cut off after {changes} scroll changes"
        settled = changes
        await pilot.pause(0.3)
        assert changes == settled, "scroll positions still changing with no key pressed"
        assert changes <= 4 * 4, f"{changes} scroll changes for four key presses in four panes"

        source = scrollers[1]
        assert source.scroll_y < source.max_scroll_y - source.scrollable_content_region.height / 2  # a page up
        fraction = source.scroll_y / source.max_scroll_y
        for scroller in scrollers:
            assert abs(scroller.scroll_y - fraction * scroller.max_scroll_y) <= 1


async def test_compare_screen_mounts_the_conversation_machinery_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Textual calls every class's on_mount along the MRO: CompareScreen calling super() as well ran it twice."""
    mounted: list[str] = []
    original = ConversationScreen.on_mount

    def counted(screen: ConversationScreen) -> None:
        mounted.append(type(screen).__name__)
        original(screen)

    monkeypatch.setattr(ConversationScreen, "on_mount", counted)
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        assert mounted == ["CompareScreen"]


# -- 2. page keys before a list's first layout ---------------------------------------------------------


@pytest.mark.parametrize("key", ["pagedown", "pageup"])
async def test_page_key_while_the_command_palette_fills_does_not_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
):
    """Textual's OptionList._move_page raises KeyError: 0 when a page key arrives after the palette's list got
    its options (and a highlight) but before its first layout. The key is sent at exactly that moment."""
    fill = CommandPalette._refresh_command_list
    sent: list[str] = []

    def fill_then_key(palette: CommandPalette, *args, **kwargs) -> None:
        fill(palette, *args, **kwargs)
        command_list = palette.query_one(CommandList)
        if not sent and command_list.highlighted is not None and not command_list.scrollable_content_region:
            sent.append(key)
            palette.app.post_message(events.Key(key, None))

    monkeypatch.setattr(CommandPalette, "_refresh_command_list", fill_then_key)
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause(0.5)
        assert sent == [key]  # the key did arrive before the list's first layout
        assert CommandPalette.is_open(app)
        command_list = app.screen.query_one(CommandList)
        assert command_list.option_count > 10
        before = command_list.highlighted
        await pilot.press("pagedown")  # once laid out, the page keys work as usual
        assert command_list.highlighted is not None and command_list.highlighted > (before or 0)
        await pilot.press("escape")


@pytest.mark.parametrize("dialog", ["model", "example"])
@pytest.mark.parametrize("action", ["page_down", "page_up", "first", "last"])
async def test_dialog_lists_take_page_keys_before_their_first_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dialog: str, action: str
):
    """The dialogs' OptionLists have options and a highlight from mount, before they have a size: a page key
    handled then hit the same KeyError. The key's action runs at that moment, the way the binding runs it."""
    dialog_class = ModelPicker if dialog == "model" else ExamplePicker
    original = dialog_class.__dict__.get("on_mount")
    ran: list[bool] = []

    async def mount_then_key(screen) -> None:
        if original is not None:
            original(screen)
        option_list = screen.query_one(OptionList)
        option_list.highlighted = option_list.highlighted or 0
        assert not option_list.scrollable_content_region  # not laid out yet
        ran.append(await screen.app.run_action(action, option_list))

    monkeypatch.setattr(dialog_class, "on_mount", mount_then_key, raising=False)
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        if dialog == "model":
            app.screen.pick_model(app.screen.panes[0])
        else:
            app.screen.action_examples()
        await pilot.pause(0.3)
        assert ran == [True]
        assert isinstance(app.screen, dialog_class)
        option_list = app.screen.query_one(OptionList)
        await pilot.press("end")
        assert option_list.highlighted == option_list.option_count - 1
        await pilot.press("pageup")  # laid out now: a page up from the end moves up
        assert option_list.highlighted < option_list.option_count - 1 or option_list.option_count == 1
        await pilot.press("escape")


# -- 3. a 2×2 grid for three and four panes ------------------------------------------------------------


def pane_boxes(app) -> list[Region]:
    return [pane.region for pane in app.screen.panes]


async def test_four_panes_make_a_grid_that_follows_resizes_and_closes(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        assert len({box.y for box in pane_boxes(app)}) == 1  # two panes: one row
        await pilot.press("ctrl+t", "ctrl+t")
        await pilot.pause(0.2)
        boxes = pane_boxes(app)
        assert len(boxes) == 4
        assert len({box.x for box in boxes}) == 2 and len({box.y for box in boxes}) == 2  # 2 × 2
        assert all(box.width >= 50 and box.height >= 12 for box in boxes)
        assert {box.x for box in boxes[::2]} == {boxes[0].x} and boxes[0].y == boxes[1].y  # A B / C D

        await pilot.resize_terminal(80, 24)  # too small for a grid: back to one row
        await pilot.pause(0.2)
        boxes = pane_boxes(app)
        assert len({box.y for box in boxes}) == 1 and all(box.width >= 18 for box in boxes)

        await pilot.resize_terminal(120, 40)
        await pilot.pause(0.2)
        assert len({box.y for box in pane_boxes(app)}) == 2

        await app.screen.close_pane(app.screen.panes[3], confirmed=True)  # three: two on top, one full width
        await pilot.pause(0.2)
        a, b, c = pane_boxes(app)
        assert a.y == b.y < c.y and c.x == a.x and c.width >= a.width + b.width - 1

        await app.screen.close_pane(app.screen.panes[2], confirmed=True)  # two: one row again
        await pilot.pause(0.2)
        a, b = pane_boxes(app)
        assert a.y == b.y and a.height > 20


# -- 4. line breaks in the final render, fences while streaming -----------------------------------------

PLAIN = ["Train my dog to walk", "Train my dog to walk", "Train my dog to walk", "and then to sit"]
MIXED = "\n".join(
    [
        *PLAIN,
        "",
        "## Steps",
        "",
        "- hold a treat",
        "- say sit",
        "",
        "```python",
        "# comment",
        "dog.sit()",
        "```",
        "",
        *PLAIN,
    ]
)


async def held_engine(pilot, models: ScriptedModels, model_id: str):
    """The scripted engine of ``model_id`` once its stream is held (``hold_after``), waiting up to 10 s."""
    engine = None
    for _ in range(200):
        engine = models.engines.get(model_id)
        if engine is not None and engine.holding.is_set():
            break
        await pilot.pause(0.05)
    assert engine is not None and engine.holding.is_set()
    return engine


async def test_final_answer_keeps_each_line_and_still_renders_markdown(tmp_path: Path):
    models = ScriptedModels({"gemma-3-270m": [MIXED], "smollm2-135m-instruct": [MIXED]})
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "walk")
        await wait_idle(pilot, app)
        await pilot.pause(0.3)
        markdown = app.screen.panes[0].turns[0].markdown
        paragraphs = list(markdown.query("MarkdownParagraph"))
        shown = [line for paragraph in paragraphs for line in rendered_lines(paragraph)]
        plain_shown = [line.strip() for line in shown if line.strip() in PLAIN]
        assert plain_shown == PLAIN + PLAIN  # every source line on a line of its own, none merged
        assert markdown.query("MarkdownH2") and markdown.query("MarkdownBulletList")  # still Markdown
        fence = markdown.query_one(MarkdownFence)
        assert fence.code.splitlines() == ["# comment", "dog.sit()"]
        assert "# comment" in "\n".join(rendered_lines(fence.query_one("#code-content")))


async def test_live_answer_draws_lines_inside_a_fence_as_code(tmp_path: Path):
    """While streaming, `# comment` inside an open ``` fence is code, not a heading; plain lines stay apart.

    The scripted stream is held after its first chunk; the rest arrives the way the pane hands it on.
    """
    models = ScriptedModels({"smollm2-135m-instruct": [MIXED]}, hold_after=1)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "walk")
        engine = await held_engine(pilot, models, "smollm2-135m-instruct")
        await pilot.pause(0.2)
        turn = app.screen.panes[1].turns[0]
        assert turn.live is not None and turn.answer == MIXED[:4]
        upto_code = MIXED.index("dog.sit()") + len("dog.sit()\n")
        await turn.write(MIXED[4:upto_code])  # the fence is open: its closing ``` has not arrived
        await pilot.pause(0.1)
        live = turn.live

        def live_lines() -> list[str]:
            return [live.render_line(y).text.rstrip() for y in range(live.text_lines)]

        lines = live_lines()
        assert any(line.strip() == "# comment" for line in lines), lines  # drawn as code, "#" kept
        assert any(line.strip() == "dog.sit()" for line in lines), lines
        assert any(line.strip() == "Steps" for line in lines), lines  # outside the fence: still Markdown
        assert [line.strip() for line in lines if line.strip() in PLAIN] == PLAIN  # each line on its own
        await turn.write(MIXED[upto_code:])  # the fence closes: what follows is Markdown again
        await pilot.pause(0.1)
        lines = live_lines()
        assert [line.strip() for line in lines if line.strip() in PLAIN] == PLAIN + PLAIN
        assert sum(line.strip() == "# comment" for line in lines) == 1
        await pilot.press("escape")  # stop the held stream
        engine.release.set()
        await wait_idle(pilot, app)


@pytest.mark.parametrize(
    "line",
    ["1. **Sit** first, then `stay`", "- a *list* item", "## Steps", "> a quote with ~~strike~~", "| a | b |",
     "a [link](http://x.invalid) & &amp; entity", "plain words"],
)  # fmt: skip
def test_streamed_line_markdown_draws_what_rich_markdown_draws(line: str):
    """The live answer parses its lines with one shared parser; the result must equal Rich's own Markdown."""
    from rich.console import Console
    from rich.markdown import Markdown as RichMarkdown

    from tuitune.tui.widgets.turn import line_markdown

    console = Console(width=50, color_system="truecolor", record=False)
    options = console.options.update_width(50)
    ours = console.render_lines(line_markdown(line), options, pad=True)
    rich_own = console.render_lines(RichMarkdown(line), options, pad=True)
    assert ours == rich_own
    assert line_markdown("other").markup == "other" and line_markdown(line).markup == line  # nothing shared


async def test_following_view_moves_in_steps_and_keeps_the_last_line_in_view(tmp_path: Path):
    """Each scroll repaints the whole pane, so the view follows a third of a screen at a time, not per line."""
    models = ScriptedModels({"smollm2-135m-instruct": ["start\n"]}, hold_after=1)
    app, _ = scripted_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "go")
        pane = app.screen.panes[1]
        engine = await held_engine(pilot, models, "smollm2-135m-instruct")
        turn, container = pane.turns[0], pane.scroller
        positions: list[int] = []
        for index in range(80):  # one new line per update, as a model writing short lines does
            pane.post_message(pane.Streamed(pane, pane._run.id, turn, f"line {index}\n", index + 1, 10.0))
            await pilot.pause(0.03)
            live = turn.live
            last_text_row = live.region.y + live.text_lines - 1
            assert container.region.y <= last_text_row < container.region.bottom, index  # always in view
            positions.append(int(container.scroll_y))
        moves = sum(1 for before, after in itertools.pairwise(positions) if after != before)
        height = container.scrollable_content_region.height
        assert positions[-1] > 40 and moves <= 80 // (height // container.FOLLOW_STEP_FRACTION) + 2, (moves, height)
        await pilot.press("escape")
        engine.release.set()
        await wait_idle(pilot, app)


def test_redraw_pacer_slows_down_while_the_ui_thread_is_busy_and_speeds_up_when_it_is_not():
    """The worker hands text over less often while drawing takes a real share of the UI thread's time."""
    import time

    from tuitune.tui.widgets import pacer

    def busy_for(seconds: float) -> None:  # CPU time on this thread, as drawing would take
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    redraws = pacer.RedrawPacer()
    assert redraws.interval == pacer.SLOWEST_S  # a pane starts at the safe end
    redraws.start()
    redraws.drawn()
    for _ in range(8):  # the UI thread idle between updates: the interval comes down to the fastest
        time.sleep(pacer.SHORTEST_SAMPLE_S * 1.5)
        redraws.drawn()
    assert redraws.interval == pacer.FASTEST_S
    for _ in range(8):  # every update costs the UI thread ~40 % of its time: back to the slowest
        busy_for(pacer.SHORTEST_SAMPLE_S * 0.6)
        time.sleep(pacer.SHORTEST_SAMPLE_S)
        redraws.drawn()
    assert redraws.interval == pacer.SLOWEST_S
