"""A model pane: one model, one mode, its own conversation, answers streamed from a worker thread.

Each pane owns one engine and a lock around it: a ``Llama`` object must only be used by one thread at a
time, and loading, generating and closing all happen in worker threads so the UI never waits on a model.
Tokens are coalesced in the worker and posted every ``FLUSH_INTERVAL_S`` (the first one at once), and the
same cadence writes the partial answer to the history store, so a crash loses nothing already shown.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message as TextualMessage
from textual.widget import Widget
from textual.widgets import LoadingIndicator, Static
from textual.worker import get_current_worker

from tuitune.engines.base import Engine, Generation, Message, Request, Sampling, Stats
from tuitune.errors import TuituneError
from tuitune.tui.text import styled
from tuitune.tui.widgets.turn import TurnView, stats_text

if TYPE_CHECKING:
    from tuitune.tui.app import TuituneApp

FLUSH_INTERVAL_S = 0.1
LIVE_STATS_INTERVAL_S = 0.5
MODEL_THREAD_NICENESS = 5


def _yield_cpu_to_the_ui() -> None:
    """Lower this worker thread's scheduling priority (Linux: per thread; ggml's threads inherit it).

    With every core decoding, the UI thread otherwise waits for a time slice behind the model threads and
    keystrokes lag; at niceness 5 the kernel runs the UI first whenever it has work, which is seldom.
    """
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: default priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MODEL_THREAD_NICENESS)


PANE_LETTERS = "ABCD"


@dataclass
class PaneSettings:
    """What the pane runs: the model, its mode, and parameter overrides on top of the shared ones."""

    model: str
    mode: str
    overrides: dict[str, Any]
    adapter_scale: float = 1.0  # finetuned models: 0 is the base, 1 the finetune (WiSE-FT blend in between)


class ComparePane(Vertical, can_focus=True):
    BINDINGS = [
        Binding("m", "toggle_mode", "Raw/chat", id="pane.toggle_mode"),
        Binding("o", "pick_model", "Model", id="pane.pick_model"),
        Binding("p", "pane_params", "Pane params", id="pane.params"),
        Binding("s", "stop", "Stop", id="pane.stop"),
        Binding("r", "regenerate", "Regenerate", id="pane.regenerate"),
        Binding("c", "copy", "Copy", id="pane.copy"),
        Binding("x", "close_pane", "Close", id="pane.close"),
        Binding("minus", "adapter_strength(-0.25)", "Weaker", id="pane.weaker"),
        Binding("plus,equals_sign", "adapter_strength(0.25)", "Stronger", id="pane.stronger"),
    ]

    @dataclass
    class Streamed(TextualMessage):
        pane: ComparePane
        turn: TurnView
        text: str
        tokens: int
        rate: float | None

    @dataclass
    class Finished(TextualMessage):
        pane: ComparePane
        turn: TurnView
        text: str
        stats: Stats | None
        error: str | None
        notices: list[str]

    @dataclass
    class EngineState(TextualMessage):
        pane: ComparePane
        state: str  # loading | ready | error
        detail: str = ""

    def __init__(self, index: int, model: str, mode: str, overrides: dict[str, Any] | None = None, **kwargs):
        super().__init__(classes="pane", **kwargs)
        self.index = index
        self.settings = PaneSettings(model, mode, dict(overrides or {}))
        self.turns: list[TurnView] = []
        self.shared = Sampling()
        self._engine: Engine | None = None
        self._engine_model: str | None = None
        self._engine_lock = threading.Lock()
        self._generation: Generation | None = None
        self.busy = False
        self._stats_shown_at = 0.0
        self._followed_to: int | None = None  # scroll offset the pane last followed the text to (None: the end)
        self.engine_state = "idle"

    @property
    def tuitune(self) -> TuituneApp:
        return self.app  # type: ignore[return-value]

    @property
    def letter(self) -> str:
        return PANE_LETTERS[self.index] if self.index < len(PANE_LETTERS) else str(self.index + 1)

    # -- layout ------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(classes="pane-header")
        with VerticalScroll(classes="pane-turns"):
            yield Static(classes="pane-empty")
        yield LoadingIndicator(classes="pane-loading")
        yield Static(classes="pane-status")

    def on_mount(self) -> None:
        self.query_one(LoadingIndicator).display = False
        self.refresh_header()
        self._show_empty_hint()

    def _show_empty_hint(self) -> None:
        hint = self.query_one(".pane-empty", Static)
        hint.display = not self.turns
        entry = self.tuitune.catalog_entry(self.settings.model)
        what = f"{entry.name} · {entry.kind}" if entry else self.settings.model
        behaviour = "continues your text" if self.settings.mode == "raw" else "answers in its chat template"
        hint.update(styled((f"{what}\n{behaviour}", "dim")))

    def effective_sampling(self) -> Sampling:
        return replace(self.shared, **self.settings.overrides) if self.settings.overrides else self.shared

    def differs_from_shared(self) -> bool:
        return any(getattr(self.shared, key) != value for key, value in self.settings.overrides.items())

    def refresh_header(self) -> None:
        entry = self.tuitune.catalog_entry(self.settings.model)
        kind = f" · {entry.kind}" if entry else ""
        mode = self.settings.mode.upper()
        badge = ("  ≠ params ", "reverse") if self.differs_from_shared() else ""
        strength = f" · strength {self.settings.adapter_scale:.2f}" if entry and entry.kind == "finetuned" else ""
        state = {"loading": (" loading…", "italic"), "error": (" load failed", "bold red")}.get(self.engine_state, "")
        self.query_one(".pane-header", Static).update(
            styled(
                (self.letter, "bold"),
                " ",
                (f" {mode} ", "reverse"),
                " ",
                self.settings.model,
                (kind, "dim"),
                (strength, "bold"),
                badge,
                state,
            )
        )

    def set_status(self, text: str | Text) -> None:
        self.query_one(".pane-status", Static).update(text, layout=False)  # one line, fixed height

    # -- engine lifecycle (worker threads) ---------------------------------------------------------
    def _ensure_engine(self) -> Engine:
        """Load the pane's model if needed, closing the previous one. Called with the engine lock held."""
        wanted = self.settings.model
        if self._engine is not None and self._engine_model == wanted:
            return self._engine
        if self._engine is not None:
            self._engine.close()
            self._engine, self._engine_model = None, None
        self.post_message(self.EngineState(self, "loading", wanted))
        try:
            engine = self.tuitune.open_engine(wanted)
        except TuituneError as error:
            self.post_message(self.EngineState(self, "error", str(error)))
            raise
        self._engine, self._engine_model = engine, wanted
        self.post_message(self.EngineState(self, "ready", wanted))
        return engine

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def preload(self) -> None:
        _yield_cpu_to_the_ui()
        with self._engine_lock, contextlib.suppress(TuituneError):  # the pane shows the EngineState message
            self._ensure_engine()

    def close_engine(self) -> None:
        """Free the model in the background once any running generation has let go of it."""
        if self._generation is not None:
            self._generation.cancel()

        def close() -> None:
            with self._engine_lock:
                if self._engine is not None:
                    self._engine.close()
                    self._engine, self._engine_model = None, None

        threading.Thread(target=close, name=f"tuitune-close-{self.index}", daemon=True).start()

    def on_compare_pane_engine_state(self, message: EngineState) -> None:
        if message.pane is not self:
            return
        self.engine_state = message.state
        self.query_one(LoadingIndicator).display = message.state == "loading"
        if message.state == "loading":
            entry = self.tuitune.catalog_entry(message.detail)
            size = f" ({entry.size / 1e6:.0f} MB)" if entry and entry.size else ""
            self.set_status(styled(f"loading {message.detail}{size}…"))
        elif message.state == "error":
            self.set_status(styled((message.detail, "bold red")))
        else:
            self.set_status(styled(("ready", "dim")))
        self.refresh_header()

    # -- conversation ------------------------------------------------------------------------------
    def build_request(self, text: str, system: str | None) -> Request:
        sampling = self.effective_sampling()
        finished = [turn for turn in self.turns if not turn.error]
        if self.settings.mode == "raw":
            transcript = "".join(turn.prompt + turn.answer for turn in finished if turn.mode == "raw")
            return Request.raw(transcript + text, sampling)
        messages = [Message("system", system)] if system else []
        for turn in finished:
            if turn.mode == "chat" and turn.answer:
                messages += [Message("user", turn.prompt), Message("assistant", turn.answer)]
        messages.append(Message("user", text))
        return Request.chat(messages, sampling)

    async def send(self, text: str, system: str | None, message_id: int | None = None) -> TurnView:
        request = self.build_request(text, system)
        turn = TurnView(text, self.settings.mode)
        self.turns.append(turn)
        self.query_one(".pane-empty", Static).display = False
        await self.query_one(".pane-turns", VerticalScroll).mount(turn)
        self._scroll_to_end()
        self.busy = True
        self._generate(turn, request, message_id)
        return turn

    async def drop_last_turn(self) -> TurnView | None:
        if not self.turns:
            return None
        turn = self.turns.pop()
        await turn.remove()
        self._show_empty_hint()
        return turn

    async def clear(self) -> None:
        self.stop()
        for turn in self.turns:
            await turn.remove()
        self.turns.clear()
        self._show_empty_hint()

    async def load_turns(self, turns: list[tuple[str, str, str, Stats | None, str | None]]) -> None:
        """Show saved turns (prompt, mode, answer, stats, error) when a conversation is reopened."""
        await self.clear()
        views = [TurnView(prompt, mode, answer, stats, error) for prompt, mode, answer, stats, error in turns]
        self.turns.extend(views)
        if views:
            self.query_one(".pane-empty", Static).display = False
            await self.query_one(".pane-turns", VerticalScroll).mount_all(views)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _generate(self, turn: TurnView, request: Request, message_id: int | None) -> None:
        worker = get_current_worker()
        _yield_cpu_to_the_ui()
        store = self.tuitune.history
        with self._engine_lock:
            try:
                engine = self._ensure_engine()
            except TuituneError as error:
                if store is not None and message_id is not None:
                    store.update_message(message_id, "", status="error", error=str(error))
                self.post_message(self.Finished(self, turn, "", None, str(error), []))
                return
            if getattr(engine, "adapter_path", None) is not None:  # a finetuned model: base + LoRA adapter
                engine.set_adapter_scale(self.settings.adapter_scale)  # no reload; the engine drops its cache
            generation = engine.generate(request)
            self._generation = generation
            pending: list[str] = []
            tokens = 0
            first_at: float | None = None
            last_flush = 0.0
            error: str | None = None
            try:
                for chunk in generation:
                    if worker.is_cancelled:
                        generation.cancel()
                    tokens += 1
                    now = time.monotonic()
                    first_at = first_at or now
                    pending.append(chunk)
                    if now - last_flush >= FLUSH_INTERVAL_S:
                        rate = (tokens - 1) / (now - first_at) if now > first_at else None
                        self.post_message(self.Streamed(self, turn, "".join(pending), tokens, rate))
                        pending.clear()
                        last_flush = now
                        if store is not None and message_id is not None:
                            store.update_message(message_id, generation.text, status="streaming")
            except TuituneError as failure:
                error = str(failure)
            except Exception as failure:
                error = f"unexpected error: {failure!r}"
            finally:
                self._generation = None
        if pending:
            self.post_message(self.Streamed(self, turn, "".join(pending), tokens, None))
        stats = generation.stats
        if store is not None and message_id is not None:
            status = "error" if error else ("cancelled" if stats.finish_reason == "cancelled" else "done")
            store.update_message(message_id, generation.text, status=status, stats=stats.as_dict(), error=error)
        self.post_message(
            self.Finished(self, turn, generation.text, None if error else stats, error, generation.notices)
        )

    def _following(self, container: VerticalScroll) -> bool:
        """False once the user has scrolled up from where the pane last put the view."""
        return self._followed_to is None or container.scroll_y >= self._followed_to - 2

    def _scroll_to_end(self) -> None:
        self._followed_to = None
        container = self.query_one(".pane-turns", VerticalScroll)
        self.call_after_refresh(container.scroll_end, animate=False, immediate=True)

    def _follow_live_text(self, turn: TurnView, attempts: int = 0) -> None:
        """While streaming, scroll so the last line of text (not the blank reservation below it) is at the bottom."""
        live = turn.live
        container = self.query_one(".pane-turns", VerticalScroll)
        if live is None or not self._following(container):
            return  # the user scrolled up to read: leave the view alone
        text_bottom = _virtual_top(live, container) + live.text_lines + 1
        target = max(0, text_bottom - container.scrollable_content_region.height)
        reachable = min(target, int(container.max_scroll_y))
        self._followed_to = reachable  # where the view is put, so the user-scrolled-up test compares like with like
        if reachable != int(container.scroll_y):  # also back up, when a late scroll_end overshot into the reservation
            container.scroll_to(y=reachable, animate=False, immediate=True)
        if target > reachable and attempts < 10:  # the layout lags the text on a busy machine: follow once it grew
            self.call_after_refresh(self._follow_live_text, turn, attempts + 1)

    async def on_compare_pane_streamed(self, message: Streamed) -> None:
        if message.pane is not self:
            return
        container = self.query_one(".pane-turns", VerticalScroll)
        await message.turn.write(message.text, slack=container.scrollable_content_region.height)
        self.call_after_refresh(self._follow_live_text, message.turn)
        now = time.monotonic()
        if message.rate is not None and now - self._stats_shown_at >= LIVE_STATS_INTERVAL_S:
            self._stats_shown_at = now  # the counter needs no 10 Hz repaint; the text does
            self.set_status(styled(("generating · ", "dim"), stats_text(None, message.tokens, message.rate)))

    async def on_compare_pane_finished(self, message: Finished) -> None:
        if message.pane is not self:
            return
        container = self.query_one(".pane-turns", VerticalScroll)
        following = self._following(container)
        await message.turn.finish(message.text, message.stats, message.error)
        if following:  # the final Markdown render changes the height: stay at the end of the answer
            self._scroll_to_end()
        if message.turn is (self.turns[-1] if self.turns else None):
            self.busy = False
            self.set_status(styled(("ready", "dim")))
        for notice in message.notices:
            self.set_status(styled((f"note: {notice}", "dim")))

    def stop(self) -> None:
        if self._generation is not None:
            self._generation.cancel()
        self.workers.cancel_group(self, "generate")

    # -- pane actions (keys work when the pane has focus) ------------------------------------------
    def action_toggle_mode(self) -> None:
        self.settings.mode = "chat" if self.settings.mode == "raw" else "raw"
        self.refresh_header()
        self._show_empty_hint()
        self.post_message(PaneChanged(self))

    def action_stop(self) -> None:
        self.stop()

    def action_copy(self) -> None:
        answer = self.last_answer()
        if answer:
            self.app.copy_to_clipboard(answer)
            self.app.notify(f"copied pane {self.letter}'s answer ({len(answer)} characters)")
        else:
            self.app.notify("nothing to copy yet", severity="warning")

    def last_answer(self) -> str:
        for turn in reversed(self.turns):
            if turn.answer:
                return turn.answer
        return ""

    def action_adapter_strength(self, delta: float) -> None:
        """Blend base and finetuned weights: takes effect on the next answer, without reloading the model."""
        entry = self.tuitune.catalog_entry(self.settings.model)
        if entry is None or entry.kind != "finetuned":
            self.app.notify("strength applies to finetuned models (a base + LoRA adapter)", severity="warning")
            return
        self.settings.adapter_scale = round(min(1.0, max(0.0, self.settings.adapter_scale + delta)), 2)
        self.refresh_header()
        self.post_message(PaneChanged(self))
        self.app.notify(f"pane {self.letter}: adapter strength {self.settings.adapter_scale:.2f} from the next answer")

    def action_pick_model(self) -> None:
        self.post_message(PaneRequest(self, "pick_model"))

    def action_pane_params(self) -> None:
        self.post_message(PaneRequest(self, "params"))

    def action_regenerate(self) -> None:
        self.post_message(PaneRequest(self, "regenerate"))

    def action_close_pane(self) -> None:
        self.post_message(PaneRequest(self, "close"))

    def on_unmount(self) -> None:
        self.close_engine()


@dataclass
class PaneChanged(TextualMessage):
    """The pane's model, mode or overrides changed (the screen saves it)."""

    pane: ComparePane


@dataclass
class PaneRequest(TextualMessage):
    """The pane asks its screen to do something that involves other widgets (a dialog, closing it)."""

    pane: ComparePane
    action: str


def _virtual_top(widget: Widget, scroller: Widget) -> int:
    """``widget``'s top row in ``scroller``'s scrollable (virtual) space, the way Textual's scroll_to_widget
    walks up: from layout data that does not depend on the scroll offset, so a scroll since the last
    layout (a late ``scroll_end``) cannot skew it the way ``region`` is skewed."""
    top = widget.virtual_region.y
    node = widget.parent
    while isinstance(node, Widget) and node is not scroller:
        top += node.virtual_region.y + node.styles.border.spacing.top
        node = node.parent
    return top
