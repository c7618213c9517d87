"""Route llama.cpp's own log lines to a file instead of the terminal.

``Llama(verbose=False)`` redirects the whole process's stdout/stderr file descriptors while loading, which
blanks a TUI's screen writer and races with other threads. tuitune keeps ``verbose=True`` and installs one
log callback, once, that appends to ``llama.log`` in the log directory.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import TextIO

from tuitune.paths import app_dirs

_MAX_LOG_BYTES = 5 * 1024 * 1024
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
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > _MAX_LOG_BYTES:
            path.replace(path.with_suffix(".log.1"))
        handle = path.open("a", encoding="utf-8", errors="replace")

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            try:
                handle.write(text.decode("utf-8", errors="replace"))
                if text.endswith(b"\n"):
                    handle.flush()
            except Exception:  # noqa: BLE001 - an exception must never cross back into C
                pass

        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        _callback, _handle = callback, handle
