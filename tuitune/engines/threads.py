"""Share the CPU between models generating at the same time.

On 2 cores, oversubscription is brutal (decode fell from ~85 to 2–17 tok/s in measurements), so each
active generation gets ``max(1, cores // active)`` threads, re-read between tokens. While a training run is
alive (its marker file names a live process) generation drops to one thread: training and decoding both on
every core collapse both.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class ThreadBudget:
    TRAINING_CHECK_S = 1.0

    def __init__(self, cores: int | None = None):
        self.cores = cores or available_cores()
        self._active = 0
        self._lock = threading.Lock()
        self._training = False
        self._training_checked = -1e9

    def training_active(self) -> bool:
        """Whether a training run is alive, checked at most once a second (this is asked between tokens)."""
        now = time.monotonic()
        if now - self._training_checked >= self.TRAINING_CHECK_S:
            from tuitune.training.runs import training_active

            self._training_checked = now
            self._training = training_active()
        return self._training

    @property
    def active(self) -> int:
        return self._active

    def threads(self) -> int:
        """Threads one generation should use right now."""
        if self.training_active():
            return 1
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
