"""llama.cpp's load-progress and abort hooks, which llama-cpp-python (0.3.x) does not expose through ``Llama``.

- **Loading.** The C API takes a progress callback in the model parameters; returning false abandons the load.
  ``Llama.__init__`` builds those parameters itself from ``llama_model_default_params()``, with no argument for
  the callback, so ``loading_with_progress`` wraps that one factory function: inside the ``with`` block (and only
  in the calling thread, so two panes can load at once) the parameters it returns carry our callback.
- **Reading a prompt.** ``llama_set_abort_callback`` is polled by ggml inside each graph computation, so a stop
  lands within one graph node, not after a whole batch of a long prompt (a 512-token batch of a 7B model takes
  seconds on a CPU). It is installed only while a prompt is read, because ggml polls it for every node and a
  Python callback per node would slow decoding, where a stop between tokens is quick enough anyway.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

_local = threading.local()
_install_lock = threading.Lock()


def _install_params_hook(llama_cpp: Any) -> None:
    """Wrap ``llama_model_default_params`` once: it adds this thread's pending progress callback, if any."""
    with _install_lock:
        if getattr(llama_cpp, "_tuitune_params_hook", False):
            return
        original = llama_cpp.llama_model_default_params

        def default_params_with_progress() -> Any:
            params = original()
            callback = getattr(_local, "progress", None)
            if callback is not None:
                params.progress_callback = callback
            return params

        llama_cpp.llama_model_default_params = default_params_with_progress
        llama_cpp._tuitune_params_hook = True


@contextlib.contextmanager
def loading_with_progress(report: Callable[[float], bool]) -> Iterator[None]:
    """Models loaded in this thread inside the block call ``report(fraction)``; False from it aborts the load."""
    import llama_cpp.llama_cpp as llama_cpp

    _install_params_hook(llama_cpp)

    def progress(fraction: float, _user_data: Any) -> bool:
        try:
            return bool(report(float(fraction)))
        except Exception:  # an exception cannot cross into C: keep loading
            return True

    _local.progress = llama_cpp.llama_progress_callback(progress)  # referenced until the load ends
    try:
        yield
    finally:
        _local.progress = None


class AbortSwitch:
    """A stop flag that llama.cpp polls while it evaluates a batch (see the module docstring)."""

    def __init__(self, llama_cpp: Any, ctx: Any):
        self._llama_cpp, self._ctx = llama_cpp, ctx
        self._flag = threading.Event()
        self._callback = llama_cpp.ggml_abort_callback(lambda _data: self._flag.is_set())

    def trip(self) -> None:
        """Any thread: make the batch being evaluated fail at its next graph node."""
        self._flag.set()

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        """Polled only inside the block; the flag starts clear for each new request."""
        self._flag.clear()
        self._llama_cpp.llama_set_abort_callback(self._ctx, self._callback, None)
        try:
            yield
        finally:
            self._llama_cpp.llama_set_abort_callback(self._ctx, self._llama_cpp.ggml_abort_callback(0), None)

    @property
    def tripped(self) -> bool:
        return self._flag.is_set()
