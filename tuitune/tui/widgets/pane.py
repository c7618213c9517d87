"""A model pane: one model, one mode, its own conversation, answers streamed from a worker thread.

A pane is a small state machine, and its header always shows the state it is in::

    empty → loading (load progress) → ready → reading (prompt tokens read / total) → generating → ready
                      ↘ error                     ↘ stopping (Esc, Alt+S) ↗

Only the UI thread changes the state, from messages the workers post (pane_runs.py); every message names the
run it belongs to, so a message about a run or a turn that no longer exists is dropped instead of touching
removed widgets. Each pane owns one engine and a lock around it (a ``Llama`` is used by one thread at a time);
loading, generating and closing happen in worker threads so the UI never waits on a model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message as TextualMessage
from textual.widgets import Static

from tuitune.engines.base import Engine, LoadControl, Message, Request, Sampling, Stats
from tuitune.tui.text import styled
from tuitune.tui.widgets.follow import FollowingScroll
from tuitune.tui.widgets.pacer import RedrawPacer
from tuitune.tui.widgets.pane_runs import PaneRuns, Run, next_run_id
from tuitune.tui.widgets.pane_state import PaneStatus, header_state, status_line
from tuitune.tui.widgets.turn import TurnView

if TYPE_CHECKING:
    from tuitune.tui.app import TuituneApp

PANE_LETTERS = "ABCD"


@dataclass
class PaneSettings:
    """What the pane runs: the model, its mode, and parameter overrides on top of the shared ones."""

    model: str
    mode: str
    overrides: dict[str, Any]
    adapter_scale: float = 1.0  # finetuned models: 0 is the base, 1 the finetune (WiSE-FT blend in between)


class ComparePane(PaneRuns, Vertical, can_focus=True):
    # Letters typed at a focused pane go to the prompt box (a stray "r" must not replace an answer), so the
    # pane's own actions are on Alt keys, and in the command palette.
    BINDINGS = [
        Binding("alt+m", "toggle_mode", "Raw/chat", id="pane.toggle_mode"),
        Binding("alt+o", "pick_model", "Model", id="pane.pick_model"),
        Binding("alt+p", "pane_params", "Pane params", id="pane.params"),
        Binding("alt+s", "stop", "Stop", id="pane.stop"),
        Binding("alt+r", "regenerate", "Regenerate", id="pane.regenerate"),
        Binding("alt+c", "copy", "Copy", id="pane.copy"),
        Binding("alt+x", "close_pane", "Close", id="pane.close"),
        Binding("alt+minus", "adapter_strength(-0.25)", "Weaker", id="pane.weaker"),
        Binding("alt+plus,alt+equals_sign", "adapter_strength(0.25)", "Stronger", id="pane.stronger"),
        Binding("up", "scroll('up')", show=False),
        Binding("down", "scroll('down')", show=False),
        Binding("pageup", "scroll('page_up')", show=False),
        Binding("pagedown", "scroll('page_down')", show=False),
        Binding("home", "scroll('home')", show=False),
        Binding("end", "scroll('end')", show=False),
    ]

    @dataclass
    class Progress(TextualMessage):
        pane: ComparePane
        run_id: int | None  # None: the model is being loaded ahead of any prompt
        phase: str  # loading | reading | generating
        done: float = 0  # load fraction, or prompt tokens read
        total: int = 0  # prompt tokens

    @dataclass
    class Streamed(TextualMessage):
        pane: ComparePane
        run_id: int
        turn: TurnView
        text: str
        tokens: int
        rate: float | None

    @dataclass
    class Finished(TextualMessage):
        pane: ComparePane
        run_id: int
        turn: TurnView
        text: str
        stats: Stats | None
        error: str | None
        notices: list[str]

    @dataclass
    class EngineState(TextualMessage):
        pane: ComparePane
        state: str  # loading | ready | error | empty (a load was stopped)
        detail: str = ""
        backend: str = ""  # ready: where the model runs, "CPU" or "CUDA 28/28 layers" (engines/offload.py)

    def __init__(self, index: int, model: str, mode: str, overrides: dict[str, Any] | None = None, **kwargs):
        super().__init__(classes="pane", **kwargs)
        self.index = index
        self.settings = PaneSettings(model, mode, dict(overrides or {}))
        self.turns: list[TurnView] = []
        self.shared = Sampling()
        self.n_ctx = 0  # 0: the model's default context
        self.status = PaneStatus()
        self.engine_state = "empty"  # the model: empty | loading | ready | error
        self.backend_label = ""  # where the loaded model runs; empty for remote and scripted engines
        self._engine: Engine | None = None
        self._engine_key: tuple[str, int] | None = None
        self._engine_lock = threading.Lock()
        self._preload: LoadControl | None = None
        self._run: Run | None = None
        self._after_run: Callable[[], Awaitable[None] | None] | None = None
        self._stats_shown_at = 0.0
        self.pacer = RedrawPacer()  # how often the worker hands over text
        self._header: Text | None = None

    @property
    def tuitune(self) -> TuituneApp:
        return self.app  # type: ignore[return-value]

    @property
    def letter(self) -> str:
        return PANE_LETTERS[self.index] if self.index < len(PANE_LETTERS) else str(self.index + 1)

    @property
    def busy(self) -> bool:
        """An answer is in flight (loading for it, reading its prompt, generating or stopping)."""
        return self._run is not None

    @property
    def state(self) -> str:
        return self.status.state

    # -- layout ------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(classes="pane-header")
        with FollowingScroll(classes="pane-turns"):
            yield Static(classes="pane-empty")
        yield Static(classes="pane-status")

    @property
    def scroller(self) -> FollowingScroll:
        return self.query_one(".pane-turns", FollowingScroll)

    def on_mount(self) -> None:
        self.refresh_header()
        self.show_empty_hint()

    def show_empty_hint(self) -> None:
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
        badge = ("  ≠ params ", "reverse") if self.differs_from_shared() else ""
        strength = f" · strength {self.settings.adapter_scale:.2f}" if entry and entry.has_adapter else ""
        backend = f" · {self.backend_label}" if self.backend_label else ""
        label, style = header_state(self.status)
        header = Text.assemble(
            styled((self.letter, "bold"), " ", (f" {self.settings.mode.upper()} ", "reverse"), " "),
            styled((f"{label} ", style)),
            styled(self.settings.model, (kind, "dim"), (strength, "bold"), (backend, "dim"), badge),
        )
        if header != self._header:  # a live pane refreshes its state twice a second: most of the time, no change
            self._header = header
            self.query_one(".pane-header", Static).update(header, layout=False)  # one line, fixed height

    def _set_state(self, state: str, **details: Any) -> None:
        """The one place the pane's state changes (UI thread); the header and the status line follow it."""
        self.status = PaneStatus(state, **details)
        self.refresh_header()
        self.query_one(".pane-status", Static).update(status_line(self.status), layout=False)

    def note(self, text: str) -> None:
        """A one-line note in the status line (a fallback chat format, the seed of a regeneration)."""
        self.query_one(".pane-status", Static).update(styled((text, "dim")), layout=False)

    # -- engine lifecycle (worker threads) ---------------------------------------------------------
    def on_compare_pane_engine_state(self, message: EngineState) -> None:
        if message.pane is not self:
            return
        self.engine_state = message.state
        self.backend_label = message.backend if message.state == "ready" else ""
        if self._run is not None:  # the run's own phases drive the state; a load failure ends it via Finished
            return
        if message.state == "loading":
            if self._preload is not None and not self._preload.cancelled:
                self._set_state("loading", model=message.detail, size=self._model_size(message.detail))
        elif message.state == "error":
            self._set_state("error", detail=message.detail)
        elif message.state == "empty":
            self._set_state("empty", detail="loading stopped · a prompt loads the model again")
        else:
            self._set_state("ready")

    def _model_size(self, model_id: str) -> int | None:
        entry = self.tuitune.catalog_entry(model_id)
        return entry.size if entry and entry.size else None

    def on_compare_pane_progress(self, message: Progress) -> None:
        if message.pane is not self:
            return
        if message.run_id is not None and (self._run is None or self._run.id != message.run_id):
            return  # a run that ended or was replaced
        if message.run_id is None and (self._run is not None or self._preload is None or self._preload.cancelled):
            return  # a preload's progress while a prompt's run owns the header, or after it was stopped
        if self.state == "stopping":
            return
        if message.phase == "loading":
            self._set_state(
                "loading", model=self.settings.model, size=self._model_size(self.settings.model),
                fraction=float(message.done),
            )  # fmt: skip
        elif message.phase == "reading":
            self._set_state("reading", done=int(message.done), total=message.total)
        elif self.state != "generating":
            self._set_state("generating")

    # -- conversation ------------------------------------------------------------------------------
    def build_request(self, text: str, system: str | None, seed: int | None = None) -> Request:
        sampling = self.effective_sampling()
        if seed is not None:
            sampling = replace(sampling, seed=seed)
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

    async def send(
        self,
        text: str,
        system: str | None,
        message_id: int | None = None,
        seed: int | None = None,
        record: dict[str, Any] | None = None,
        number: int = 0,
    ) -> TurnView:
        """Start an answer (the caller checked ``busy``): the state goes to loading or reading at once."""
        request = self.build_request(text, system, seed)
        turn = TurnView(text, self.settings.mode, number=number)
        self.turns.append(turn)
        self.query_one(".pane-empty", Static).display = False
        await self.scroller.mount(turn)
        self.scroller.to_end()
        if self._preload is not None:
            self._preload.cancel()  # the run loads the model it needs itself (same model: it waits for it)
            self._preload = None
        run_id = next_run_id()
        run = self._run = Run(run_id, turn, self._load_control(run_id), record=record, message_id=message_id)
        loaded = self._engine is not None and self._engine_key == (self.settings.model, self.n_ctx)
        self._set_state("reading" if loaded else "loading", model=self.settings.model, total=0)
        self.pacer.start()
        self._generate(run, request, message_id)
        return turn

    async def drop_last_turn(self) -> TurnView | None:
        if not self.turns or self.busy:
            return None
        turn = self.turns.pop()
        await turn.remove()
        self.show_empty_hint()
        return turn

    async def clear(self) -> None:
        self.stop()
        turns, self.turns = self.turns, []  # first: messages arriving while they are removed are dropped
        for turn in turns:
            await turn.remove()
        self.show_empty_hint()

    async def load_turns(self, turns: list[tuple[str, str, str, Stats | None, str | None, int]]) -> None:
        """Show saved turns (prompt, mode, answer, stats, error, number) when a conversation is reopened."""
        await self.clear()
        views = [TurnView(*turn[:5], number=turn[5]) for turn in turns]
        self.turns.extend(views)
        if views:
            self.query_one(".pane-empty", Static).display = False
            await self.scroller.mount_all(views)

    def _current(self, run_id: int, turn: TurnView) -> bool:
        """The message belongs to the run in flight and its turn is still on screen."""
        alive = turn in self.turns and turn.is_mounted and turn.parent is not None
        return alive and self._run is not None and self._run.id == run_id

    async def on_compare_pane_streamed(self, message: Streamed) -> None:
        if message.pane is not self or not self._current(message.run_id, message.turn):
            return
        if self.state not in ("generating", "stopping"):
            self._set_state("generating")
        container = self.scroller
        await message.turn.write(message.text, slack=container.scrollable_content_region.height)
        self.call_after_refresh(container.follow_live_text, message.turn)
        self.pacer.drawn()
        now = time.monotonic()
        if message.rate is not None and now - self._stats_shown_at >= 0.5 and self.state == "generating":
            self._stats_shown_at = now  # the counter needs no repaint per update; the text does
            self._set_state("generating", tokens=message.tokens, rate=message.rate)

    async def on_compare_pane_finished(self, message: Finished) -> None:
        if message.pane is not self or self._run is None or self._run.id != message.run_id:
            return
        self._run = None
        if message.turn in self.turns and message.turn.is_mounted:
            following = self.scroller.following()
            await message.turn.finish(message.text, message.stats, message.error)
            if following:  # the final Markdown render changes the height: stay at the end of the answer
                self.scroller.to_end()
        if self.engine_state == "error":
            self._set_state("error", detail=message.error or "")
        elif self.engine_state in ("empty", "loading"):  # a stopped load (that may still be letting go)
            self._set_state("empty", detail="loading stopped · a prompt loads the model again")
        else:
            stopped = message.stats is not None and message.stats.stopped_during
            self._set_state("ready", detail="stopped" if stopped else "the answer failed" if message.error else "")
        for notice in message.notices:
            self.note(f"note: {notice}")
        action, self._after_run = self._after_run, None
        if action is not None:
            result = action()
            if result is not None:
                await result

    # -- keys --------------------------------------------------------------------------------------
    def _prompt_box(self) -> Any:
        return next(iter(self.screen.query("#prompt")), None)

    def on_paste(self, event: events.Paste) -> None:
        """A paste while a pane has focus is a prompt too: it goes to the prompt box, not into the void."""
        box = self._prompt_box()
        if box is not None:
            event.stop()
            box.focus()
            box.insert(event.text)

    def on_key(self, event: events.Key) -> None:
        """Printable text typed at a pane goes to the prompt box, where the user meant it to go."""
        if event.is_printable and event.character and not event.key.startswith(("alt+", "ctrl+")):
            box = self._prompt_box()
            if box is not None:
                event.stop()
                event.prevent_default()
                box.focus()
                box.insert(event.character)  # type: ignore[attr-defined]

    def action_scroll(self, how: str) -> None:
        scroller = self.scroller
        {"up": scroller.scroll_up, "down": scroller.scroll_down, "page_up": scroller.scroll_page_up,
         "page_down": scroller.scroll_page_down, "home": scroller.scroll_home, "end": scroller.scroll_end}[how](
            animate=False)  # fmt: skip

    # -- pane actions ------------------------------------------------------------------------------
    def refuse_while_busy(self, what: str) -> bool:
        """True (and a one-line notice) if an answer is in flight: ``what`` waits until it is stopped."""
        if self._run is None:
            return False
        self.app.notify(
            f"pane {self.letter} is answering: stop it first (Alt+S this pane, Esc every pane) to {what}",
            severity="warning",
        )
        return True

    def action_toggle_mode(self) -> None:
        if self.refuse_while_busy("change the mode"):
            return
        self.settings.mode = "chat" if self.settings.mode == "raw" else "raw"
        self.refresh_header()
        self.show_empty_hint()
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
        if entry is None or not entry.has_adapter:
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
