"""Build display text from untrusted pieces without markup parsing.

Escaping markup with ``escape`` is not enough (Textual reads ``[$accent]``, ``[B]`` and ``[ b]`` as styles
even after it), so text that comes from models, catalogs, files or history is assembled as Rich ``Text``
with explicit styles, and made inert (no terminal control characters) on the way in.
"""

from __future__ import annotations

from rich.text import Text

from tuitune.safe_text import inert

Part = str | tuple[str, str]


def literal_markup(text: str) -> str:
    """``text`` made inert and escaped so that Textual markup shows it exactly (palette titles, markup toasts).

    Unlike ``escape``, every ``[`` is escaped, so ``[$accent]``, ``[B]`` and ``[ b]`` stay literal too.
    """
    return inert(text).replace("[", "\\[")


def styled(*parts: Part) -> Text:
    """``styled(("A", "bold"), " ", model_id, (" RAW ", "reverse"))`` — every piece shown literally."""
    text = Text()
    for part in parts:
        if isinstance(part, tuple):
            content, style = part
            text.append(inert(content), style=style)
        else:
            text.append(inert(part))
    return text
