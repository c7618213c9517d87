"""Streamed text handed to the UI in batches, without holding back the end of a burst.

The worker hands text over at most once per pacer interval (pacer.py says why). Handing it over only when the
next token arrives would keep the tail of a burst off screen for as long as the stream pauses: an endpoint that
sends in bursts, a model that stalls, a run held in a test. A timer hands that tail over one interval later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Post = Callable[[str, int, float | None], None]  # (text, tokens so far, tokens per second or None)


class StreamCoalescer:
    """Used by one worker thread; the timer thread only flushes. ``post`` runs under the lock, so in order."""

    def __init__(self, post: Post, interval: Callable[[], float]):
        self._post = post
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._tokens = 0
        self._first_at: float | None = None
        self._last_flush = 0.0
        self._timer: threading.Timer | None = None
        self._closed = False

    @property
    def tokens(self) -> int:
        return self._tokens

    def add(self, chunk: str) -> None:
        """Take one chunk: hand the text over now if an interval has passed, else leave it for the timer."""
        with self._lock:
            now = time.monotonic()
            self._tokens += 1
            self._first_at = self._first_at or now
            self._pending.append(chunk)
            wait = self._interval() - (now - self._last_flush)
            if wait <= 0:
                self._flush(now)
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def close(self) -> tuple[str, int]:
        """The stream ended: no more timed flushes; returns the text not handed over yet and the token count."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            rest, self._pending = "".join(self._pending), []
            return rest, self._tokens

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self._pending and not self._closed:
                try:
                    self._flush(time.monotonic())
                except RuntimeError:  # the app closed its loop meanwhile (quit mid-answer): nobody to show it to
                    self._pending.clear()

    def _flush(self, now: float) -> None:
        first_at = self._first_at or now
        rate = (self._tokens - 1) / (now - first_at) if now > first_at else None
        self._post("".join(self._pending), self._tokens, rate)
        self._pending.clear()
        self._last_flush = now
