"""Small modal dialogs: pick a model or an example prompt, per-pane overrides, rename, confirm, add a found model."""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from tuitune.catalog import Catalog
from tuitune.errors import TuituneError
from tuitune.found_models import AddedModel
from tuitune.safe_text import inert
from tuitune.tui.text import styled
from tuitune.tui.widgets.params import FIELDS, parse_field

if TYPE_CHECKING:
    from tuitune.discovery import FoundModel

PANE_FIELDS = ("temperature", "top_p", "max_tokens", "seed")


class ModelPicker(ModalScreen[str | None]):
    """Choose a catalog model (installed ones first)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, catalog: Catalog, installed: dict[str, bool], current: str | None = None, title: str = ""):
        super().__init__(classes="dialog-screen")
        self.catalog = catalog
        self.installed = installed
        self.current = current
        self.title_text = title or "Choose a model"

    def compose(self) -> ComposeResult:
        options = []
        entries = sorted(self.catalog, key=lambda e: (not self.installed.get(e.id, False), e.id))
        for entry in entries:
            mark = "●" if self.installed.get(entry.id) else "○"
            text = styled(f"{mark} ", (entry.id, "bold"), (f"  {entry.name} · {entry.kind} · {entry.mode}", "dim"))
            options.append(Option(text, id=entry.id))
        with Vertical(classes="dialog"):
            yield Label(styled((self.title_text, "bold"), ("  ● installed  ○ not installed", "dim")))
            yield OptionList(*options, id="model-options")

    def on_mount(self) -> None:
        option_list = self.query_one(OptionList)
        if self.current:
            with contextlib.suppress(Exception):
                option_list.highlighted = option_list.get_option_index(self.current)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class ExamplePicker(ModalScreen[str | None]):
    """The suggested prompts of a suite, one key away."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, prompts: list[tuple[str, str]]):
        super().__init__(classes="dialog-screen")
        self.prompts = prompts

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("[b]Example prompts[/b] [dim]from suites/why-finetune.toml — Enter sends[/]")
            yield OptionList(
                *(
                    Option(styled(text.strip().replace("\n", " ⏎ ")[:200]), id=str(i))
                    for i, (_, text) in enumerate(self.prompts)
                )
            )

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.prompts[int(event.option.id or 0)][1])


class PaneParams(ModalScreen[dict[str, Any] | None]):
    """Per-pane overrides of the shared parameters; an empty field follows the shared value.

    Values are checked as they are typed (same ranges as the shared panel): an invalid field is marked, the
    message naming it is shown under the fields, and Apply is refused until it is fixed.
    """

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, pane_label: str, overrides: dict[str, Any], shared: Any):
        super().__init__(classes="dialog-screen")
        self.pane_label = pane_label
        self.overrides = overrides
        self.shared = shared

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(styled((f"Parameters for pane {self.pane_label}", "bold"), (" empty = shared value", "dim")))
            for name in PANE_FIELDS:
                label, _, help_text = FIELDS[name]
                yield Label(f"{label} [dim]shared: {getattr(self.shared, name)} · {help_text}[/]")
                value = self.overrides.get(name)
                yield Input("" if value is None else str(value), id=f"pane-{name}", classes="param-input")
            yield Label("", id="pane-error", classes="error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Apply", variant="primary", id="apply")
                yield Button("Reset to shared", id="reset")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        elif event.button.id == "reset":
            self.dismiss({})
        else:
            self._apply()

    def on_input_submitted(self) -> None:
        self._apply()

    def on_input_changed(self, event: Input.Changed) -> None:
        if self.is_mounted:
            self._validate()

    def _validate(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Parse every field, mark the invalid ones and show their messages; returns (overrides, errors)."""
        overrides: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name in PANE_FIELDS:
            field = self.query_one(f"#pane-{name}", Input)
            text = field.value.strip()
            try:
                if text:
                    overrides[name] = parse_field(name, text)
            except ValueError as error:
                errors[name] = str(error)
            field.set_class(name in errors, "invalid")
        self.query_one("#pane-error", Label).update("\n".join(errors.values()))
        return overrides, errors

    def _apply(self) -> None:
        overrides, errors = self._validate()
        if errors:
            self.query_one(f"#pane-{next(iter(errors))}", Input).focus()
            return
        self.dismiss(overrides)


class TextPrompt(ModalScreen[str | None]):
    """Ask for one line of text (rename a conversation)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, value: str = ""):
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(styled((self.title_text, "bold"), (" Enter to confirm, Esc to cancel", "dim")))
            yield Input(self.value, id="text-value")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)


class Confirm(ModalScreen[bool]):
    BINDINGS = [Binding("escape", "dismiss(False)", "No"), Binding("y", "dismiss(True)", "Yes")]

    def __init__(self, question: str):
        super().__init__(classes="dialog-screen")
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(styled(self.question))
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (Esc)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class AddFoundModel(ModalScreen[AddedModel | None]):
    """Add a model found on disk to the user's catalog: its kind, its id and its pair.

    Confirming calls ``tuitune.found_models.add_found`` (the same checks and messages as `tuitune models add`);
    a refusal shows in one line here and writes nothing. Dismissed with what was added, or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    NO_PAIR = "(no pair)"

    def __init__(self, model: FoundModel, catalog: Catalog):
        super().__init__(classes="dialog-screen")
        self.model = model
        self.catalog = catalog

    def compose(self) -> ComposeResult:
        from tuitune.found_models import default_id

        kind = "chat" if self.model.has_chat_template else "base"
        pairs = [(styled(entry.id), entry.id) for entry in self.catalog if entry.kind in ("base", "chat")]
        with Vertical(classes="dialog"):
            shown = re.sub(r"@([0-9a-f]{8})[0-9a-f]{32}$", r"@\1", self.model.reference)  # a commit: its short form
            yield Label(styled(("Add to your catalog", "bold"), " ", (shown, "dim")))
            yield Label("Kind (a chat template was found: chat)" if kind == "chat" else "Kind (no chat template: base)")
            yield Select([("chat", "chat"), ("base", "base")], value=kind, allow_blank=False, id="add-kind")
            yield Label("Catalog id")
            yield Input(default_id(self.model.reference), id="add-id")
            yield Label("Compare with (its pair)")
            yield Select(pairs, prompt=self.NO_PAIR, id="add-pair")
            yield Static("", id="add-error", classes="error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Add", variant="primary", id="add")
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#add-id", Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self.confirm()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.confirm()

    def confirm(self) -> None:
        from tuitune.found_models import add_found

        kind = self.query_one("#add-kind", Select).value
        pair = self.query_one("#add-pair", Select).value
        model_id = self.query_one("#add-id", Input).value.strip() or None
        try:
            added = add_found(self.model.reference, kind if isinstance(kind, str) else None, model_id=model_id,
                              pair=pair if isinstance(pair, str) else None, found=[self.model])  # fmt: skip
        except TuituneError as error:
            message = inert(str(error)).replace("\n", " ")
            self.query_one("#add-error", Static).update(Text(message, style="bold red"))
            return
        self.dismiss(added)
