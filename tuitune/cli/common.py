"""What every command shares: terminal styling, safe one-line messages, input checks, streaming and progress."""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from tuitune.errors import TuituneError
from tuitune.safe_text import inert


class InputError(TuituneError):
    """The command line itself is unusable (e.g. not UTF-8): exit 2, like argparse's usage errors."""


class Style:
    """ANSI styling of tuitune's own labels, only on a terminal and never with NO_COLOR."""

    def __init__(self, stream: TextIO):
        self.enabled = stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def one_line(text: object) -> str:
    """A message fit for one stderr line: controls made visible, line breaks folded into spaces."""
    return " ".join(inert(str(text)).split("\n"))


def warn(message: str) -> None:
    """``tuitune: <message>`` on stderr, inert: messages quote model names, files and server replies."""
    print(f"tuitune: {one_line(message)}", file=sys.stderr)


# -- text that is not UTF-8 ------------------------------------------------------------------------
def invalid_utf8(text: str) -> str | None:
    """Where ``text`` stops being UTF-8 (``byte 0xff at position 3``), or None when it is valid.

    Python hands over argv and stdin bytes that are not UTF-8 as lone surrogates (surrogateescape); printed
    or sent to a model they fail later with a traceback, so they are found and refused first.
    """
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    raw = text.encode("utf-8", "surrogateescape") if _only_escapes(text) else text.encode("utf-8", "surrogatepass")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"byte {raw[error.start]:#04x} at position {error.start}"
    return "a lone surrogate"  # valid UTF-8 bytes, yet no text: only reachable from Python callers


def _only_escapes(text: str) -> bool:
    return all(not 0xD800 <= ord(char) <= 0xDFFF or 0xDC80 <= ord(char) <= 0xDCFF for char in text)


def refuse_invalid_utf8(what: str, text: str) -> None:
    problem = invalid_utf8(text)
    if problem is not None:
        raise InputError(f"{what} is not valid UTF-8 ({problem})")


# -- generation --------------------------------------------------------------------------------------
def stream_in_thread(generation, wait_after_cancel: float | None = 0.5) -> Iterator[str]:
    """Run a generation in a worker thread so Ctrl-C in the main thread can cancel it cleanly.

    After a Ctrl-C the worker gets ``wait_after_cancel`` seconds to stop (None: as long as it takes, for a
    REPL that reuses the engine next); a command that is ending does not wait on a busy llama.cpp call.
    """
    chunks: queue.Queue = queue.Queue()
    done = object()

    def pump() -> None:
        try:
            for chunk in generation:
                chunks.put(chunk)
        except BaseException as error:
            chunks.put(error)
        finally:
            chunks.put(done)

    worker = threading.Thread(target=pump, name="tuitune-generate", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = chunks.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    except KeyboardInterrupt:
        generation.cancel()
        worker.join(wait_after_cancel)
        raise


def sampling_from(args: argparse.Namespace):
    """The sampling flags over the engine's defaults (chat's temperature 0.7, 256 tokens, seed 42)."""
    from tuitune.engines.base import RANDOM_SEED, Sampling

    defaults = Sampling()
    seed = defaults.seed
    if args.seed is not None:
        if args.seed == "random":
            seed = RANDOM_SEED
        else:
            try:
                seed = int(args.seed)
            except ValueError:
                raise TuituneError(f"--seed must be an integer or 'random', not '{args.seed}'") from None
    if args.max_tokens is not None and args.max_tokens < 1:
        raise TuituneError("--max-tokens must be at least 1")
    if args.temperature is not None and args.temperature < 0:
        raise TuituneError("--temperature must be 0 (greedy) or more")
    return Sampling(
        temperature=defaults.temperature if args.temperature is None else args.temperature,
        top_p=defaults.top_p if args.top_p is None else args.top_p,
        top_k=defaults.top_k if args.top_k is None else args.top_k,
        min_p=defaults.min_p if args.min_p is None else args.min_p,
        repeat_penalty=defaults.repeat_penalty if args.repeat_penalty is None else args.repeat_penalty,
        max_tokens=defaults.max_tokens if args.max_tokens is None else args.max_tokens,
        seed=seed,
        stop=tuple(args.stop or ()),
    )


def split_models(value: str | None) -> list[str]:
    return [model.strip() for model in (value or "").split(",") if model.strip()]


# -- progress on stderr --------------------------------------------------------------------------------
class TokenProgress:
    """A one-line token counter on stderr while models generate (terminal only)."""

    def __init__(self, labels: list[str]):
        self.labels = [inert(label) for label in labels]
        self.counts = [0] * len(labels)
        self.enabled = sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def chunk(self, prompt_index: int, model_index: int, text: str) -> None:
        self.counts[model_index] += 1

    def _tick(self) -> None:
        while not self._stop.wait(0.2):
            line = "  ".join(f"{label}: {count}" for label, count in zip(self.labels, self.counts, strict=True))
            sys.stderr.write(f"\r\x1b[2Kgenerating… {line}")
            sys.stderr.flush()

    def __enter__(self) -> TokenProgress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


class CountProgress:
    """``done/total`` on stderr while an eval runs (terminal only); called from the runner's worker threads."""

    def __init__(self, what: str):
        self.what = what
        self.enabled = sys.stderr.isatty()
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        if self.enabled:
            with self._lock:
                sys.stderr.write(f"\r\x1b[2Kevaluating… {done}/{total} {self.what}")
                sys.stderr.flush()

    def __enter__(self) -> CountProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            with self._lock:
                sys.stderr.write("\r\x1b[2K")
                sys.stderr.flush()


def write_out(path: str, text: str) -> Path:
    target = Path(path).expanduser()
    from tuitune.atomic import write_text

    try:  # atomic: an interrupted run leaves the previous report, not half of a new one
        write_text(target, text if text.endswith("\n") else text + "\n", newline="")  # CSV has its own line ends
    except OSError as error:
        raise TuituneError(f"cannot write {target}: {error.strerror or error}") from None
    return target
