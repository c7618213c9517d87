"""What an OpenAI-compatible server sends back, made fit to show: the API key removed, errors on one line.

The key stays out of what tuitune shows and stores even when the server echoes it back.

Some servers (and some misconfigured proxies) put the key they received into error messages, and a model can
be led to repeat a key that reached its prompt. Everything tuitune takes from the server — errors, model ids,
the answer itself — goes through here before it is shown, printed or written to history. A streamed answer
may split the key across chunks, so ``KeyScrubber`` holds back a tail that could still become the key.
"""

from __future__ import annotations

import json
import os
import re
import time

KEY_REMOVED = "[api key removed]"
# ESC [ … final byte (CSI: colours, cursor moves) and ESC ] … BEL or ESC \ (OSC: titles, clipboard, links)
_TERMINAL_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?")
MIN_CUT_KEY = 8  # a held-back key prefix this long at the very end of an answer is removed too (a cut-off key)


def endpoint_key(api_key_env: str | None) -> str:
    """The key exactly as it is sent (stripped, as in the Authorization header), or "" when there is none."""
    return os.environ.get(api_key_env, "").strip() if api_key_env else ""


def scrub(text: str, key: str) -> str:
    """``text`` with every occurrence of ``key`` replaced by the marker."""
    return text.replace(key, KEY_REMOVED) if key else text


def one_line(text: str, key: str, limit: int = 200) -> str:
    """Server text for a one-line message: without the key, printable, on one line, short."""
    text = _TERMINAL_SEQUENCE.sub("", scrub(text, key))  # colour codes and the like: dropped, not shown half
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


class KeyScrubber:
    """Removes ``key`` from a text that arrives in pieces, wherever the pieces split it.

    ``feed`` returns what is safe to pass on now: everything except a tail that is a proper prefix of the key
    (at most ``len(key) - 1`` characters), which waits for the next piece. ``finish`` returns that tail at the
    end. The result equals ``scrub`` of the whole text, except that a long key prefix cut off at the very end
    (the answer stopped mid-key) is removed as well.
    """

    def __init__(self, key: str):
        self.key = key
        self._held = ""

    def feed(self, piece: str) -> str:
        if not self.key:
            return piece
        *before, last = (self._held + piece).split(self.key)
        keep = self._prefix_tail(last)
        self._held = last[len(last) - keep :]
        return KEY_REMOVED.join([*before, last[: len(last) - keep]])

    def finish(self) -> str:
        tail, self._held = self._held, ""
        return KEY_REMOVED if len(tail) >= MIN_CUT_KEY else tail

    def _prefix_tail(self, text: str) -> int:
        """Length of the longest end of ``text`` that the key starts with (shorter than the key)."""
        for start in range(max(0, len(text) - len(self.key) + 1), len(text)):
            if self.key.startswith(text[start:]):
                return len(text) - start
        return 0


def error_text(body: bytes) -> str:
    """The server's own error message from an OpenAI-style ``{"error": {"message": …}}`` body, or the body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data))
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error)
    return str(data)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds; an HTTP date is rare from these servers)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
