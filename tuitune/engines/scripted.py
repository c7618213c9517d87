"""A scripted engine: replays fixed answers through the real Generation machinery.

For tests and demos where only the layout matters (snapshot tests, UI latency checks): deterministic text
and stats, optional per-chunk delay, and the same cancel semantics as the llama.cpp engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from tuitune.engines.base import Generation, Request


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
    ):
        self.model_id = model_id
        self.answers = answers or [f"Scripted answer from {model_id}."]
        self.chunk_size = chunk_size
        self.delay_s = delay_s
        self.has_chat_template = has_chat_template
        self.fail_with = fail_with
        self.hold_after = hold_after  # stop after this many chunks until ``release`` is set: a mid-stream state
        self.holding = threading.Event()
        self.release = threading.Event()
        self.requests: list[Request] = []
        self.closed = False

    @property
    def n_ctx(self) -> int:
        return 4096

    @property
    def chat_template_name(self) -> str:
        return "gguf template" if self.has_chat_template else "llama-2"

    def generate(self, request: Request) -> Generation:
        self.requests.append(request)
        answer = self.answers[(len(self.requests) - 1) % len(self.answers)]
        return Generation(lambda generation: self._produce(request, answer, generation))

    def _produce(self, request: Request, answer: str, generation: Generation) -> Iterator[str]:
        if self.fail_with is not None:
            raise self.fail_with
        stats = generation.stats
        stats.prompt_tokens = len((request.prompt or " ".join(m.content for m in request.messages)).split())
        stats.seed = request.sampling.seed
        chunks = [answer[i : i + self.chunk_size] for i in range(0, len(answer), self.chunk_size)]
        chunks = chunks[: request.sampling.max_tokens]
        stats.finish_reason = "stop" if len(chunks) * self.chunk_size >= len(answer) else "length"
        for index, chunk in enumerate(chunks):
            if index == self.hold_after:
                self.holding.set()
                while not self.release.wait(0.05) and not generation.cancelled:
                    pass
            if generation.cancelled:
                stats.finish_reason = "cancelled"
                break
            if self.delay_s:
                time.sleep(self.delay_s)
            stats.completion_tokens += 1
            yield chunk
        stats.ttft_s = 0.05
        stats.decode_tokens_per_s = 50.0
        stats.total_s = 0.05 + stats.completion_tokens / 50.0

    def close(self) -> None:
        self.closed = True
