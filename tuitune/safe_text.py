"""Make untrusted text inert before it reaches a terminal: every string bound for one passes ``inert``.

A model, a server or a file can emit ESC sequences (CSI, OSC 52 clipboard writes, title changes) or C1
controls; printed raw they would act on the user's terminal. Bidi overrides and isolates (U+202E…) and other
invisible format characters reorder or hide text, so what is shown is not what is there ("Trojan Source",
hidden prompt text in tag characters). All of these are shown as visible stand-ins instead. Newline, tab and
ordinary text in any script (accents, CJK, emoji, joined emoji, flags) are kept as they are.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 but newline and tab; DEL and C1; lone surrogates (unprintable, and a UnicodeEncodeError on print); the
# line and paragraph separators; every format (Cf) character but the soft hyphen and the zero-width
# (non-)joiners, which emoji sequences and several scripts need and which neither reorder nor hide text.
_UNSAFE = (
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff"
    "\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f]"
)
# Tag characters are kept only where an emoji needs them: a subdivision flag (🏴 + tags + cancel tag).
_FLAG = "\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f"
_PATTERN = re.compile(f"({_FLAG})|{_UNSAFE}")


def _visible(code: int) -> str:
    if code < 0x20:
        return chr(0x2400 + code)  # the Unicode "control pictures" block: ESC → ␛
    if code == 0x7F:
        return "\u2421"  # ␡
    if code <= 0x9F:
        return f"<{code:#04x}>"  # C1 controls have no picture
    return f"<U+{code:04X}>"


def _replace(match: re.Match[str]) -> str:
    return match.group(1) or _visible(ord(match.group()))


def inert(text: str) -> str:
    """``text`` with every terminal control and hiding or reordering character replaced by a visible stand-in.

    Idempotent: the stand-ins are plain printable text, so inert text passed again comes back unchanged.
    """
    return _PATTERN.sub(_replace, text.replace("\r\n", "\n"))


def _json_escape(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1)
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells a character beyond the BMP as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def safe_json(value: Any, **kwargs: Any) -> str:
    """JSON that is safe to print and reads back the same: json escapes C0 itself, the rest are escaped here."""
    return _PATTERN.sub(_json_escape, json.dumps(value, ensure_ascii=False, **kwargs))
