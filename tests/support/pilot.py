"""Helpers for pilot tests: a scripted-engine app and waiting for panes to finish."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tuitune.engines.base import LoadControl
from tuitune.engines.scripted import ScriptedEngine
from tuitune.errors import TuituneError
from tuitune.tui.app import TuituneApp


class ScriptedModels:
    """An engine factory handing out ScriptedEngines by model id; remembers them for assertions."""

    def __init__(
        self,
        answers: dict[str, list[str]] | None = None,
        delay_s: float = 0.0,
        fail: dict[str, str] | None = None,
        hold_after: int | None = None,
        load_s: float = 0.0,
        read_s: float = 0.0,
        hold_load_at: float | None = None,
        hold_read_at: int | None = None,
    ):
        self.hold_after = hold_after
        self.hold_load_at = hold_load_at  # frozen states: every engine waits there until ``release`` is set
        self.hold_read_at = hold_read_at
        # A load holds before its engine is returned, so these holds share the factory's events: ``holding`` is
        # set once any engine waits, ``release`` frees them all. ``hold_after`` keeps one pair per engine.
        self.holding = threading.Event()
        self.release = threading.Event()
        self.load_s = load_s  # the slow paths of a real model: seconds to load, seconds to read a prompt
        self.read_s = read_s
        self.answers = answers or {}
        self.delay_s = delay_s
        self.fail = fail or {}
        self.engines: dict[str, ScriptedEngine] = {}
        self.opened: list[str] = []

    def __call__(self, model_id: str, n_ctx: int | None = None, load: LoadControl | None = None) -> ScriptedEngine:
        self.opened.append(model_id)
        if model_id in self.fail:
            raise TuituneError(self.fail[model_id])
        engine = ScriptedEngine(
            model_id, self.answers.get(model_id), delay_s=self.delay_s, hold_after=self.hold_after,
            load_s=self.load_s, read_s=self.read_s, load=load, n_ctx=n_ctx or 4096,
            hold_load_at=self.hold_load_at, hold_read_at=self.hold_read_at, **self._shared_events(),
        )  # fmt: skip
        self.engines[model_id] = engine
        return engine

    def _shared_events(self) -> dict[str, threading.Event]:
        if self.hold_load_at is None and self.hold_read_at is None:
            return {}
        return {"holding": self.holding, "release": self.release}


def scripted_app(tmp_path: Path, models: ScriptedModels | None = None, **kwargs) -> tuple[TuituneApp, ScriptedModels]:
    models = models or ScriptedModels()
    app = TuituneApp(engine_factory=models, history_path=tmp_path / "history.sqlite3", **kwargs)
    return app, models


async def wait_idle(pilot, app: TuituneApp, timeout: float = 60.0) -> None:
    """Wait until no pane of the current screen is generating (and the last messages were handled)."""
    deadline = time.monotonic() + timeout
    await pilot.pause(0.05)
    while time.monotonic() < deadline:
        panes = getattr(app.screen, "panes", [])
        if panes and not any(pane.busy for pane in panes):
            await pilot.pause(0.05)
            return
        await pilot.pause(0.05)
    raise AssertionError("panes still busy after timeout")


async def type_and_send(pilot, text: str) -> None:
    await pilot.click("#prompt")
    for char in text:
        await pilot.press("space" if char == " " else char)
    await pilot.press("enter")
