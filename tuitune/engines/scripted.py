"""A scripted engine: replays fixed answers through the real Generation machinery.

For tests and demos where only the layout or the flow matters (snapshot tests, UI latency checks, key storms):
deterministic text and stats, and the slow paths of a real model on demand — a load that takes ``load_s``
(reporting progress and stoppable like llama.cpp's), a prompt read in batches over ``read_s``, and a delay per
chunk — with the same cancel semantics as the llama.cpp engine.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator

from tuitune.engines.base import Generation, LoadControl, Request
from tuitune.errors import StoppedError

READ_BATCHES = 8  # a scripted prompt is "read" in this many steps, each reporting progress


class ScriptedEngine:
    def __init__(
        self,
        model_id: str,
        answers: list[str] | None = None,
        chunk_size: int = 4,
        delay_s: float = 0.0,
        has_chat_template: bool = True,
        fail_with: Exception | None = None,
        hold_after: int | None = None,
        load_s: float = 0.0,
        read_s: float = 0.0,
        load: LoadControl | None = None,
        n_ctx: int = 4096,
        hold_load_at: float | None = None,
        hold_read_at: int | None = None,
        holding: threading.Event | None = None,
        release: threading.Event | None = None,
    ):
        self.model_id = model_id
        self.answers = answers or [f"Scripted answer from {model_id}."]
        self.chunk_size = chunk_size
        self.delay_s = delay_s
        self.read_s = read_s
        self.has_chat_template = has_chat_template
        self.fail_with = fail_with
        # Frozen states for snapshots and key storms: wait until ``release`` is set after this many chunks, at
        # this load fraction, or after this many of the prompt's read batches (``holding`` says it is waiting).
        self.hold_after = hold_after
        self.hold_load_at = hold_load_at
        self.hold_read_at = hold_read_at
        self.holding = holding or threading.Event()
        self.release = release or threading.Event()
        self.requests: list[Request] = []
        self.closed = False
        self._n_ctx = n_ctx
        self._load(load or LoadControl(), load_s)

    def _load(self, load: LoadControl, seconds: float) -> None:
        """Take ``seconds`` like a real load: progress in steps, abandoned within a step once stopped."""
        steps = max(1, round(seconds / 0.02)) if seconds else 1
        for step in range(steps + 1):
            if not load.report(step / steps):
                raise StoppedError(f"loading {self.model_id} was stopped")
            if self.hold_load_at is not None and step / steps >= self.hold_load_at:
                self.hold_load_at = None
                self._hold(lambda: load.cancelled, functools.partial(load.report, step / steps))
            if seconds and step < steps:
                time.sleep(seconds / steps)

    def _hold(self, cancelled: Callable[[], bool], report_again: Callable[[], object] | None = None) -> None:
        """Say we are holding, then wait until released or stopped.

        ``report_again`` repeats the last progress report once, a moment in: listeners that throttle reports
        (the panes do) may have dropped it, and a real loader's callback keeps firing while it works.
        """
        self.holding.set()
        if report_again is not None and not self.release.wait(0.15):
            report_again()
        while not self.release.wait(0.05) and not cancelled():
            pass

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def chat_template_name(self) -> str:
        return "gguf template" if self.has_chat_template else "llama-2"

    def generate(self, request: Request) -> Generation:
        self.requests.append(request)
        answer = self.answers[(len(self.requests) - 1) % len(self.answers)]
        return Generation(lambda generation: self._produce(request, answer, generation))

    def _read(self, generation: Generation) -> bool:
        """Read the prompt in batches over ``read_s`` seconds; False if stopped meanwhile."""
        total = generation.stats.prompt_tokens
        generation.report("reading", 0)
        for batch in range(1, READ_BATCHES + 1):
            if self.read_s and generation.wait_cancelled(self.read_s / READ_BATCHES):
                return False
            if generation.cancelled:
                return False
            generation.report("reading", total * batch // READ_BATCHES)
            if batch == self.hold_read_at:
                done = total * batch // READ_BATCHES
                self._hold(lambda: generation.cancelled, functools.partial(generation.report, "reading", done))
        return not generation.cancelled

    def _produce(self, request: Request, answer: str, generation: Generation) -> Iterator[str]:
        if self.fail_with is not None:
            raise self.fail_with
        stats = generation.stats
        stats.prompt_tokens = len((request.prompt or " ".join(m.content for m in request.messages)).split())
        stats.seed = request.sampling.resolved_seed()
        if not self._read(generation):
            stats.finish_reason, stats.stopped_during = "cancelled", "reading"
            return
        generation.report("generating")
        chunks = [answer[i : i + self.chunk_size] for i in range(0, len(answer), self.chunk_size)]
        chunks = chunks[: request.sampling.max_tokens]
        stats.finish_reason = "stop" if len(chunks) * self.chunk_size >= len(answer) else "length"
        for index, chunk in enumerate(chunks):
            if index == self.hold_after:
                self._hold(lambda: generation.cancelled)
            if generation.cancelled:
                stats.finish_reason, stats.stopped_during = "cancelled", "generating"
                break
            if self.delay_s and generation.wait_cancelled(self.delay_s):
                stats.finish_reason, stats.stopped_during = "cancelled", "generating"
                break
            stats.completion_tokens += 1
            yield chunk
        stats.ttft_s = 0.05
        stats.decode_tokens_per_s = 50.0
        stats.total_s = 0.05 + stats.completion_tokens / 50.0

    def close(self) -> None:
        self.closed = True
