"""The Train screen (F10) on a real, short LoRA run of the SmolLM2 demo model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from textual.widgets import DataTable, Input, Log, Select, Static

from tests.conftest import REPO
from tests.tui_helpers import scripted_app
from tuitune.tui.screens.train import TrainScreen
from tuitune.tui.widgets.loss_chart import LossChart


async def until(pilot, condition, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await pilot.pause(0.2)


@pytest.mark.anyio
async def test_train_screen_checks_starts_and_draws_the_curve(tmp_path: Path, tuitune_dirs):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f10")
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        screen.query_one("#train-base", Select).value = "smollm2-135m-instruct"
        values = {"name": "tui-run", "data": str(REPO / "data/tuitune-identity.jsonl"),
                  "val": str(REPO / "data/tuitune-heldout.jsonl"), "max_steps": "4", "rank": "4", "alpha": "8",
                  "batch_size": "4"}  # fmt: skip
        for field, value in values.items():
            screen.query_one(f"#train-{field}", Input).value = value
        await pilot.press("ctrl+g")
        report = screen.query_one("#train-report", Static)
        await until(pilot, lambda: "examples" in str(report.render()), "data check report", 60)
        assert "ok: no problems" in str(report.render())
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "done" in str(screen.query_one("#train-status", Static).render()), "run done")
        chart = screen.query_one("#train-chart", LossChart)
        assert [row["step"] for row in chart.rows] == [1, 2, 3, 4]
        assert "train" in str(chart.render()) and "validation" in str(chart.render())
        assert "done: adapter" in "\n".join(screen.query_one("#train-log", Log).lines)
        assert str(screen.query_one("#train-runs", DataTable).get_row("tui-run")[2]) == "done"
        await pilot.press("ctrl+o")  # base vs the finetune, on the first held-out question
        await pilot.pause(0.5)
        assert app.current_mode == "compare"
        assert [pane.settings.model for pane in app.screen.panes][:2] == ["smollm2-135m-instruct", "tui-run"]
        assert app.screen.panes[0].turns  # the held-out question was sent
        await pilot.press("escape")
