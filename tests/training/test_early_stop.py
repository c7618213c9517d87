"""Early stopping (`tuitune train --early-stop PATIENCE`) on the real SmolLM2 demo model: a learning rate far
too high makes the validation loss rise, the run stops itself, and the adapter it exports is the best
checkpoint's, not the last step's. Plus the refusals and the no-op resume.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tuitune.training.early_stop import EarlyStop

BASE = "smollm2-135m-instruct"
DATA = REPO / "data" / "tuitune-identity.jsonl"
HELDOUT = REPO / "data" / "tuitune-heldout.jsonl"
SMALL = ["--rank", "4", "--alpha", "8", "--batch-size", "4", "--max-length", "256"]


def test_the_rule_and_its_rebuild_from_metrics():
    state = EarlyStop(patience=2, min_delta=0.01)
    assert state.update(2, 3.0) and state.best_step == 2
    assert not state.update(4, 2.995)  # better, but by less than min_delta
    assert not state.should_stop
    assert state.update(6, 2.5) and state.bad == 0
    assert not state.update(8, float("nan")) and not state.update(10, 2.6)
    assert state.should_stop and "2 evaluations" in state.reason() and "step 6" in state.reason()
    rows = [{"step": step, "loss": 1.0, "eval_loss": loss} for step, loss in ((2, 3.0), (4, 2.995), (6, 2.5))]
    rows += [
        {"step": 7, "loss": 1.0, "eval_loss": None},
        {"step": "x", "eval_loss": 1.0},
        {"step": 10, "eval_loss": 2.6},
    ]
    rebuilt = EarlyStop.from_metrics(rows, 2, 0.01)  # a resumed run continues with the same count
    assert (rebuilt.best_step, rebuilt.best_loss, rebuilt.bad) == (6, 2.5, 1)
    assert EarlyStop(patience=None).update(1, 5.0) and not EarlyStop(patience=None).should_stop


def test_early_stop_without_validation_data_is_refused(tuitune_dirs):
    result = run_cli("train", "--name", "no-val", "--base", BASE, "--data", str(DATA), "--max-steps", "4",
                     "--early-stop", "2", *SMALL)  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--early-stop watches the validation loss: give --val FILE or --val-split F" in lines[0]
    assert not (tuitune_dirs["data"] / "runs" / "no-val").exists()
    result = run_cli("train", "--name", "zero", "--base", BASE, "--data", str(DATA), "--val-split", "0.2",
                     "--early-stop", "0", *SMALL)  # fmt: skip
    assert result.returncode != 0 and "--early-stop must be at least 1" in result.stderr


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def test_a_diverging_run_stops_early_and_exports_its_best_checkpoint(tuitune_dirs, tmp_path: Path):
    pytest.importorskip("peft")
    import torch

    val = tmp_path / "val.jsonl"  # ten held-out questions (the fewest the data check accepts): short evaluations
    val.write_text("".join(HELDOUT.read_text().splitlines(keepends=True)[:10]))
    result = run_cli("train", "--name", "diverge", "--base", BASE, "--data", str(DATA), "--val", str(val),
                     "--max-steps", "16", "--eval-every", "2", "--save-every", "1", "--early-stop", "1",
                     "--lr", "0.5", *SMALL, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    run = tuitune_dirs["data"] / "runs" / "diverge"
    assert json.loads((run / "config.json").read_text())["early_stop"] == 1  # --resume trains the same thing
    status = json.loads((run / "status.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    stop = status["step"]
    assert status["state"] == "done" and status["early_stopped"] is True
    assert stop < 16 and [row["step"] for row in rows] == list(range(1, stop + 1))
    evals = {row["step"]: row["eval_loss"] for row in rows if row["eval_loss"] is not None}
    best = min(evals, key=evals.get)
    assert status["best_step"] == best < stop and status["best_eval_loss"] == evals[best]
    assert evals[stop] >= evals[best]  # patience 1: the first evaluation that did not improve stops the run
    assert rows[-1]["best_step"] == best
    assert f"stopped early at step {stop}" in status["message"] and "has not improved" in status["stop_reason"]

    # The exported adapter holds the best checkpoint's weights: the checkpoint survived the pruning of old ones
    # (one is saved every step here) and its tensors are the adapter's, bit for bit.
    checkpoint = run / "checkpoints" / f"step-{best}" / "adapter_model.safetensors"
    exported, kept = tensors(run / "adapter" / "adapter_model.safetensors"), tensors(checkpoint)
    assert exported.keys() == kept.keys()
    assert all(torch.equal(exported[key], kept[key]) for key in kept)
    last = tensors(run / "checkpoints" / f"step-{stop}" / "adapter_model.safetensors")
    assert not all(torch.equal(last[key], kept[key]) for key in kept)  # the last step is a different adapter
    assert (run / "diverge.gguf").exists()

    again = run_cli("train", "--name", "diverge", "--resume", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "stopped early" in again.stdout and "nothing to resume" in again.stdout
    assert json.loads((run / "status.json").read_text()) == status
    assert len((run / "metrics.jsonl").read_text().splitlines()) == stop
    # the trainer itself refuses too (a torchrun start on another machine bypasses the CLI)
    trainer = subprocess.run([sys.executable, "-m", "tuitune.training.train", str(run), "--resume"], cwd=REPO,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert trainer.returncode == 0 and "nothing to resume" in trainer.stdout
    assert json.loads((run / "status.json").read_text()) == status
