"""Write an Ollama Modelfile whose values read back exactly, whatever text the GGUF or the catalog holds.

Ollama's Modelfile has no escape sequences. A value runs to the end of its line; a value in ``"…"`` or
``\"\"\"…\"\"\"`` may span lines and ends at the first line break where the text so far (trimmed) is a complete quoted
string. Characters Go's ``strconv.IsPrint`` rejects (controls but tab and line breaks, format characters) are
silently dropped. So a stop token such as ``a"`` + newline + ``FROM evil`` would end its value early and inject an
instruction. Every value is therefore quoted, and each candidate quoting is checked by replaying Ollama's rule for
where a value ends; text that no quoting can carry is refused, never written half-way.
"""

from __future__ import annotations

# Go's unicode.IsSpace for the characters strings.TrimSpace removes.
_GO_SPACE = "\t\n\v\f\r \x85\xa0"
_LINE_BREAKS = "\r\n"


def _unquote(text: str) -> str | None:
    """Ollama's unquote: the value of a complete (possibly quoted) string, None while a quote is still open."""
    if text.startswith('"""'):
        return text[3:-3] if len(text) >= 6 and text.endswith('"""') else None
    if text.startswith('"'):
        return text[1:-1] if len(text) >= 2 and text.endswith('"') else None
    return text


def _read_back(encoded: str) -> str | None:
    """The value Ollama reads from ``encoded`` + newline, or None when it would end before the last line break."""
    text = encoded + "\n"
    for index, char in enumerate(text):
        if char in _LINE_BREAKS:
            value = _unquote(text[:index].strip(_GO_SPACE))
            if value is not None:
                return value if index == len(text) - 1 else None
    return None


def _carried(char: str) -> bool:
    """Whether Ollama's parser keeps ``char`` inside a value (Python's isprintable matches Go's IsPrint)."""
    return char.isprintable() or char in " \t\r\n"


def quote(value: str) -> str | None:
    """``value`` quoted so that Ollama reads exactly it back, or None when no quoting can."""
    if not all(_carried(char) for char in value):
        return None
    for candidate in (f'"{value}"', f'"""{value}"""'):
        if _read_back(candidate) == value:
            return candidate
    return None


def comment(text: str) -> str:
    """A ``#`` comment line: line breaks become spaces and dropped characters a '?', so it stays one comment."""
    flat = "".join(" " if char in _LINE_BREAKS else char if _carried(char) else "?" for char in text)
    return f"# {flat}".rstrip()


def render(base: str, adapter: str | None, stops: list[str], notes: list[str]) -> tuple[str, list[str]]:
    """The Modelfile text, and the stop tokens left out because no quoting carries them.

    ``base`` and ``adapter`` are paths as they must appear (absolute, or relative to the Modelfile's folder);
    no ``adapter`` (a merged model) writes no ADAPTER line.
    """
    lines = [comment(note) for note in notes]
    paths = [("FROM", base)] + ([("ADAPTER", adapter)] if adapter is not None else [])
    for keyword, path in paths:
        quoted = quote(path)
        if quoted is None:
            raise ValueError(f"the path {path!r} cannot be written in a Modelfile")
        lines.append(f"{keyword} {quoted}")
    skipped = []
    for stop in stops:
        quoted = quote(stop)
        if quoted is None or not stop:
            skipped.append(stop)
            continue
        lines.append(f"PARAMETER stop {quoted}")
    if skipped:
        lines.append(comment(f"{len(skipped)} end-of-turn token(s) left out: a Modelfile cannot carry their text"))
    return "\n".join(lines) + "\n", skipped
