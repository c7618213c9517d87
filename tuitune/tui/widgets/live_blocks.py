"""Block state carried across the lines of a streaming answer: which code fence is open, and how its lines draw.

The live answer renders one source line at a time (incremental: a line is rendered once, when it is complete), so
what a line means inside a multi-line block has to travel with the line boundary. Only fences are tracked: inside
one a ``# comment`` is code, not a heading. The rules are CommonMark's, as markdown-it (the final render) applies
them, so the live answer and the finished one agree line for line.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pygments.lexer import Lexer
    from textual.content import Content

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")


class Fence(NamedTuple):
    """An open code fence: its marker (closing needs the same character, at least as many), the spaces before it
    (removed from its code lines, as CommonMark does) and its language (the info string's first word)."""

    marker: str
    indent: int
    language: str


def line_kind(line: str, fence: Fence | None) -> tuple[str, Fence | None]:
    """How a source line is drawn — "markdown", "code" or "fence" (a fence's own line) — given the fence open
    before it, and the fence open after it. CommonMark: up to three spaces, then three or more backticks or
    tildes; a backtick fence's info string has no backtick; a closing marker is at least as long as the opening
    one, of the same character, with only spaces after it."""
    match = _FENCE.match(line)
    if fence is None:
        if match is None or (match[2][0] == "`" and "`" in match[3]):  # ```a`b``` is inline code, not a fence
            return "markdown", None
        info = match[3].strip()
        return "fence", Fence(match[2], len(match[1]), info.split()[0] if info else "")
    marker = match[2] if match is not None else ""
    if marker and marker[0] == fence.marker[0] and len(marker) >= len(fence.marker) and not match[3].strip():
        return "fence", None
    return "code", fence


def code_line(line: str, fence: Fence) -> str:
    """The code a line inside ``fence`` holds: up to the fence's own indentation removed, as markdown-it does."""
    spaces = len(line) - len(line.lstrip(" "))
    return line[min(spaces, fence.indent) :]


def highlighted(code: str, language: str, ansi: bool, dark: bool) -> Content:
    """One code line highlighted as the final render's code block highlights it (Textual's ``highlight``, with
    MarkdownFence's themes), with the lexer built once per language: looking it up cost more than the rest of
    an update. A fence without a language is plain text here: the final render guesses the language from the
    whole block (Pygments' guess_lexer tries every lexer), too slow for a line drawn ten times a second."""
    from textual.content import Content, Span

    styles, lexer = _theme_styles(ansi, dark), _lexer(language or "text")
    spans, start = [], 0
    for token_type, token in lexer.get_tokens(code):
        end = start + len(token)
        kind = token_type
        while kind is not None:
            if style := styles.get(kind):
                spans.append(Span(start, end, style))
                break
            kind = kind.parent
        start = end
    return Content(code, spans=spans).stylize_before("$text")


@cache
def _lexer(language: str) -> Lexer:
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        return get_lexer_by_name(language, stripnl=False, ensurenl=True, tabsize=8)
    except ClassNotFound:
        return get_lexer_by_name("text", stripnl=False, ensurenl=True, tabsize=8)


def _theme_styles(ansi: bool, dark: bool) -> dict:
    """The token styles MarkdownFence.highlight picks for this app's colours."""
    from textual import highlight

    if not ansi:
        return highlight.HighlightTheme.STYLES
    return (highlight.ANSIDarkHighlightTheme if dark else highlight.ANSILightHighlightTheme).STYLES
