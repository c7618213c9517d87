"""The lab on one model: Gemma 3 270M base before and after `tuitune train --preset instruct-demo`.

Trains the recipe (unless the run exists: then its recorded time is read back), runs
`tuitune eval --suite suites/why-finetune.toml --models gemma-3-270m,RUN --json` (greedy, 200 tokens), and
prints the before/after table: per prompt the repetition, whether the model stopped by itself, and the
prompt's content check; then per model the checks passed, mean repetition and clean stops.

    python bench/bench_lab.py [--name gemma-instruct-demo] [--out results.json]

The run goes to the user's data directory (it is a real finetune, in the catalog afterwards).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import table

REPO = Path(__file__).resolve().parent.parent
SHAPE = ("max_repetition", "stops_cleanly")  # the two checks on every prompt; the rest are content checks


def tuitune(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuitune", *args], cwd=REPO, check=True, **kwargs)


def train(name: str) -> str:
    """Train the recipe if the run does not exist; the run's steps and wall time, from its metrics."""
    from tuitune.training.runs import read_metrics, run_dir

    directory = run_dir(name)
    if not (directory / "config.json").exists():
        started = time.monotonic()
        tuitune("train", "--preset", "instruct-demo", "--name", name)
        print(f"trained in {time.monotonic() - started:.0f} s (this command)")
    rows = read_metrics(directory)
    elapsed = rows[-1].get("elapsed") if rows else None
    losses = f"loss {rows[0]['loss']:.2f} → {rows[-1]['loss']:.2f}" if rows else ""
    evals = [row["eval_loss"] for row in rows if row.get("eval_loss") is not None]
    held = f", held-out loss {evals[0]:.2f} → {evals[-1]:.2f}" if evals else ""
    when = f" in {elapsed / 60:.1f} min" if isinstance(elapsed, int | float) else ""
    return f"{len(rows)} steps{when}: {losses}{held}"


def cells_of(report: dict) -> list[dict]:
    """The prompt × model cells, wherever the report keeps them."""
    stack: list = [report]
    while stack:
        item = stack.pop()
        if isinstance(item, list) and item and isinstance(item[0], dict) and {"prompt", "column"} <= item[0].keys():
            return item
        stack.extend(item.values() if isinstance(item, dict) else item if isinstance(item, list) else [])
    raise SystemExit("no cells in the eval report")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="gemma-instruct-demo")
    parser.add_argument("--out", type=Path, help="keep the eval report (JSON, answers included)")
    args = parser.parse_args()
    print(train(args.name))
    models = ["gemma-3-270m", args.name]
    result = tuitune("eval", "--suite", "suites/why-finetune.toml", "--models", ",".join(models), "--json",
                     capture_output=True, text=True)  # fmt: skip
    if args.out:
        args.out.write_text(result.stdout, encoding="utf-8")
    cells = {(cell["prompt"], cell["column"]): cell for cell in cells_of(json.loads(result.stdout))}
    prompts = list(dict.fromkeys(prompt for prompt, _ in cells))
    rows = []
    for prompt in prompts:
        row = [prompt]
        for model in models:
            cell = cells[(prompt, model)]
            content = [check for check in cell["checks"] if check["kind"] not in SHAPE]
            stop = "stops" if cell["finish_reason"] == "stop" else f"cut at {cell['completion_tokens']} tokens"
            verdict = " ".join(f"{'✓' if check['passed'] else '✗'} {check['label']}" for check in content) or "—"
            row.append(f"{cell['repetition']:.2f} · {stop} · {verdict}")
        rows.append(tuple(row))
    print(table(("prompt", *(f"{model}: repetition · stop · content" for model in models)), rows))
    for model in models:
        mine = [cells[(prompt, model)] for prompt in prompts]
        checks = [check for cell in mine for check in cell["checks"]]
        content = [check for check in checks if check["kind"] not in SHAPE]
        print(f"{model}: checks {sum(c['passed'] for c in checks)}/{len(checks)}, "
              f"mean repetition {sum(cell['repetition'] for cell in mine) / len(mine):.2f}, "
              f"clean stops {sum(cell['finish_reason'] == 'stop' for cell in mine)}/{len(mine)}, "
              f"content {sum(c['passed'] for c in content)}/{len(content)}")  # fmt: skip


if __name__ == "__main__":
    main()
