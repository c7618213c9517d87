"""Eval: run a prompt suite's checks on several models (and adapter strengths), then read the matrix.

The run happens in a worker thread (``run_eval`` loads the models and generates there), so the UI keeps
drawing; progress comes back through ``call_from_thread`` and Stop only sets the runner's cancel event, which
it checks between answers. The result is one matrix, prompts × model columns, whose cells open into the
answers and every check's verdict. Answers are model output, so they are made inert and shown as Rich
``Text``, never parsed as markup.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
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
from tuitune.paths import app_dirs, project_file
from tuitune.safe_text import inert, safe_json
from tuitune.tui.text import Part, styled

if TYPE_CHECKING:
    from tuitune.evals.runner import Cell, EvalReport
    from tuitune.suites import Suite
    from tuitune.tui.app import TuituneApp

PROMPT_KEY = "\x00prompt"  # the matrix's first column; no model column can be named this
ANSWER_CHARS = 4000  # per answer in the detail pane: enough to read, bounded for a runaway base model
EXPORTS = {"md": "Markdown", "json": "JSON", "csv": "CSV"}


@dataclass(frozen=True)
class EvalForm:
    """What the form asks for, checked: ``run_eval`` gets only values it can use."""

    suite: Suite
    models: list[str]
    adapter_scales: list[float] | None
    repeat: int
    max_tokens: int | None
    temperature: float | None  # above 0 with repeat > 1: how stable are the answers?


def shipped_suites() -> list[Path]:
    """The suites that come with tuitune (``suites/*.toml`` in the checkout or the wheel)."""
    folder = project_file("suites")
    return sorted(folder.glob("*.toml")) if folder is not None and folder.is_dir() else []


def default_suite(suites: list[Path]) -> Path:
    """The lab's base-vs-chat suite, which the default demo pair is chosen for; else the first one."""
    return next((path for path in suites if path.stem == "why-finetune"), suites[0])


def parse_scales(text: str) -> list[float] | None:
    """``""`` → None (the runner's default), ``"1"`` → [1.0], ``"0, 0.5,1"`` → [0.0, 0.5, 1.0]."""
    parts = [part.strip() for part in text.replace(" ", ",").split(",") if part.strip()]
    if not parts:
        return None
    try:
        scales = [float(part) for part in parts]
    except ValueError:
        raise TuituneError(f"adapter scale must be numbers between 0 and 1, like 1 or 0,0.5,1; not '{text}'") from None
    bad = [scale for scale in scales if not 0.0 <= scale <= 1.0]
    if bad:
        raise TuituneError(f"adapter scale {bad[0]:g} is out of range: use numbers between 0 and 1")
    return list(dict.fromkeys(scales))


def slug(name: str) -> str:
    """A file-name-safe form of a suite name (it comes from a TOML file, so anything may be in it)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:60] or "eval"


def cell(text: str, justify: str = "left", style: str = "") -> Text:
    """A table cell that is never parsed as markup and ends in an ellipsis when the column is too narrow."""
    return Text(inert(text), style=style, no_wrap=True, overflow="ellipsis", justify=justify)  # type: ignore[arg-type]


def verdict(result: Cell | None) -> Text:
    """A matrix cell: ``✓ 1.00`` green when every check passed, ``✗ 0.33`` red otherwise, or why there is none."""
    if result is None:
        return cell("–", style="dim")
    if result.error:
        return cell("error", style="bold red")
    if not result.counted:
        return cell("stopped", style="dim")
    if result.passed:
        return cell(f"✓ {result.score:.2f}", style="green")
    return cell(f"✗ {result.score:.2f}", style="red")


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _win_rate(counts: dict[str, int]) -> str:
    """Wins over every vote the model took part in (a tie or a "both bad" is not a win)."""
    total = sum(counts.get(key, 0) for key in ("wins", "losses", "ties", "bad"))
    return f"{counts.get('wins', 0) / total:.0%}" if total else "-"


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
    ]


class EvalScreen(Screen):
    """Suite and models on the left with the Compare vote tally; summary, matrix and cell details on the right."""

    SUB_TITLE = "Eval"
    AUTO_FOCUS = "#eval-suite"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "run", "Run", id="eval.run"),
        Binding("escape,ctrl+t", "stop", "Stop", id="eval.stop"),
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
        from tuitune.suites import load_suite

        path_text = self.query_one("#eval-suite-path", Input).value.strip()
        choice = self.query_one("#eval-suite", Select).value
        if path_text:
            path = Path(path_text).expanduser()
        elif isinstance(choice, str) and choice:
            path = Path(choice)
        else:
            raise TuituneError("pick a suite, or type the path of a suite .toml file")
        suite = load_suite(path)
        models = list(self.query_one("#eval-models", SelectionList).selected)
        if not models:
            raise TuituneError("select at least one model (space toggles one in the list)")
        scales = parse_scales(self.query_one("#eval-scales", Input).value)
        if scales is not None and not any(self._finetuned(model) for model in models):
            raise TuituneError(
                "an adapter scale sets a finetuned (LoRA) model's strength: select one (Train makes them)"
            )
        repeat_text = self.query_one("#eval-repeat", Input).value.strip() or "1"
        tokens_text = self.query_one("#eval-max-tokens", Input).value.strip()
        try:
            repeat = int(repeat_text)
        except ValueError:
            raise TuituneError(f"repeat must be a whole number, not '{repeat_text}'") from None
        try:
            max_tokens = int(tokens_text) if tokens_text else None
        except ValueError:
            raise TuituneError(f"max tokens must be a whole number, not '{tokens_text}'") from None
        if repeat < 1:
            raise TuituneError("repeat must be at least 1")
        if max_tokens is not None and max_tokens < 1:
            raise TuituneError("max tokens must be at least 1")
        temperature_text = self.query_one("#eval-temperature", Input).value.strip()
        try:
            temperature = float(temperature_text) if temperature_text else None
        except ValueError:
            raise TuituneError(f"temperature must be a number such as 0.7, not '{temperature_text}'") from None
        if temperature is not None and not 0 <= temperature <= 5:
            raise TuituneError("temperature must be between 0 (greedy) and 5")
        return EvalForm(suite, models, scales, repeat, max_tokens, temperature)

    def _finetuned(self, model: str) -> bool:
        entry = self.tuitune.catalog_entry(model)
        return entry is not None and entry.kind == "finetuned"

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
                sampling=self._sampling(request.max_tokens, request.temperature),
                catalog=self.tuitune.catalog,
                on_progress=self._report_progress,
                cancel=cancel,
            )
        except TuituneError as failure:
            error = str(failure)
        except Exception as failure:  # a bug in a run must not take the app (and its other screens) down
            error = f"the eval failed: {type(failure).__name__}: {failure}"
        self._from_thread(self.finished, report, error, cancel.is_set())

    @staticmethod
    def _sampling(max_tokens: int | None, temperature: float | None) -> Any:
        """None keeps the runner's defaults (greedy: the same scores twice); the form changes only what it sets."""
        changes: dict[str, Any] = {}
        if max_tokens is not None:
            changes["max_tokens"] = max_tokens
        if temperature is not None:
            changes["temperature"] = temperature
        if not changes:
            return None
        from dataclasses import replace

        from tuitune.evals.runner import default_sampling

        return replace(default_sampling(), **changes)

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

    def finished(self, report: EvalReport | None, error: str | None, cancelled: bool) -> None:
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
        table = self.query_one("#eval-summary", DataTable)
        table.clear(columns=True)
        if self.report is None:
            return
        summaries = self.report.summary()
        groups = list(dict.fromkeys(group for summary in summaries for group in summary.groups))
        stability = self.report.repeat > 1  # with one answer per cell it is always 1.0: noise, and width
        table.add_column("column", key="column")
        for label in ("pass rate", "prompts", "checks", "repetition", "tok/s", *(("stability",) if stability else ())):
            table.add_column(Text(label, justify="right"), key=label)
        for group in groups:
            table.add_column(cell(group, "right"), key=f"group:{group}")
        for summary in summaries:
            table.add_row(
                cell(summary.column),
                cell(_number(summary.pass_rate, ".0%"), "right"),
                cell(f"{summary.prompts_passed}/{summary.prompts}", "right"),
                cell(f"{summary.checks_passed}/{summary.checks}", "right"),
                cell(_number(summary.mean_repetition, ".2f"), "right"),
                cell(_number(summary.tokens_per_s, ".0f"), "right"),
                *((cell(_number(summary.stability, ".2f"), "right"),) if stability else ()),
                *(cell(_number(summary.groups.get(group), ".2f"), "right") for group in groups),
            )

    def visible_prompts(self) -> list[int]:
        """Indexes of the prompts the filters let through: failures (some column fails), differences, or both."""
        report = self.report
        if report is None:
            return []
        differing = report.differing_prompts() if self.differences_only else set()
        shown = []
        for index, prompt in enumerate(report.prompts):
            if self.differences_only and prompt.id not in differing:
                continue
            if self.failures_only:
                cells = [report.cells.get((prompt.id, column.label)) for column in report.columns]
                if all(c is not None and c.passed for c in cells):
                    continue
            shown.append(index)
        return shown

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
        prompt = report.prompts[prompt_index]
        column = next((c for c in report.columns if c.label == column_label), None)
        parts: list[Part] = [(prompt.id, "bold")]
        if prompt.group:
            parts += ["  ", (prompt.group, "dim")]
        if column is not None:
            parts += ["  ·  ", (column.label, "bold")]
        if prompt.note:
            parts += ["\n", (prompt.note, "dim italic")]
        parts += ["\n", ("prompt ", "bold"), prompt.text.strip(), "\n"]
        result = report.cells.get((prompt.id, column.label)) if column is not None else None
        if result is None:
            parts.append(("\nchecks", "bold"))
            for check in prompt.checks:
                parts += ["\n  • ", check.label()]
            if not prompt.checks:
                parts.append(("\n  (none: this prompt is only read, not scored)", "dim"))
            if column is not None:
                parts.append(("\n\nno answer: the run stopped before this cell", "dim"))
            return styled(*parts)
        stats = [f"score {result.score:.2f}", result.mode or "?", f"{result.completion_tokens} tokens"]
        if result.tokens_per_s is not None:
            stats.append(f"{result.tokens_per_s:.0f} tok/s")
        stats += [f"finish {result.finish_reason}", f"repetition {result.repetition:.2f}"]
        if len(result.answers) > 1:
            stats.append(f"{result.distinct} distinct of {len(result.answers)}")
        parts += [("  ·  ".join(stats), "dim")]
        if result.error:
            parts += ["\n", ("error ", "bold red"), result.error]
        parts.append(("\n\nchecks" + (" (on the first answer)" if len(result.answers) > 1 else ""), "bold"))
        for check_result in result.results:
            mark, style = ("✓", "green") if check_result.passed else ("✗", "red")
            parts += ["\n  ", (mark, f"bold {style}"), " ", check_result.check.label()]
            if check_result.detail:
                parts += ["  ", (check_result.detail, "dim")]
        if not result.results:
            parts.append(("\n  (none)", "dim"))
        for number, answer in enumerate(result.answers, 1):
            title = "answer" if len(result.answers) == 1 else f"answer {number}/{len(result.answers)}"
            shown = answer if len(answer) <= ANSWER_CHARS else answer[:ANSWER_CHARS] + "…"
            parts += ["\n\n", (title, "bold"), "\n", shown if shown.strip() else ("(empty)", "dim")]
        return styled(*parts)

    # -- filters and exports -----------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Stop shows in the footer only during a run; filters and exports need a report (dimmed without one)."""
        if action in ("failures", "differences", "export"):
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

    def action_export(self, fmt: str) -> None:
        """Write the whole report (filters do not apply) to ``<data>/evals/<suite>-<time>.<fmt>``."""
        report = self.report
        if report is None:
            self.notify("run an eval first (Ctrl+S)", severity="warning")
            return
        folder = app_dirs().data / "evals"
        path = folder / f"{slug(report.suite)}-{datetime.now():%Y%m%d-%H%M%S}.{fmt}"
        try:
            if fmt == "json":
                text = safe_json(report.as_json(), indent=2)
            elif fmt == "csv":
                text = report.to_csv()
            else:
                text = report.to_markdown()
            folder.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8", newline="") as handle:  # CSV carries its own line ends
                handle.write(text if text.endswith("\n") else text + "\n")
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
        table.add_column("model", key="model")
        for name, key in (("W", "wins"), ("L", "losses"), ("T", "ties"), ("bad", "bad"), ("win", "rate")):
            table.add_column(Text(name, justify="right"), key=key)
        ranked = sorted(tally.items(), key=lambda item: (-item[1]["wins"], item[1]["losses"], item[0]))
        for model, counts in ranked:
            numbers = (counts["wins"], counts["losses"], counts["ties"], counts["bad"])
            table.add_row(cell(model), *(cell(str(n), "right") for n in numbers), cell(_win_rate(counts), "right"),
                          key=model)  # fmt: skip

    # -- buttons and palette -----------------------------------------------------------------------
    @on(Button.Pressed, "#eval-run-button")
    def _run_pressed(self) -> None:
        self.action_run()

    @on(Button.Pressed, "#eval-stop-button")
    def _stop_pressed(self) -> None:
        self.action_stop()

    def palette_commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        """Commands this screen adds to the command palette: (title, help, callback)."""
        commands: list[tuple[str, str, Callable[[], Any]]] = [
            ("Run eval", "Run the suite's checks on the selected models", self.action_run),
            ("Stop eval", "Stop after the current answer; the matrix keeps what was answered", self.action_stop),
            ("Failures only", "Show only prompts some column fails (toggle)", self.action_failures),
            ("Differences only", "Show only prompts where the columns disagree (toggle)", self.action_differences),
        ]
        for fmt, name in EXPORTS.items():
            help_text = f"The whole report to the evals folder (.{fmt})"
            commands.append((f"Export eval as {name}", help_text, lambda fmt=fmt: self.action_export(fmt)))
        return commands
