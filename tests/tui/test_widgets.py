"""Widget tests: one widget mounted alone in a small host app (oterm's pattern), checked on what it draws.

The live answer is fed a long mixed answer chunk by chunk and must agree with the final Markdown render: lines
inside code fences are code while they stream (``# comment`` is not a heading), highlighted as the final
render's code blocks are.
"""

from __future__ import annotations

from typing import Any

import pytest
from rich.style import Style as RichStyle
from textual.app import App, ComposeResult
from textual.widget import Widget
from textual.widgets import Markdown, Static

from tuitune.catalog import ModelEntry, load_catalog
from tuitune.engines.base import Stats
from tuitune.safe_text import inert
from tuitune.tui.widgets.loss_chart import LossChart
from tuitune.tui.widgets.pane import ComparePane
from tuitune.tui.widgets.turn import LiveAnswer, TurnView, _parser

pytestmark = pytest.mark.anyio

SIZE = (72, 90)


class Host(App):
    """Mounts one widget; answers the two app calls a pane makes (its catalog entry) from the real catalog."""

    def __init__(self, widget: Widget) -> None:
        super().__init__()
        self.widget = widget
        self.catalog = load_catalog()

    def compose(self) -> ComposeResult:
        yield self.widget

    def catalog_entry(self, model_id: str) -> ModelEntry | None:
        return self.catalog.get(model_id) if model_id in self.catalog else None


MIXED = """# Training notes

Some *emphasis*, a `call()` and plain words.
- first item
- second item with **bold**

## Steps

```python
# comment
## not a heading
def sit(dog):
    return dog.sit()  # trailing

    # a blank line above, still code
```

Between the fences.

~~~
# tilde fence heading-looking
- not a list
~~~

````text
```
# inside four backticks
```
````

  ```js
  // an indented fence loses its indent
    deeper();
  ```

> a quote

Text after the fences.
```python
x = 1  # an unclosed fence at the end
"""


def screen_rows(app: App, code_bg: Any) -> list[tuple[str, Any]]:
    """What the screen shows, row by row: code rows as (text, styled words) with the block's own indentation
    kept, other non-blank rows as their stripped text. A row is code when most of its cells have the code
    background."""
    rows: list[tuple[str, Any]] = []
    code_rows: list[tuple[str, list[tuple[str, str | None, bool]]]] = []
    for strip in app.screen._compositor.render_strips():
        cells = sum(len(seg.text) for seg in strip)
        on_code = sum(len(seg.text) for seg in strip if seg.style and seg.style.bgcolor == code_bg)
        if on_code * 2 > cells:
            words = [(seg.text.strip(), color_name(seg.style), bool(seg.style and seg.style.bold)) for seg in strip]
            code_rows.append((strip.text.rstrip(), [word for word in words if word[0]]))
            rows.append(("code", len(code_rows) - 1))
        elif strip.text.strip():
            rows.append(("text", strip.text.strip()))
    offset = min((len(text) - len(text.lstrip()) for text, _ in code_rows if text.strip()), default=0)
    return [(kind, (code_rows[value][0][offset:], code_rows[value][1]) if kind == "code" else value)
            for kind, value in rows]  # fmt: skip


def color_name(style: RichStyle | None) -> str | None:
    return style.color.name if style and style.color else None


async def test_live_answer_keeps_code_block_context_and_agrees_with_the_final_render():
    """Streamed in 9-character chunks: inside a fence `# comment` is highlighted code, never a heading, and the
    finished live render equals the final Markdown render, code rows segment for segment (text, colour, bold)."""
    live = LiveAnswer()
    app = Host(live)
    async with app.run_test(size=SIZE) as pilot:
        code_bg = live.get_component_rich_style("live-answer--code").bgcolor
        inside = MIXED.index("def sit")  # the ```python fence is open, `# comment` and `## not...` have arrived
        seen_mid_stream = False
        for end in range(9, len(MIXED) + 9, 9):
            live.show(inert(MIXED[:end]), markdown=True)
            if end >= inside and not seen_mid_stream:
                seen_mid_stream = True
                await pilot.pause()
                rows = screen_rows(app, code_bg)
                code = [value[0].strip() for kind, value in rows if kind == "code"]
                assert "# comment" in code and "## not a heading" in code, rows
                texts = [value for kind, value in rows if kind == "text"]
                assert "comment" not in texts and "not a heading" not in texts, texts  # not drawn as headings
                assert texts[-1] == "Steps"
        await pilot.pause()
        live_rows = screen_rows(app, code_bg)
    final = Markdown(inert(MIXED), parser_factory=_parser)
    app = Host(final)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        final_rows = screen_rows(app, code_bg)
    code_texts = [value[0] for kind, value in final_rows if kind == "code"]
    assert "# inside four backticks" in code_texts and "- not a list" in code_texts  # the test's premise
    assert "// an indented fence loses its indent" in code_texts and "  deeper();" in code_texts
    assert live_rows == final_rows


async def test_turn_view_streams_then_shows_the_final_answer_and_its_stats():
    turn = TurnView("Say hi", "chat")
    app = Host(turn)
    async with app.run_test(size=(60, 20)) as pilot:
        assert turn.live is not None
        await turn.write("Hello \x1b[31mthere\n```py\n# not a heading")
        await pilot.pause()
        drawn = [turn.live.render_line(y).text.rstrip() for y in range(turn.live.text_lines)]
        assert drawn[0] == "Hello ␛[31mthere"  # inert: the escape is shown, not obeyed
        assert "  # not a heading" in drawn
        for y in range(turn.live.text_lines):  # a line break inside a row would move a real terminal's cursor
            assert not any(ch in segment.text for segment in turn.live.render_line(y) for ch in "\n\r\x1b")
        assert "you Say hi" in str(turn.query_one(".turn-prompt", Static).render())
        stats = Stats(completion_tokens=7, decode_tokens_per_s=12.5, seed=3)
        await turn.finish(turn.answer + "\n```", stats)
        await pilot.pause()
        assert turn.live is None and not list(turn.query(LiveAnswer))
        assert "# not a heading" in turn.markdown.source and turn.markdown.query("MarkdownFence")
        shown = str(turn.query_one(".turn-stats", Static).render())
        assert "7 tokens" in shown and "12.5 tok/s" in shown and "seed 3" in shown


async def test_turn_view_shows_an_error_in_place_of_the_stats():
    turn = TurnView("hi", "raw")
    app = Host(turn)
    async with app.run_test(size=(60, 12)) as pilot:
        await turn.finish("partial", None, error="the server closed the connection")
        await pilot.pause()
        stats = turn.query_one(".turn-stats", Static)
        assert stats.has_class("error") and str(stats.render()) == "error: the server closed the connection"
        assert "prompt hi" in str(turn.query_one(".turn-prompt", Static).render())  # raw mode labels a prompt


@pytest.mark.parametrize(
    ("state", "details", "label", "colour"),
    [("loading", {"fraction": 0.42}, "loading 42%", "yellow"), ("reading", {"done": 30, "total": 120}, "reading 25%", "yellow"),
     ("generating", {"tokens": 5}, "generating", "green"), ("error", {"detail": "model file missing"}, "error", "red")],
)  # fmt: skip
async def test_pane_header_shows_the_pane_state(state: str, details: dict[str, Any], label: str, colour: str):
    pane = ComparePane(0, "smollm2-135m-instruct", "chat")
    app = Host(pane)
    async with app.run_test(size=(80, 16)) as pilot:
        header = pane.query_one(".pane-header", Static)
        assert "not loaded" in str(header.render())
        pane._set_state(state, **details)
        await pilot.pause()
        text = header.render()
        assert str(text).startswith(f"A  CHAT  {label} smollm2-135m-instruct"), str(text)
        spans = [span for span in text.spans if str(text)[span.start : span.end].strip() == label]
        assert spans and colour in str(spans[0].style)
        if state == "error":
            assert "model file missing" in str(pane.query_one(".pane-status", Static).render())


async def test_loss_chart_draws_the_curves_axes_and_legend():
    chart = LossChart()
    app = Host(chart)
    async with app.run_test(size=(60, 14)) as pilot:
        assert "appears here once the first step" in str(chart.render())
        rows = [{"step": step, "loss": 3.0 - step * 0.2} for step in range(1, 11)]
        rows += [{"step": 5, "eval_loss": 2.5}, {"step": 10, "eval_loss": 1.75}, {"step": 11, "loss": float("nan")}]
        chart.show(rows, total_steps=20)
        await pilot.pause()
        lines = str(chart.render()).splitlines()
        assert lines[0].startswith("  2.800│") and lines[9].startswith("  1.000│")  # max and min loss
        assert lines[-2].startswith("       └─") and "step 1 " in lines[-1]  # the axis, then the step range
        assert lines[-1].endswith("step 20  • train 1.0000   ◆ validation 1.7500")  # up to total_steps, the legend
        plot = "\n".join(lines[:10])
        assert plot.count("•") == 10 and plot.count("◆") == 2  # the NaN row is skipped
