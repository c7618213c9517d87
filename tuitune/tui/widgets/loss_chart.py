"""Loss curves drawn with text: train loss as a line of dots, validation loss as diamonds.

Drawn from the runs' metrics on each update (a few hundred points a run at most), into a character grid the
size of the widget, with the min/max loss on the left axis and the step range below. ``LossChart`` shows the
run being trained; ``RunsChart`` overlays several past runs, each in its own colour and marks, with a legend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual.widget import Widget

from tuitune.safe_text import inert

TRAIN_MARK, EVAL_MARK = "•", "◆"
# One style per overlaid run: colour, train mark (small), validation mark (solid): told apart without colour too.
STYLES = [("cyan", "•", "◆"), ("magenta", "+", "■"), ("green", "×", "▲"), ("yellow", "∗", "●"), ("blue", "·", "◇")]
LABEL_WIDTH = 7


@dataclass
class Series:
    """One run's curves: (step, loss) points of the train and the validation loss."""

    name: str
    train: list[tuple[int, float]] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    colour: str = "cyan"
    eval_colour: str = "magenta"
    train_mark: str = TRAIN_MARK
    eval_mark: str = EVAL_MARK


def points(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """(step, value) of every row with a whole step and a finite number: a hand-edited or corrupt line is skipped."""
    found = []
    for row in rows:
        step, value = row.get("step"), row.get(key)
        whole = isinstance(step, int) and not isinstance(step, bool) and step >= 1
        if whole and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found.append((step, float(value)))
    return found


def plot(series: list[Series], width: int, height: int, last_step: int) -> Text:
    """The grid with its axes (no legend); ``height`` rows in all."""
    plot_width, plot_height = width - LABEL_WIDTH - 1, height - 2
    values = [loss for one in series for _, loss in one.train + one.evals]
    low, high = min(values), max(values)
    if high - low < 1e-9:
        high = low + 1.0
    grid: list[list[tuple[str, str]]] = [[(" ", "")] * plot_width for _ in range(plot_height)]

    def place(step: int, loss: float, mark: str, style: str) -> None:
        x = min(plot_width - 1, int((step - 1) / max(1, last_step - 1) * (plot_width - 1))) if last_step > 1 else 0
        y = plot_height - 1 - int((loss - low) / (high - low) * (plot_height - 1))
        grid[max(0, min(plot_height - 1, y))][max(0, x)] = (mark, style)

    for one in series:  # every train line first, validation marks on top: they are the fewer points
        for step, loss in one.train:
            place(step, loss, one.train_mark, one.colour)
    for one in series:
        for step, loss in one.evals:
            place(step, loss, one.eval_mark, one.eval_colour)
    text = Text()
    for index, line in enumerate(grid):
        label = f"{high:.3f}" if index == 0 else (f"{low:.3f}" if index == plot_height - 1 else "")
        text.append(label.rjust(LABEL_WIDTH) + "│", style="dim")
        for char, style in line:
            text.append(char, style=style)
        text.append("\n")
    text.append(" " * LABEL_WIDTH + "└" + "─" * plot_width + "\n", style="dim")
    steps = f"step 1{' ' * max(1, plot_width - 12 - len(str(last_step)))}step {last_step}"
    text.append(" " * (LABEL_WIDTH + 1) + steps, style="dim")
    return text


class LossChart(Widget):
    DEFAULT_CSS = "LossChart { height: 12; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows: list[dict[str, Any]] = []
        self.total_steps: int | None = None

    def show(self, rows: list[dict[str, Any]], total_steps: int | None) -> None:
        self.rows, self.total_steps = rows, total_steps
        self.refresh()

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        run = Series("", points(self.rows, "loss"), points(self.rows, "eval_loss"))
        if width < 20 or height < 4:
            return Text("")
        if not run.train:
            return Text("the loss curve appears here once the first step is done", style="dim")
        text = plot([run], width, height, max(self.total_steps or 0, run.train[-1][0], 1))
        legend = f"  {TRAIN_MARK} train {run.train[-1][1]:.4f}"
        if run.evals:
            legend += f"   {EVAL_MARK} validation {run.evals[-1][1]:.4f}"
        text.append(legend)
        return text


class RunsChart(Widget):
    """Several runs' curves on one pair of axes, and a legend line per run: its marks, name and best validation."""

    DEFAULT_CSS = "RunsChart { height: 1fr; min-height: 10; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.series: list[Series] = []

    def show(self, runs: list[tuple[str, list[dict[str, Any]]]]) -> None:
        """``runs``: (name, metrics rows) in legend order; each gets the next style."""
        self.series = []
        for index, (name, rows) in enumerate(runs):
            colour, train_mark, eval_mark = STYLES[index % len(STYLES)]
            self.series.append(Series(name, points(rows, "loss"), points(rows, "eval_loss"), colour, colour,
                                      train_mark, eval_mark))  # fmt: skip
        self.refresh()

    def legend(self) -> Text:
        text = Text()
        for one in self.series:
            text.append(f"\n  {one.train_mark} train  {one.eval_mark} validation  ", style=one.colour)
            text.append(inert(one.name), style="bold")
            if one.evals:
                text.append(f"  best val {min(loss for _, loss in one.evals):.4f}", style="dim")
            elif not one.train:
                text.append("  (no steps recorded)", style="dim")
        return text

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        drawn = [one for one in self.series if one.train or one.evals]
        if not self.series:
            return Text("select runs on the left (space) to overlay their loss curves", style="dim")
        if width < 20 or height < 4 + len(self.series) or not drawn:
            return self.legend()
        last_step = max(step for one in drawn for step, _ in one.train + one.evals)
        text = plot(drawn, width, height - len(self.series), max(1, last_step))
        text.append_text(self.legend())
        return text
