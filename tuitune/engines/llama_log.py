"""Route llama.cpp's own log lines to a file instead of the terminal.

``Llama(verbose=False)`` redirects the whole process's stdout/stderr file descriptors while loading, which
blanks a TUI's screen writer and races with other threads. tuitune keeps ``verbose=True`` and installs one
log callback, once, that appends to ``llama.log`` in the log directory.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from tuitune.paths import app_dirs, private_app_dir

_MAX_LOG_BYTES = 5 * 1024 * 1024
# ggml log levels: 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the previous line.
_DEBUG, _CONTINUE = 1, 5
_lock = threading.Lock()
_callback = None  # the ctypes callback must stay referenced for as long as llama.cpp may call it
_handle: TextIO | None = None


def log_path() -> Path:
    return app_dirs().llama_log


def log_handle() -> TextIO:
    """The open llama log file (installing the callback first if needed)."""
    install()
    assert _handle is not None
    return _handle


def install() -> None:
    global _callback, _handle
    with _lock:
        if _callback is not None:
            return
        import llama_cpp

        path = log_path()
        private_app_dir(path.parent)
        if path.exists() and path.stat().st_size > _MAX_LOG_BYTES:
            path.replace(path.with_suffix(".log.1"))
        handle = path.open("a", encoding="utf-8", errors="replace")
        keep_continuation = [False]

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            try:
                keep = keep_continuation[0] if level == _CONTINUE else level != _DEBUG  # debug: ~120 KB a load
                keep_continuation[0] = keep
                if not keep:
                    return
                handle.write(text.decode("utf-8", errors="replace"))
                if text.endswith(b"\n"):
                    handle.flush()
            except Exception:
                pass

        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        _callback, _handle = callback, handle


class _ThreadRoutedStderr:
    """sys.stderr stand-in: threads that are loading a model write to the log, all others pass through.

    ``contextlib.redirect_stderr`` swaps a process-wide global, so two models loading in parallel threads
    would restore each other's redirect; routing per thread lets loads run concurrently.
    """

    def __init__(self, original: TextIO):
        self.original = original
        self.local = threading.local()

    def write(self, text: str) -> int:
        target = getattr(self.local, "target", None) or self.original
        return target.write(text)

    def flush(self) -> None:
        (getattr(self.local, "target", None) or self.original).flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


@contextmanager
def python_stderr_to_log() -> Iterator[None]:
    """Send this thread's Python-level stderr writes (llama-cpp-python's verbose prints) to the log."""
    handle = log_handle()
    with _lock:
        router = sys.stderr if isinstance(sys.stderr, _ThreadRoutedStderr) else _ThreadRoutedStderr(sys.stderr)
        sys.stderr = router
    router.local.target = handle
    try:
        yield
    finally:
        router.local.target = None
