"""The Train screen's form: its fields, their values as a TrainConfig, the preset line and the memory plan line.

A blank number field is not given: the base model's family preset (presets.toml) fills it, else the
TrainConfig default; the preset line under the fields shows each effective value and where it came from.

The plan reads the base model's GGUF header and tokenizes the dataset with llama.cpp's vocab-only tokenizer
(about a second; the counts are kept per file, size and mtime), so it runs in a thread worker a moment after
the last change, never on the UI thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, Static
from textual.worker import get_current_worker

from tuitune.errors import TuituneError
from tuitune.paths import project_file
from tuitune.safe_text import inert
from tuitune.training.planner import Plan, TokenCounts, human
from tuitune.training.presets import Resolved
from tuitune.training.runs import DEVICE_CHOICES, QUANTIZE_CHOICES, TrainConfig

FIELDS = (  # (id, label, default)
    ("name", "run name", "tuitune-identity"),
    ("data", "dataset", "data/tuitune-identity.jsonl"),
    ("val", "validation", "data/tuitune-heldout.jsonl"),
    ("max_steps", "steps", "40"),
    ("lr", "learning rate", ""),  # blank: the preset's
    ("rank", "LoRA rank", ""),
    ("alpha", "LoRA alpha", ""),
    ("batch_size", "batch size", "8"),
    ("nproc", "processes", "1"),
)
NUMBERS = {"max_steps": int, "lr": float, "rank": int, "alpha": float, "batch_size": int, "nproc": int}
SELECTS = (("device", "device", DEVICE_CHOICES), ("quantize", "quantize", QUANTIZE_CHOICES))  # default: the first
CHECKPOINT = "grad_checkpoint"
# Widgets whose change changes the plan.
PLAN_INPUTS = {"train-base", "train-data", "train-batch_size", "train-rank", "train-nproc", "train-device",
               "train-quantize", f"train-{CHECKPOINT}"}  # fmt: skip
PLAN_DELAY_S = 0.4  # after the last change: typing a path does not tokenize the dataset once per key


def _default_path(relative: str) -> str:
    found = project_file(relative)
    return str(found) if found else relative


def compose_fields() -> ComposeResult:
    """The settings rows under the base model: text fields, device and quantization, checkpointing."""
    for field_id, label, default in FIELDS:
        value = _default_path(default) if field_id in ("data", "val") else default
        with Horizontal(classes="train-field"):
            yield Label(label)
            yield Input(value, id=f"train-{field_id}")
    for field_id, label, choices in SELECTS:
        with Horizontal(classes="train-field"):
            yield Label(label)
            yield Select([(choice, choice) for choice in choices], value=choices[0], allow_blank=False,
                         compact=True, id=f"train-{field_id}")  # fmt: skip
    with Horizontal(classes="train-field"):
        yield Checkbox("gradient checkpointing", id=f"train-{CHECKPOINT}", compact=True)
    yield PresetLine(id="train-preset")


def form_values(screen: Widget) -> dict[str, str]:
    """Every field as text, as the settings file keeps it."""
    values = {field_id: screen.query_one(f"#train-{field_id}", Input).value for field_id, _, _ in FIELDS}
    for field_id, _, _ in SELECTS:
        values[field_id] = str(screen.query_one(f"#train-{field_id}", Select).value)
    values[CHECKPOINT] = "true" if screen.query_one(f"#train-{CHECKPOINT}", Checkbox).value else "false"
    base = screen.query_one("#train-base", Select).value
    if isinstance(base, str) and base:
        values["base"] = base
    return values


def restore_values(screen: Widget, saved: dict[str, str]) -> None:
    """Put saved values back; a value a field no longer offers keeps the default."""
    for field_id, _, _ in FIELDS:
        if field_id in saved:
            screen.query_one(f"#train-{field_id}", Input).value = saved[field_id]
    for field_id, _, choices in SELECTS:
        if saved.get(field_id) in choices:
            screen.query_one(f"#train-{field_id}", Select).value = saved[field_id]
    if CHECKPOINT in saved:
        screen.query_one(f"#train-{CHECKPOINT}", Checkbox).value = saved[CHECKPOINT] == "true"


def _numbers(values: dict[str, str]) -> dict[str, Any]:
    """The number fields typed in (a blank one is not given: None)."""
    numbers: dict[str, Any] = {}
    for key, kind in NUMBERS.items():
        text = values.get(key, "").strip()
        try:
            numbers[key] = kind(text) if text else None
        except ValueError:
            label = dict((field_id, label) for field_id, label, _ in FIELDS)[key]
            raise TuituneError(f"{label} must be a number, not '{text}'") from None
    return numbers


def resolved_for(base: str, given: dict[str, Any]) -> Resolved:
    """The base model's family preset under the fields given (reads the catalog and presets files: small)."""
    from tuitune.catalog import load_catalog
    from tuitune.training.presets import choose, load_presets, resolve

    entry = load_catalog().get(base)
    return resolve(choose(load_presets(), None, entry.family), given, given_as="form")


def config_from(values: dict[str, str]) -> TrainConfig:
    """The run the form describes, validated; TuituneError names the first field that is wrong."""
    from dataclasses import fields, replace

    values = {key: value.strip() for key, value in values.items()}
    if not values.get("base"):
        raise TuituneError("pick a base model (download one on the Models screen first)")
    given = _numbers(values)
    given.update(data=str(Path(values["data"]).expanduser().resolve()),
                 val=str(Path(values["val"]).expanduser().resolve()) if values["val"] else None)  # fmt: skip
    resolved = resolved_for(values["base"], given)
    known = {item.name for item in fields(TrainConfig)}
    config = TrainConfig(name=values["name"], base=values["base"], data=given["data"],
                         device=values.get("device", "auto"), quantize=values.get("quantize", "none"),
                         grad_checkpoint=values.get(CHECKPOINT) == "true", preset=resolved.record())  # fmt: skip
    config = replace(config, **{key: value for key, value in resolved.values.items() if key in known})
    config.validate()
    return config


class PresetLine(Static):
    """The base model's family preset and, per setting, the effective value and its source (form, preset,
    default); blank number fields show the value they will take as their placeholder."""

    def on_mount(self) -> None:
        self.call_after_refresh(self._follow)

    def _follow(self) -> None:
        self.watch(self.screen.query_one("#train-base", Select), "value", self._refresh, init=False)
        for key in NUMBERS:
            self.watch(self.screen.query_one(f"#train-{key}", Input), "value", self._refresh, init=False)
        self._refresh()

    def _refresh(self, _value: object = None) -> None:
        base = self.screen.query_one("#train-base", Select).value
        if not isinstance(base, str) or not base:
            self.update(Text("preset: pick a base model", style="dim"))
            return
        try:
            given = _numbers(form_values(self.screen))
        except TuituneError:
            given = {}  # a field being typed: show the preset as it is
        try:
            resolved = resolved_for(base, given)
        except TuituneError as error:
            self.update(Text(f"preset: {inert(str(error))}", style="bold red"))
            return
        self.update(preset_text(base, resolved))
        for key in NUMBERS:
            source = resolved.sources.get(key, "default")
            value = resolved.values.get(key)
            hint = f"{value} ({source})" if value is not None else "3 epochs (default)" if key == "max_steps" else ""
            self.screen.query_one(f"#train-{key}", Input).placeholder = hint


def preset_text(base: str, resolved: Resolved) -> Text:
    """ "preset gemma3 for gemma-3-270m" and one line per setting with its source."""
    name = resolved.preset.name if resolved.preset else "none (plain defaults)"
    text = Text(f"preset {inert(name)} for {inert(base)}", style="bold")
    for line in resolved.lines():
        if not line.startswith(("base ", "data ", "val ")):
            text.append("\n" + inert(line), style="dim" if line.endswith("(default)") else "")
    return text


class PlanLine(Static):
    """The line "memory: … needs ≈ 2.4 GB; RAM has 21 GB free: fits" for the form's settings, kept current."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan: Plan | None = None  # the latest plan shown
        self._counts: dict[tuple, TokenCounts | None] = {}
        self._timer: Timer | None = None
        self._pending: TrainConfig | str | None = None

    def request(self, config: TrainConfig | str) -> None:
        """Plan ``config`` (or show why the form cannot be planned) a moment after the last request."""
        self._pending = config
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(PLAN_DELAY_S, self._fire)

    def _fire(self) -> None:
        pending, self._pending = self._pending, None
        if isinstance(pending, str):
            self.plan = None
            self.update(Text(f"memory: {inert(pending)}", style="dim"))
        elif pending is not None:
            self._compute(pending)

    def counts_for(self, config: TrainConfig) -> TokenCounts | None:
        """The dataset's token counts under the base model's tokenizer (None if the file cannot be read)."""
        from tuitune.training.report import checked_dataset

        try:
            stat = os.stat(config.data)
        except OSError:
            return None
        key = (config.base, config.data, stat.st_size, stat.st_mtime_ns, config.max_length)
        if key not in self._counts:
            self._counts[key] = checked_dataset(config.data, config.base, config.max_length)[1]
        return self._counts[key]

    def plan_for(self, config: TrainConfig) -> Plan:
        """Blocking (call it from a thread): counts are cached, free memory is read now."""
        from tuitune.training.planner import estimate

        return estimate(config.base, config, counts=self.counts_for(config))

    class Computed(Message):
        def __init__(self, plan: Plan | None, text: Text):
            super().__init__()
            self.plan, self.text = plan, text

    @work(thread=True, exclusive=True, group="train-plan")
    def _compute(self, config: TrainConfig) -> None:
        try:
            plan: Plan | None = self.plan_for(config)
            text = _plan_text(plan)
        except Exception as error:  # TuituneError, or llama.cpp failing on the file: a line, never a crash
            plan, text = None, Text(f"memory: cannot plan ({inert(str(error))})", style="dim")
        if not get_current_worker().is_cancelled:
            self.post_message(self.Computed(plan, text))

    def on_plan_line_computed(self, message: Computed) -> None:
        message.stop()
        self.plan = message.plan
        self.update(message.text)


def _plan_text(plan: Plan) -> Text:
    text = Text("memory: ", style="dim")
    text.append(inert(plan.summary()), style="" if plan.fits else "bold red")
    if not plan.fits and plan.alternatives:
        text.append("\nwhat fits: " + inert("; ".join(f"{how} ≈ {human(size)}" for how, size in plan.alternatives)))
    return text


def changes_plan(widget: Widget | None) -> bool:
    """Whether a change in ``widget`` changes the plan."""
    return widget is not None and widget.id in PLAN_INPUTS
