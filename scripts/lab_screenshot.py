"""Screenshot of the Gemma 3 270M lab: Compare with the base and its instruct-demo finetune, greedy.

    .venv/bin/tuitune train --preset instruct-demo      # first: makes the finetune gemma-instruct-demo
    .venv/bin/python scripts/lab_screenshot.py          # writes screenshots/lab-gemma-instruct.svg

The catalog (with the finetune) is the user's own; history and settings go to a throwaway folder.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "screenshots"
NAME = "lab-gemma-instruct.svg"
MODELS = ["gemma-3-270m", "gemma-instruct-demo"]
PROMPT = "Tell me how to train my dog to sit"


async def main() -> None:
    from scripts.screenshots import greedy, send
    from tuitune.tui.app import TuituneApp

    scratch = Path(tempfile.mkdtemp(prefix="tuitune-lab-shot-"))
    app = TuituneApp(compare_models=MODELS, history_path=scratch / "history.sqlite3",
                     settings_path=scratch / "settings.toml")  # fmt: skip
    async with app.run_test(size=(120, 40)) as pilot:
        await greedy(pilot, 200)  # the suite's budget: the base runs out of tokens, the finetune stops
        await send(pilot, PROMPT)
        OUT.mkdir(exist_ok=True)
        app.save_screenshot(NAME, str(OUT))
    print(OUT / NAME)


if __name__ == "__main__":
    asyncio.run(main())
