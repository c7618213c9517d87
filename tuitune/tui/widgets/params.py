"""The shared parameters panel: sampling and the system prompt, applied to every pane."""

from __future__ import annotations

from dataclasses import dataclass, replace

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label

from tuitune.engines.base import RANDOM_SEED, Sampling

# field → (label, type, help)
FIELDS: dict[str, tuple[str, type, str]] = {
    "temperature": ("temperature", float, "0 = greedy"),
    "top_p": ("top-p", float, "0–1"),
    "top_k": ("top-k", int, "0 = off"),
    "min_p": ("min-p", float, "0–1"),
    "repeat_penalty": ("repeat penalty", float, "1 = off"),
    "max_tokens": ("max tokens", int, "answer length"),
    "seed": ("seed", int, "-1 = random"),
}


def parse_field(name: str, text: str) -> float | int:
    """Parse one parameter; raise ValueError with a message the user can act on."""
    label, kind, help_text = FIELDS[name]
    try:
        value = kind(text.strip())
    except ValueError:
        raise ValueError(f"{label} must be {'an integer' if kind is int else 'a number'} ({help_text})") from None
    if name == "max_tokens" and value < 1:
        raise ValueError("max tokens must be at least 1")
    if name in ("temperature", "top_p", "min_p", "top_k") and value < 0:
        raise ValueError(f"{label} cannot be negative")
    if name == "seed" and value < RANDOM_SEED:
        raise ValueError("seed must be -1 (random) or a non-negative integer")
    return value


class ParamsPanel(VerticalScroll):
    """Edits a Sampling and a system prompt; posts Changed when a valid value is entered."""

    @dataclass
    class Changed(Message):
        sampling: Sampling
        system: str

    def __init__(self, sampling: Sampling, system: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.sampling = sampling
        self.system = system

    def compose(self) -> ComposeResult:
        yield Label("[b]Shared parameters[/b]")
        for name, (label, _, help_text) in FIELDS.items():
            yield Label(f"{label} [dim]{help_text}[/]", classes="param-label")
            yield Input(str(getattr(self.sampling, name)), id=f"param-{name}", classes="param-input")
        yield Label("system prompt [dim]chat mode[/]", classes="param-label")
        yield Input(self.system, placeholder="(none)", id="param-system", classes="param-input")

    def set_values(self, sampling: Sampling, system: str) -> None:
        self.sampling, self.system = sampling, system
        for name in FIELDS:
            self.query_one(f"#param-{name}", Input).value = str(getattr(sampling, name))
        self.query_one("#param-system", Input).value = system

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if not self.is_mounted:
            return
        name = (event.input.id or "").removeprefix("param-")
        if name == "system":
            self.system = event.value
        else:
            try:
                value = parse_field(name, event.value)
            except ValueError as error:
                event.input.add_class("invalid")
                event.input.tooltip = str(error)
                return
            event.input.remove_class("invalid")
            event.input.tooltip = None
            self.sampling = replace(self.sampling, **{name: value})
        self.post_message(self.Changed(self.sampling, self.system))
