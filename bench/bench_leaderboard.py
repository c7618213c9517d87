"""The leaderboard's Bradley–Terry fit over 10,000 pairwise outcomes among 8 models, without and with bootstrap.

The outcomes are simulated (seeded) from known strengths, ties included. Timed: ``build`` from the outcome
list to the finished board, so counting the outcomes, the fit, the groups and the ranking all count. The first
call, which imports numpy, is reported apart; then the median of N calls. Also the pure-Python fallback's
point fit. Target: the fit over 10,000 outcomes in under 1 s.

    python bench/bench_leaderboard.py [--outcomes 10000] [--models 8] [--bootstrap 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import random
import time

from _common import median, table

TARGET_S = 1.0


def simulate(models: int, outcomes: int, seed: int = 0):
    from tuitune.evals.leaderboard import Outcome

    rng = random.Random(seed)
    strengths = {f"model-{i}": 0.3 * i for i in range(models)}
    names = sorted(strengths)
    result = []
    for _ in range(outcomes):
        a, b = rng.sample(names, 2)
        p, u = 1 / (1 + math.exp(strengths[b] - strengths[a])), rng.random()
        result.append(Outcome(a, b, "tie" if abs(u - p) < 0.05 else ("a" if u < p else "b"), "votes"))
    return result


def timed(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outcomes", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from tuitune.evals.leaderboard import build

    outcomes = simulate(args.models, args.outcomes)
    start = time.perf_counter()
    board = build(outcomes, bootstrap=0)  # the first call imports numpy
    first = time.perf_counter() - start
    assert [r.model for r in board.ratings] == [f"model-{i}" for i in reversed(range(args.models))], board.ratings
    fit = timed(lambda: build(outcomes, bootstrap=0), args.repeats)
    boot = timed(lambda: build(outcomes, bootstrap=args.bootstrap), args.repeats)
    pure = timed(lambda: build(outcomes, bootstrap=0, use_numpy=False), args.repeats)
    n = f"{args.outcomes:,} outcomes, {args.models} models"
    verdict = "pass" if max(first, fit) < TARGET_S else "FAIL"
    rows = [
        ("fit, first call (imports numpy)", n, f"{first * 1000:.0f} ms", f"< {TARGET_S:.0f} s"),
        ("fit", n, f"{fit * 1000:.0f} ms", f"< {TARGET_S:.0f} s"),
        (f"fit + {args.bootstrap} bootstrap rounds", n, f"{boot * 1000:.0f} ms", "-"),
        ("fit, pure Python (no numpy)", n, f"{pure * 1000:.0f} ms", "-"),
    ]
    print(table(("what", "data", f"median of {args.repeats}", "target"), rows))
    print(f"\ntarget (fit over {args.outcomes:,} outcomes < {TARGET_S:.0f} s): {verdict}")


if __name__ == "__main__":
    main()
