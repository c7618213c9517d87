"""One exchange inside a pane: the prompt, the streamed answer (Markdown), and its stats line."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

if TYPE_CHECKING:
    from textual.widgets import Markdown

from tuitune.engines.base import Stats
from tuitune.safe_text import inert
from tuitune.tui.text import styled


@cache
def _parser():
    """One Markdown parser for every answer: Markdown.append builds a new one per fragment otherwise."""
    from markdown_it import MarkdownIt

    return MarkdownIt("gfm-like")


def stats_text(stats: Stats | None, live_tokens: int = 0, live_rate: float | None = None) -> str:
    if stats is None:
        rate = f" · {live_rate:.1f} tok/s" if live_rate else ""
        return f"{live_tokens} tokens{rate}" if live_tokens else "waiting for the first token…"
    return stats.summary()


class LiveAnswer(Static):
    """The answer while it streams: one widget whose height is reserved ahead of the text.

    Each update then repaints only this widget; the screen is laid out again only when the text outgrows
    the reserved lines (every ~12 lines), instead of on every update.
    """

    SLACK_LINES = 12

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self._reserved = 0

    def show(self, text: str, markdown: bool) -> None:
        width = max(10, self.content_region.width or self.parent.size.width or 40)
        plain = Text(text)
        needed = len(plain.wrap(self.app.console, width)) + (4 if markdown else 0)
        relayout = needed > self._reserved
        if relayout:
            self._reserved = needed + self.SLACK_LINES
            self.styles.height = self._reserved
        if markdown:
            from rich.markdown import Markdown as RichMarkdown

            self.update(RichMarkdown(text), layout=relayout)
        else:
            self.update(plain, layout=relayout)


class TurnView(Vertical):
    """Renders a user prompt and a model answer.

    While tokens arrive the answer is one widget re-rendered as Markdown on each coalesced update: Textual's
    Markdown widget (and ``Markdown.get_stream``) mounts a widget per block, and a rambling base model makes
    hundreds of paragraphs, so re-laying them out every 100 ms starved both the keyboard and the decoder.
    The finished answer is handed to the Markdown widget once, for selection and proper code blocks.
    """

    LIVE_RENDER = "markdown"  # or "text": plain text while streaming

    def __init__(self, prompt: str, mode: str, answer: str = "", stats: Stats | None = None, error: str | None = None):
        super().__init__(classes="turn")
        self.prompt = prompt
        self.mode = mode
        self.answer = answer
        self.stats = stats
        self.error = error
        self._live: Static | None = None

    def compose(self) -> ComposeResult:
        from textual.widgets import Markdown  # imports markdown-it: kept off the startup path

        label = "prompt" if self.mode == "raw" else "you"
        yield Static(styled((label, "bold"), " ", self.prompt), classes="turn-prompt")
        yield Markdown(inert(self.answer), classes="turn-answer", parser_factory=_parser)
        if not self.answer and self.stats is None and self.error is None:
            self._live = LiveAnswer(classes="turn-live")
            yield self._live
        if self.error:
            yield Static(styled(("error: ", "bold"), self.error), classes="turn-stats error")
        else:
            yield Static(stats_text(self.stats) if self.stats else "", classes="turn-stats")

    @property
    def markdown(self) -> Markdown:
        return self.query_one(".turn-answer")  # type: ignore[return-value]

    async def write(self, fragment: str) -> None:
        """Append streamed text (already coalesced by the worker) and re-render the live answer."""
        if not fragment or self._live is None:
            return
        self.answer += fragment
        self._live.show(inert(self.answer), markdown=self.LIVE_RENDER == "markdown")

    def show_live(self, tokens: int, rate: float | None) -> None:
        self.query_one(".turn-stats", Static).update(stats_text(None, tokens, rate), layout=False)  # one line

    async def finish(self, text: str, stats: Stats | None, error: str | None = None) -> None:
        """Stop streaming and render the full answer once, so code fences and lists come out right."""
        self.answer, self.stats, self.error = text, stats, error
        await self.markdown.update(inert(text))
        if self._live is not None:
            await self._live.remove()
            self._live = None
        stats_widget = self.query_one(".turn-stats", Static)
        if error:
            stats_widget.add_class("error")
            stats_widget.update(styled(("error: ", "bold"), error))
        else:
            stats_widget.update(stats_text(stats))
