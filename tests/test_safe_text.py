"""Model output never reaches the terminal with live control sequences."""

from __future__ import annotations

import io
import json

from tuitune.cli import Style, _print_result
from tuitune.compare import Result
from tuitune.safe_text import inert, safe_json

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
