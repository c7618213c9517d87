"""One exchange inside a pane: the prompt, the streamed answer (Markdown), and its stats line."""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import TYPE_CHECKING

from rich.segment import Segment
from rich.style import Style as RichStyle
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.rules_core import StateCore
    from rich.markdown import Markdown as RichMarkdown
    from textual.style import Style
    from textual.widgets import Markdown

from tuitune.engines.base import Stats
from tuitune.safe_text import inert
from tuitune.tui.text import styled
from tuitune.tui.widgets.live_blocks import Fence, code_line, highlighted, line_kind


@cache
def _parser() -> MarkdownIt:
    """One Markdown parser for every answer: Markdown.append builds a new one per fragment otherwise.

    A line break in an answer stays a line break (as chat apps show it), not a space: a base model's repeated
    lines are what the comparison is there to show, and must not merge into one paragraph when the answer
    finishes. markdown-it's ``breaks`` option only changes its HTML output, and Textual's Markdown widget draws
    a soft break as a space but a hard break as a new line, so a core rule turns soft breaks into hard ones.
    """
    from markdown_it import MarkdownIt

    parser = MarkdownIt("gfm-like", {"breaks": True})
    parser.core.ruler.push("soft_breaks_as_hard", _soft_breaks_as_hard)
    return parser


def _soft_breaks_as_hard(state: StateCore) -> None:
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type, child.tag = "hardbreak", "br"


_MARKUP_CHARACTERS = frozenset("*_`#[]!<>|~\\&=")
_BLOCK_START = re.compile(r"\s*(?:[-+*>#|]|\d+[.)])")


def _has_markup(line: str) -> bool:
    """Whether a line may render differently as Markdown than as plain text: emphasis, code, links, HTML and
    entities, or a block start (list, quote, heading, table, indented code). The streaming tail is drawn ten
    times a second, and building Rich's Markdown parser for it cost more than the rest of an update."""
    return not _MARKUP_CHARACTERS.isdisjoint(line) or line.startswith("    ") or _BLOCK_START.match(line) is not None


@cache
def _line_markdown_parts() -> tuple[RichMarkdown, MarkdownIt]:
    from markdown_it import MarkdownIt
    from rich.markdown import Markdown as RichMarkdown

    return RichMarkdown(""), MarkdownIt().enable("strikethrough").enable("table")  # the parser Rich builds


def line_markdown(line: str) -> RichMarkdown:
    """Rich's Markdown of one streamed line, parsed by one shared parser. Rich builds a new markdown-it parser
    for every Markdown it makes (about 1 ms, more than drawing the line), and the growing last line of an
    answer is drawn up to ten times a second. Same output as ``rich.markdown.Markdown(line)`` (a test compares)."""
    template, parser = _line_markdown_parts()
    markdown = copy.copy(template)
    markdown.markup, markdown.parsed = line, parser.parse(line)
    return markdown


def stats_text(stats: Stats | None, live_tokens: int = 0, live_rate: float | None = None) -> str:
    if stats is None:
        rate = f" · {live_rate:.1f} tok/s" if live_rate else ""
        return f"{live_tokens} tokens{rate}" if live_tokens else "waiting for the first token…"
    seed = f" · seed {stats.seed}" if stats.seed is not None else ""  # which sample this is (regenerate moves it)
    return stats.summary() + seed


class LiveAnswer(Widget):
    """The answer while it streams, drawn line by line from a cache (Textual's line API).

    Text arrives as the whole answer so far. Source lines that are complete never change, so their rendered
    strips are kept and only the last, growing line is rendered again; only the screen lines that changed
    are marked dirty. Height is reserved a screenful ahead of the text (the pane scrolls to the last text
    line, not to the end of the reservation), so the screen is laid out again once per screenful of text,
    not on every update: a layout re-arranges every widget on the screen. Each line is rendered as Markdown
    on its own (emphasis, lists, headings), except inside a code fence, which is tracked across lines: there
    a line is drawn as code (a ``# comment`` is not a heading), highlighted line by line with the final render's
    theme (widgets/live_blocks.py). Each source line starts a screen line, as in
    the finished answer, which goes to the Markdown widget, which sees the whole document.
    """

    DEFAULT_CSS = """
    LiveAnswer { height: auto; }
    LiveAnswer > .live-answer--code { color: rgb(210,210,210); background: black 10%; }
    LiveAnswer:light > .live-answer--code { background: white 30%; }
    """
    COMPONENT_CLASSES = {"live-answer--code"}  # code lines' colours, as Textual's MarkdownFence has
    MIN_SLACK_LINES = 8
    CODE_INDENT = "  "  # as the finished answer's code blocks

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._width = 0
        self._markdown = True
        self._done_sources: list[str] = []  # complete source lines, rendered once
        self._done_strips: list[Strip] = []
        self._tail_strips: list[Strip] = []
        self._fence: Fence | None = None  # the code fence open after the complete lines
        self._code_style: tuple[RichStyle, Style] | None = None  # code lines' style, Rich's and Textual's
        self._code_pad: Strip | None = None  # a code block's blank padding line, at this width
        self._reserved = 0

    def _render_source(self, line: str, kind: str = "markdown", fence: Fence | None = None) -> list[Strip]:
        if kind == "code" and fence is not None:  # one screen line, not wrapped, as a code block shows it
            return [self._code_strip(code_line(line, fence), fence.language)]
        if kind in ("code", "fence"):  # a fence's own line: the code block's blank padding line
            return [self._code_strip("", "")]
        if not line.strip():
            return [Strip.blank(self._width)]
        if self._markdown and _has_markup(line):
            renderable = line_markdown(line)
        else:  # plain prose draws the same as its Markdown paragraph, without a parser built per update
            renderable = Text(line.strip() if self._markdown else line)
        console = self.app.console
        options = console.options.update_width(self._width)
        strips = [Strip(segments, self._width) for segments in console.render_lines(renderable, options, pad=True)]
        # Rich puts blank lines around some blocks (after a list item, around a heading); the answer's own blank
        # lines space it out, as in the finished view, where consecutive list items have none between them.
        drawn = [index for index, strip in enumerate(strips) if strip.text.strip()]
        return strips[drawn[0] : drawn[-1] + 1] if drawn else strips[:1]

    def _code_strip(self, code: str, language: str) -> Strip:
        """A code line drawn as the final render's code block draws it: indented, highlighted, on its background.

        Content's segments directly (the widget resolves the theme's ``$text`` variables): Textual's Visual pipeline
        for one line cost more than the highlighting. The blank padding line is drawn once per width."""
        from textual.content import Content
        from textual.style import Style

        if self._code_style is None:
            rich_style = self.get_component_rich_style("live-answer--code")
            self._code_style = (rich_style, Style.from_rich_style(rich_style))
        rich_style, style = self._code_style
        if not code and self._code_pad is not None:
            return self._code_pad
        content = Content(self.CODE_INDENT) + highlighted(
            code, language, self.app.native_ansi_color, self.app.current_theme.dark
        )
        rendered = content.render(style, end="", parse_style=self._get_style)  # end: a row holds no line break
        segments = [Segment(text, part.rich_style) for text, part in rendered]
        strip = Strip(segments).crop_extend(0, self._width, rich_style)
        if not code:
            self._code_pad = strip
        return strip

    @property
    def text_lines(self) -> int:
        """Screen lines of text drawn so far (the reserved lines below them are blank)."""
        return len(self._done_strips) + len(self._tail_strips)

    def show(self, text: str, markdown: bool, slack: int = 0) -> None:
        width = max(10, self.content_region.width or self.parent.size.width or 40)
        if width != self._width or markdown != self._markdown:  # re-wrap everything at a new width
            self._width, self._markdown = width, markdown
            self._done_sources, self._done_strips, self._fence = [], [], None
            self._code_style = self._code_pad = None
        *complete, tail = text.split("\n")
        first_dirty = len(self._done_strips)
        for line in complete[len(self._done_sources) :]:
            self._done_sources.append(line)
            before = self._fence
            kind, self._fence = line_kind(line, before) if markdown else ("text", None)
            self._done_strips.extend(self._render_source(line, kind, before))
        kind, after = line_kind(tail, self._fence) if markdown else ("text", None)
        self._tail_strips = self._render_source(tail, kind, self._fence) if tail else []
        if after is not None:  # an open fence draws its closing padding line, as the final render of one does
            self._tail_strips.append(self._code_strip("", ""))
        total = self.text_lines
        if total > self._reserved:
            self._reserved = total + max(slack, self.MIN_SLACK_LINES)
            self.styles.height = self._reserved  # a layout, once per reservation
        else:
            self.refresh(Region(0, first_dirty, self.size.width, total - first_dirty + 1))

    def render_line(self, y: int) -> Strip:
        done = self._done_strips
        if y < len(done):
            strip = done[y]
        elif y - len(done) < len(self._tail_strips):
            strip = self._tail_strips[y - len(done)]
        else:
            return Strip.blank(self.size.width, self.rich_style)
        return strip.apply_style(self.rich_style)


class TurnView(Vertical):
    """Renders a user prompt and a model answer.

    While tokens arrive the answer is one widget re-rendered as Markdown on each coalesced update: Textual's
    Markdown widget (and ``Markdown.get_stream``) mounts a widget per block, and a rambling base model makes
    hundreds of paragraphs, so re-laying them out on every update starved both the keyboard and the decoder.
    The finished answer is handed to the Markdown widget once, for selection and proper code blocks.
    """

    LIVE_RENDER = "markdown"  # or "text": plain text while streaming

    def __init__(
        self,
        prompt: str,
        mode: str,
        answer: str = "",
        stats: Stats | None = None,
        error: str | None = None,
        number: int = 0,
    ):
        super().__init__(classes="turn")
        self.number = number  # the conversation's turn (one per prompt sent to every pane), as History stores it
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

    @property
    def live(self) -> LiveAnswer | None:
        return self._live

    async def write(self, fragment: str, slack: int = 0) -> None:
        """Append streamed text (already coalesced by the worker) and re-render the live answer.

        ``slack``: how many blank lines to reserve below the text when it outgrows its reservation.
        """
        if not fragment or self._live is None:
            return
        self.answer += fragment
        self._live.show(inert(self.answer), markdown=self.LIVE_RENDER == "markdown", slack=slack)

    async def finish(self, text: str, stats: Stats | None, error: str | None = None) -> None:
        """Stop streaming and render the full answer once, so code fences and lists come out right."""
        self.answer, self.stats, self.error = text, stats, error
        await self.markdown.update(inert(text))
        if self._live is not None:
            await self._live.remove()
            self._live = None
        stats_widget = next(iter(self.query(".turn-stats").results(Static)), None)
        if stats_widget is None:  # the turn was removed while the answer was rendered (a new conversation)
            return
        if error:
            stats_widget.add_class("error")
            stats_widget.update(styled(("error: ", "bold"), error))
        else:
            stats_widget.update(stats_text(stats))
