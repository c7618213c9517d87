"""The one small interface every engine implements: stream an answer to a raw prompt or a message list.

Every sampling parameter is explicit (llama.cpp's completion and chat defaults differ, and its default seed
repeats across processes), so a comparison between panes is fair by construction.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

Mode = Literal["raw", "chat"]
FinishReason = Literal["stop", "length", "cancelled", "error"]
Phase = Literal["reading", "generating"]  # reading the prompt, then producing tokens
RANDOM_SEED = -1
STOPPED_DURING = {"loading": "loading the model", "reading": "reading the prompt", "generating": "generating"}


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    max_tokens: int = 256
    seed: int = 42  # RANDOM_SEED (-1) draws a fresh seed per request
    stop: tuple[str, ...] = ()

    def resolved_seed(self) -> int:
        return random.randrange(2**31) if self.seed == RANDOM_SEED else self.seed


@dataclass(frozen=True)
class Grammar:
    """Constrained decoding: the reply must match this, so a small model cannot wander off a strict format.

    ``gbnf`` is a llama.cpp GBNF grammar (root rule ``root``), which the llama.cpp engine samples under;
    ``json_schema`` (JSON text, may be empty) is the same shape as a JSON schema, which an OpenAI-compatible
    endpoint gets as ``response_format`` (left out, with a notice, if the server rejects it). Engines without
    either ignore it: the caller must still check the reply.
    """

    name: str  # a short identifier, also the response_format schema name
    gbnf: str
    json_schema: str = ""


@dataclass(frozen=True)
class Request:
    mode: Mode
    prompt: str = ""
    messages: tuple[Message, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)
    grammar: Grammar | None = None  # constrained decoding (None: free text)

    @classmethod
    def raw(cls, prompt: str, sampling: Sampling | None = None, grammar: Grammar | None = None) -> Request:
        return cls(mode="raw", prompt=prompt, sampling=sampling or Sampling(), grammar=grammar)

    @classmethod
    def chat(
        cls, messages: list[Message] | tuple[Message, ...], sampling: Sampling | None = None,
        grammar: Grammar | None = None,
    ) -> Request:  # fmt: skip
        return cls(mode="chat", messages=tuple(messages), sampling=sampling or Sampling(), grammar=grammar)


@dataclass
class Stats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    decode_tokens_per_s: float | None = None
    total_s: float = 0.0
    finish_reason: FinishReason = "stop"
    seed: int | None = None
    stopped_during: str | None = None  # cancelled answers: "loading", "reading" (the prompt) or "generating"

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self, with_prompt: bool = False) -> str:
        """One line for people: tokens, time to first token, decode speed, why it stopped."""
        parts = [f"{self.prompt_tokens} prompt tokens"] if with_prompt and self.prompt_tokens else []  # 0: not reported
        parts.append(f"{self.completion_tokens} {'generated' if with_prompt else 'tokens'}")
        if self.ttft_s is not None:
            parts.append(f"TTFT {self.ttft_s:.2f} s")
        if self.decode_tokens_per_s is not None:
            parts.append(f"{self.decode_tokens_per_s:.1f} tok/s")
        if self.stopped_during:
            parts.append(f"stopped while {STOPPED_DURING.get(self.stopped_during, self.stopped_during)}")
        else:
            parts.append(self.finish_reason)
        return " · ".join(parts)


class Generation:
    """One streaming answer: iterate for text chunks; ``stats`` is final once iteration ends.

    ``cancel()`` may be called from any thread; the producer checks it between tokens.
    """

    def __init__(self, produce: Callable[[Generation], Iterator[str]]):
        self._produce = produce
        self._cancelled = threading.Event()
        self._cancel_hooks: list[Callable[[], None]] = []
        self.stats = Stats()
        self.notices: list[str] = []  # e.g. which fallback chat format was used
        self.parts: list[str] = []
        self._started = time.perf_counter()
        self.phase: Phase = "reading"
        self.prompt_done = 0  # prompt tokens read so far (of stats.prompt_tokens)
        self._progress_hooks: list[Callable[[Generation], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()
        for hook in list(self._cancel_hooks):
            hook()

    def wait_cancelled(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking at once on cancel; True if cancelled."""
        return self._cancelled.wait(timeout)

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` (from the cancelling thread) on cancel: e.g. close a socket the producer blocks on."""
        self._cancel_hooks.append(hook)
        if self.cancelled:
            hook()

    def on_progress(self, hook: Callable[[Generation], None]) -> None:
        """Run ``hook(generation)`` (from the producing thread) as the prompt is read and when decoding starts."""
        self._progress_hooks.append(hook)

    def report(self, phase: Phase, prompt_done: int | None = None) -> None:
        """Called by engines: a batch of the prompt was read (``prompt_done`` of ``stats.prompt_tokens``), or
        the first token is being produced. A real model reads a long prompt for a minute; the UI shows it."""
        self.phase = phase
        if prompt_done is not None:
            self.prompt_done = prompt_done
        for hook in list(self._progress_hooks):
            hook(self)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def __iter__(self) -> Iterator[str]:
        for chunk in self._produce(self):
            self.parts.append(chunk)
            yield chunk

    def run(self) -> str:
        """Consume the whole stream and return the text."""
        for _ in self:
            pass
        return self.text


class LoadControl:
    """Between the thread that loads a model and the UI: load progress goes out, a stop request comes in.

    ``report`` is called by the loader (llama.cpp's progress callback) and returns False once ``cancel`` was
    called, which makes llama.cpp abandon the load at once instead of finishing a multi-second read.
    """

    def __init__(self, on_progress: Callable[[float], None] | None = None):
        self._on_progress = on_progress
        self._cancelled = threading.Event()
        self.fraction = 0.0

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def report(self, fraction: float) -> bool:
        self.fraction = fraction
        if self._on_progress is not None:
            self._on_progress(fraction)
        return not self.cancelled


class Engine(Protocol):
    """A loaded model that can stream answers. One instance is used by one thread at a time."""

    model_id: str

    @property
    def n_ctx(self) -> int: ...

    @property
    def chat_template_name(self) -> str:
        """What chat mode uses: 'gguf template' or the name of a fallback format."""
        ...

    def generate(self, request: Request) -> Generation: ...

    def close(self) -> None: ...
