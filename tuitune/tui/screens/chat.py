"""Chat: the single-pane conversation, with edit-and-resend of the last message."""

from __future__ import annotations

from typing import Any

from textual.binding import Binding

from tuitune.tui.screens.conversation import ConversationScreen
from tuitune.tui.widgets.prompt import PromptBox


class ChatScreen(ConversationScreen):
    KIND = "chat"

    BINDINGS = [
        Binding("ctrl+e", "edit_last", "Edit last", id="chat.edit_last", priority=True),
    ]

    def placeholder(self) -> str:
        return "Message · Enter sends · Ctrl+J newline · Ctrl+E edits your last message"

    async def action_edit_last(self) -> None:
        """Take back the last message: a running answer to it is stopped first, then the text is in the box."""
        pane = self.panes[0]
        if not pane.turns:
            self.notify("nothing to edit yet", severity="warning")
            return
        pane.when_idle(self._edit_last)

    async def _edit_last(self) -> None:
        pane = self.panes[0]
        last = await pane.drop_last_turn()
        if last is None:
            return
        store = self.tuitune.history
        if store is not None and self.conversation_id is not None:
            store.delete_messages_from(self.conversation_id, pane.index, last.number)
            if not pane.turns:  # nothing left: the next message starts (and titles) the conversation again
                store.delete(self.conversation_id)
                self.conversation_id = None
        box = self.query_one(PromptBox)
        box.text = last.prompt
        box.move_cursor(box.document.end)  # typing goes after the recalled text, not before it
        box.focus()

    def action_pick_model(self) -> None:
        self.pick_model(self.panes[0])

    def open_model(self, model_id: str) -> None:
        self.set_pane_model(self.panes[0], model_id)

    def palette_commands(self) -> list[tuple[str, str, Any]]:
        edit = ("Edit last message", "Take back your last message to edit and resend it", self.action_edit_last)
        return [*super().palette_commands(), edit]
