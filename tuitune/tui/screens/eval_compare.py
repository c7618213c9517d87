"""The Eval screen's kept runs: saving each run, and a view comparing it with an earlier run of the same suite.

Saving and loading touch SQLite, so both run in thread workers; a database that cannot be used costs a
warning, never the run on screen. The view lists the suite's earlier runs (newest first, the previous one
picked) and shows per prompt × column what went from pass to fail (red) and back (green), score moves, new
and gone columns, and, when the suite changed, how, since only identical prompts are compared.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Select, Static

from tuitune.errors import TuituneError
from tuitune.tui.screens.eval_parts import cell
from tuitune.tui.text import styled

if TYPE_CHECKING:
    from tuitune.evals.compare_runs import CellChange, RunComparison
    from tuitune.evals.results import EvalResults
    from tuitune.evals.store import RunSummary
    from tuitune.suites import Suite


def keep_run(results: EvalResults, suite: Suite, partial: bool) -> tuple[int | None, str | None]:
    """Save a finished (or stopped) run → (run id, None), or (None, why not). Called from the run's worker."""
    from tuitune.evals.store import EvalStore, suite_hash

    try:
        with EvalStore() as store:
            return store.save(results, suite.path.resolve(), suite_hash(suite), partial=partial), None
    except TuituneError as error:
        return None, f"{error} This run is not kept."


def _when(created_at: str) -> str:
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(created_at).astimezone().strftime("%Y-%m-%d %H:%M")
    return created_at


def change_cell(change: CellChange | None) -> Text:
    """One prompt × column of the comparison: the move, coloured (red pass→fail, green fail→pass)."""
    from tuitune.evals import compare_runs as c

    if change is None or change.status == c.UNANSWERED:
        return cell("–", style="dim")
    old, new = change.old_score, change.new_score
    if change.status == c.NEW:
        return cell("new" + (f" {new:.2f}" if new is not None else ""), style="cyan")
    if change.status == c.GONE:
        return cell("gone" + (f" {old:.2f}" if old is not None else ""), style="magenta")
    moved = f"{old:.2f}→{new:.2f}"
    if change.status == c.REGRESSED:
        return cell(f"✓→✗ {moved}", style="bold red")
    if change.status == c.FIXED:
        return cell(f"✗→✓ {moved}", style="bold green")
    mark = "✓" if change.status == c.SAME_PASS else "✗"
    if change.delta:
        return cell(f"{mark} {moved} ({change.delta:+.2f})", style="yellow")
    return cell(f"{mark} {new:.2f}", style="dim")


class RunCompareScreen(ModalScreen[None]):
    """This run against an earlier run of the same suite, picked from a list (the previous one first)."""

    DEFAULT_CSS = """
    RunCompareScreen { align: center middle; }
    #runs-compare-box { width: 95%; height: 90%; border: thick $accent; background: $surface; padding: 0 1; }
    #runs-compare-table { height: 1fr; }
    #runs-compare-note { color: $warning; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "close", "Close", id="eval.compare_close")]

    def __init__(self, results: dict, run_id: int | None) -> None:
        super().__init__()
        self.results = results
        self.run_id = run_id
        self.runs: list[RunSummary] = []
        self.comparison: RunComparison | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="runs-compare-box"):
            this = f"run {self.run_id}" if self.run_id is not None else "this run (not kept)"
            yield Label(styled(("Compare ", "bold"), this, " of ", (str(self.results.get("suite", "")), "bold"),
                               " with"))  # fmt: skip
            yield Select[int]([], id="runs-compare-pick", prompt="(looking for earlier runs…)", allow_blank=True)
            yield Static(id="runs-compare-note")
            yield Static(id="runs-compare-summary")
            yield DataTable(id="runs-compare-table", cursor_type="cell", zebra_stripes=True)

    def on_mount(self) -> None:
        self.load_runs()

    def action_close(self) -> None:
        self.dismiss(None)

    def _from_thread(self, callback, *args) -> None:  # type: ignore[no-untyped-def]
        with contextlib.suppress(RuntimeError):
            self.app.call_from_thread(callback, *args)

    @work(thread=True, exclusive=True, group="runs-list")
    def load_runs(self) -> None:
        from tuitune.evals.store import EvalStore

        runs: list[RunSummary] = []
        error = None
        try:
            with EvalStore() as store:
                runs = [run for run in store.runs(suite_name=str(self.results.get("suite", "")))
                        if self.run_id is None or run.id < self.run_id]  # fmt: skip
        except TuituneError as failure:
            error = str(failure)
        self._from_thread(self.show_runs, runs, error)

    def show_runs(self, runs: list[RunSummary], error: str | None) -> None:
        self.runs = runs
        pick = self.query_one("#runs-compare-pick", Select)
        note = self.query_one("#runs-compare-note", Static)
        if error is not None:
            note.update(styled((error, "red")))
            return
        if not runs:
            note.update(styled(("no earlier run of this suite is kept: run it again later to compare", "dim")))
            return
        options = [(styled(f"run {run.id} · {_when(run.created_at)} · {', '.join(run.models)}"
                           + (" · partial" if run.partial else "")), run.id) for run in runs]  # fmt: skip
        pick.set_options(options)
        pick.value = runs[0].id  # the previous run; Select.Changed starts the comparison

    @on(Select.Changed, "#runs-compare-pick")
    def _picked(self, event: Select.Changed) -> None:
        if isinstance(event.value, int):
            self.compare_with(event.value)

    @work(thread=True, exclusive=True, group="runs-compare")
    def compare_with(self, old_id: int) -> None:
        from tuitune.evals.compare_runs import compare_runs
        from tuitune.evals.store import EvalStore

        try:
            with EvalStore() as store:
                old = store.load(old_id)
        except TuituneError as failure:
            self._from_thread(self.show_comparison, None, str(failure))
            return
        self._from_thread(self.show_comparison, compare_runs(old, self.results, old_id, self.run_id), None)

    def show_comparison(self, comparison: RunComparison | None, error: str | None) -> None:
        note = self.query_one("#runs-compare-note", Static)
        summary = self.query_one("#runs-compare-summary", Static)
        table = self.query_one("#runs-compare-table", DataTable)
        table.clear(columns=True)
        self.comparison = comparison
        if comparison is None:
            note.update(styled((error or "", "red")))
            return
        note.update(styled((comparison.suite_note() or "", "yellow")))
        parts: list = [(f"{len(comparison.fixes)} fixed", "green"), " · ", (f"{len(comparison.regressions)} regressed",
                       "red")]  # fmt: skip
        for delta in comparison.column_deltas:
            parts += ["\n", delta.column, f"  {delta.old:.0%} → {delta.new:.0%} ", (f"({delta.delta * 100:+.0f} pts)",
                      "green" if delta.delta > 0 else "red" if delta.delta < 0 else "dim")]  # fmt: skip
        for column in comparison.new_columns:
            parts += ["\n", column, ("  new: not in the earlier run", "cyan")]
        for column in comparison.gone_columns:
            parts += ["\n", column, ("  gone: only in the earlier run", "magenta")]
        summary.update(styled(*parts))
        columns = comparison.columns + comparison.new_columns + comparison.gone_columns
        table.add_column("prompt", key="\x00prompt")
        for column in columns:
            table.add_column(cell(column), key=column)
        for prompt in comparison.prompts:
            table.add_row(cell(prompt), *(change_cell(comparison.cell(prompt, column)) for column in columns),
                          key=prompt)  # fmt: skip
