"""Train: pick a base model and a dataset, check it, start / stop / resume a LoRA run, watch it learn.

Training runs in its own process (``python -m tuitune.training.train RUN_DIR``), started in a new session
so it survives this app (quit and come back: the run is still listed, and live). The screen only reads the
run directory twice a second: ``status.json``, new lines of ``metrics.jsonl`` (by offset) and of
``train.log``. Stop sends SIGINT, which the trainer turns into "finish this step, save a checkpoint".
A job on a fine-tuning service is a run like the others (train_remote.py): Stop cancels it there.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Header, Input, Label, Log, ProgressBar, Select, Static
from textual.worker import get_current_worker

from tuitune.errors import TuituneError
from tuitune.paths import private_app_dir
from tuitune.safe_text import inert
from tuitune.training.runs import (
    TrainConfig,
    list_runs,
    read_json,
    read_metrics,
    run_dir,
    run_status,
    trainer_command,
    training_active,
)
from tuitune.tui.screens import train_form, train_remote
from tuitune.tui.screens.run_compare import RunCompareScreen
from tuitune.tui.screens.train_form import PlanLine
from tuitune.tui.widgets.loss_chart import LossChart

if TYPE_CHECKING:
    from tuitune.training.planner import Plan
    from tuitune.tui.app import TuituneApp

POLL_S = 0.5


class CheckDone(Message):
    def __init__(self, text: str, ok: bool):
        super().__init__()
        self.text, self.ok = text, ok


class Planned(Message):
    """The memory plan made for Start: it starts the run if it fits."""

    def __init__(self, config: TrainConfig, plan: Plan | None):
        super().__init__()
        self.config, self.plan = config, plan


class TrainScreen(train_remote.RemoteRunActions, Screen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+g", "check", "Check data", id="train.check"),
        Binding("ctrl+s", "start", "Start", id="train.start"),
        Binding("ctrl+t", "stop", "Stop", id="train.stop"),
        Binding("ctrl+r", "resume", "Resume", id="train.resume"),
        Binding("ctrl+o", "compare", "Compare with base", id="train.compare"),
        Binding("ctrl+l", "runs_chart", "Runs side by side", id="train.runs_chart"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.selected: str | None = None  # the run shown on the right
        self._metrics: list[dict[str, Any]] = []
        self._log_offset = 0
        self._process: subprocess.Popen | None = None
        self._restored = False  # changes posted while the form is built must not overwrite the saved one

    @property
    def tuitune(self) -> TuituneApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="train-body"):
            with VerticalScroll(id="train-form"):
                yield Label("base model")
                choices = self._base_choices()
                self._base_ids = {value for _, value in choices}
                yield Select(choices, id="train-base", allow_blank=False)
                yield from train_form.compose_fields()
                with Horizontal(classes="train-buttons"):
                    yield Button("Check", id="train-check-button")
                    yield Button("Start", id="train-start-button", variant="primary")
                with Horizontal(classes="train-buttons"):
                    yield Button("Stop", id="train-stop-button", variant="error")
                    yield Button("Resume", id="train-resume-button")
                yield Label("runs", id="train-runs-label")
                yield DataTable(id="train-runs", cursor_type="row")
            with Vertical(id="train-main"):
                yield Static(id="train-status")
                yield PlanLine(id="train-plan")
                yield ProgressBar(id="train-progress", show_eta=False)
                yield LossChart(id="train-chart")
                yield Static(id="train-report")
                yield Log(id="train-log", max_lines=500)
        yield Footer()

    def _base_choices(self) -> list[tuple[str, str]]:
        entries = [entry for entry in self.tuitune.catalog if entry.kind in ("base", "chat") and entry.source]
        from tuitune.sources import is_installed

        installed = [entry for entry in entries if entry.source.kind != "hf" or is_installed(entry)]
        return [(f"{entry.id} ({entry.kind})", entry.id) for entry in installed] or [("(no local model)", "")]

    def on_mount(self) -> None:
        self._restore_form()
        self.refresh_plan()
        table = self.query_one("#train-runs", DataTable)
        for column in ("run", "base", "state", "step", "loss"):
            table.add_column(column, key=column)
        followed, problems = train_remote.reattach_detached()  # jobs on a service that went on meanwhile
        if followed:
            self.notify(inert(f"following again: {', '.join(followed)}"), markup=False)
        for problem in problems:
            self.notify(inert(problem), severity="error", markup=False)
        self.refresh_runs()
        runs = list_runs()
        if runs:
            self.select_run(runs[-1].name)
        else:
            self.show_status()
        self.set_interval(POLL_S, self.poll)

    # -- remembered form --------------------------------------------------------------------------
    def _restore_form(self) -> None:
        """Put back the form as it was last launch; a base model no longer installed keeps the default."""
        saved = self.tuitune.settings.train
        train_form.restore_values(self, saved)
        if saved.get("base") in self._base_ids:
            self.query_one("#train-base", Select).value = saved["base"]
        self._restored = True

    def form_values(self) -> dict[str, str]:
        return train_form.form_values(self)

    def save_form(self) -> None:
        """Remember the form (on leaving a field, Enter, check, start, leaving the screen): not every keystroke."""
        values = self.form_values()
        if values != self.tuitune.settings.train:
            self.tuitune.update_settings(train=values)

    @on(events.DescendantBlur)
    @on(Input.Submitted)
    def _field_done(self) -> None:
        self.save_form()

    def on_screen_suspend(self) -> None:
        self.save_form()

    @on(Select.Changed)
    @on(Checkbox.Changed)
    @on(Input.Changed)
    def _setting_changed(self, event: Select.Changed | Checkbox.Changed | Input.Changed) -> None:
        if self._restored and not isinstance(event, Input.Changed):  # a pick or a tick is done at once: keep it
            self.save_form()
        if train_form.changes_plan(event.control):
            self.refresh_plan()

    def refresh_plan(self) -> None:
        """Re-plan the memory for the form as it is now (in a worker, a moment after the last change)."""
        try:
            self.query_one(PlanLine).request(self.form())
        except TuituneError as error:
            self.query_one(PlanLine).request(str(error))

    # -- runs list ---------------------------------------------------------------------------------
    def refresh_runs(self) -> None:
        table = self.query_one("#train-runs", DataTable)
        table.clear()
        for directory in reversed(list_runs()):
            config = read_json(directory / "config.json") or {}
            status = run_status(directory)
            metrics = read_metrics(directory)
            loss = f"{metrics[-1]['loss']:.3f}" if metrics else "-"
            table.add_row(Text(inert(directory.name)), Text(inert(train_remote.base_label(config))),
                          Text(inert(str(status.get("state", "?")))), Text(inert(str(status.get("step", 0)))), loss,
                          key=directory.name)  # fmt: skip

    @on(DataTable.RowSelected, "#train-runs")
    @on(DataTable.RowHighlighted, "#train-runs")
    def on_run_picked(self, event: DataTable.RowSelected | DataTable.RowHighlighted) -> None:
        if event.row_key is None:  # an empty table highlights no row
            return
        if event.row_key.value and event.row_key.value != self.selected:
            self.select_run(event.row_key.value)

    def select_run(self, name: str) -> None:
        self.selected = name
        self._metrics, self._log_offset = [], 0
        self.query_one("#train-log", Log).clear()
        self.poll()

    # -- polling -----------------------------------------------------------------------------------
    def poll(self) -> None:
        """Read what the trainer wrote since the last poll (small files, read by offset)."""
        train_remote.reap()
        if self.selected is None:
            return
        directory = run_dir(self.selected)
        self._metrics = read_metrics(directory)
        status = run_status(directory)
        total = status.get("total_steps")
        self.query_one("#train-chart", LossChart).show(self._metrics, total)
        bar = self.query_one("#train-progress", ProgressBar)
        bar.update(total=total, progress=status.get("step", 0))
        try:
            with open(directory / "train.log", encoding="utf-8", errors="replace") as handle:
                handle.seek(self._log_offset)
                new = handle.read()
                self._log_offset = handle.tell()
        except OSError:
            new = ""
        if new:
            self.query_one("#train-log", Log).write(inert(new))
        self.show_status(status)
        if status.get("state") != self._last_state(directory):
            self.refresh_runs()

    def _last_state(self, directory: Path) -> str | None:
        table = self.query_one("#train-runs", DataTable)
        try:
            return str(table.get_cell(directory.name, "state"))
        except Exception:
            return None

    def show_status(self, status: dict[str, Any] | None = None) -> None:
        label = self.query_one("#train-status", Static)
        if self.selected is None or status is None:
            label.update(Text("No runs yet: check the dataset (Ctrl+G), then start (Ctrl+S).", style="dim"))
            return
        last = self._metrics[-1] if self._metrics else {}
        text = Text()
        text.append(inert(self.selected), style="bold")
        text.append(f"  {status.get('state', '?')}  step {status.get('step', 0)}/{status.get('total_steps', '?')}")
        if status.get("remote"):  # a job on a service: where it runs instead of this machine's speed
            text.append(inert(f"  ·  {train_remote.where(run_dir(self.selected))}"))
        elif last:
            text.append(f"  ·  {last.get('tokens_per_s', 0):.0f} tok/s")
            eta = last.get("eta")
            if eta is not None and status.get("state") == "running":
                text.append(f"  ·  ETA {int(eta // 60)}:{int(eta % 60):02d}")
        if status.get("message"):
            text.append(f"\n{inert(str(status['message']))}", style="dim")
        label.update(text)

    # -- actions -----------------------------------------------------------------------------------
    def form(self) -> TrainConfig:
        return train_form.config_from(self.form_values())

    def action_check(self) -> None:
        self.save_form()
        try:
            config = self.form()
        except TuituneError as error:
            self.notify(str(error), severity="error", markup=False)
            return
        self.query_one("#train-report", Static).update(Text("checking the dataset…", style="dim"))
        self.check(config)

    @work(thread=True, exclusive=True, group="train-check")
    def check(self, config: TrainConfig) -> None:
        from tuitune.training.report import dataset_report

        try:
            reports = [dataset_report(path, config.base, config.max_length) for path in (config.data, config.val)
                       if path]  # fmt: skip
            text = "\n\n".join(report.format_text() for report in reports)
            self.post_message(CheckDone(text, all(report.ok for report in reports)))
        except TuituneError as error:
            self.post_message(CheckDone(str(error), False))

    def on_check_done(self, message: CheckDone) -> None:
        style = "" if message.ok else "red"
        self.query_one("#train-report", Static).update(Text(inert(message.text), style=style))
        if not message.ok:
            self.notify("the dataset has problems: see the report", severity="error")

    def action_start(self) -> None:
        from tuitune.catalog import _ID_PATTERN

        self.save_form()
        try:
            config = self.form()
            if not _ID_PATTERN.match(config.name):
                raise TuituneError(f"run name '{config.name}' may use only letters, digits, '.', '_' and '-'")
            if (run_dir(config.name) / "config.json").exists():
                raise TuituneError(f"a run named '{config.name}' exists: pick it and resume, or choose another name")
            if config.name in self.tuitune.catalog:
                raise TuituneError(f"'{config.name}' is already a model in the catalog; choose another name")
            if training_active():
                raise TuituneError("a training run is already active")
        except TuituneError as error:
            self.notify(str(error), severity="error", markup=False)
            return
        self.start_if_it_fits(config, self.query_one(PlanLine))

    @work(thread=True, exclusive=True, group="train-start")
    def start_if_it_fits(self, config: TrainConfig, line: PlanLine) -> None:
        """Plan with the memory free now (the dataset's counts are cached), then start on the UI thread."""
        try:
            plan = line.plan_for(config)
        except Exception:  # a model or file the planner cannot size: the trainer says what is wrong, if anything
            plan = None
        if not get_current_worker().is_cancelled:
            self.post_message(Planned(config, plan))

    def on_planned(self, message: Planned) -> None:
        config, plan = message.config, message.plan
        if plan is not None and not plan.fits:
            self.notify(plan.refusal(), title="not enough memory", severity="error", markup=False, timeout=20)
            return
        directory = run_dir(config.name)
        if (directory / "config.json").exists():  # started twice while the plan was being made
            return
        private_app_dir(directory)  # 0700, like the history
        config.write(directory / "config.json")
        self.launch(config.name, resume=False)

    def launch(self, name: str, resume: bool) -> None:
        directory = run_dir(name)
        nproc = TrainConfig.from_json(directory / "config.json").nproc
        with open(directory / "stderr.log", "ab") as errors:  # library warnings and tracebacks, kept for a look
            command = trainer_command(directory, nproc, resume)
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=errors, start_new_session=True)  # fmt: skip
        self.notify(f"training '{name}' started; local generation uses one thread until it ends", markup=False)
        self.refresh_runs()
        self.select_run(name)

    def action_stop(self) -> None:
        status = run_status(run_dir(self.selected)) if self.selected else {}
        if self.selected and train_remote.is_remote(run_dir(self.selected)):
            self.stop_remote(run_dir(self.selected), status)
            return
        if status.get("state") != "running" or not status.get("pid"):
            self.notify("no running run selected", severity="warning")
            return
        os.kill(int(status["pid"]), signal.SIGINT)
        self.notify("stopping after the current step; the checkpoint is kept (Ctrl+R resumes)")

    def action_resume(self) -> None:
        if self.selected is None:
            self.notify("pick a run to resume", severity="warning")
            return
        state = run_status(run_dir(self.selected)).get("state")
        if train_remote.is_remote(run_dir(self.selected)):
            self.follow_remote(run_dir(self.selected), state)
            return
        if state not in ("new", "stopped", "interrupted", "failed"):  # new: prepared with `train --prepare`
            self.notify(f"run '{self.selected}' is {state}; only a stopped or interrupted run resumes",
                        severity="warning", markup=False)  # fmt: skip
            return
        if training_active():
            self.notify("a training run is already active", severity="warning")
            return
        self.launch(self.selected, resume=True)

    async def action_compare(self) -> None:
        """Base vs the finished finetune, asked the first held-out question of its validation set."""
        if self.selected is None:
            return
        directory = run_dir(self.selected)
        status = run_status(directory)
        if status.get("state") != "done":
            state = status.get("state")
            ended = state in ("failed", "cancelled", "stopped", "interrupted")
            self.notify(f"run '{self.selected}' {state}: no finetune to compare" if ended else
                        "the run has not finished yet", severity="warning", markup=False)  # fmt: skip
            return
        config = TrainConfig.from_json(directory / "config.json")
        self.tuitune.reload_catalog()
        catalog = self.tuitune.catalog
        prompt = _first_question(config.val) if config.val else None
        base = config.base
        if config.remote is not None:  # the base is the catalog endpoint the registered finetune names
            entry = catalog.get(config.name) if config.name in catalog else None
            if entry is None or not entry.base:
                self.notify("no endpoint for the base model in the catalog: add one to compare", severity="warning")
                return
            base = entry.base
        await self.tuitune.open_compare([base, config.name], prompt=prompt)

    def action_runs_chart(self) -> None:
        self.app.push_screen(RunCompareScreen(self.selected))  # past runs' curves overlaid, settings side by side

    @on(Button.Pressed)
    async def on_button(self, event: Button.Pressed) -> None:
        action = {"train-check-button": self.action_check, "train-start-button": self.action_start,
                  "train-stop-button": self.action_stop, "train-resume-button": self.action_resume}.get(
            event.button.id or "")  # fmt: skip
        if action is not None:
            action()

    def palette_commands(self) -> list[tuple[str, str, Any]]:
        return [
            ("Check the dataset", "Report every problem with its line, and token counts", self.action_check),
            ("Start training", "A new LoRA run with the form's settings", self.action_start),
            ("Stop training", "After the current step; the checkpoint is kept", self.action_stop),
            ("Resume training", "Continue the selected run from its last checkpoint", self.action_resume),
            ("Compare with base", "Base vs the finished finetune on a held-out question", self.action_compare),
            ("Runs side by side", "Overlay past runs' loss curves; compare their settings", self.action_runs_chart),
        ]


def _first_question(path: str) -> str | None:
    from tuitune.training.data import load_examples

    try:
        for example in load_examples(Path(path)):
            for message in example.messages or []:
                if message.role == "user":
                    return message.content
    except TuituneError:
        return None
    return None
