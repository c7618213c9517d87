"""Regenerate screenshots/*.svg from the real app on the real demo models (greedy, so reruns match).

    .venv/bin/python scripts/screenshots.py

History, settings and runs go to throwaway folders; the screens are driven with Textual's pilot exactly as a person
would (keys and clicks) and saved with App.save_screenshot.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "screenshots"
DOG = "Tell me how to train my dog to sit"
LONG_PROMPT = " ".join(
    f"Chapter {n}. The dog learned to sit on day {n}, to stay on day {n + 1} and to come back when called."
    for n in range(1, 130)
)  # about 3,000 tokens: long enough to watch a pane read it


async def wait_idle(pilot, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    await pilot.pause(0.2)
    while time.monotonic() < deadline:
        panes = getattr(pilot.app.screen, "panes", [])
        if panes and not any(p.busy for p in panes):
            break
        await pilot.pause(0.1)
    await pilot.pause(0.5)


async def send(pilot, text: str) -> None:
    from tuitune.tui.widgets.prompt import PromptBox

    box = pilot.app.screen.query_one(PromptBox)
    box.text = text
    box.focus()
    await pilot.press("enter")
    await wait_idle(pilot)


async def greedy(pilot, max_tokens: int) -> None:
    screen = pilot.app.screen
    await pilot.press("ctrl+o")
    screen.query_one("#param-temperature").value = "0"
    screen.query_one("#param-max_tokens").value = str(max_tokens)
    await pilot.pause(0.1)
    await pilot.press("ctrl+o")


async def reading(pilot) -> None:
    """Send a long prompt and wait until both panes are part-way through reading it."""
    from tuitune.tui.widgets.prompt import PromptBox

    box = pilot.app.screen.query_one(PromptBox)
    box.text = LONG_PROMPT
    box.focus()
    await pilot.press("enter")
    deadline = time.monotonic() + 120
    panes = pilot.app.screen.panes
    while time.monotonic() < deadline and not all(p.state == "reading" and p.status.done >= 512 for p in panes):
        await pilot.pause(0.05)


async def main() -> None:
    import os

    scratch = Path(tempfile.mkdtemp(prefix="tuitune-shots-"))
    for name in ("CONFIG", "DATA", "LOG"):  # never the user's settings, history or runs
        os.environ[f"TUITUNE_{name}_DIR"] = str(scratch / name.lower())
    from tuitune.tui.app import TuituneApp

    OUT.mkdir(exist_ok=True)
    history = scratch / "history.sqlite3"

    app = TuituneApp(history_path=history)
    async with app.run_test(size=(120, 40)) as pilot:
        await greedy(pilot, 120)
        await send(pilot, DOG)
        app.save_screenshot("compare.svg", str(OUT))

        await pilot.press("ctrl+n")
        await reading(pilot)
        app.save_screenshot("compare-reading.svg", str(OUT))
        await pilot.press("escape")
        await wait_idle(pilot)

        await pilot.press("ctrl+n")
        await pilot.press("ctrl+t", "ctrl+t")  # four panes: the lab's 2×2
        await pilot.pause(0.3)
        screen = app.screen
        panes = screen.panes
        screen.set_pane_model(panes[1], "gemma-3-270m", mode="chat")
        screen.set_pane_model(panes[2], "smollm2-135m-instruct", mode="raw")
        screen.set_pane_model(panes[3], "smollm2-135m-instruct", mode="chat")
        await pilot.pause(1.0)
        await send(pilot, "What do you think of Mars?")
        app.save_screenshot("compare-2x2.svg", str(OUT))

        await pilot.press("f3")
        await pilot.pause(0.5)
        await greedy(pilot, 160)
        await send(pilot, "What do you think of Mars?")
        app.save_screenshot("chat.svg", str(OUT))

        await pilot.press("f4")
        await pilot.pause(3.0)
        app.save_screenshot("models.svg", str(OUT))

        await pilot.press("f5")
        await pilot.pause(1.0)
        app.save_screenshot("history.svg", str(OUT))

        await pilot.press("f1")
        await pilot.pause(0.5)
        app.save_screenshot("help.svg", str(OUT))

    compact = TuituneApp(history_path=history)
    async with compact.run_test(size=(80, 24)) as pilot:
        await greedy(pilot, 60)
        await send(pilot, DOG)
        compact.save_screenshot("compare-80x24.svg", str(OUT))

    await train_and_compare(history)
    print("\n".join(sorted(str(p.relative_to(REPO)) for p in OUT.glob("*.svg"))))


async def train_and_compare(history: Path) -> None:
    """A real LoRA run from the Train screen (about two minutes), then base vs finetune on a held-out question."""
    import os

    scratch = Path(tempfile.mkdtemp(prefix="tuitune-shots-train-"))
    os.environ["TUITUNE_DATA_DIR"] = str(scratch / "data")  # the run and its catalog entry in a fresh folder
    os.environ["TUITUNE_CONFIG_DIR"] = str(scratch / "config")
    from textual.widgets import Input, Select

    from tuitune.tui.app import TuituneApp

    app = TuituneApp(history_path=history)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f10")
        await pilot.pause(0.5)
        screen = app.screen
        screen.query_one("#train-base", Select).value = "smollm2-135m-instruct"
        screen.query_one("#train-max_steps", Input).value = "30"
        await pilot.press("ctrl+g")
        await pilot.pause(3)
        await pilot.press("ctrl+s")
        deadline = time.monotonic() + 900
        while "done" not in str(screen.query_one("#train-status").render()) and time.monotonic() < deadline:
            await pilot.pause(1)
        await pilot.pause(1)
        app.save_screenshot("train.svg", str(OUT))
        await greedy_all(pilot)
        await pilot.press("ctrl+o")
        await wait_idle(pilot)
        app.save_screenshot("compare-finetune.svg", str(OUT))


async def greedy_all(pilot) -> None:
    """Greedy on the Compare screen before Train's Ctrl+O sends the held-out question there."""
    await pilot.press("f2")
    await pilot.pause(0.5)
    await greedy(pilot, 60)
    await pilot.press("f10")
    await pilot.pause(0.3)


if __name__ == "__main__":
    asyncio.run(main())
