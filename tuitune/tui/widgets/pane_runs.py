"""The worker side of a pane: loading its model, generating an answer, and stopping either at any moment.

``PaneRuns`` is mixed into ``ComparePane`` (pane.py), which owns the widgets and the state the UI shows. The
methods here run in worker threads, or are the UI thread's way of reaching them (``stop``, ``when_idle``); a
worker never touches a widget: it posts the pane's messages (``Progress``, ``Streamed``, ``Finished``,
``EngineState``), each naming its run, and the UI thread drops those about a run that has ended.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual import work

from tuitune.engines.base import Engine, Generation, LoadControl, Request, Stats
from tuitune.errors import ContextOverflowError, StoppedError, TuituneError
from tuitune.tui.widgets.coalesce import StreamCoalescer

if TYPE_CHECKING:
    from tuitune.tui.widgets.turn import TurnView

PROGRESS_INTERVAL_S = 0.1
MODEL_THREAD_NICENESS = 5
CONTEXT_HINT = "raise 'context' in the parameters (Ctrl+O)"
_run_ids = itertools.count(1)


def next_run_id() -> int:
    return next(_run_ids)


def _yield_cpu_to_the_ui() -> None:
    """Lower this worker thread's scheduling priority (Linux: per thread; ggml's threads inherit it).

    With every core decoding, the UI thread otherwise waits for a time slice behind the model threads and
    keystrokes lag; at niceness 5 the kernel runs the UI first whenever it has work, which is seldom.
    """
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: default priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MODEL_THREAD_NICENESS)


@dataclass
class Run:
    """One answer in flight: what the UI thread needs to stop it, whatever phase it is in."""

    id: int
    turn: TurnView
    load: LoadControl
    generation: Generation | None = None
    stop_requested: bool = False
    record: dict[str, Any] | None = None  # what History stores next to the answer (the seed is known at the end)
    message_id: int | None = None
    detached: bool = False  # stopped while loading: the UI ended the run; the worker only lets go of the lock

    def stop(self) -> None:
        self.stop_requested = True  # seen by the worker if it has not created the generation yet
        self.load.cancel()
        if self.generation is not None:
            self.generation.cancel()


class PaneRuns:
    """Engine lifecycle and answers in flight for ``ComparePane`` (see the module docstring)."""

    _engine: Engine | None
    _engine_key: tuple[str, int] | None
    _engine_lock: threading.Lock
    _preload: LoadControl | None
    _run: Run | None
    _after_run: Callable[[], Awaitable[None] | None] | None

    def _load_control(self, run_id: int | None) -> LoadControl:
        last = [0.0]

        def progress(fraction: float) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or fraction >= 1.0:
                last[0] = now
                self.post_message(self.Progress(self, run_id, "loading", fraction))

        return LoadControl(progress)

    def _ensure_engine(self, load: LoadControl) -> Engine:
        """Load the pane's model if needed, closing the previous one. Called with the engine lock held."""
        wanted = (self.settings.model, self.n_ctx)
        if self._engine is not None and self._engine_key == wanted:
            return self._engine
        if self._engine is not None:
            self._engine.close()
            self._engine, self._engine_key = None, None
        if load.cancelled:
            raise StoppedError(f"loading {wanted[0]} was stopped")
        self.post_message(self.EngineState(self, "loading", wanted[0]))
        try:
            engine = self.tuitune.open_engine(wanted[0], n_ctx=wanted[1] or None, load=load)
        except StoppedError:
            self.post_message(self.EngineState(self, "empty", "loading stopped"))
            raise
        except TuituneError as error:
            self.post_message(self.EngineState(self, "error", str(error)))
            raise
        self._engine, self._engine_key = engine, wanted
        backend = getattr(getattr(engine, "backend", None), "label", "")  # local models: "CPU", "CUDA 28/28 layers"
        self.post_message(self.EngineState(self, "ready", wanted[0], backend))
        return engine

    def preload(self) -> None:
        """Load the model ahead of the first prompt (no-op while an answer is in flight: it loads its own)."""
        if self._run is not None:
            return
        if self._preload is not None:
            self._preload.cancel()  # a model change: the previous load is not needed any more
        self._preload = self._load_control(None)
        self._preload_worker(self._preload)

    @work(thread=True, group="engine", exit_on_error=False)
    def _preload_worker(self, load: LoadControl) -> None:
        _yield_cpu_to_the_ui()
        with self._engine_lock, contextlib.suppress(TuituneError):  # the pane shows the EngineState message
            self._ensure_engine(load)

    def close_engine(self) -> None:
        """Free the model in the background once any running generation has let go of it."""
        if self._run is not None:
            self._run.stop()
        if self._preload is not None:
            self._preload.cancel()

        def close() -> None:
            with self._engine_lock:
                if self._engine is not None:
                    self._engine.close()
                    self._engine, self._engine_key = None, None

        threading.Thread(target=close, name=f"tuitune-close-{self.index}", daemon=True).start()

    @work(thread=True, group="generate", exit_on_error=False)
    def _generate(self, run: Run, request: Request, message_id: int | None) -> None:
        _yield_cpu_to_the_ui()
        store = self.tuitune.history
        generation: Generation | None = None
        error: str | None = None
        stream = StreamCoalescer(
            lambda text, tokens, rate: self.post_message(self.Streamed(self, run.id, run.turn, text, tokens, rate)),
            lambda: self.pacer.interval,  # read from the UI's last measurement
        )
        with self._engine_lock:
            try:
                engine = self._ensure_engine(run.load)
                if getattr(engine, "adapter_path", None) is not None:  # a finetuned model: base + LoRA adapter
                    engine.set_adapter_scale(self.settings.adapter_scale)  # no reload; the engine drops its cache
                generation = engine.generate(request)
                run.generation = generation
                if run.stop_requested:
                    generation.cancel()
                generation.on_progress(self._progress_poster(run.id))
                saved_at = 0.0
                for chunk in generation:
                    stream.add(chunk)
                    now = time.monotonic()  # the partial answer survives a crash, written as often as drawn
                    if store is not None and message_id is not None and now - saved_at >= self.pacer.interval:
                        store.update_message(message_id, generation.text, status="streaming")
                        saved_at = now
            except StoppedError:
                pass
            except ContextOverflowError as overflow:
                error = overflow.explain(CONTEXT_HINT)
            except TuituneError as failure:
                error = str(failure)
            except Exception as failure:
                error = f"unexpected error: {failure!r}"
        rest, tokens = stream.close()
        if run.detached:  # stopped while loading: the UI has ended this run and saved it already
            return
        if rest:
            self.post_message(self.Streamed(self, run.id, run.turn, rest, tokens, None))
        if generation is not None:
            stats, text, notices = generation.stats, generation.text, generation.notices
        else:  # stopped, or failed, before the model was loaded
            stats, text, notices = Stats(finish_reason="cancelled", stopped_during="loading"), "", []
        if error is None and stats.finish_reason == "cancelled" and not stats.stopped_during:
            stats.stopped_during = "generating"
        if store is not None and message_id is not None:
            status = "error" if error else ("cancelled" if stats.finish_reason == "cancelled" else "done")
            record = {**run.record, "seed": stats.seed} if run.record and stats.seed is not None else None
            with contextlib.suppress(TuituneError):  # the message may be gone (the conversation was deleted)
                store.update_message(message_id, text, status=status, stats=stats.as_dict(), error=error, run=record)
        self.post_message(self.Finished(self, run.id, run.turn, text, None if error else stats, error, notices))

    def _progress_poster(self, run_id: int) -> Callable[[Generation], None]:
        """Forward an engine's prompt-reading progress to the UI, at most every PROGRESS_INTERVAL_S."""
        last = [0.0, ""]

        def post(generation: Generation) -> None:
            now = time.monotonic()
            if generation.phase == last[1] and now - last[0] < PROGRESS_INTERVAL_S:
                return
            last[0], last[1] = now, generation.phase
            total = generation.stats.prompt_tokens
            self.post_message(self.Progress(self, run_id, generation.phase, generation.prompt_done, total))

        return post

    def stop(self) -> bool:
        """Stop whatever is in flight (loading, prompt reading, generation); True if something was.

        A prompt being read or an answer being generated stops within one batch or token (llama.cpp's abort
        callback), and the pane waits for it. A load is told to abandon, but llama.cpp reads a model's vocabulary
        without calling back, so the pane does not wait for that: it is free at once, and the loader thread
        finishes or abandons in the background (the header shows what it ends with)."""
        run = self._run
        if run is not None:
            if self.state == "stopping":
                return True
            run.stop()
            if run.generation is None:  # still loading the model: nothing of the answer exists yet
                self.call_later(self._end_run_while_loading, run)
            self._set_state("stopping")
            return True
        if self._preload is not None and self.engine_state == "loading" and not self._preload.cancelled:
            self._preload.cancel()
            self._set_state("empty", detail="loading stopped · a prompt loads the model again")
            return True
        return False

    async def _end_run_while_loading(self, run: Run) -> None:
        if self._run is not run or run.generation is not None:
            return  # the worker got there first: its Finished message ends the run
        run.detached = True
        stats = Stats(finish_reason="cancelled", stopped_during="loading")
        store = self.tuitune.history
        if store is not None and run.message_id is not None:
            with contextlib.suppress(TuituneError):
                store.update_message(run.message_id, "", status="cancelled", stats=stats.as_dict())
        await self.on_compare_pane_finished(self.Finished(self, run.id, run.turn, "", stats, None, []))

    def when_idle(self, action: Callable[[], Awaitable[None] | None]) -> None:
        """Run ``action`` now, or stop the answer in flight and run it once the pane is idle (the latest wins)."""
        if self._run is None:
            result = action()
            if result is not None:
                self.run_worker(result)
            return
        self._after_run = action
        self.stop()
