"""One exchange inside a pane: the prompt, the streamed answer (Markdown), and its stats line."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Markdown, Static
from textual.widgets._markdown import MarkdownStream

from tuitune.engines.base import Stats
from tuitune.safe_text import inert


def stats_text(stats: Stats | None, live_tokens: int = 0, live_rate: float | None = None) -> str:
    if stats is None:
        rate = f" · {live_rate:.1f} tok/s" if live_rate else ""
        return f"{live_tokens} tokens{rate}" if live_tokens else "waiting for the first token…"
    parts = [f"{stats.completion_tokens} tokens"]
    if stats.ttft_s is not None:
        parts.append(f"TTFT {stats.ttft_s:.2f} s")
    if stats.decode_tokens_per_s is not None:
        parts.append(f"{stats.decode_tokens_per_s:.1f} tok/s")
    parts.append(stats.finish_reason)
    return " · ".join(parts)


class TurnView(Vertical):
    """Renders a user prompt and a model answer; the answer streams through ``Markdown.get_stream``."""

    def __init__(self, prompt: str, mode: str, answer: str = "", stats: Stats | None = None, error: str | None = None):
        super().__init__(classes="turn")
        self.prompt = prompt
        self.mode = mode
        self.answer = answer
        self.stats = stats
        self.error = error
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        label = "prompt" if self.mode == "raw" else "you"
        yield Static(f"[b]{label}[/b] {escape(inert(self.prompt))}", classes="turn-prompt")
        yield Markdown(inert(self.answer), classes="turn-answer")
        if self.error:
            yield Static(f"[b]error:[/b] {escape(inert(self.error))}", classes="turn-stats error")
        else:
            yield Static(stats_text(self.stats) if self.stats else "", classes="turn-stats")

    @property
    def markdown(self) -> Markdown:
        return self.query_one(Markdown)

    async def write(self, fragment: str) -> None:
        """Append streamed text (already coalesced by the worker)."""
        if not fragment:
            return
        self.answer += fragment
        if self._stream is None:
            self._stream = Markdown.get_stream(self.markdown)
        await self._stream.write(inert(fragment))

    def show_live(self, tokens: int, rate: float | None) -> None:
        self.query_one(".turn-stats", Static).update(stats_text(None, tokens, rate))

    async def finish(self, text: str, stats: Stats | None, error: str | None = None) -> None:
        """Stop streaming and render the full answer once, so code fences and lists come out right."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.answer, self.stats, self.error = text, stats, error
        await self.markdown.update(inert(text))
        stats_widget = self.query_one(".turn-stats", Static)
        if error:
            stats_widget.add_class("error")
            stats_widget.update(f"[b]error:[/b] {escape(inert(error))}")
        else:
            stats_widget.update(stats_text(stats))
