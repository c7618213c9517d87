"""Make untrusted model output inert before it reaches a terminal.

A model can emit ESC sequences (CSI, OSC 52 clipboard writes, title changes) or C1 controls; printed raw
they would act on the user's terminal. Control characters other than newline and tab are shown as
visible symbols instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # the Unicode "control pictures" block: ESC → ␛
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"<{code:#04x}>"  # C1 controls have no picture


def inert(text: str) -> str:
    """``text`` with every terminal control character replaced by a visible stand-in."""
    return _CONTROL.sub(_visible, text.replace("\r\n", "\n"))


def safe_json(value: Any, **kwargs: Any) -> str:
    """JSON that is safe to print: json escapes C0 controls itself; C1 controls are escaped here too."""
    text = json.dumps(value, ensure_ascii=False, **kwargs)
    return re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text)
