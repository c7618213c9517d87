"""The Train screen (F10) on a real, short LoRA run of the SmolLM2 demo model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from textual.widgets import Checkbox, DataTable, Input, Log, Select, Static

from tests.conftest import REPO
from tests.support.pilot import scripted_app
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


@pytest.mark.anyio
async def test_train_form_plans_the_memory_and_start_refuses_a_run_that_does_not_fit(tmp_path: Path, tuitune_dirs,
                                                                                    monkeypatch):  # fmt: skip
    from tuitune.training import planner
    from tuitune.training.runs import run_dir

    app, _ = scripted_app(tmp_path)
    notes: list[tuple[str, str]] = []
    monkeypatch.setattr(app, "notify", lambda message, severity="information", **_: notes.append((message, severity)))
    launched: list[str] = []
    monkeypatch.setattr(TrainScreen, "launch", lambda self, name, resume: launched.append(name))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f10")
        screen = app.screen
        line = screen.query_one("#train-plan", Static)
        screen.query_one("#train-base", Select).value = "smollm2-135m-instruct"
        screen.query_one("#train-data", Input).value = str(REPO / "data/tuitune-identity.jsonl")
        screen.query_one("#train-name", Input).value = "too-big"
        screen.query_one("#train-device", Select).value = "cpu"
        await until(pilot, lambda: "smollm2-135m-instruct in fp32 on cpu needs ≈" in str(line.render()), "plan", 60)
        assert str(line.render()).endswith("fits")

        screen.query_one("#train-quantize", Select).value = "4bit"
        screen.query_one("#train-grad_checkpoint", Checkbox).value = True
        screen.query_one("#train-nproc", Input).value = "2"
        await until(pilot, lambda: "in 4-bit on cpu" in str(line.render()), "the plan follows the fields", 60)
        assert "2 processes ×" in str(line.render())
        config = screen.form()
        assert (config.device, config.quantize, config.grad_checkpoint, config.nproc) == ("cpu", "4bit", True, 2)
        assert {key: app.settings.train[key] for key in ("device", "quantize", "grad_checkpoint")} == {
            "device": "cpu", "quantize": "4bit", "grad_checkpoint": "true"}  # fmt: skip

        monkeypatch.setattr(planner, "free_memory", lambda device, nproc: (100_000_000, "RAM", ""))
        screen.query_one("#train-quantize", Select).value = "none"
        screen.query_one("#train-grad_checkpoint", Checkbox).value = False
        screen.query_one("#train-nproc", Input).value = "1"
        await until(pilot, lambda: str(line.render()).endswith("too big"), "a plan that does not fit", 60)
        assert "RAM has 100 MB free" in str(line.render())
        await pilot.press("ctrl+s")
        await until(pilot, lambda: any(severity == "error" for _, severity in notes), "the refusal", 60)
        refusal = next(message for message, severity in notes if severity == "error")
        assert "needs ≈" in refusal and "RAM has 100 MB free" in refusal
        assert launched == [] and not (run_dir("too-big") / "config.json").exists()

        monkeypatch.setattr(planner, "free_memory", lambda device, nproc: (1 << 40, "RAM", ""))
        await pilot.press("ctrl+s")  # the memory is free now: the same form starts
        await until(pilot, lambda: launched == ["too-big"], "the start", 60)
        assert (run_dir("too-big") / "config.json").exists()
        screen.query_one("#train-quantize", Select).value = "4bit"  # a pick is saved at once
        screen.query_one("#train-grad_checkpoint", Checkbox).value = True
        await pilot.pause()

    again, _ = scripted_app(tmp_path)  # the new fields come back after a relaunch, like the others
    async with again.run_test(size=(120, 40)) as pilot:
        await pilot.press("f10")
        await pilot.pause()
        form = again.screen.form()
        assert (form.device, form.quantize, form.grad_checkpoint, form.nproc) == ("cpu", "4bit", True, 1)
