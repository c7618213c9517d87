"""Eval: run a prompt suite's checks on several models (and adapter strengths), then read the matrix.

The run happens in a worker thread (``run_eval`` loads the models and generates there), so the UI keeps
drawing; progress comes back through ``call_from_thread`` and Stop only sets the runner's cancel event, which
it checks between answers. The result is one matrix, prompts × model columns, whose cells open into the
answers and every check's verdict. Answers are model output, so they are made inert and shown as Rich
``Text``, never parsed as markup.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    ProgressBar,
    Select,
    SelectionList,
    Static,
)
from textual.widgets.selection_list import Selection

from tuitune.errors import TuituneError
from tuitune.tui.screens.eval_parts import (
    EvalForm,
    cell,
    check_form,
    default_suite,
    detail_text,
    export_path,
    fill_summary,
    fill_votes,
    parse_scales,
    sampling_for,
    shipped_suites,
    verdict,
    visible_prompts,
    write_export,
)
from tuitune.tui.text import Part, styled

if TYPE_CHECKING:
    from tuitune.evals.runner import EvalReport
    from tuitune.tui.app import TuituneApp

__all__ = ["EvalMatrix", "EvalScreen", "parse_scales"]  # parse_scales: tests and callers import it here

PROMPT_KEY = "\x00prompt"  # the matrix's first column; no model column can be named this
EXPORTS = {"md": "Markdown", "json": "JSON", "csv": "CSV"}


class EvalMatrix(DataTable):
    """The prompt × column matrix. Its letter keys live here, so typing a path or a number never triggers them."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "screen.failures", "Failures", id="eval.failures", tooltip="Only prompts some column fails"),
        Binding(
            "d",
            "screen.differences",
            "Differences",
            id="eval.differences",
            tooltip="Only prompts the columns disagree on",
        ),
        # Short export labels leave the footer room for the screen keys; the tooltips and the palette say more.
        Binding("m", "screen.export('md')", ".md", id="eval.export_md", tooltip="Export the report as Markdown"),
        Binding("j", "screen.export('json')", ".json", id="eval.export_json", tooltip="Export the report as JSON"),
        Binding("c", "screen.export('csv')", ".csv", id="eval.export_csv", tooltip="Export the report as CSV"),
        Binding("v", "screen.compare_runs", "vs run", id="eval.compare_runs", tooltip="Compare with an earlier run"),
    ]


class EvalScreen(Screen):
    """Suite and models on the left with the Compare vote tally; summary, matrix and cell details on the right."""

    SUB_TITLE = "Eval"
    AUTO_FOCUS = "#eval-suite"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "run", "Run", id="eval.run"),
        Binding("escape,ctrl+t", "stop", "Stop", id="eval.stop"),
        Binding("l", "leaderboard", "Leaderboard", id="eval.leaderboard", tooltip="Rank models by votes and judge"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.report: EvalReport | None = None
        self.failures_only = False
        self.differences_only = False
        self.running = False
        self._cancel: threading.Event | None = None
        self._models: list[str] = []  # the ids the model list shows, to rebuild it only when they change
        self.last_export: Path | None = None
        self.run_id: int | None = None  # this report's id in evals.sqlite3; None when it could not be kept

    @property
    def tuitune(self) -> TuituneApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        suites = shipped_suites()
        yield Header()
        with Horizontal(id="eval-body"):
            with VerticalScroll(id="eval-form"):
                yield Label("suite")
                yield Select(
                    [(path.stem, str(path)) for path in suites],
                    id="eval-suite",
                    prompt="(no shipped suite)",
                    value=str(default_suite(suites)) if suites else Select.BLANK,
                )
                yield Input(placeholder="or a suite file: path/to/suite.toml", id="eval-suite-path")
                yield Label("models (space toggles)")
                yield SelectionList[str](id="eval-models")
                for field_id, label, value, placeholder in (
                    ("scales", "adapter scale", "", "1 or 0,0.5,1"),
                    ("repeat", "repeat", "1", ""),
                    ("max-tokens", "max tokens", "", "200"),
                    ("temperature", "temperature", "", "0 (greedy)"),
                ):
                    with Horizontal(classes="eval-field"):
                        yield Label(label)
                        yield Input(value, placeholder=placeholder, id=f"eval-{field_id}")
                with Horizontal(classes="eval-buttons"):
                    yield Button("Run", id="eval-run-button", variant="primary")
                    yield Button("Stop", id="eval-stop-button", variant="error")
                yield Label("votes from Compare", id="eval-votes-label")
                yield DataTable(id="eval-votes", cursor_type="row", zebra_stripes=True)
            with Vertical(id="eval-main"):
                yield Static(id="eval-status")
                yield ProgressBar(id="eval-progress", show_eta=False)
                yield DataTable(id="eval-summary", show_cursor=False, zebra_stripes=True)
                yield EvalMatrix(id="eval-matrix", cursor_type="cell", zebra_stripes=True)
                with VerticalScroll(id="eval-detail-box"):
                    yield Static(id="eval-detail")
        yield Footer()

    def on_mount(self) -> None:
        for widget in self.query("#eval-progress, #eval-summary, #eval-matrix"):
            widget.display = False  # until there is something to show
        self.show_status()
        self._show_detail(None)

    def on_unmount(self) -> None:
        """Quitting mid-run stops the models too: their threads would otherwise generate for nobody."""
        if self._cancel is not None:
            self._cancel.set()

    def on_screen_resume(self) -> None:
        """Each time the screen is shown: Compare saves votes and Train adds models while it is hidden."""
        self.refresh_models()
        self.refresh_votes()

    # -- the form ----------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        """List the installed models (a model that is not on disk would only fail the run), keeping the choice."""
        from tuitune.tui.app import DEMO_PAIR

        installed = [model for model, ok in self.tuitune.installed_map().items() if ok]
        if installed == self._models:
            return
        models = self.query_one("#eval-models", SelectionList)
        chosen = set(models.selected) if self._models else {m for m in DEMO_PAIR if m in installed}
        if not chosen and installed:
            chosen = set(installed[:2])
        self._models = installed
        models.clear_options()
        options = []
        for model in installed:
            entry = self.tuitune.catalog_entry(model)
            kind = entry.kind if entry else "?"
            options.append(Selection(styled(model, (f" {kind}", "dim")), model, model in chosen))
        models.add_options(options)

    def form(self) -> EvalForm:
        """The form's values, or a TuituneError that says which field is wrong and how to fix it."""
        value = {name: self.query_one(f"#eval-{name}", Input).value.strip()
                 for name in ("suite-path", "scales", "repeat", "max-tokens", "temperature")}  # fmt: skip
        return check_form(
            value,
            self.query_one("#eval-suite", Select).value,
            list(self.query_one("#eval-models", SelectionList).selected),
            self._finetuned,
        )

    def _finetuned(self, model: str) -> bool:
        entry = self.tuitune.catalog_entry(model)
        return entry is not None and entry.has_adapter

    # -- running -----------------------------------------------------------------------------------
    def action_run(self) -> None:
        if self.running:
            self.notify("an eval is already running: Esc stops it", severity="warning")
            return
        try:
            request = self.form()
        except TuituneError as error:
            self.notify(str(error), severity="error", markup=False)
            return
        self.running = True
        self._cancel = threading.Event()
        bar = self.query_one("#eval-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.show_status(f"loading {len(request.models)} model(s)…")
        self.refresh_bindings()
        self.run_eval(request, self._cancel)

    @work(thread=True, exclusive=True, group="eval-run")
    def run_eval(self, request: EvalForm, cancel: threading.Event) -> None:
        """Runs in a thread: ``run_eval`` blocks for as long as the models take to answer every prompt."""
        report: EvalReport | None = None
        error: str | None = None
        try:
            from tuitune.evals.runner import run_eval

            report = run_eval(
                request.suite,
                request.models,
                adapter_scales=request.adapter_scales,
                repeat=request.repeat,
                sampling=sampling_for(request.max_tokens, request.temperature),
                catalog=self.tuitune.catalog,
                on_progress=self._report_progress,
                cancel=cancel,
            )
        except TuituneError as failure:
            error = str(failure)
        except Exception as failure:  # a bug in a run must not take the app (and its other screens) down
            error = f"the eval failed: {type(failure).__name__}: {failure}"
        kept: tuple[int | None, str | None] = (None, None)
        if report is not None:
            from tuitune.tui.screens.eval_compare import keep_run

            kept = keep_run(report, request.suite, cancel.is_set())
        self._from_thread(self.finished, report, error, cancel.is_set(), *kept)

    def _from_thread(self, callback: Callable[..., Any], *args: Any) -> None:
        """``call_from_thread`` that gives up quietly when the app is already gone (quit during a run)."""
        with contextlib.suppress(RuntimeError):
            self.app.call_from_thread(callback, *args)

    def _report_progress(self, done: int, total: int) -> None:
        """Called from the runner's worker threads."""
        self._from_thread(self.show_progress, done, total)

    def show_progress(self, done: int, total: int) -> None:
        self.query_one("#eval-progress", ProgressBar).update(total=total, progress=done)
        stopping = " · stopping" if self._cancel and self._cancel.is_set() else ""
        self.show_status(f"running: {done}/{total} answers{stopping}")

    def finished(
        self,
        report: EvalReport | None,
        error: str | None,
        cancelled: bool,
        run_id: int | None = None,
        not_kept: str | None = None,
    ) -> None:
        self.running = False
        self.refresh_bindings()
        self.query_one("#eval-progress", ProgressBar).display = False
        if error is not None:
            self.show_status(error, "bold red")
            self.notify(error, severity="error", markup=False)
            return
        if report is None:
            return
        self.report = report
        self.run_id = run_id
        if not_kept is not None:  # the run is still shown: only keeping it failed
            self.notify(not_kept, severity="warning", markup=False)
        self.render_report()
        self.query_one("#eval-matrix", DataTable).focus()
        if cancelled:
            self.notify("eval stopped: the matrix shows what was answered", severity="warning")

    def action_stop(self) -> None:
        if not self.running or self._cancel is None:
            self.notify("no eval is running", severity="warning")
            return
        self._cancel.set()
        self.show_status("stopping…")

    # -- the report --------------------------------------------------------------------------------
    def show_status(self, message: str | None = None, style: str = "") -> None:
        status = self.query_one("#eval-status", Static)
        if message is not None:
            status.update(styled((message, style)))
            return
        if self.report is None:
            status.update(styled(("Pick a suite and models, then run (Ctrl+S).", "dim")))
            return
        report = self.report
        shown = self.query_one("#eval-matrix", DataTable).row_count
        filters = [name for name, on_ in (("failures only", self.failures_only),
                                          ("differences only", self.differences_only)) if on_]  # fmt: skip
        parts: list[Part] = [(report.suite, "bold"), f"  {len(report.prompts)} prompts × {len(report.columns)} columns"]
        if report.repeat > 1:
            parts.append(f" × {report.repeat} repeats")
        if filters:
            parts += ["  ·  ", (f"{' + '.join(filters)}: {shown} of {len(report.prompts)} rows", "yellow")]
        parts.append(("  ·  Enter: a cell's answers and checks", "dim"))
        status.update(styled(*parts))

    def render_report(self) -> None:
        self.query_one("#eval-summary", DataTable).display = True
        self.query_one("#eval-matrix", DataTable).display = True
        self._render_summary()
        self._render_matrix()

    def _render_summary(self) -> None:
        fill_summary(self.query_one("#eval-summary", DataTable), self.report)

    def visible_prompts(self) -> list[int]:
        """Indexes of the prompts the filters let through: failures (some column fails), differences, or both."""
        return visible_prompts(self.report, self.failures_only, self.differences_only)

    def _render_matrix(self) -> None:
        table = self.query_one("#eval-matrix", DataTable)
        keep = table.cursor_coordinate if table.row_count else Coordinate(0, 1)
        table.clear(columns=True)
        report = self.report
        if report is None:
            return
        table.add_column("prompt", key=PROMPT_KEY)
        for column in report.columns:
            table.add_column(cell(column.label), key=column.label)
        for index in self.visible_prompts():
            prompt = report.prompts[index]
            cells = (verdict(report.cells.get((prompt.id, column.label))) for column in report.columns)
            table.add_row(cell(prompt.id), *cells, key=str(index))
        if table.row_count:
            table.move_cursor(row=min(keep.row, table.row_count - 1), column=keep.column)
        self.show_status()
        self.show_cell()

    # -- the detail pane ---------------------------------------------------------------------------
    @on(DataTable.CellHighlighted, "#eval-matrix")
    @on(DataTable.CellSelected, "#eval-matrix")
    def show_cell(self) -> None:
        """The answers and every check of the cell under the cursor (Enter or a click selects one)."""
        table = self.query_one("#eval-matrix", DataTable)
        if self.report is None or not table.row_count or not table.is_valid_coordinate(table.cursor_coordinate):
            self._show_detail(None)
            return
        keys = table.coordinate_to_cell_key(table.cursor_coordinate)
        self._show_detail(int(keys.row_key.value or 0), str(keys.column_key.value))

    def _show_detail(self, prompt_index: int | None, column_label: str | None = None) -> None:
        detail = self.query_one("#eval-detail", Static)
        report = self.report
        if report is None or prompt_index is None:
            detail.update(styled(("The answers and checks of the cell under the cursor show here.", "dim")))
            return
        detail.update(self.detail_text(report, prompt_index, column_label))

    @staticmethod
    def detail_text(report: EvalReport, prompt_index: int, column_label: str | None) -> Text:
        """The prompt and its checks; for a model column also each check's verdict and every answer."""
        return detail_text(report, prompt_index, column_label)

    # -- filters and exports -----------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Stop shows in the footer only during a run; filters and exports need a report (dimmed without one)."""
        if action in ("failures", "differences", "export", "compare_runs"):
            return True if self.report is not None else None
        if action == "stop":
            return self.running
        return True

    def action_failures(self) -> None:
        self.failures_only = not self.failures_only
        self._render_matrix()

    def action_differences(self) -> None:
        self.differences_only = not self.differences_only
        self._render_matrix()

    def action_compare_runs(self) -> None:
        """This run against an earlier run of the same suite: what went from pass to fail and back."""
        if self.report is None:
            self.notify("run an eval first (Ctrl+S)", severity="warning")
            return
        from tuitune.tui.screens.eval_compare import RunCompareScreen

        self.app.push_screen(RunCompareScreen(self.report.as_json(), self.run_id))

    def action_export(self, fmt: str) -> None:
        """Write the whole report (filters do not apply) to ``<data>/evals/<suite>-<time>.<fmt>``."""
        report = self.report
        if report is None:
            self.notify("run an eval first (Ctrl+S)", severity="warning")
            return
        path = export_path(report, fmt)
        try:
            write_export(report, fmt, path)
        except OSError as error:
            self.notify(f"cannot write {path}: {error.strerror or error}", severity="error", markup=False)
        else:
            self.notify(f"exported to {path}", markup=False)
            self.last_export = path

    # -- votes -------------------------------------------------------------------------------------
    def refresh_votes(self) -> None:
        """Wins, losses, ties and both-bad per model from Compare's votes: people's verdicts beside the checks'."""
        table = self.query_one("#eval-votes", DataTable)
        table.clear(columns=True)
        store = self.tuitune.history
        label = self.query_one("#eval-votes-label", Label)
        if store is None:
            label.update("votes from Compare: history is off")
            return
        try:
            tally = store.vote_tally()
        except TuituneError as error:
            label.update(styled("votes from Compare: ", (str(error), "red")))
            return
        label.update("votes from Compare" if tally else "votes from Compare: none yet (F6…F9 after an answer)")
        fill_votes(table, tally)

    # -- buttons and palette -----------------------------------------------------------------------
    @on(Button.Pressed, "#eval-run-button")
    def _run_pressed(self) -> None:
        self.action_run()

    @on(Button.Pressed, "#eval-stop-button")
    def _stop_pressed(self) -> None:
        self.action_stop()

    def action_leaderboard(self) -> None:
        """One Bradley–Terry ranking of Compare votes and judge verdicts, computed in the modal's worker."""
        from tuitune.tui.screens.leaderboard import LeaderboardScreen

        self.app.push_screen(LeaderboardScreen(self.tuitune.history))

    def palette_commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        """Commands this screen adds to the command palette: (title, help, callback)."""
        commands: list[tuple[str, str, Callable[[], Any]]] = [
            ("Run eval", "Run the suite's checks on the selected models", self.action_run),
            ("Stop eval", "Stop after the current answer; the matrix keeps what was answered", self.action_stop),
            ("Failures only", "Show only prompts some column fails (toggle)", self.action_failures),
            ("Differences only", "Show only prompts where the columns disagree (toggle)", self.action_differences),
            ("Compare with an earlier run", "Pass → fail and fail → pass since a kept run", self.action_compare_runs),
            ("Leaderboard", "Rank the models by Compare votes and judge verdicts", self.action_leaderboard),
        ]
        for fmt, name in EXPORTS.items():
            help_text = f"The whole report to the evals folder (.{fmt})"
            commands.append((f"Export eval as {name}", help_text, lambda fmt=fmt: self.action_export(fmt)))
        return commands
