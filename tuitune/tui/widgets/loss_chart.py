"""A loss curve drawn with text: train loss as a line of dots, validation loss as diamonds.

Drawn from the run's metrics on each update (a few hundred points at most), into a character grid the size
of the widget, with the min/max loss on the left axis and the step range below.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widget import Widget

TRAIN_MARK, EVAL_MARK = "•", "◆"


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
        train = [(row["step"], row["loss"]) for row in self.rows if isinstance(row.get("loss"), (int, float))]
        evals = [(row["step"], row["eval_loss"]) for row in self.rows if isinstance(row.get("eval_loss"), (int, float))]
        if width < 20 or height < 4:
            return Text("")
        if not train:
            return Text("the loss curve appears here once the first step is done", style="dim")
        label_width = 7
        plot_width, plot_height = width - label_width - 1, height - 2
        values = [loss for _, loss in train + evals]
        low, high = min(values), max(values)
        if high - low < 1e-9:
            high = low + 1.0
        last_step = max(self.total_steps or 0, train[-1][0], 1)
        grid = [[" "] * plot_width for _ in range(plot_height)]

        def place(step: int, loss: float, mark: str) -> None:
            x = min(plot_width - 1, int((step - 1) / max(1, last_step - 1) * (plot_width - 1))) if last_step > 1 else 0
            y = plot_height - 1 - int((loss - low) / (high - low) * (plot_height - 1))
            grid[max(0, min(plot_height - 1, y))][max(0, x)] = mark

        for step, loss in train:
            place(step, loss, TRAIN_MARK)
        for step, loss in evals:
            place(step, loss, EVAL_MARK)
        text = Text()
        for index, line in enumerate(grid):
            label = f"{high:.3f}" if index == 0 else (f"{low:.3f}" if index == plot_height - 1 else "")
            text.append(label.rjust(label_width) + "│", style="dim")
            for char in line:
                text.append(char, style="cyan" if char == TRAIN_MARK else ("magenta" if char == EVAL_MARK else ""))
            text.append("\n")
        text.append(" " * label_width + "└" + "─" * plot_width + "\n", style="dim")
        steps = f"step 1{' ' * max(1, plot_width - 12 - len(str(last_step)))}step {last_step}"
        text.append(" " * (label_width + 1) + steps, style="dim")
        legend = f"  {TRAIN_MARK} train {train[-1][1]:.4f}"
        if evals:
            legend += f"   {EVAL_MARK} validation {evals[-1][1]:.4f}"
        text.append(legend)
        return text
