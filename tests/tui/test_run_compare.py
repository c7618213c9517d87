"""Runs side by side (Ctrl+L on the Train screen): past runs written as real run folders (config.json,
metrics.jsonl, status.json, as the trainer writes them), selected with the keyboard, overlaid in one chart
with a legend, and their settings in a table. A hostile run name stays inert; a broken metrics line is skipped.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest
from textual.widgets import DataTable, SelectionList

from tests.support.pilot import scripted_app
from tuitune.training.runs import TrainConfig, write_json
from tuitune.tui.screens.run_compare import RunCompareScreen
from tuitune.tui.widgets.loss_chart import RunsChart

HOSTILE = "evil\x1b]52;c;aGk=\x07[b]x"


def write_run(data: Path, name: str, age: int, losses: list[float], evals: dict[int, float], extra: str = "",
              status: dict | None = None, **settings) -> Path:  # fmt: skip
    """A finished run folder, as the trainer leaves it (``age``: seconds in the past, to order the list)."""
    directory = data / "runs" / name
    directory.mkdir(parents=True)
    TrainConfig(name=name, base="smollm2-135m-instruct", data="/data/train.jsonl", max_steps=len(losses),
                **settings).write(directory / "config.json")  # fmt: skip
    lines = [json.dumps({"step": step, "epoch": step / 10, "loss": loss, "eval_loss": evals.get(step), "lr": 1e-3,
                         "tokens": 800, "tokens_per_s": 400.0, "elapsed": step * 2.0, "eta": 0.0})
             for step, loss in enumerate(losses, start=1)]  # fmt: skip
    (directory / "metrics.jsonl").write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    write_json(directory / "status.json", {"state": "done", "step": len(losses), "total_steps": len(losses),
                                           "message": "finished", **(status or {})})  # fmt: skip
    when = 1_700_000_000 - age
    os.utime(directory, (when, when))
    return directory


def three_runs(data: Path) -> None:
    write_run(data, "lr-high", 300, [2.4, 1.9, 1.7, 1.8, 2.0, 2.2], {2: 2.1, 4: 2.3, 6: 2.6}, lr=0.01, rank=8,
              status={"early_stopped": True, "best_step": 2, "best_eval_loss": 2.1})  # fmt: skip
    write_run(data, HOSTILE, 200, [2.5, 2.2, 2.0, 1.8, 1.6, 1.5, 1.4, 1.3], {4: 2.0, 8: 1.7}, rank=4, alpha=8.0,
              target_modules=["q_proj", "v_proj"], grad_accum=2)  # fmt: skip
    broken = (
        '{"step": 9, "loss": 1.0\nnot json at all\n{"step": "ten", "loss": 0.5}\n{"step": 11, "loss": NaN}\n[1, 2]\n'
    )
    write_run(data, "baseline", 100, [2.6, 2.3, 2.1, 2.0], {4: 2.2}, extra=broken, max_length=256)


async def open_runs(pilot) -> RunCompareScreen:
    await pilot.press("f10")
    await pilot.pause()
    await pilot.press("ctrl+l")
    screen = pilot.app.screen
    assert isinstance(screen, RunCompareScreen)
    for _ in range(100):
        if screen.query_one(SelectionList).option_count == 3:
            break
        await pilot.pause(0.05)
    return screen


@pytest.mark.anyio
async def test_selected_runs_are_overlaid_with_a_legend_and_their_settings(tmp_path: Path, tuitune_dirs):
    three_runs(tuitune_dirs["data"])
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await open_runs(pilot)
        picker = screen.query_one(SelectionList)
        assert picker.selected == ["baseline"]  # the Train screen's run (the newest) comes preselected
        await pilot.press("down", "space", "down", "space")  # keyboard only: every run in
        await pilot.pause()
        chart = screen.query_one(RunsChart)
        assert [series.name for series in chart.series] == ["lr-high", HOSTILE, "baseline"]  # oldest first
        assert len({(s.colour, s.train_mark, s.eval_mark) for s in chart.series}) == 3  # each run its own style
        drawn = str(chart.render())
        for name in ("lr-high", "baseline", "evil␛]52;c;aGk=␇[b]x"):
            assert name in drawn
        assert "\x1b" not in drawn and "\x07" not in drawn
        assert "•" in drawn and "◆" in drawn and "+" in drawn and "■" in drawn  # train lines vs validation points
        baseline = chart.series[2]
        assert [step for step, _ in baseline.train] == [1, 2, 3, 4]  # the broken lines are skipped, not a crash
        assert baseline.evals == [(4, 2.2)]

        table = screen.query_one(DataTable)
        rows = {str(table.get_row(key)[0]): [str(cell) for cell in table.get_row(key)] for key in table.rows}
        assert set(rows) == {"lr-high", "evil␛]52;c;aGk=␇[b]x", "baseline"}
        hostile = rows["evil␛]52;c;aGk=␇[b]x"]
        assert hostile[1:8] == ["smollm2-135m-instruct", "4", "8.0", "0.001", "8", "8×2", "512"]
        assert hostile[8:] == ["q_proj,v_proj", "1.7000", "no"]
        assert rows["lr-high"][2] == "8" and rows["lr-high"][4] == "0.01"
        assert rows["lr-high"][9:] == ["2.1000", "at step 6 (best 2)"]
        assert rows["baseline"][7:10] == ["256", "default", "2.2000"]

        await pilot.press("space")  # toggles the highlighted run back out
        await pilot.pause()
        assert len(chart.series) == 2 and table.row_count == 2
        await pilot.press("escape")
        assert app.screen.__class__.__name__ == "TrainScreen"


@pytest.mark.anyio
async def test_no_runs_yet_says_so(tmp_path: Path, tuitune_dirs):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 32)) as pilot:
        await pilot.press("f10")
        await pilot.pause()
        await pilot.press("ctrl+l")
        await pilot.pause(0.3)
        chart = pilot.app.screen.query_one(RunsChart)
        assert "select runs on the left" in str(chart.render())


def test_runs_side_by_side_snapshot(snap_compare, tmp_path: Path, tuitune_dirs):
    three_runs(tuitune_dirs["data"])
    app, _ = scripted_app(tmp_path)

    async def overlay(pilot) -> None:
        await open_runs(pilot)
        await pilot.press("down", "down", "space")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(130, 34), run_before=overlay)


def test_a_remote_run_shows_what_was_sent_to_the_service_not_local_defaults():
    from tuitune.training.runs import TrainConfig
    from tuitune.tui.screens.run_compare import COLUMNS, PastRun

    remote = {"endpoint": "svc", "model": "gpt-mini", "lr_multiplier": 1.5, "batch_size": None}
    config = asdict(TrainConfig(name="r", base="gpt-mini", data="d.jsonl", epochs=2, remote=remote))
    rows = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "eval_loss": 1.7}]
    cells = dict(zip(COLUMNS, PastRun("r", config, {"total_steps": 12}, rows).cells(), strict=True))
    assert cells["base"] == "gpt-mini @ svc" and cells["lr"] == "×1.5" and cells["steps"] == "12"
    assert cells["rank"] == cells["alpha"] == cells["batch"] == cells["target modules"] == "service"
    assert cells["best val"] == "1.7000"
