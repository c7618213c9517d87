"""Training with several processes under PyTorch's launcher (torchrun, DDP on gloo here): the same curve as one
process at the same global batch, Ctrl-C that stops every rank at one step, a rank that dies mid-run.

Real runs of the SmolLM2 demo model on the CPU, two processes of one thread each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from tests.conftest import REPO, run_cli
from tests.support.training import BASE, DATA, HELDOUT, SMALL, metrics


def status(data_dir: Path, name: str) -> dict:
    return json.loads((data_dir / "runs" / name / "status.json").read_text())


def start(name: str, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "tuitune", "train", "--name", name, "--base", BASE, "--data", str(DATA), *extra]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_rows(data_dir: Path, name: str, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while len(metrics(data_dir, name)) < count:
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_two_processes_give_the_curve_of_one_at_the_same_global_batch(tuitune_dirs):
    common = ["--val", str(HELDOUT), "--max-steps", "6", "--eval-every", "3", "--save-every", "6", *SMALL]
    one = run_cli("train", "--name", "one", "--base", BASE, "--data", str(DATA), *common, timeout=600)
    assert one.returncode == 0, one.stdout + one.stderr
    two = run_cli("train", "--name", "two", "--base", BASE, "--data", str(DATA), "--nproc", "2", *common,
                  timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stdout + two.stderr
    assert "2 processes under torchrun" in two.stdout
    single, double = metrics(tuitune_dirs["data"], "one"), metrics(tuitune_dirs["data"], "two")
    assert [row["step"] for row in double] == list(range(1, 7))
    for a, b in zip(single, double, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.005), a["step"]
    assert double[-1]["eval_loss"] == pytest.approx(single[-1]["eval_loss"], rel=0.01)
    assert double[-1]["loss"] < double[0]["loss"]  # it learned
    log = (tuitune_dirs["data"] / "runs" / "two" / "train.log").read_text()
    assert "split over 2 processes" in log and log.count("checkpoint saved at step 6") == 1  # rank 0 alone writes
    assert (tuitune_dirs["data"] / "runs" / "two" / "two.gguf").exists()


def test_ctrl_c_stops_every_rank_at_one_step_and_resume_finishes(tuitune_dirs):
    data = tuitune_dirs["data"]
    process = start("stop2", "--nproc", "2", "--max-steps", "12", "--save-every", "100", *SMALL)
    wait_for_rows(data, "stop2", 2, process)
    rank0 = status(data, "stop2")["pid"]
    ranks = children(parent(rank0))
    assert len(ranks) == 2 and rank0 in ranks
    process.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does to the CLI
    output, errors = process.communicate(timeout=180)
    assert process.returncode == 130, output + errors
    assert "--resume" in output
    state = status(data, "stop2")
    stopped_at = len(metrics(data, "stop2"))
    assert state["state"] == "stopped" and state["step"] == stopped_at < 12
    assert (data / "runs" / "stop2" / "checkpoints" / f"step-{stopped_at}" / "trainer_state.pt").exists()
    assert not any(alive(pid) for pid in ranks)  # no rank left behind
    resumed = run_cli("train", "--name", "stop2", "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [row["step"] for row in metrics(data, "stop2")] == list(range(1, 13))
    assert status(data, "stop2")["state"] == "done"


def test_a_rank_that_dies_ends_the_run_with_one_line_and_the_checkpoint_intact(tuitune_dirs):
    data = tuitune_dirs["data"]
    process = start("dies", "--nproc", "2", "--max-steps", "40", "--save-every", "2", *SMALL)
    wait_for_rows(data, "dies", 3, process)
    rank0 = status(data, "dies")["pid"]
    (rank1,) = [pid for pid in children(parent(rank0)) if pid != rank0]
    os.kill(rank1, signal.SIGKILL)  # like the OOM killer
    output, errors = process.communicate(timeout=180)
    assert process.returncode == 1
    line = next(line for line in errors.splitlines() if line.startswith("tuitune: error"))
    assert "another process of this 2-process run ended unexpectedly" in line and "is intact" in line
    assert "Traceback" not in output + errors
    assert status(data, "dies")["state"] == "failed"
    saved = sorted((data / "runs" / "dies" / "checkpoints").glob("step-*"))
    assert saved and all((path / "trainer_state.pt").exists() for path in saved)
    assert not list((data / "runs" / "dies" / "checkpoints").glob(".tmp-*"))
