"""A seeded key storm: thousands of random keys across every screen, on models that are slow at random.

The pilot sends every binding, printable text, Tab, Esc, Enter, page and arrow keys, F-keys and whole prompts
(short and very long) to the app, whose scripted engines take a random time to load, to read a prompt and per
token. Afterwards the app must answer a prompt and no exception may have been raised: the bugs this replaces
were a crash (a message about a removed turn), a freeze (synced scrolling) and a Stop that could not stop.
A freeze blocks the event loop itself, so the test's own timeout (pytest-timeout) is what catches one.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from textual import events

from tests.support.pilot import ScriptedModels, wait_idle
from tuitune.catalog import load_catalog
from tuitune.engines.base import LoadControl, Sampling
from tuitune.engines.scripted import ScriptedEngine
from tuitune.tui.app import TuituneApp
from tuitune.tui.screens.compare import CompareScreen
from tuitune.tui.screens.train import TrainScreen
from tuitune.tui.widgets.params import ParamsPanel
from tuitune.tui.widgets.prompt import PromptBox

pytestmark = pytest.mark.anyio
SEEDS = (1, 2, 3)
KEYS_PER_SEED = 900

NAVIGATION = ["tab", "shift+tab", "escape", "enter", "up", "down", "left", "right", "pageup", "pagedown", "home",
              "end", "delete", "backspace", "space"]  # fmt: skip
FUNCTION_KEYS = [f"f{n}" for n in range(1, 13)]
CONTROL_KEYS = [f"ctrl+{c}" for c in "abdefghjklnoprstuvwxy"]  # not ctrl+q (quits), ctrl+c, ctrl+z
ALT_KEYS = [f"alt+{c}" for c in ("m", "o", "p", "s", "r", "c", "x", "minus", "plus")]
PRINTABLE = [*"abcdefghijklmnopqrstuvwxyz0123456789", "minus", "plus", "slash", "full_stop", "y", "q"]
CHARACTERS = {"space": " ", "minus": "-", "plus": "+", "slash": "/", "full_stop": "."}
PROMPTS = ["Tell me how to train my dog to sit", "What do you think of Mars?", "word " * 2500, "", "x"]

STORM_CATALOG = """
[[model]]
id = "storm-base"
name = "Storm base"
kind = "base"
family = "storm"
mode = "raw"
pair = "storm-chat"
source = { path = "storm-base.gguf" }

[[model]]
id = "storm-chat"
name = "Storm chat"
kind = "chat"
family = "storm"
mode = "chat"
pair = "storm-base"
source = { path = "storm-chat.gguf" }

[[model]]
id = "storm-hub"
name = "Storm hub"
kind = "chat"
family = "storm"
mode = "chat"
source = { hf = "storm/storm-GGUF", file = "storm.Q4_K_M.gguf" }
"""


class SlowAtRandom(ScriptedModels):
    """Each engine opened gets its own random load, prompt-reading and per-token delays."""

    def __init__(self, rng: random.Random):
        super().__init__({"storm-base": ["on and on\non and on\n" * 20], "storm-chat": ["Sit: hold a treat. " * 10]})
        self.rng = rng

    def __call__(self, model_id: str, n_ctx: int | None = None, load: LoadControl | None = None) -> ScriptedEngine:
        self.load_s = self.rng.choice([0.0, 0.2, 1.5])
        self.read_s = self.rng.choice([0.0, 0.3, 3.0])
        self.delay_s = self.rng.choice([0.0, 0.005, 0.03])
        return super().__call__(model_id, n_ctx, load)


def storm_app(tmp_path: Path, rng: random.Random) -> TuituneApp:
    catalog_file = tmp_path / "storm.toml"
    catalog_file.write_text(STORM_CATALOG, encoding="utf-8")
    (tmp_path / "storm-base.gguf").write_bytes(b"GGUF not really")  # a broken file for the Models screen
    catalog = load_catalog(shipped=catalog_file, user=tmp_path / "none.toml")
    return TuituneApp(engine_factory=SlowAtRandom(rng), catalog=catalog, history_path=tmp_path / "h.sqlite3")


def next_key(rng: random.Random) -> str | None:
    """A key, weighted like a person who mostly navigates and types; None means 'paste a prompt and send'."""
    group = rng.choices(
        [NAVIGATION, FUNCTION_KEYS, CONTROL_KEYS, ALT_KEYS, PRINTABLE, None], weights=[30, 8, 14, 10, 30, 8]
    )[0]
    return None if group is None else rng.choice(group)


async def type_key(app: TuituneApp, key: str) -> None:
    """Hand a key to the app the way the terminal driver does, without waiting for the app to settle (Pilot.press
    waits until the process is idle, which streaming panes never are): keys arrive as fast as a person types."""
    character = CHARACTERS.get(key, key if len(key) == 1 else None)
    event = events.Key(key, character)
    event.set_sender(app)
    app._driver.send_message(event)
    await asyncio.sleep(0.002)
    await drained(app, backlog=20)


async def drained(app: TuituneApp, backlog: int = 0, timeout: float = 20) -> None:
    """Wait until at most ``backlog`` events wait in the app's queue: a frozen app fails here, in ``timeout``."""
    deadline = time.monotonic() + timeout
    while app._message_queue.qsize() > backlog:
        assert time.monotonic() < deadline, f"the app stopped taking keys ({app._message_queue.qsize()} queued)"
        await asyncio.sleep(0.01)


async def responsive(pilot, app: TuituneApp) -> None:
    """After the storm: back to Compare, a prompt is answered by every pane."""
    await drained(app)
    await pilot.pause()
    for _ in range(10):  # close what the storm left open, then go to Compare
        if isinstance(app.screen, CompareScreen):
            break
        await pilot.press("escape" if len(app.screen_stack) > 1 else "f2")
    await pilot.pause(0.2)
    screen = app.screen
    assert isinstance(screen, CompareScreen), app.screen_stack
    screen.action_stop_all()
    await wait_idle(pilot, app, timeout=30)
    for panel in screen.query(ParamsPanel):  # the storm typed into the parameter fields: sending is refused
        panel.set_values(Sampling(), "", 0)
    await pilot.pause()
    assert screen.params_problem() is None
    box = screen.query_one(PromptBox)
    box.text = "are you there?"
    box.focus()
    await pilot.press("enter")
    await wait_idle(pilot, app, timeout=60)
    assert all(pane.turns and pane.turns[-1].prompt == "are you there?" for pane in screen.panes)
    assert all(pane.turns[-1].answer or pane.turns[-1].error for pane in screen.panes)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("seed", SEEDS)
async def test_key_storm(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a stray download key must not reach for the network
    launched: list[str] = []
    monkeypatch.setattr(TrainScreen, "launch", lambda self, name, resume: launched.append(name))
    quits: list[bool] = []  # the palette's "Quit" is one Enter away: a storm that quits has nothing left to test
    monkeypatch.setattr(TuituneApp, "action_quit", lambda self: quits.append(True))
    rng = random.Random(seed)
    app = storm_app(tmp_path, rng)
    async with app.run_test(size=rng.choice([(120, 40), (80, 24), (160, 50)])) as pilot:
        for _ in range(KEYS_PER_SEED):
            key = next_key(rng)
            if key is None:
                box = next(iter(app.screen.query(PromptBox)), None)
                if box is not None:
                    box.text = rng.choice(PROMPTS)
                    box.focus()
                    await pilot.press("enter")
                continue
            await type_key(app, key)
            if rng.random() < 0.03:
                await pilot.pause(rng.choice([0.05, 0.3]))  # let a slow model get somewhere
            elif rng.random() < 0.1:
                await asyncio.wait_for(pilot.pause(), timeout=10)  # the app catches up
        await responsive(pilot, app)
    assert app.return_code in (None, 0)
