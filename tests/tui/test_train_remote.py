"""The Train screen (F10) on a job run by a real local stand-in of OpenAI's fine-tuning API: shown like a local
run, Stop cancels it on the service, and a job nobody follows is followed again when the screen opens."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Log, ProgressBar, Static

from tests.conftest import REPO, run_cli
from tests.support.finetune_service import FineTuneService
from tests.support.pilot import scripted_app
from tuitune.training.runs import pid_alive, run_status
from tuitune.tui.screens.train import TrainScreen
from tuitune.tui.widgets.loss_chart import LossChart

pytestmark = pytest.mark.anyio
KEY = "sk-tuitune-remote-screen-0123456789"
DATA = REPO / "data" / "tuitune-identity.jsonl"


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch, tuitune_dirs):
    monkeypatch.setenv("TUITUNE_REMOTE_POLL_S", "0.05")
    monkeypatch.setenv("FT_KEY", KEY)
    with FineTuneService(key=KEY) as running:
        added = run_cli("endpoint", "add", "svc-base", "--base-url", running.base_url, "--model", "stub-base",
                        "--api-key-env", "FT_KEY")  # fmt: skip
        assert added.returncode == 0, added.stderr
        yield running


def remote_train(name: str, *extra: str, **popen) -> list[str]:
    return [sys.executable, "-m", "tuitune", "train", "--remote", "svc-base", "--base", "stub-base", "--data",
            str(DATA), "--name", name, "--suffix", "demo", *extra]  # fmt: skip


async def until(pilot, condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await pilot.pause(0.05)


async def open_train(pilot) -> TrainScreen:
    await pilot.press("f10")
    await until(pilot, lambda: isinstance(pilot.app.screen, TrainScreen), "the Train screen")
    return pilot.app.screen


async def test_a_finished_remote_run_shows_status_progress_curve_and_log(service, tuitune_dirs, tmp_path: Path):
    done = subprocess.run(remote_train("remote-lab"), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(130, 40)) as pilot:
        screen = await open_train(pilot)
        await until(pilot, lambda: screen.selected == "remote-lab", "the run is selected")
        await pilot.pause(0.6)
        status = str(screen.query_one("#train-status", Static).render())
        [job] = service.jobs.values()
        assert f"remote-lab  done  step 12/12  ·  on svc-base · job {job.id}" in status
        assert "tok/s" not in status and "added to the catalog as 'remote-lab'" in status
        bar = screen.query_one("#train-progress", ProgressBar)
        assert (bar.total, bar.progress) == (12, 12)
        chart = screen.query_one("#train-chart", LossChart)
        assert [row["loss"] for row in chart.rows] == [service.loss_at(step) for step in range(1, 13)]
        log = "\n".join(str(line) for line in screen.query_one("#train-log", Log).lines)
        assert "Fine-tuning job started" in log and "The job has successfully completed" in log
        table = screen.query_one("#train-runs", DataTable)
        assert [str(cell) for cell in table.get_row("remote-lab")][:3] == ["remote-lab", "stub-base @ svc-base", "done"]
        assert KEY not in status + log
        await pilot.press("ctrl+o")  # base and finetune side by side, both answering through the service
        await until(pilot, lambda: getattr(pilot.app.screen, "panes", None), "Compare opens")
        panes = pilot.app.screen.panes
        await until(pilot, lambda: len(panes) == 2 and panes[1].settings.model == "remote-lab", "the pair")
        assert [pane.settings.model for pane in panes] == ["svc-base", "remote-lab"]


async def test_stop_cancels_the_job_and_a_job_nobody_follows_is_followed_again(service, tuitune_dirs, tmp_path):
    service.poll_delay_s, service.steps, service.steps_per_poll = 0.1, 400, 1
    run = tuitune_dirs["data"] / "runs" / "long-job"
    follower = subprocess.Popen(remote_train("long-job"), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while run_status(run).get("state") != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    follower.send_signal(signal.SIGKILL)  # the app, the terminal or the machine went away
    follower.wait(timeout=10)
    assert run_status(run)["state"] == "detached"
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(130, 40)) as pilot:
        screen = await open_train(pilot)  # opening the screen follows the job again, in a process of its own
        await until(pilot, lambda: run_status(run).get("state") == "running", "followed again")
        pid = json.loads((run / "status.json").read_text())["pid"]
        assert pid != follower.pid and pid_alive(pid)
        screen.select_run("long-job")
        await pilot.press("ctrl+t")  # a billed job: asked first
        await until(pilot, lambda: type(pilot.app.screen).__name__ == "Confirm", "the question")
        await pilot.press("y")
        [job] = service.jobs.values()
        await until(pilot, lambda: job.status == "cancelled", "the service cancelled the job")
        await until(pilot, lambda: run_status(run).get("state") == "cancelled", "the run says cancelled")
        await pilot.pause(0.6)
        assert "cancelled" in str(screen.query_one("#train-status", Static).render())
    deadline = time.monotonic() + 10
    while pid_alive(pid):  # the follower ends once it sees the cancel
        assert time.monotonic() < deadline, "the follower outlived its job"
        time.sleep(0.1)


def test_remote_run_snapshot(snap_compare, service, tuitune_dirs, tmp_path: Path, monkeypatch):
    """A finished remote run on the Train screen; the clock and the free memory are pinned for the picture."""
    from tuitune import hardware
    from tuitune.cli.entry import main

    with monkeypatch.context() as pinned:
        pinned.setattr(time, "strftime", lambda *args: "12:00:00")
        assert main(remote_train("remote-lab", "--epochs", "2")[3:]) == 0  # the real CLI, in this process
    monkeypatch.setattr(hardware, "cpu_memory", lambda: hardware.Memory(16 * 1024**3, 24 * 1024**3))
    settings = tuitune_dirs["config"] / "settings.toml"  # the form's dataset paths, the same in every checkout
    settings.write_text('[train]\ndata = "data/tuitune-identity.jsonl"\nval = "data/tuitune-heldout.jsonl"\n')
    app, _ = scripted_app(tmp_path)

    async def train_screen(pilot) -> None:
        screen = await open_train(pilot)
        await until(pilot, lambda: screen.selected == "remote-lab", "the run is selected")
        await until(pilot, lambda: "memory:" in str(screen.query_one("#train-plan", Static).render()), "planned")
        await pilot.pause(0.8)

    assert snap_compare(app, terminal_size=(130, 40), run_before=train_screen)


async def test_a_job_is_not_followed_again_without_its_key_and_the_screen_says_why(
    service, tuitune_dirs, tmp_path, monkeypatch
):
    service.poll_delay_s, service.steps, service.steps_per_poll = 0.1, 400, 1
    run = tuitune_dirs["data"] / "runs" / "keyless"
    follower = subprocess.Popen(remote_train("keyless"), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while run_status(run).get("state") != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    follower.send_signal(signal.SIGKILL)
    follower.wait(timeout=10)
    monkeypatch.delenv("FT_KEY")  # the app started from a shell without the key
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(130, 40)) as pilot:
        await open_train(pilot)
        await pilot.pause(0.5)
        shown = [str(n.message) for n in app._notifications]
        assert any("'keyless' not followed" in line and "FT_KEY is not set" in line for line in shown), shown
        assert run_status(run)["state"] == "detached"
        await pilot.press("ctrl+r")
        await pilot.pause(0.3)
        assert sum("FT_KEY is not set" in str(n.message) for n in app._notifications) >= 2
    assert not (run / "stderr.log").exists() or "Traceback" not in (run / "stderr.log").read_text()
