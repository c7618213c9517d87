"""Share the CPU between models generating at the same time.

On 2 cores, oversubscription is brutal (decode fell from ~85 to 2–17 tok/s in measurements), so each
active generation gets ``max(1, cores // active)`` threads, re-read between tokens.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class ThreadBudget:
    def __init__(self, cores: int | None = None):
        self.cores = cores or available_cores()
        self._active = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> int:
        return self._active

    def threads(self) -> int:
        """Threads one generation should use right now."""
        return max(1, self.cores // max(1, self._active))

    @contextmanager
    def generating(self) -> Iterator[ThreadBudget]:
        with self._lock:
            self._active += 1
        try:
            yield self
        finally:
            with self._lock:
                self._active -= 1


DEFAULT_BUDGET = ThreadBudget()
