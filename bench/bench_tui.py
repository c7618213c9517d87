"""TUI performance, on the real app and the real demo models, each figure measured side by side in one run.

1. Startup: time from launching `tuitune` in a real terminal (tmux) to the first painted frame (the panes
   are on screen), and to the footer being filled in, median of N launches. Target <= 1.0 s.
2. Keypress latency while two panes stream: a key event handed to the app the way the terminal driver does
   (under the Textual pilot) until the first frame that shows it (the prompt box drawn with the key's text,
   then the frame handed to the display), p50/p95.
   Target p95 <= 50 ms.
3. Decode tokens/s of a model streaming into the TUI (Chat screen, one pane) vs the same model and prompt in
   the headless CLI (`tuitune chat … --json`), per model, in interleaved rounds (both models every round, the
   CLI/TUI order alternating). Target ratio >= 0.97.
4. Esc while a long prompt (~3,000 tokens of varied text, new each time) is being read: Esc pressed through
   the pilot at a random point 0.3-3 s after the first prompt tokens were read, until no pane is busy. On the
   Compare screen (two panes reading at once) and on the Chat screen (one pane). Target p95 <= 0.5 s.
5. Esc while a model is loading (gemma-3-270m in the Chat pane, really loaded each time): after a model switch
   (the pane preloads) and after a prompt sent to a pane whose model is not loaded, alternately; Esc at a
   random point of the load, until the pane is neither busy nor loading/stopping. Target p95 <= 0.5 s. Also
   shown: how long the abandoned load took to let go (the pane's engine leaves "loading"), for information.

A summary table with every figure, its target and pass/fail closes the output.

    python bench/bench_tui.py [--launches 5] [--samples 60] [--rounds 5] [--tokens 256] [--stops 8] [--loads 8]
    python bench/bench_tui.py --quick      # fewer repetitions of everything, to try it (~4-6 min)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import DOG_PROMPT, table

# Decode is compared on an answer that uses the whole token budget: SmolLM2 answers the dog prompt in about 90
# tokens (one second), a window in which the first frame and the pane's state changes weigh more than decoding.
DECODE_PROMPT = (
    "Write a detailed step-by-step guide to training a dog to sit, with at least ten numbered steps and tips for each."
)

REPO = Path(__file__).resolve().parent.parent
TUITUNE = [sys.executable, "-m", "tuitune"]
LOAD_MODEL = "gemma-3-270m"  # the larger demo model: its load lasts long enough to be stopped part-way
PROMPT_WORDS = 2450  # ≈ 3,000 tokens with either demo model's tokenizer (fits their default 4,096 context)


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
        # A frame shows the key when the prompt box was drawn with the key's text before the compositor handed
        # the frame to the display (headless apps skip the terminal write). Both are recorded as they happen,
        # in the app's own calls: polling for them from the test's side sees a change late, by as much as the
        # loop is busy, and then waits for a later frame than the one that showed the key.
        driver = app._driver
        drawn_length = 0  # the prompt box's text length when the compositor last drew it
        frames: list[tuple[float, int]] = []  # (when a frame was displayed, the box's drawn text length in it)
        original_display, original_render_lines = app._display, box.render_lines

        def recording_render_lines(crop):
            nonlocal drawn_length
            drawn_length = len(box.text)
            return original_render_lines(crop)

        def timed_display(screen, renderable) -> None:
            frames.append((time.perf_counter(), drawn_length))
            original_display(screen, renderable)

        box.render_lines = recording_render_lines
        app._display = timed_display
        for index in range(samples):
            key = "abcdefghij"[index % 10]
            wanted = len(box.text) + 1
            event = events.Key(key, key)
            event.set_sender(app)
            start = time.perf_counter()
            driver.send_message(event)  # exactly what the terminal driver does with a keystroke
            deadline = start + 5
            while not any(length >= wanted for _, length in frames[-3:]) and time.perf_counter() < deadline:
                await asyncio.sleep(0.002)
            shown = next((when for when, length in frames if when >= start and length >= wanted), None)
            if shown is None:
                raise RuntimeError(f"key {key!r} not shown within 5 s (focus: {app.focused})")
            latencies.append(shown - start)
            await asyncio.sleep(0.05)
        app._display, box.render_lines = original_display, original_render_lines
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
        box.text = DECODE_PROMPT
        box.focus()
        pane = screen.panes[0]  # once: a DOM query 20 times a second would load the UI thread being measured
        await pilot.press("enter")
        await pilot.pause(0.1)
        while pane.busy:
            await asyncio.sleep(0.05)  # plain sleep: the pilot's pause also waits for the app to go idle
        return pane.turns[-1].stats.decode_tokens_per_s


def tui_decode_rate_in_fresh_process(model: str, mode: str, tokens: int, env: dict[str, str]) -> float:
    """Each TUI run in its own process, like each CLI run: no engines or threads left over from earlier."""
    result = subprocess.run(
        [sys.executable, __file__, "--one-tui-run", model, "--mode", mode, "--tokens", str(tokens)],
        capture_output=True, text=True, env=env, cwd=REPO, check=True,
    )  # fmt: skip
    return float(result.stdout.strip().splitlines()[-1])


def cli_decode_rate(model: str, mode: str, tokens: int, env: dict[str, str]) -> float:
    result = subprocess.run(
        [*TUITUNE, "chat", model, DECODE_PROMPT, "--mode", mode, "--temperature", "0", "--max-tokens", str(tokens),
         "--json"],
        capture_output=True, text=True, env=env, cwd=REPO, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)["decode_tokens_per_s"]


# -- Esc → stopped ---------------------------------------------------------------------------------------------
_SUBJECTS = (
    "the old lighthouse keeper", "a committee of engineers", "my neighbour's border collie", "the river",
    "every student in the third row", "a quiet violinist", "the northern railway", "our compiler",
    "the bakery on Elm Street", "a flock of starlings", "the museum's night guard", "this spreadsheet",
)  # fmt: skip
_VERBS = (
    "repaired", "ignored", "painted", "measured", "followed", "translated", "borrowed", "rebuilt", "described",
    "questioned", "carried", "photographed", "forgot", "celebrated",
)  # fmt: skip
_OBJECTS = (
    "a broken compass", "the winter timetable", "seventeen copper kettles", "an unfinished novel", "the tide tables",
    "a map of the harbour", "three loaves of rye bread", "the council's budget", "a letter from Lisbon",
    "the garden gate", "an old sailing ship", "the results of the experiment",
)  # fmt: skip
_TAILS = (
    "before the storm arrived", "while everyone else was asleep", "for the third time this week",
    "without asking anyone", "in exchange for a cup of tea", "because the instructions were unclear",
    "during the long drive to Aberdeen", "as the clock struck nine", "with surprising patience",
    "although nobody had noticed",
)  # fmt: skip


def long_prompt(seed: int, words: int = PROMPT_WORDS) -> str:
    """Varied prose of about ``words`` words, different for every seed (no prompt cache can help)."""
    rng = random.Random(seed)
    sentences, count = [], 0
    while count < words:
        sentence = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
        if rng.random() < 0.3:
            unit = rng.choice(("metres", "pages", "minutes", "coins"))
            sentence += f", around {rng.randint(2, 2999)} {unit} later"
        sentences.append(sentence[0].upper() + sentence[1:] + rng.choice((".", ".", ".", "!", "?")))
        count += len(sentence.split())
    return f"Notes #{seed}. Summarise them in one paragraph.\n\n" + " ".join(sentences)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (with 8 samples, p95 is the maximum)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spread(seconds: list[float]) -> str:
    ms = [x * 1000 for x in seconds]
    return f"p50 {percentile(ms, 0.5):.0f} · p95 **{percentile(ms, 0.95):.0f}** · max {max(ms):.0f} ms"


async def wait_until(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.002) -> float:
    """Poll (with plain sleeps: the pilot's pause waits for the app to be idle) until ``condition`` holds."""
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(poll)
    return time.perf_counter()


async def press_escape_and_time(pilot, conditions: list[Callable[[], bool]], timeout: float = 30) -> list[float]:
    """Press Esc through the pilot; seconds from the press until each condition first holds.

    The press runs as a task: the pilot waits for the whole process to go idle after a key, which a model
    thread letting go of a load can delay, and that wait must not be counted."""
    start = time.perf_counter()
    press = asyncio.create_task(pilot.press("escape"))
    times: list[float | None] = [None] * len(conditions)
    while None in times:
        now = time.perf_counter()
        for index, condition in enumerate(conditions):
            if times[index] is None and condition():
                times[index] = now - start
        if now - start > timeout:
            raise RuntimeError(f"Esc: not stopped within {timeout:.0f} s")
        await asyncio.sleep(0.001)
    await press
    return times  # type: ignore[return-value]


async def esc_while_reading(pilot, screen, text: str, rng: random.Random) -> dict:
    """Send ``text`` to every pane of ``screen``; Esc while they read it; seconds until no pane is busy."""
    from tuitune.tui.widgets.prompt import PromptBox

    panes = screen.panes
    await wait_until(lambda: all(p.engine_state == "ready" and not p.busy for p in panes), 120, "the models")
    box = screen.query_one(PromptBox)
    box.text = text
    box.focus()
    sent = asyncio.create_task(pilot.press("enter"))
    since: list[float] = []  # when every pane was first seen reading

    def reading() -> bool:
        ended = [turn for p in panes for turn in p.turns[-1:] if turn.stats is not None or turn.error is not None]
        if ended or any(p.state == "generating" for p in panes):
            how = [(p.state, p.turns[-1].error or p.status.detail) for p in panes if p.turns]
            raise RuntimeError(f"a pane finished reading before Esc: {how}")
        if not since and all(p.state == "reading" for p in panes):
            since.append(time.perf_counter())
        return bool(since) and any(p.status.done > 0 for p in panes)

    first_read = await wait_until(reading, 300, "the panes to read the first prompt tokens")
    await sent
    press_at = first_read + rng.uniform(0.3, 3.0)
    while time.perf_counter() < press_at:
        reading()
        await asyncio.sleep(0.005)
    if not all(p.state == "reading" for p in panes):
        raise RuntimeError(f"a pane left 'reading' before Esc: {[p.state for p in panes]}")
    read = [p.status.done / p.status.total for p in panes if p.status.total]
    into = time.perf_counter() - since[0]
    (stopped,) = await press_escape_and_time(pilot, [lambda: not any(p.busy for p in panes)])
    during = [getattr(p.turns[-1].stats, "stopped_during", None) for p in panes]
    prompt_tokens = max(p.turns[-1].stats.prompt_tokens for p in panes if p.turns[-1].stats)
    await screen.action_new()  # a fresh conversation: the next prompt is read from scratch
    return {"stopped": stopped, "into": into, "read": statistics.mean(read), "during": during,
            "prompt_tokens": prompt_tokens}  # fmt: skip


async def esc_while_loading(pilot, screen, pane, how: str, latest: float, rng: random.Random) -> dict | None:
    """Make ``pane`` load LOAD_MODEL (``how``: after a model switch, or for a prompt); Esc part-way through.

    Returns the seconds until the pane is free, and until the abandoned load let go of the model; None if the
    load ended before the chosen moment (the caller tries again)."""
    if pane._engine is not None:  # a model is loaded (bench-only peek): free it so the next load is real
        pane.close_engine()
        await wait_until(lambda: pane._engine is None, 30, "the model to be closed")
    if how == "switch":
        screen.set_pane_model(pane, LOAD_MODEL)
    else:
        await screen.send(DOG_PROMPT)
    loading = await wait_until(lambda: pane.state == "loading" and pane.engine_state == "loading", 30, "a load")
    press_at = loading + rng.uniform(0.02, latest)
    while time.perf_counter() < press_at and pane.state == "loading" and pane.engine_state == "loading":
        await asyncio.sleep(0.002)
    if pane.state != "loading" or pane.engine_state != "loading":  # loaded before Esc: this one does not count
        screen.action_stop_all()  # a prompt's answer may have started
        await wait_until(lambda: not pane.busy, 60, "the answer to stop")
        await screen.action_new()
        return None
    into = time.perf_counter() - loading
    free, let_go = await press_escape_and_time(
        pilot,
        [lambda: not pane.busy and pane.state not in ("loading", "stopping"), lambda: pane.engine_state != "loading"],
    )  # fmt: skip
    outcome = pane.engine_state  # empty: the load was abandoned; ready: it completed before it saw the stop
    await screen.action_new()
    return {"free": free, "let_go": let_go, "into": into, "outcome": outcome}


async def stop_latencies(stops: int, loads: int, history: Path, seed: int = 1) -> dict:
    """One app on the real models: Esc while reading (Compare, then Chat), then Esc while loading (Chat)."""
    from tuitune.tui.app import TuituneApp

    rng = random.Random(seed)
    app = TuituneApp(history_path=history)
    results: dict = {"loads": [], "missed": 0}
    async with app.run_test(size=(120, 40)) as pilot:
        for screen_key, label in (("f2", "compare"), ("f3", "chat")):
            await pilot.press(screen_key)
            screen = app.screen
            offset = seed * 1000 + (500 if label == "chat" else 0)  # a new text every time
            results[label] = [
                await esc_while_reading(pilot, screen, long_prompt(offset + index), rng) for index in range(stops)
            ]
        # Chat is on screen, its pane holds SmolLM2. A full, unstopped load of LOAD_MODEL first: its duration
        # sets the range of the random moments at which Esc comes.
        screen, pane = app.screen, app.screen.panes[0]
        screen.set_pane_model(pane, LOAD_MODEL)
        started = await wait_until(lambda: pane.state == "loading", 30, "the load to start")
        await wait_until(lambda: pane.engine_state == "ready", 60, "the model to load")
        results["full_load"] = time.perf_counter() - started
        latest = max(0.05, 0.8 * results["full_load"])
        tries = 0
        while len(results["loads"]) < loads:
            tries += 1
            if tries > 4 * loads:
                raise RuntimeError(f"the load finished before Esc {results['missed']} times: cannot measure")
            how = ("switch", "prompt")[len(results["loads"]) % 2]
            result = await esc_while_loading(pilot, screen, pane, how, latest, rng)
            if result is None:
                results["missed"] += 1
                latest = max(0.05, latest * 0.7)
                continue
            results["loads"].append({"how": how, **result})
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--launches", type=int, default=5, help="startup: tmux launches")
    parser.add_argument("--samples", type=int, default=60, help="keypress latency: keys pressed")
    parser.add_argument("--rounds", type=int, default=5, help="decode: rounds (each: both models, CLI and TUI)")
    parser.add_argument("--tokens", type=int, default=256, help="decode: greedy tokens per answer")
    parser.add_argument("--stops", type=int, default=8, help="Esc while reading: repetitions per screen")
    parser.add_argument("--loads", type=int, default=8, help="Esc while loading: repetitions")
    parser.add_argument("--seed", type=int, default=1, help="the prompts' text and the moments Esc is pressed")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions of everything, to try the bench")
    parser.add_argument("--one-tui-run", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="raw", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.launches, args.samples, args.rounds, args.tokens = 2, 20, 2, 128
        args.stops, args.loads = 3, 4
    env = isolated_env()
    if args.one_tui_run:
        history = Path(env["TUITUNE_DATA_DIR"]) / "bench.sqlite3"
        history.parent.mkdir(parents=True, exist_ok=True)
        print(asyncio.run(tui_decode_rate(args.one_tui_run, args.tokens, history, args.mode)))
        return
    began = time.perf_counter()
    history = Path(env["TUITUNE_DATA_DIR"]) / "bench.sqlite3"
    Path(env["TUITUNE_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    summary: list[tuple] = []

    def verdict(ok: bool) -> str:
        return "pass" if ok else "**FAIL**"

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
        first = statistics.median(t[0] for t in launches)
        worst = max(t[0] for t in launches)
        summary.append((f"First frame, median of {len(launches)} launches (max)", f"**{first:.2f} s** ({worst:.2f} s)",
                        "≤ 1.0 s", verdict(first <= 1.0)))  # fmt: skip
    else:
        print("tmux not found: skipped")
        summary.append(("First frame", "tmux not found", "≤ 1.0 s", "not measured"))

    print("\n## Keypress latency while two panes stream (real models)\n")
    latencies, streaming = asyncio.run(keypress_latencies(args.samples, history))
    ms = sorted(x * 1000 for x in latencies)
    p95 = percentile(ms, 0.95)
    print(table(("samples", "panes streaming at the end", "p50", "p95", "max", "target"),
                [(len(ms), streaming, f"{statistics.median(ms):.1f} ms", f"**{p95:.1f} ms**", f"{ms[-1]:.1f} ms",
                  "p95 ≤ 50 ms")]))  # fmt: skip
    summary.append((f"Keypress → frame, {streaming} panes streaming, {len(ms)} keys",
                    f"p50 {statistics.median(ms):.1f} · p95 **{p95:.1f}** · max {ms[-1]:.1f} ms", "p95 ≤ 50 ms",
                    verdict(p95 <= 50 and streaming == 2)))  # fmt: skip

    print(f"\n## Decode tokens/s: TUI vs headless CLI ({args.tokens} greedy tokens, median of {args.rounds} "
          "interleaved rounds)\n")  # fmt: skip
    # Each model in the mode where it writes at length, so both sides decode the whole token budget. Every round
    # runs both models, CLI and TUI, the order alternating, so a change in the machine's load hits both sides.
    models = (("smollm2-135m-instruct", "chat"), ("gemma-3-270m", "raw"))
    rates: dict[str, dict[str, list[float]]] = {model: {"cli": [], "tui": []} for model, _ in models}
    for round_index in range(args.rounds):
        for model, mode in models:
            sides = ("cli", "tui") if round_index % 2 == 0 else ("tui", "cli")
            for side in sides:
                measure = cli_decode_rate if side == "cli" else tui_decode_rate_in_fresh_process
                rates[model][side].append(measure(model, mode, args.tokens, env))
    rows = []
    for model, mode in models:
        cli, tui = rates[model]["cli"], rates[model]["tui"]
        c, t = statistics.median(cli), statistics.median(tui)
        per_round = [a / b for a, b in zip(tui, cli, strict=True)]
        rows.append((f"{model} ({mode})", f"{c:.1f}", f"{t:.1f}", f"**{t / c:.3f}**",
                     f"{min(per_round):.3f}–{max(per_round):.3f}", verdict(t / c >= 0.97)))  # fmt: skip
        summary.append((f"Decode TUI ÷ CLI, {model} ({args.rounds} rounds)",
                        f"**{t / c:.3f}** ({t:.1f} / {c:.1f} tok/s)", "≥ 0.97", verdict(t / c >= 0.97)))  # fmt: skip
    print(table(("model", "CLI tok/s", "TUI tok/s", "TUI / CLI (target ≥ 0.97)", "per round", ""), rows))

    print("\n## Esc → stopped (real models, Esc through the pilot)\n")
    stops = asyncio.run(stop_latencies(args.stops, args.loads, history, args.seed))
    rows = []
    for label, where in (("compare", "Compare, 2 panes reading"), ("chat", "Chat, 1 pane reading")):
        runs = stops[label]
        seconds = [run["stopped"] for run in runs]
        in_reading = sum(all(d == "reading" for d in run["during"]) for run in runs)
        tokens = statistics.median(run["prompt_tokens"] for run in runs)
        read = statistics.median(run["read"] for run in runs)
        into = [run["into"] for run in runs]
        ok = percentile(seconds, 0.95) <= 0.5 and in_reading == len(runs)
        rows.append((f"{where}: until no pane is busy", len(runs), spread(seconds),
                     f"{tokens:.0f}-token prompts; Esc {min(into):.1f}–{max(into):.1f} s into the reading, at "
                     f"{read:.0%} read (median, as shown); stopped while reading: {in_reading}/{len(runs)}",
                     verdict(ok)))  # fmt: skip
        summary.append((f"Esc → stopped while reading, {where} ({len(runs)}×)", spread(seconds), "p95 ≤ 0.5 s",
                        verdict(ok)))  # fmt: skip
    loads = stops["loads"]
    for how, what in (("switch", "after a model switch"), ("prompt", "for a prompt")):
        chosen = [run for run in loads if run["how"] == how]
        if chosen:
            into = [run["into"] for run in chosen]
            rows.append((f"Loading {LOAD_MODEL} {what}: until the pane is free", len(chosen),
                         spread([run["free"] for run in chosen]),
                         f"Esc {min(into):.2f}–{max(into):.2f} s into the load", ""))  # fmt: skip
    free = [run["free"] for run in loads]
    let_go = [run["let_go"] for run in loads]
    abandoned = sum(run["outcome"] == "empty" for run in loads)
    ok = percentile(free, 0.95) <= 0.5
    rows.append((f"Loading {LOAD_MODEL}, all: until the pane is free", len(loads), spread(free),
                 f"loads that ended before Esc (retried): {stops['missed']}", verdict(ok)))  # fmt: skip
    rows.append(("… until the abandoned load let go (information)", len(loads), spread(let_go),
                 f"abandoned {abandoned}/{len(loads)}, completed anyway {len(loads) - abandoned}; a full load "
                 f"takes {stops['full_load']:.2f} s", ""))  # fmt: skip
    print(table(("Esc during", "runs", "Esc → stopped", "details", "p95 ≤ 0.5 s"), rows))
    summary.append((f"Esc → stopped while loading {LOAD_MODEL} ({len(loads)}×)", spread(free), "p95 ≤ 0.5 s",
                    verdict(ok)))  # fmt: skip
    summary.append(("… abandoned load lets go of the model (information)", spread(let_go), "—", "—"))

    print(f"\n## Summary ({os.cpu_count()} CPU cores, {time.perf_counter() - began:.0f} s in all)\n")
    print(table(("figure", "measured", "target", "result"), summary))


if __name__ == "__main__":
    main()
