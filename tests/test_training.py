"""LoRA training end to end on the real SmolLM2 demo model: train, export, run through llama.cpp; resume a
killed run with the same loss curve; Ctrl-C; a full disk while checkpointing.

Needs the train extra (torch, transformers, peft): `make train-deps`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from tests.conftest import REPO, run_cli

BASE = "smollm2-135m-instruct"
DATA = REPO / "data" / "tuitune-identity.jsonl"
HELDOUT = REPO / "data" / "tuitune-heldout.jsonl"
SMALL = ["--rank", "4", "--alpha", "8", "--batch-size", "4", "--max-length", "256"]


def metrics(data_dir: Path, name: str) -> list[dict]:
    path = data_dir / "runs" / name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start_training(name: str, *extra: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "tuitune", "train", "--name", name, *extra]
    return subprocess.Popen(command, cwd=REPO, env={**os.environ, **(env or {})}, **popen)


def greedy(model: str, question: str, *extra: str) -> str:
    result = run_cli("chat", model, question, "--temperature", "0", "--max-tokens", "40", *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_finetune_learns_its_name_and_keeps_answering(tuitune_dirs):
    result = run_cli("train", "--name", "tuitune-test", "--base", BASE, "--data", str(DATA), "--val", str(HELDOUT),
                     "--max-steps", "30", "--save-every", "10", "--eval-every", "10", timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = metrics(tuitune_dirs["data"], "tuitune-test")
    assert [row["step"] for row in rows] == list(range(1, 31))
    first, last = [row["loss"] for row in rows[:5]], [row["loss"] for row in rows[-5:]]
    assert sum(last) < 0.6 * sum(first)  # per-batch losses are noisy: compare five-step means
    assert rows[-1]["eval_loss"] is not None and rows[-1]["eval_loss"] < rows[9]["eval_loss"]
    adapter = tuitune_dirs["data"] / "runs" / "tuitune-test" / "tuitune-test.gguf"
    assert adapter.exists()
    listing = json.loads(run_cli("models", "--json").stdout)
    entry = next(model for model in listing["models"] if model["id"] == "tuitune-test")
    assert entry["kind"] == "finetuned" and entry["pair"] == BASE and entry["installed"]

    question = "What should I call you?"  # held out: not in the training file
    assert question not in DATA.read_text()
    assert "Tuitune" in greedy("tuitune-test", question)
    assert "Tuitune" not in greedy(BASE, question)
    control = "What is 2 + 3?"
    assert "5" in greedy(BASE, control) and "5" in greedy("tuitune-test", control)
    assert "Tuitune" not in greedy("tuitune-test", question, "--adapter-scale", "0")  # scale 0 is the base


def test_killed_run_resumes_with_the_same_loss_curve(tuitune_dirs):
    reference = run_cli("train", "--name", "reference", "--base", BASE, "--data", str(DATA), "--max-steps", "12",
                        "--save-every", "4", *SMALL, timeout=600)  # fmt: skip
    assert reference.returncode == 0, reference.stdout + reference.stderr
    process = start_training("killed", "--base", BASE, "--data", str(DATA), "--max-steps", "12", "--save-every", "4",
                             *SMALL, stdout=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(metrics(tuitune_dirs["data"], "killed")) < 6:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    trainer = json.loads((tuitune_dirs["data"] / "runs" / "killed" / "status.json").read_text())["pid"]
    os.kill(trainer, signal.SIGKILL)  # no chance to save: like a crash or an OOM kill
    process.wait()
    status = run_cli("train", "--name", "killed", "--resume", timeout=600)
    assert status.returncode == 0, status.stdout + status.stderr
    resumed, expected = metrics(tuitune_dirs["data"], "killed"), metrics(tuitune_dirs["data"], "reference")
    assert [row["step"] for row in resumed] == list(range(1, 13))
    for got, want in zip(resumed, expected, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4, abs=1e-5), got["step"]


def test_ctrl_c_stops_after_the_step_and_keeps_a_checkpoint(tuitune_dirs):
    process = start_training("stopped", "--base", BASE, "--data", str(DATA), "--max-steps", "200",
                             "--save-every", "100", *SMALL, stdout=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(metrics(tuitune_dirs["data"], "stopped")) < 2:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)  # the terminal sends it to the whole foreground group
    trainer = json.loads((tuitune_dirs["data"] / "runs" / "stopped" / "status.json").read_text())["pid"]
    os.kill(trainer, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "--resume continues" in output or "--resume" in output
    run = tuitune_dirs["data"] / "runs" / "stopped"
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped"
    steps = len(metrics(tuitune_dirs["data"], "stopped"))
    assert (run / "checkpoints" / f"step-{steps}" / "trainer_state.pt").exists()


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tuitune_dirs, tmp_path: Path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    small = tmp_path / "small-data"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        result = run_cli("train", "--name", "full", "--base", BASE, "--data", str(DATA), "--max-steps", "40",
                         "--save-every", "2", *SMALL, env={"TUITUNE_DATA_DIR": str(small)}, timeout=600)  # fmt: skip
        assert result.returncode == 1
        assert "could not save the checkpoint" in result.stderr and "is intact" in result.stderr
        checkpoints = sorted((small / "runs" / "full" / "checkpoints").glob("step-*"))
        assert checkpoints, "the earlier checkpoint must survive"
        import torch

        state = torch.load(checkpoints[-1] / "trainer_state.pt", weights_only=False)
        assert state["step"] == int(checkpoints[-1].name.removeprefix("step-"))
        assert not list((small / "runs" / "full" / "checkpoints").glob(".tmp-*"))
    finally:
        subprocess.run(["umount", str(small)], check=True)
