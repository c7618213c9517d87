"""How often a streaming answer is handed to the UI: as often as the UI thread can afford.

Each update costs the UI thread a few milliseconds (the live answer's new lines, then Textual composing the
changed region of the screen). On a small machine that time is taken from the model: llama.cpp's threads wait
for one another at every step, so a core taken by the UI stalls all of them, and ten updates a second cost a
2-core machine about 6 % of its decode speed. The pacer measures the UI thread's share of CPU time between
updates and stretches the interval (up to ``SLOWEST_S``) while the share is above ``UI_SHARE``, and shortens it
again (down to ``FASTEST_S``) when it falls well below: a fast machine keeps ten updates a second, a slow one
draws fewer, larger steps and decodes at full speed. A pane starts at the slow end and speeds up as the
share allows (the first token is handed over at once either way), so no machine pays while it measures.
"""

from __future__ import annotations

import time

FASTEST_S = 0.1
SLOWEST_S = 0.2
UI_SHARE = 0.03  # of one core, spent by the UI thread while a model streams
STEP = 1.25
SHORTEST_SAMPLE_S = 0.05  # shorter gaps (two panes updating at once) say too little about the share


class RedrawPacer:
    """Owned by one pane; ``drawn`` is called on the UI thread, ``interval`` read by the worker thread."""

    def __init__(self) -> None:
        self.interval = SLOWEST_S
        self._last: tuple[float, float] | None = None  # (wall clock, UI thread CPU time) at the last sample

    def start(self) -> None:
        """A new answer: the time since the last one says nothing about drawing."""
        self._last = None

    def drawn(self) -> None:
        """After an update was handled; the CPU time since the previous one includes its frame."""
        now, cpu = time.perf_counter(), time.thread_time()
        if self._last is None:
            self._last = (now, cpu)
            return
        wall = now - self._last[0]
        if wall < SHORTEST_SAMPLE_S:
            return
        share = (cpu - self._last[1]) / wall
        if share > UI_SHARE:
            self.interval = min(SLOWEST_S, self.interval * STEP)
        elif share < UI_SHARE / 2:
            self.interval = max(FASTEST_S, self.interval / STEP)
        self._last = (now, cpu)
