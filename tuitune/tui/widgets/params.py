"""The shared parameters panel: sampling, the context size and the system prompt, applied to every pane.

Every numeric field has a documented range; a value outside it is shown as an error under the field and never
applied, so a typo such as top-p = 9 cannot silently reach the engines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label

from tuitune.engines.base import Sampling

# field → (label, type, help). Every key but "n_ctx" is a Sampling field; n_ctx (0 = the model's default) is
# kept beside Sampling because it changes how a model is loaded, not how one answer is sampled.
FIELDS: dict[str, tuple[str, type, str]] = {
    "temperature": ("temperature", float, "0–5 · 0 = greedy"),
    "top_p": ("top-p", float, "0–1 · 1 = off"),
    "top_k": ("top-k", int, "0–1000 · 0 = off"),
    "min_p": ("min-p", float, "0–1 · 0 = off"),
    "repeat_penalty": ("repeat penalty", float, "0.5–2 · 1 = off"),
    "max_tokens": ("max tokens", int, "1–32768 · answer length"),
    "seed": ("seed", int, "-1 = random · up to 2147483647"),
    "n_ctx": ("context", int, "0 = model default; up to the model's"),
}
SAMPLING_FIELDS = tuple(name for name in FIELDS if name != "n_ctx")

# field → (lowest, highest), both allowed. n_ctx also allows 0 (the model's own context length).
RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0, 5),
    "top_p": (0, 1),
    "top_k": (0, 1000),
    "min_p": (0, 1),
    "repeat_penalty": (0.5, 2),  # < 1 rewards repetition; llama.cpp accepts more, but past 2 text degrades
    "max_tokens": (1, 32768),
    "seed": (-1, 2**31 - 1),
    "n_ctx": (256, 131072),
}


def _rule(name: str) -> str:
    """What a valid value looks like, for error messages: 'an integer between 0 and 1000'."""
    kind = FIELDS[name][1]
    low, high = RANGES[name]
    if name == "seed":
        return f"an integer between -1 (random) and {high}"
    if name == "n_ctx":
        return f"0 (the model's default) or an integer between {low} and {high}"
    return f"{'an integer ' if kind is int else ''}between {low:g} and {high:g}"


def check_value(name: str, value: object) -> float | int:
    """Validate an already-typed value (from a settings file, say); raise ValueError saying what is allowed."""
    label, kind, _ = FIELDS[name]
    message = f"{label} must be {_rule(name)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(message)
    if kind is int and not isinstance(value, int):
        raise ValueError(message)
    if not math.isfinite(value):
        raise ValueError(f"{message} (not {value})")
    low, high = RANGES[name]
    if name == "n_ctx" and value == 0:
        return 0
    if not low <= value <= high:
        raise ValueError(message)
    return kind(value)


def parse_field(name: str, text: str) -> float | int:
    """Parse one parameter typed by a user; raise ValueError with a message the user can act on."""
    label, kind, _ = FIELDS[name]
    try:
        value = kind(text.strip())
    except ValueError:
        raise ValueError(f"{label} must be {_rule(name)}") from None
    return check_value(name, value)


class ParamLabel(Label):
    """A label that wraps to the panel's width (help texts and error messages are longer than the narrow panel)."""

    DEFAULT_CSS = "ParamLabel { width: 100%; }"


class ParamsPanel(VerticalScroll):
    """Edits a Sampling, the context size and a system prompt; posts Changed only when every value is valid."""

    @dataclass
    class Changed(Message):
        sampling: Sampling
        system: str
        n_ctx: int

    def __init__(self, sampling: Sampling, system: str = "", n_ctx: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sampling = sampling
        self.system = system
        self.n_ctx = n_ctx
        self._errors: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Label("[b]Shared parameters[/b]")
        for name, (label, _, help_text) in FIELDS.items():
            yield ParamLabel(f"{label} [dim]{help_text}[/]", classes="param-label")
            yield Input(self._current(name), id=f"param-{name}", classes="param-input")
            error = ParamLabel("", id=f"param-{name}-error", classes="param-error", markup=False)
            error.display = False
            yield error
        yield Label("system prompt [dim]chat mode[/]", classes="param-label")
        yield Input(self.system, placeholder="(none)", id="param-system", classes="param-input")

    def _current(self, name: str) -> str:
        return str(self.n_ctx if name == "n_ctx" else getattr(self.sampling, name))

    def errors(self) -> dict[str, str]:
        """Fields whose text is invalid right now (field → message): the screen refuses to send while any are."""
        return dict(self._errors)

    def set_values(self, sampling: Sampling, system: str, n_ctx: int = 0) -> None:
        self.sampling, self.system, self.n_ctx = sampling, system, n_ctx
        for name in FIELDS:
            self.query_one(f"#param-{name}", Input).value = self._current(name)
            self._show_error(name, None)
        self.query_one("#param-system", Input).value = system

    def _show_error(self, name: str, message: str | None) -> None:
        field = self.query_one(f"#param-{name}", Input)
        label = self.query_one(f"#param-{name}-error", Label)
        field.set_class(message is not None, "invalid")
        label.update(message or "")
        label.display = message is not None
        if message is None:
            self._errors.pop(name, None)
        else:
            self._errors[name] = message

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if not self.is_mounted:
            return
        name = (event.input.id or "").removeprefix("param-")
        if name == "system":
            self.system = event.value
        elif name in FIELDS:
            try:
                value = parse_field(name, event.value)
            except ValueError as error:
                self._show_error(name, str(error))  # the last valid value stays in force
                return
            self._show_error(name, None)
            if name == "n_ctx":
                self.n_ctx = int(value)
            else:
                self.sampling = replace(self.sampling, **{name: value})
        else:
            return
        self.post_message(self.Changed(self.sampling, self.system, self.n_ctx))
