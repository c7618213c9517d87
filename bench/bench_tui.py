"""TUI performance, on the real app and the real demo models, each figure measured side by side in one run.

1. Startup: time from launching `tuitune` in a real terminal (tmux) to the first painted frame (the panes
   are on screen), and to the footer being filled in, median of N launches. Target <= 1.0 s.
2. Keypress latency while two panes stream: a key event handed to the app the way the terminal driver does
   (under the Textual pilot) until the first frame written after the prompt box took the key, p50/p95.
   Target p95 <= 50 ms.
3. Decode tokens/s of a model streaming into the TUI (Chat screen, one pane) vs the same model and prompt in
   the headless CLI (`tuitune chat … --json`), interleaved rounds. Target ratio >= 0.95.

    python bench/bench_tui.py [--launches 5] [--rounds 5] [--tokens 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DOG_PROMPT, table

REPO = Path(__file__).resolve().parent.parent
TUITUNE = [sys.executable, "-m", "tuitune"]


def isolated_env() -> dict[str, str]:
    """Fresh config/data/log dirs; the model cache is shared so Gemma is assembled only once."""
    base = Path(tempfile.mkdtemp(prefix="tuitune-bench-"))
    env = dict(os.environ)
    for name in ("CONFIG", "DATA", "LOG"):
        env[f"TUITUNE_{name}_DIR"] = str(base / name.lower())
    os.environ.update({k: v for k, v in env.items() if k.startswith("TUITUNE_")})
    return env


def startup_seconds(env: dict[str, str]) -> tuple[float, float]:
    """Launch tuitune in a detached tmux session; seconds until the panes, then the footer, are on screen."""
    session = f"tuitune-bench-{os.getpid()}"
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    command = " ".join(TUITUNE)
    exports = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("TUITUNE_"))
    start = time.perf_counter()
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", f"cd {REPO} && {exports} {command}"],
        check=True,
    )
    first = None
    try:
        while time.perf_counter() - start < 20:
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            if first is None and "gemma-3-270m" in screen:
                first = time.perf_counter() - start
            if first is not None and "Quit" in screen:
                return first, time.perf_counter() - start
            time.sleep(0.005)
        raise RuntimeError("tuitune did not paint within 20 s")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


async def keypress_latencies(samples: int, history: Path) -> tuple[list[float], int]:
    from textual import events

    from tuitune.tui.app import TuituneApp
    from tuitune.tui.widgets.prompt import PromptBox

    app = TuituneApp(history_path=history)
    latencies: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await pilot.press("ctrl+o")
        screen.query_one("#param-temperature").value = "0"
        screen.query_one("#param-max_tokens").value = "2000"
        await pilot.press("ctrl+o")
        await pilot.pause(0.2)
        while any(pane.engine_state != "ready" for pane in screen.panes):
            await pilot.pause(0.05)
        box = screen.query_one(PromptBox)
        box.text = DOG_PROMPT
        box.focus()
        await pilot.press("enter")
        while not all(pane.turns and pane.turns[-1].answer for pane in screen.panes):
            await pilot.pause(0.01)
        # Timestamp every frame the compositor hands to the display (headless apps skip the terminal write).
        driver = app._driver
        frames: list[float] = []
        original_display = app._display

        def timed_display(screen, renderable) -> None:
            frames.append(time.perf_counter())
            original_display(screen, renderable)

        app._display = timed_display
        for index in range(samples):
            key = "abcdefghij"[index % 10]
            event = events.Key(key, key)
            event.set_sender(app)
            start = time.perf_counter()
            driver.send_message(event)  # exactly what the terminal driver does with a keystroke
            deadline = start + 5
            while not box.text.endswith(key) and time.perf_counter() < deadline:
                await asyncio.sleep(0.0005)
            handled = time.perf_counter()
            while (not frames or frames[-1] < handled) and time.perf_counter() < deadline:
                await asyncio.sleep(0.0005)  # the first frame composed after the key was handled
            if time.perf_counter() >= deadline:
                raise RuntimeError(f"key {key!r} not shown within 5 s (focus: {app.focused})")
            latencies.append(next(t for t in frames if t >= handled) - start)
            await asyncio.sleep(0.05)
        app._display = original_display
        streaming = sum(1 for pane in screen.panes if pane.busy)
        await pilot.press("escape")
        await pilot.pause(0.3)
    return latencies, streaming


async def tui_decode_rate(model: str, tokens: int, history: Path, mode: str = "raw") -> float:
    from tuitune.tui.app import TuituneApp
    from tuitune.tui.widgets.prompt import PromptBox

    app = TuituneApp(history_path=history)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(2.5)  # let the Compare screen's start-up model loads finish first
        await pilot.press("f3")
        await pilot.pause(0.1)
        screen = app.screen
        screen.set_pane_model(screen.panes[0], model, mode=mode)
        await pilot.press("ctrl+o")
        screen.query_one("#param-temperature").value = "0"
        screen.query_one("#param-max_tokens").value = str(tokens)
        await pilot.press("ctrl+o")
        while screen.panes[0].engine_state != "ready":
            await pilot.pause(0.05)
        box = screen.query_one(PromptBox)
        box.text = DOG_PROMPT
        box.focus()
        await pilot.press("enter")
        await pilot.pause(0.1)
        while screen.panes[0].busy:
            await asyncio.sleep(0.05)  # plain sleep: the pilot's pause also waits for the app to go idle
        return screen.panes[0].turns[-1].stats.decode_tokens_per_s


def tui_decode_rate_in_fresh_process(model: str, mode: str, tokens: int, env: dict[str, str]) -> float:
    """Each TUI run in its own process, like each CLI run: no engines or threads left over from earlier."""
    result = subprocess.run(
        [sys.executable, __file__, "--one-tui-run", model, "--mode", mode, "--tokens", str(tokens)],
        capture_output=True, text=True, env=env, cwd=REPO, check=True,
    )  # fmt: skip
    return float(result.stdout.strip().splitlines()[-1])


def cli_decode_rate(model: str, mode: str, tokens: int, env: dict[str, str]) -> float:
    result = subprocess.run(
        [*TUITUNE, "chat", model, DOG_PROMPT, "--mode", mode, "--temperature", "0", "--max-tokens", str(tokens),
         "--json"],
        capture_output=True, text=True, env=env, cwd=REPO, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)["decode_tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--launches", type=int, default=5)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--one-tui-run", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="raw", help=argparse.SUPPRESS)
    args = parser.parse_args()
    env = isolated_env()
    if args.one_tui_run:
        history = Path(env["TUITUNE_DATA_DIR"]) / "bench.sqlite3"
        history.parent.mkdir(parents=True, exist_ok=True)
        print(asyncio.run(tui_decode_rate(args.one_tui_run, args.tokens, history, args.mode)))
        return
    history = Path(env["TUITUNE_DATA_DIR"]) / "bench.sqlite3"
    Path(env["TUITUNE_DATA_DIR"]).mkdir(parents=True, exist_ok=True)

    print("## Startup to first painted frame (tmux, 120×40)\n")
    if shutil.which("tmux"):
        startup_seconds(env)  # warm the page cache
        launches = [startup_seconds(env) for _ in range(args.launches)]
        rows = [
            (label, len(launches), f"{statistics.median(t[i] for t in launches):.2f} s",
             f"{max(t[i] for t in launches):.2f} s")
            for i, label in enumerate(("first frame (panes painted)", "footer with key bindings painted"))
        ]  # fmt: skip
        print(table(("", "launches", "median", "max"), rows))
    else:
        print("tmux not found: skipped")

    print("\n## Keypress latency while two panes stream (real models)\n")
    latencies, streaming = asyncio.run(keypress_latencies(args.samples, history))
    ms = sorted(x * 1000 for x in latencies)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    print(table(("samples", "panes streaming at the end", "p50", "p95", "max", "target"),
                [(len(ms), streaming, f"{statistics.median(ms):.1f} ms", f"**{p95:.1f} ms**", f"{ms[-1]:.1f} ms",
                  "p95 ≤ 50 ms")]))  # fmt: skip

    print(f"\n## Decode tokens/s: TUI vs headless CLI ({args.tokens} greedy tokens, median of {args.rounds})\n")
    rows = []
    # Each model in the mode where it writes at length, so both sides decode the whole token budget.
    for model, mode in (("smollm2-135m-instruct", "chat"), ("gemma-3-270m", "raw")):
        tui, cli = [], []
        for _ in range(args.rounds):
            cli.append(cli_decode_rate(model, mode, args.tokens, env))
            tui.append(tui_decode_rate_in_fresh_process(model, mode, args.tokens, env))
        t, c = statistics.median(tui), statistics.median(cli)
        rows.append((f"{model} ({mode})", f"{c:.1f}", f"{t:.1f}", f"**{t / c:.3f}**"))
    print(table(("model", "CLI tok/s", "TUI tok/s", "TUI / CLI (target ≥ 0.95)"), rows))


if __name__ == "__main__":
    main()
