"""A run whose trainer is gone is never shown as running, and weight conversion refuses a disk too small.

Real processes (killed with SIGKILL, left unreaped as the app leaves them) and the real conversion entry point,
given the free-space reading as a parameter; no torch needed: the refusal comes before any import of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tuitune.downloads import DiskSpaceError
from tuitune.training.convert import estimated_size, trainable_weights
from tuitune.training.runs import run_status, write_json

TRAINER = """
import os, sys, time
from pathlib import Path
from tuitune.training.runs import write_json
write_json(Path(sys.argv[1]) / "status.json", {"state": "running", "pid": os.getpid(), "step": 7})
time.sleep(120)
"""


def test_a_trainer_killed_with_sigkill_is_reported_as_ended(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    process = subprocess.Popen([sys.executable, "-c", TRAINER, str(run)], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not (run / "status.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run_status(run)["state"] == "running"
        os.kill(process.pid, signal.SIGKILL)
        time.sleep(0.3)  # not reaped: the app that started it may not wait() for a while
        status = run_status(run)
        assert status["state"] == "interrupted", status
        assert "ended unexpectedly at step 7" in status["message"] and "--resume" in status["message"]
        assert (run / "status.json").read_text().count('"running"') == 1  # the reader wrote nothing back
    finally:
        process.kill()
        process.wait()


def test_a_pid_now_used_by_a_later_process_is_not_the_trainer(tmp_path: Path):
    other = subprocess.Popen(["sleep", "60"])  # took the trainer's pid after a restart
    try:
        run = tmp_path / "run"
        run.mkdir()
        write_json(run / "status.json", {"state": "running", "pid": other.pid, "step": 3})
        an_hour_ago = time.time() - 3600
        os.utime(run / "status.json", (an_hour_ago, an_hour_ago))
        assert run_status(run)["state"] == "interrupted"
    finally:
        other.kill()
        other.wait()


def test_conversion_refuses_a_disk_too_small_and_writes_nothing(tuitune_dirs, smollm_path: Path):
    pytest.importorskip("gguf")  # the tensor table gives the exact estimate; without it the guess is coarser
    needed = estimated_size(smollm_path)
    assert 500e6 < needed < 600e6  # 135M weights at 4 bytes
    asked: list[Path] = []

    def free(directory: Path) -> int:
        asked.append(directory)
        return 200 << 20

    with pytest.raises(DiskSpaceError) as caught:
        trainable_weights(smollm_path, "space-test", free=free)
    message = str(caught.value)
    assert "538.1 MB" in message and "209.7 MB free" in message and "TUITUNE_CACHE_DIR" in message
    weights = tuitune_dirs["cache"] / "hf-weights"
    assert asked == [weights]
    assert not [path for path in weights.iterdir() if "space-test" in path.name]
