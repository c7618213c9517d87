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
from typing import Any

from textual import work

from tuitune.errors import TuituneError
from tuitune.safe_text import inert
from tuitune.training.runs import list_runs, read_json, run_status
from tuitune.tui.screens.dialogs import Confirm


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


_followers: list[subprocess.Popen] = []  # started here; reaped by ``reap`` so none lingers as a zombie


def follow_in_background(directory: Path) -> None:
    """Start a follower that outlives the app; its errors go to the run's stderr.log. What would stop it at once
    (the key variable not set in this app's environment) is raised here, to be shown, instead."""
    from tuitune.remote_training.runs import client_for
    from tuitune.training.runs import TrainConfig

    client_for(TrainConfig.from_json(directory / "config.json")).endpoint.api_key()
    command = [sys.executable, "-m", "tuitune", "train", "--name", directory.name, "--resume"]
    with open(directory / "stderr.log", "ab") as errors:
        _followers.append(subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=errors, start_new_session=True))  # fmt: skip


def reap() -> None:
    """Collect followers that ended (a follower of a run that finished, or failed at once)."""
    _followers[:] = [process for process in _followers if process.poll() is None]


def reattach_detached() -> tuple[list[str], list[str]]:
    """Follow again every remote run whose job still runs but that nobody follows: (names followed, problems)."""
    names, problems = [], []
    for directory in list_runs():
        remote = (read_json(directory / "config.json") or {}).get("remote") or {}
        if not remote.get("job_id"):  # cut off before its job existed: creating one bills; the user decides
            continue
        if run_status(directory).get("state") == "detached":
            try:
                follow_in_background(directory)
            except TuituneError as error:
                problems.append(f"'{directory.name}' not followed: {error}")
                continue
            names.append(directory.name)
    return names, problems


def cancel_job(directory: Path) -> str:
    """Ask the service to cancel (blocking: call it from a worker thread); the line to show."""
    from tuitune.remote_training.runs import cancel

    state = cancel(directory)
    return f"'{directory.name}': the service says the job is {state}"


class RemoteRunActions:
    """Stop and Ctrl+R for a run on a service, mixed into the Train screen (which provides notify and app)."""

    def stop_remote(self, directory: Path, status: dict[str, Any]) -> None:
        """Cancel the job, once the user said yes: a billed job cannot be taken back up where it stopped."""
        if status.get("state") not in ("queued", "running", "detached", "uploading"):
            self.notify("the selected job is not running", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.notify("asking the service to cancel the job…")
                self.cancel_remote(directory)

        question = f"Cancel the job of '{directory.name}' on the service? It stops training there for good."
        self.app.push_screen(Confirm(inert(question)), answered)

    @work(thread=True, group="cancel", exit_on_error=False)
    def cancel_remote(self, directory: Path) -> None:
        try:
            line, severity = cancel_job(directory), "information"
        except TuituneError as error:
            line, severity = str(error), "error"
        self.app.call_from_thread(self.notify, inert(line), severity=severity, markup=False)

    def follow_remote(self, directory: Path, state: str | None) -> None:
        if state != "detached":
            self.notify(f"run '{directory.name}' is {state}; only a job nobody follows is followed again",
                        severity="warning", markup=False)  # fmt: skip
            return
        try:
            follow_in_background(directory)
        except TuituneError as error:
            self.notify(inert(str(error)), severity="error", markup=False)
            return
        self.notify(f"following '{directory.name}' again", markup=False)
