"""Compare (home): 2–4 panes answer the same prompt side by side; synced scrolling and votes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Static

from tuitune.tui.screens.conversation import VERDICTS, ConversationScreen
from tuitune.tui.text import styled
from tuitune.tui.widgets.pane import ComparePane, PaneChanged


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

    def on_mount(self) -> None:
        super().on_mount()
        self._watch_scrolls()

    def _watch_scrolls(self) -> None:
        def follower(container: Any) -> Callable[[], None]:
            return lambda: self._scrolled(container)

        for pane in self.panes:
            container = pane.query_one(".pane-turns")
            self.watch(container, "scroll_y", follower(container), init=False)

    def _scrolled(self, source: Any) -> None:
        if not self.sync_scroll or self._syncing:
            return
        self._syncing = True
        try:
            fraction = source.scroll_y / source.max_scroll_y if source.max_scroll_y else 1.0
            for pane in self.panes:
                container = pane.query_one(".pane-turns")
                if container is not source:
                    container.scroll_to(y=fraction * container.max_scroll_y, animate=False)
        finally:
            self._syncing = False

    def action_sync_scroll(self) -> None:
        self.sync_scroll = not self.sync_scroll
        self.notify(f"synced scrolling {'on' if self.sync_scroll else 'off'}")

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
        self._watch_scrolls()
        pane.preload()
        self.post_message(PaneChanged(pane))

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
