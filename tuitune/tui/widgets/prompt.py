"""The prompt box: Enter sends, Ctrl+J (or Shift+Enter where the terminal reports it) adds a newline."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("ctrl+j", "shift+enter", "alt+enter")


class PromptBox(TextArea):
    @dataclass
    class Submitted(Message):
        prompt_box: PromptBox
        text: str

    def __init__(self, placeholder: str = "", **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)
        self.placeholder = placeholder

    def on_mount(self) -> None:
        if self.app.is_headless:  # tests and screenshots: a blinking cursor would make frames differ
            self.cursor_blink = False

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            text = self.text
            if text.strip():
                self.post_message(self.Submitted(self, text))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        await super()._on_key(event)
