"""Compare (home): 2–4 panes answer the same prompt side by side; synced scrolling and votes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from weakref import WeakSet

from textual import events, on
from textual.binding import Binding
from textual.containers import Horizontal
from textual.geometry import Size
from textual.widget import Widget
from textual.widgets import Static

from tuitune.tui.screens.conversation import VERDICTS, ConversationScreen
from tuitune.tui.text import styled
from tuitune.tui.widgets.pane import ComparePane, PaneChanged

GRID_MIN_SIZE = Size(100, 30)  # a terminal this big gives each pane of a 2×2 grid ~50 columns and ~12 text lines
ROW_PANE_MIN_WIDTH = 60  # a wide terminal keeps one row while every pane still gets this many columns


class CompareScreen(ConversationScreen):
    KIND = "compare"

    BINDINGS = [
        Binding("ctrl+t", "add_pane", "+Pane", id="compare.add_pane"),
        Binding("ctrl+l", "sync_scroll", "Sync scroll", id="compare.sync_scroll"),
        Binding("f6", "vote('a')", "A better", show=False, id="compare.vote_a", priority=True),
        Binding("f7", "vote('b')", "B better", show=False, id="compare.vote_b", priority=True),
        Binding("f8", "vote('tie')", "Tie", show=False, id="compare.vote_tie", priority=True),
        Binding("f9", "vote('bad')", "Both bad", show=False, id="compare.vote_bad", priority=True),
    ]

    def __init__(self, panes: list[tuple[str, str]], prompt: str | None = None):
        super().__init__(panes, prompt)
        self.sync_scroll = False
        self._syncing = False
        self._watched: WeakSet[Widget] = WeakSet()  # scrollers with a watcher: one each, or a scroll syncs twice

    def on_mount(self) -> None:
        # No super().on_mount(): Textual calls each class's own handler along the MRO, so calling it here ran
        # ConversationScreen.on_mount twice (two preload timers, the prompt box focused twice).
        self.panes_changed()

    def panes_changed(self) -> None:
        """Panes were added, closed or replaced: watch the new scrollers and lay the panes out again."""
        self._watch_scrolls()
        self._arrange()
        self.remember_layout()

    @on(PaneChanged)
    def remember_layout(self) -> None:
        """The next launch opens Compare with these models and modes (settings.toml)."""
        layout = [{"model": pane.settings.model, "mode": pane.settings.mode} for pane in self.panes]
        if layout and layout != self.tuitune.settings.compare:
            self.tuitune.update_settings(compare=layout)

    # -- layout: one row, or a 2×2 grid --------------------------------------------------------------
    def _arrange(self, size: Size | None = None) -> None:
        """Three or four panes in one row are too narrow to read (~28 columns each at 120×40): they go into
        a 2×2 grid (a third pane spans the bottom row) when the terminal is big enough for two rows of panes
        and a row would squeeze them below ``ROW_PANE_MIN_WIDTH``. A small terminal (80×24) keeps one row: half
        its height per pane leaves a handful of text lines, fewer than a narrow column shows."""
        width, height = size or self.app.size
        count = len(self.panes)
        grid = (
            count >= 3
            and width >= GRID_MIN_SIZE.width
            and height >= GRID_MIN_SIZE.height
            and width // count < ROW_PANE_MIN_WIDTH
        )
        container = self.query_one("#panes")
        container.set_class(grid, "-grid")
        container.set_class(grid and count % 2 == 1, "-odd")

    def on_resize(self, event: events.Resize) -> None:
        self._arrange(event.size)

    def on_screen_resume(self) -> None:
        self._arrange()  # the terminal may have been resized while another mode was showing

    # -- synced scrolling ----------------------------------------------------------------------------
    def _watch_scrolls(self) -> None:
        def follower(scroller: Widget) -> Callable[[], None]:
            return lambda: self._scrolled(scroller)

        for pane in self.panes:
            scroller = pane.query_one(".pane-turns")
            if scroller not in self._watched:
                self._watched.add(scroller)
                self.watch(scroller, "scroll_y", follower(scroller), init=False)

    def _scrolled(self, source: Widget) -> None:
        """A pane was scrolled (keys, wheel, scrollbar): put the others at the same fraction of their height.

        The followers are scrolled at once (``immediate``), inside the ``_syncing`` guard, so the watchers their
        scrolls fire are ignored: a scroll made by the sync never syncs again. (A deferred scroll landed after
        the guard was reset, synced the others back, and fractional positions that do not round-trip exactly
        bounced between the panes for ever.) Positions are whole lines, so even an echo would settle at once.
        A pane that is answering follows its own text and neither leads nor follows.
        """
        if not self.sync_scroll or self._syncing or not source.max_scroll_y:
            return
        scrollers = [(pane, pane.query_one(".pane-turns")) for pane in self.panes]
        leader = next((pane for pane, scroller in scrollers if scroller is source), None)
        if leader is None or leader.busy:
            return
        fraction = source.scroll_y / source.max_scroll_y
        self._syncing = True
        try:
            for pane, scroller in scrollers:
                if scroller is not source and not pane.busy:
                    scroller.scroll_to(y=round(fraction * scroller.max_scroll_y), animate=False, immediate=True)
        finally:
            self._syncing = False

    def action_sync_scroll(self) -> None:
        self.sync_scroll = not self.sync_scroll
        if self.sync_scroll:  # line the panes up with the focused one (or A) straight away
            focused = self.focused if isinstance(self.focused, ComparePane) else None
            leader = focused or (self.panes[0] if self.panes else None)
            if leader is not None:
                self._scrolled(leader.query_one(".pane-turns"))
        self.notify(f"synced scrolling {'on' if self.sync_scroll else 'off'}")

    # -- panes -----------------------------------------------------------------------------------------
    async def action_add_pane(self) -> None:
        panes = self.panes
        if len(panes) >= self.MAX_PANES:
            self.notify(f"at most {self.MAX_PANES} panes", severity="warning")
            return
        source = panes[-1].settings if panes else None
        entry = self.tuitune.catalog_entry(source.model) if source else None
        model = (entry.pair if entry and entry.pair else None) or (source.model if source else "")
        pair_entry = self.tuitune.catalog_entry(model)
        pane = ComparePane(len(panes), model, pair_entry.mode if pair_entry else "chat")
        await self.query_one("#panes", Horizontal).mount(pane)
        pane.shared = self.sampling
        self.panes_changed()
        pane.preload()
        self.post_message(PaneChanged(pane))

    async def close_pane(self, pane: ComparePane, confirmed: bool = False) -> None:
        await super().close_pane(pane, confirmed)
        self.panes_changed()

    def action_vote(self, verdict: str) -> None:
        panes = self.panes
        if len(panes) < 2 or not panes[0].turns:
            self.notify("vote after both panes have answered", severity="warning")
            return
        if any(pane.busy for pane in panes):
            self.notify("wait for the answers to finish", severity="warning")
            return
        store = self.tuitune.history
        if store is not None and self.conversation_id is not None:
            store.record_vote(self.conversation_id, len(panes[0].turns) - 1, verdict)
        bar = self.query_one("#vote-bar", Static)
        bar.update(
            styled("Voted: ", (VERDICTS[verdict], "bold"), f" ({panes[0].settings.model} vs {panes[1].settings.model})")
        )
        self.notify(f"vote saved: {VERDICTS[verdict]}")

    def palette_commands(self) -> list[tuple[str, str, Any]]:
        commands = super().palette_commands()
        commands += [
            ("Add pane", "Add a pane (up to 4), starting with the last pane's pair", self.action_add_pane),
            ("Synced scrolling", "Scroll all panes together", self.action_sync_scroll),
        ]
        for verdict, label in VERDICTS.items():
            commands.append(
                (f"Vote: {label}", "Record a verdict on the last answers", lambda v=verdict: self.action_vote(v))
            )
        if len(self.panes) > 1:
            commands += [(f"Pane {p.letter}: close", p.settings.model, p.action_close_pane) for p in self.panes]
        return commands
