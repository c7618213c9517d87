"""Runs side by side (Ctrl+L on the Train screen): past runs' loss curves overlaid, and their settings in a table.

The list on the left holds every run folder with a metrics.jsonl; space toggles a run in or out of the chart
and the table. The folders are read in a thread worker (a run of thousands of steps is a few hundred KB);
a line of metrics.jsonl that is not a JSON object, or has no whole step or finite loss, is skipped. Run names,
and anything read from a run's files, are untrusted text: shown inert, as rich ``Text``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, SelectionList

from tuitune.safe_text import inert
from tuitune.training.runs import list_runs, read_json, read_metrics, run_status
from tuitune.tui.widgets.loss_chart import RunsChart, points

COLUMNS = ("run", "base", "rank", "alpha", "lr", "steps", "batch", "max_length", "target modules", "best val",
           "early-stopped")  # fmt: skip


@dataclass
class PastRun:
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def best_val(self) -> float | None:
        best = self.status.get("best_eval_loss")
        if isinstance(best, (int, float)) and not isinstance(best, bool):
            return float(best)
        evals = points(self.rows, "eval_loss")
        return min(loss for _, loss in evals) if evals else None

    def cells(self) -> list[str]:
        """The table row: the run's settings as config.json has them (a missing or odd value shows as is)."""
        config, status = self.config, self.status
        if isinstance(config.get("remote"), dict):
            return self._remote_cells(config["remote"])
        steps = config.get("max_steps") or status.get("total_steps") or f"{config.get('epochs') or 3} epochs"
        batch = f"{config.get('batch_size', '?')}"
        if config.get("grad_accum", 1) != 1:
            batch += f"×{config.get('grad_accum')}"
        targets = config.get("target_modules") or "default"
        best = self.best_val()
        stopped = "no"
        if status.get("early_stopped"):
            stopped = f"at step {status.get('step', '?')} (best {status.get('best_step', '?')})"
        return [self.name, str(config.get("base", "?")), str(config.get("rank", "?")), str(config.get("alpha", "?")),
                str(config.get("lr", "?")), str(steps), batch, str(config.get("max_length", "?")),
                ",".join(map(str, targets)) if isinstance(targets, list) else str(targets),
                f"{best:.4f}" if best is not None else "-", stopped]  # fmt: skip

    def _remote_cells(self, remote: dict[str, Any]) -> list[str]:
        """A job on a service: what was sent to it; what the service chose itself shows as "service"."""
        config, status = self.config, self.status
        steps = status.get("total_steps") or (f"{config['epochs']} epochs" if config.get("epochs") else "service")
        multiplier = remote.get("lr_multiplier")
        best = self.best_val()
        return [self.name, f"{remote.get('model', '?')} @ {remote.get('endpoint', '?')}", "service", "service",
                f"×{multiplier}" if multiplier else "service", str(steps), str(remote.get("batch_size") or "service"),
                "-", "service", f"{best:.4f}" if best is not None else "-", "no"]  # fmt: skip


def load_past_runs() -> list[PastRun]:
    """Every run folder with a metrics.jsonl, oldest first (as the Train screen's list, reversed)."""
    runs = []
    for directory in list_runs():
        if (directory / "metrics.jsonl").is_file():
            runs.append(PastRun(directory.name, read_json(directory / "config.json") or {}, run_status(directory),
                                read_metrics(directory)))  # fmt: skip
    return runs


class RunsLoaded(Message):
    def __init__(self, runs: list[PastRun]):
        super().__init__()
        self.runs = runs


class RunCompareScreen(Screen):
    """Pick runs (space), see their curves and settings together; Esc goes back to training."""

    AUTO_FOCUS = "#compare-run-list"
    DEFAULT_CSS = """
    #compare-run-side { width: 30; }
    #compare-run-list { height: 1fr; }
    #compare-run-main { width: 1fr; }
    #compare-run-params { height: auto; max-height: 10; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="runs.back"),
        Binding("a", "all", "All / none", id="runs.all"),
        Binding("r", "reload", "Reload", id="runs.reload"),
    ]

    def __init__(self, preselect: str | None = None) -> None:
        super().__init__()
        self.preselect = {preselect} if preselect else set()
        self.runs: dict[str, PastRun] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="compare-run-side"):
                yield Label(Text("runs · space toggles", style="bold"))
                yield SelectionList[str](id="compare-run-list")
            with Vertical(id="compare-run-main"):
                yield RunsChart(id="compare-run-chart")
                yield DataTable(id="compare-run-params", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Runs side by side"
        table = self.query_one("#compare-run-params", DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        self.load()

    @work(thread=True, exclusive=True, group="run-compare")
    def load(self) -> None:
        self.post_message(RunsLoaded(load_past_runs()))

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        picker = self.query_one("#compare-run-list", SelectionList)
        chosen = set(picker.selected) | self.preselect
        self.preselect = set()
        self.runs = {run.name: run for run in message.runs}
        picker.clear_options()
        for run in reversed(message.runs):  # newest first, as on the Train screen
            picker.add_option((Text(inert(run.name)), run.name, run.name in chosen))
        if message.runs:
            picker.highlighted = 0  # space works at once
        self.redraw()

    @on(SelectionList.SelectedChanged, "#compare-run-list")
    def redraw(self) -> None:
        picker = self.query_one("#compare-run-list", SelectionList)
        chosen = [self.runs[name] for name in picker.selected if name in self.runs]
        chosen.sort(key=lambda run: list(self.runs).index(run.name))  # oldest first: stable colours as runs are added
        self.query_one("#compare-run-chart", RunsChart).show([(run.name, run.rows) for run in chosen])
        table = self.query_one("#compare-run-params", DataTable)
        table.clear()
        for run in chosen:
            table.add_row(*(Text(inert(cell)) for cell in run.cells()), key=run.name)

    def action_all(self) -> None:
        picker = self.query_one("#compare-run-list", SelectionList)
        if len(picker.selected) == len(self.runs):
            picker.deselect_all()
        else:
            picker.select_all()

    def action_reload(self) -> None:
        self.load()
