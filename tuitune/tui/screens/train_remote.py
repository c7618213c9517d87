"""The Train screen's side of a run on a fine-tuning service (remote_training/runs.py).

Such a run is followed by ``tuitune train --name NAME --resume`` in a session of its own (it outlives the app,
as a trainer does); the screen reads its run directory like any other. Stop asks the service to cancel the
job, off the UI thread; a run nobody follows any more (the app or the machine went away) is followed again
when the screen opens, and by Ctrl+R.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tuitune.training.runs import list_runs, read_json, run_status


def is_remote(directory: Path) -> bool:
    config = read_json(directory / "config.json") or {}
    return isinstance(config.get("remote"), dict)


def base_label(config: dict) -> str:
    """The base column: a local run's base model, or a remote run's model on its endpoint."""
    remote = config.get("remote")
    if isinstance(remote, dict):
        return f"{remote.get('model', '?')} @ {remote.get('endpoint', '?')}"
    return str(config.get("base", "?"))


def where(directory: Path) -> str:
    """ "on ENDPOINT · job ID" for the status line."""
    remote = (read_json(directory / "config.json") or {}).get("remote") or {}
    return f"on {remote.get('endpoint', '?')} · job {remote.get('job_id') or '(not created)'}"


def follow_in_background(directory: Path) -> None:
    """Start a follower that outlives the app; its errors go to the run's stderr.log."""
    command = [sys.executable, "-m", "tuitune", "train", "--name", directory.name, "--resume"]
    with open(directory / "stderr.log", "ab") as errors:
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                         start_new_session=True)  # fmt: skip


def reattach_detached() -> list[str]:
    """Follow again every remote run whose job still runs but that nobody follows; returns their names."""
    names = []
    for directory in list_runs():
        if is_remote(directory) and run_status(directory).get("state") == "detached":
            follow_in_background(directory)
            names.append(directory.name)
    return names


def cancel_job(directory: Path) -> str:
    """Ask the service to cancel (blocking: call it from a worker thread); the line to show."""
    from tuitune.remote_training.runs import cancel

    state = cancel(directory)
    return f"'{directory.name}': the service says the job is {state}"
