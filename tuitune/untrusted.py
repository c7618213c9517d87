"""Limits for parsing files other people wrote: nesting depth and integer size, checked without recursion.

``tomllib`` and ``json`` recurse once per nesting level, so a line nested 100,000 deep raises RecursionError, and
Python refuses to turn an integer of more than 4,300 digits into text, so printing one raises ValueError. Both
reach the user as a traceback about Python, not about their file; these helpers turn them into ``LimitError``,
whose one-line message the caller wraps in its own error with the file and line.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

MAX_DEPTH = 100  # real files nest a handful of levels (a dataset: example → messages → message → content)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # TOML integers are 64-bit; anything else is an error by its spec
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
# A dotted key starting a line or a [table] header with more parts than MAX_DEPTH: tomllib's time and memory grow
# with the square of the parts (100,000 parts took gigabytes), so these are refused before it sees them.
_LONG_DOTTED_KEY = re.compile(rf"^[ \t]*(?:\[+[ \t]*)?(?:{_KEY_PART}[ \t]*\.[ \t]*){{{MAX_DEPTH}}}", re.MULTILINE)
_DECODER = json.JSONDecoder()


class LimitError(ValueError):
    """The input is well-formed but past a limit; the message says which, without naming the file.

    TOML messages end with what to do; JSON ones leave that to the caller, which knows what a value is there."""


def _too_deep() -> LimitError:
    return LimitError(f"nested deeper than {MAX_DEPTH} levels")


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when lists/dicts inside ``value`` nest more than ``limit`` levels (the outermost counts as one)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def json_decode(text: str, position: int = 0) -> tuple[Any, int]:
    """``JSONDecoder.raw_decode`` with limits: syntax errors stay ``JSONDecodeError``, the rest is ``LimitError``."""
    try:
        value, end = _DECODER.raw_decode(text, position)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise _too_deep() from None
    except ValueError:  # only the integer digit limit: everything else in json is a JSONDecodeError
        raise LimitError("a number with more than 4,300 digits") from None
    brackets = text.count("[", position, end) + text.count("{", position, end)  # cheap bound: most values stop here
    if brackets > MAX_DEPTH and depth_exceeds(value):
        raise _too_deep()
    return value, end


def json_loads(text: str) -> Any:
    """``json.loads`` with the limits of ``json_decode``."""
    start = len(text) - len(text.lstrip(" \t\n\r"))
    value, end = json_decode(text, start)
    end = len(text) - len(text[end:].lstrip(" \t\n\r"))
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def toml_loads(text: str) -> dict[str, Any]:
    """``tomllib.loads`` with the limits above: syntax errors stay ``TOMLDecodeError``, the rest is ``LimitError``."""
    long_key = _LONG_DOTTED_KEY.search(text)
    if long_key:
        line = text.count("\n", 0, long_key.start()) + 1
        raise LimitError(f"line {line}: a dotted key {_too_deep()}; flatten it")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except RecursionError:
        raise LimitError(f"{_too_deep()}; flatten it") from None
    except ValueError:  # tomllib's int() of a number over Python's 4,300-digit limit
        raise LimitError("a number with more than 4,300 digits; TOML integers must fit in 64 bits") from None
    _check_toml(data)
    return data


def _key_path(parent: str, key: object) -> str:
    name = key if isinstance(key, str) and _BARE_KEY.match(key) else json.dumps(str(key)[:40])
    return f"{parent}.{name}" if parent else name


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_toml(data: dict[str, Any]) -> None:
    """Depth and integer range of a parsed document, walked with a stack instead of recursion."""
    stack: list[tuple[Any, str, int]] = [(item, _key_path("", key), 1) for key, item in data.items()]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH and isinstance(value, dict | list):
            top = where.split(".")[0].split("[")[0] if not where.startswith('"') else "a key"
            raise LimitError(f"{top} is {_too_deep()}; flatten it")
        if isinstance(value, dict):
            stack.extend((item, _key_path(where, key), depth + 1) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
            raise LimitError(
                f"the integer at {_short(where)} does not fit in 64 bits (TOML's limit); use a smaller number"
            )


def read_config_text(path: Path, error: type[Exception], what: str, noun: str | None = None) -> str:
    """A config file's text (catalog, suite, presets), or ``error`` as one line naming it: unreadable, not UTF-8.

    ``what`` names the file for "cannot read …", ``noun`` (default ``what``) for "save the … as UTF-8"."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text; save the {noun or what} as UTF-8") from None
    except OSError as problem:
        raise error(f"cannot read {what} {path}: {problem.strerror or problem}") from None


def load_config_toml(text: str, path: Path, error: type[Exception]) -> dict[str, Any]:
    """``toml_loads`` of a config file's text, a syntax error or a limit as one ``error`` line naming ``path``."""
    try:
        return toml_loads(text)
    except tomllib.TOMLDecodeError as problem:
        raise error(f"{path}: TOML syntax error: {problem}; fix that line and try again") from None
    except LimitError as problem:
        raise error(f"{path}: {problem}") from None
