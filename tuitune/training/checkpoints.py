"""Checkpoints of a run: written to a temporary directory and renamed into place, so a full disk or a kill
leaves the previous one intact; restored with the optimizer, schedule and RNG state, so a resumed loss
curve continues as if never interrupted. Only rank 0 of a multi-process run writes them; every rank reads.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from tuitune.errors import TuituneError

KEEP_CHECKPOINTS = 2


def checkpoints(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in (directory / "checkpoints").glob("step-*"):
        if (path / "trainer_state.pt").exists() and path.name[5:].isdigit():
            found.append((int(path.name[5:]), path))
    return sorted(found)


def latest_checkpoint(directory: Path) -> tuple[int, Path] | None:
    found = checkpoints(directory)
    return found[-1] if found else None


def save(run_directory: Path, model, optimizer, scheduler, scaler, step: int, elapsed: float,
         keep: int | None = None) -> None:  # fmt: skip
    """Write the checkpoint of ``step``; then drop all but the last KEEP_CHECKPOINTS, and ``keep`` (the best
    one of an early-stopping run, which the final export needs)."""
    directory = run_directory / "checkpoints"
    directory.mkdir(exist_ok=True)
    temporary = directory / f".tmp-step-{step}"
    final = directory / f"step-{step}"
    shutil.rmtree(temporary, ignore_errors=True)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
             "step": step, "elapsed": elapsed}  # fmt: skip
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    try:
        model.save_pretrained(temporary)
        torch.save(state, temporary / "trainer_state.pt")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
    except Exception as error:  # OSError from files, RuntimeError from torch.save, safetensors' own errors
        shutil.rmtree(temporary, ignore_errors=True)
        previous = latest_checkpoint(run_directory)
        kept = f"the checkpoint at step {previous[0]} is intact" if previous else "no earlier checkpoint exists"
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise TuituneError(
            f"could not save the checkpoint at step {step} ({reason}); {kept}. "
            "Free some disk space, then continue with --resume"
        ) from None
    for old in sorted(checkpoints(run_directory))[:-KEEP_CHECKPOINTS]:
        if old[0] != keep:
            shutil.rmtree(old[1], ignore_errors=True)


def load_adapter(run_directory: Path, model, step: int) -> None:
    """Put the LoRA weights of the checkpoint at ``step`` back into ``model`` (the best one, for the export)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = run_directory / "checkpoints" / f"step-{step}" / "adapter_model.safetensors"
    if not path.exists():
        raise TuituneError(f"{path} is missing: the best checkpoint (step {step}) cannot be exported")
    set_peft_model_state_dict(model, load_file(path))


def restore(run_directory: Path, model, optimizer, scheduler, scaler) -> tuple[int, float] | None:
    """Load the latest checkpoint into the model and optimizer: (step, seconds trained), or None."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    found = latest_checkpoint(run_directory)
    if found is None:
        return None
    step, path = found
    set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
    state = torch.load(path / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"])
    return step, float(state.get("elapsed", 0.0))


def truncate_metrics(run_directory: Path, step: int) -> None:
    """Drop the metrics lines after ``step``: those steps are trained again."""
    metrics = run_directory / "metrics.jsonl"
    if metrics.exists():
        kept = [line for line in metrics.read_text(encoding="utf-8").splitlines()
                if _step_of(line) is not None and _step_of(line) <= step]  # fmt: skip
        from tuitune.atomic import write_text

        write_text(metrics, "".join(line + "\n" for line in kept))  # a crash here must not cut the curve


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
