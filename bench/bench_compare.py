"""Wall time of two models answering through ``compare`` (concurrently) vs the same two one after the other.

Each arm loads both models and generates the same greedy answers; rounds are interleaved. "One after the
other" is measured twice: with the per-model thread count compare itself uses (cores // 2), and with
all cores for each model in turn (what running `tuitune chat` twice would do). Target: ratio <= 0.6.

    python bench/bench_compare.py [--tokens 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

from _common import DOG_PROMPT, median, table

MODELS = ["gemma-3-270m", "smollm2-135m-instruct"]


def timed(models: list[str], n_tokens: int, cores: int) -> tuple[float, int]:
    from tuitune.compare import Prompt, run_comparisons
    from tuitune.engines.base import Sampling
    from tuitune.engines.threads import DEFAULT_BUDGET

    DEFAULT_BUDGET.cores = cores
    start = time.perf_counter()
    [comparison] = run_comparisons(
        [Prompt(DOG_PROMPT)], models, sampling=Sampling(temperature=0.0, max_tokens=n_tokens), n_ctx=1024
    )
    elapsed = time.perf_counter() - start
    assert all(result.error is None for result in comparison.results), comparison.results
    return elapsed, sum(result.stats.completion_tokens for result in comparison.results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from tuitune.engines.threads import available_cores

    cores = available_cores()
    timed(MODELS, 8, cores)  # warm-up: page the model files in
    together, apart_same, apart_all = [], [], []
    tokens = {}
    for _ in range(args.rounds):
        elapsed, tokens["together"] = timed(MODELS, args.tokens, cores)
        together.append(elapsed)
        runs = [timed([model], args.tokens, max(1, cores // len(MODELS))) for model in MODELS]
        apart_same.append(sum(r[0] for r in runs))
        tokens["apart"] = sum(r[1] for r in runs)
        runs = [timed([model], args.tokens, cores) for model in MODELS]
        apart_all.append(sum(r[0] for r in runs))
    t, s, a = median(together), median(apart_same), median(apart_all)
    print(f"two models, {args.tokens} tokens each max, greedy, load included, median of {args.rounds} rounds")
    print(f"tokens generated: together {tokens['together']}, apart {tokens['apart']}; {cores} cores\n")
    rows = [
        ("compare (concurrent)", f"{t:.2f} s", "1.00"),
        (f"one after the other, {max(1, cores // 2)} thread(s) each", f"{s:.2f} s", f"**{t / s:.2f}**"),
        (f"one after the other, {cores} threads each", f"{a:.2f} s", f"**{t / a:.2f}**"),
    ]
    print(table(("run", "wall time", "compare / this"), rows))


if __name__ == "__main__":
    main()
