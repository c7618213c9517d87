"""Model, server and file text never reaches the terminal with live control, bidi or hiding characters."""

from __future__ import annotations

import io
import json
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from textual.content import Content
from textual.screen import Screen

from tests.support.pilot import scripted_app
from tuitune.cli import Style, _print_result
from tuitune.compare import Result
from tuitune.safe_text import inert, safe_json
from tuitune.tui.text import styled

pytestmark = pytest.mark.anyio

HOSTILE = "ok\x1b]52;c;cm0gLXJmIH4=\x07 then \x1b[2J\x1b[31mred\x9b31m \x07bell\r\nnext\rover"


def test_inert_keeps_text_and_newlines_but_no_controls():
    shown = inert(HOSTILE)
    assert not any((ord(ch) < 0x20 and ch not in "\n\t") or 0x7F <= ord(ch) <= 0x9F for ch in shown)
    assert "␛]52;c;cm0gLXJmIH4=␇" in shown and "␛[2J" in shown and "<0x9b>" in shown
    assert "bell\nnext␍over" in shown


def test_safe_json_escapes_c1_controls_and_round_trips():
    text = safe_json({"text": HOSTILE})
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in text)
    assert json.loads(text)["text"] == HOSTILE


def test_printed_result_is_inert():
    out = io.StringIO()
    _print_result(Result("scripted", "raw", text=HOSTILE), out, Style(out))
    printed = out.getvalue()
    assert "\x1b" not in printed and "\x9b" not in printed and "\x07" not in printed
    assert "red" in printed


# -- bidi, format and other hiding characters ------------------------------------------------------

# Every kind of character that acts on a terminal or hides or reorders what is shown, and markup that must
# stay literal where text is shown literally.
EVERYTHING = (
    HOSTILE + " \u202eevil\u202c \u202a\u202b\u202d \u2066iso\u2067\u2068\u2069 \u061c \u200b\u200e\u200f"
    " \u2028 \u2029 \ufeff \u2060 \u180e \U000e0001\U000e0041\U000e007f \x85\x9d \ud800 [b]not bold[/b] [$accent]x"
)
ALLOWED_FORMAT = {"\u00ad", "\u200c", "\u200d"}  # soft hyphen, zero-width (non-)joiner: scripts and emoji need them
FLAG = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")


def unsafe(text: str) -> list[str]:
    """Characters that act on a terminal or hide or reorder text (a flag's tag sequence is allowed)."""
    text = FLAG.sub("", text)
    return [
        ch
        for ch in text
        if (unicodedata.category(ch) == "Cc" and ch not in "\n\t")
        or (unicodedata.category(ch) in ("Cf", "Zl", "Zp", "Cs") and ch not in ALLOWED_FORMAT)
    ]


def test_inert_shows_bidi_and_hidden_characters_as_stand_ins():
    shown = inert(EVERYTHING)
    assert unsafe(shown) == []
    for stand_in in ("<U+202E>evil<U+202C>", "<U+2066>iso<U+2067><U+2068><U+2069>", "<U+061C>", "<U+200B>",
                     "<U+2028>", "<U+2029>", "<U+FEFF>", "<U+E0041>", "<0x85>", "<U+D800>"):  # fmt: skip
        assert stand_in in shown
    assert "[b]not bold[/b] [$accent]x" in shown  # inert is about the terminal; markup is the widgets' business


def test_every_control_and_format_character_is_made_visible():
    for code in range(0x110000):
        ch = chr(code)
        if unsafe(ch):
            assert not unsafe(inert(ch)), hex(code)


def test_ordinary_non_ascii_text_is_untouched():
    text = "café naïve Straße 東京 한국어 עברית العربية 👍🏽 👨‍👩‍👧 🏴󠁧󠁢󠁳󠁣󠁴󠁿 🇫🇷 Zwei\u00adwort नमस्ते\u200d\ttab\nnext"
    assert inert(text) == text
    assert json.loads(safe_json(text)) == text and "👨‍👩‍👧" in safe_json(text)


def test_safe_json_escapes_bidi_and_hidden_characters_and_round_trips():
    text = safe_json({"text": EVERYTHING, EVERYTHING: 1})
    assert unsafe(text) == []
    assert json.loads(text) == {"text": EVERYTHING, EVERYTHING: 1}
    assert "\\u202e" in text and "\\udb40\\udc41" in text  # a tag character beyond the BMP: a surrogate pair


HIDING = st.sampled_from([*"\x1b\x07\r\x85\x9b\u202a\u202e\u2066\u2069\u061c\u200b\u200e\u2028\ufeff\U000e0041"])
# (a list joined, not st.text: st.text merges an alphabet of several strategies and loses the sampled ones)
ANY_TEXT = st.lists(st.one_of(st.characters(), st.characters(codec=None, categories=["Cs"]), HIDING)).map("".join)


@settings(max_examples=500, deadline=None)
@given(ANY_TEXT)
def test_property_inert_leaves_nothing_that_acts_on_a_terminal(text: str):
    shown = inert(text)
    assert unsafe(shown) == []
    assert inert(shown) == shown  # idempotent: text made inert twice reads the same


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_property_safe_json_is_inert_and_reads_back(text: str):
    # JSON cannot tell two lone surrogates (high, low) from the one character they spell as a pair
    assume(not re.search("[\ud800-\udbff][\udc00-\udfff]", text))
    encoded = safe_json({"t": text})
    assert unsafe(encoded) == [] and json.loads(encoded) == {"t": text}


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cc", "Cf", "Cs", "Zl", "Zp"])))
def test_property_text_without_controls_is_kept(text: str):
    assert inert(text) == text


# -- the TUI's text builders ----------------------------------------------------------------------


def test_styled_and_literal_markup_show_everything_literally():
    from tuitune.tui.text import literal_markup

    text = styled(("model ", "bold"), EVERYTHING, (EVERYTHING, "dim"))
    assert unsafe(text.plain) == [] and text.plain == "model " + inert(EVERYTHING) * 2
    content = Content.from_markup(literal_markup(EVERYTHING))
    assert content.plain == inert(EVERYTHING) and not content.spans


class HostileScreen(Screen):
    """A screen whose palette commands name a hostile model (as a catalog or a server might)."""

    def palette_commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        return [(f"Chat with {EVERYTHING}", f"help {EVERYTHING}", lambda: None)]


async def test_every_toast_title_and_palette_entry_is_inert(tmp_path: Path):
    from textual.widgets._toast import Toast

    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(160, 50), notifications=True) as pilot:
        app.notify(EVERYTHING, title=EVERYTHING, markup=False, timeout=30)
        app.screen.notify(f"error: {EVERYTHING}", severity="error", markup=False, timeout=30)  # a widget's notify
        app.notify(styled(("model ", "bold"), EVERYTHING), timeout=30)
        app.notify("Press [b]ctrl+q[/b] to quit", timeout=30)  # trusted markup still works
        await pilot.pause()
        notes = list(app._notifications)
        assert [n.message for n in notes] == [inert(EVERYTHING), f"error: {inert(EVERYTHING)}",
                                             f"model {inert(EVERYTHING)}", "Press [b]ctrl+q[/b] to quit"]  # fmt: skip
        assert notes[0].title == inert(EVERYTHING)
        for _ in range(40):  # the toast rack mounts its toasts a few messages later
            if len(app.screen.query(Toast)) == 4:
                break
            await pilot.pause(0.05)
        shown = [toast.render().plain for toast in app.screen.query(Toast)]
        assert len(shown) == 4 and all(unsafe(text) == [] for text in shown)
        assert "[b]not bold[/b]" in shown[0] and shown[-1] == "Press ctrl+q to quit"

        app.title, app.sub_title = f"tuitune {EVERYTHING}", EVERYTHING
        assert unsafe(app.format_title(app.title, app.sub_title).plain) == []

        await app.push_screen(HostileScreen())
        ours = [c for c in app.get_system_commands(app.screen) if c.title.startswith("Chat with")]
        assert len(ours) == 1
        for markup, expected in ((ours[0].title, f"Chat with {EVERYTHING}"), (ours[0].help, f"help {EVERYTHING}")):
            content = Content.from_markup(markup)
            assert content.plain == inert(expected) and not content.spans
