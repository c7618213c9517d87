"""An eval with a judge on the demo pair: wall time, parseable verdicts, and agreement with the string checks.

Runs suites/why-finetune-judged.toml (why-finetune's prompts and string checks plus a pass/fail judge_rubric
on every prompt, and pairwise judgement) on gemma-3-270m and smollm2-135m-instruct three times: without a judge,
with smollm2-135m-instruct judging under the verdict grammar (the default), and with it judging in free text
(``--judge-free``). SmolLM2 is the only local chat model in the demo catalog, so it also judges its own answers.

Definitions, per eval:
- parseable: verdicts that parse (rubric: one per cell; pairwise: two per pair, the answers in both orders)
  over those asked.
- agreement: over the cells (one answer each) with a parseable rubric verdict, the share where the judge's
  pass/fail equals "every string check of that cell passed". Also shown over all cells, a failed verdict
  counting as a disagreement, and the baseline a judge that always says "fail" would reach over all cells.

    python bench/bench_judge.py [--tokens 200] [--judge smollm2-135m-instruct] [--skip-free]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from _common import table

MODELS = ["gemma-3-270m", "smollm2-135m-instruct"]
SUITE = Path(__file__).resolve().parent.parent / "suites" / "why-finetune-judged.toml"


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def _timed(run) -> tuple[object, float, str]:
    """(result, wall seconds, load averages before → after): the machine is shared, so say how busy it was."""
    before = _load()
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start, f"{before} → {_load()}"


def agreement(report) -> dict:
    """The figures of one judged eval (see the module docstring for the definitions)."""
    agree = disagree = failed = fails = 0
    for cell in report.cells.values():
        strings = all(r.passed for r in cell.results if not r.check.judged)
        fails += not strings
        for result in (r for r in cell.results if r.check.judged):
            if result.judge_failed:
                failed += 1
            elif result.passed == strings:
                agree += 1
            else:
                disagree += 1
    cells = agree + disagree + failed
    verdicts = report.pairwise
    pair_failed = sum(v.failed for v in verdicts)
    parsed_orders = sum(2 if not v.failed else sum(not r.startswith("judge failed: ") for r in v.reasons)
                        for v in verdicts)  # fmt: skip
    return {
        "cells": cells,
        "parsed": agree + disagree,
        "agree": agree,
        "always_fail": fails,
        "pairs": len(verdicts),
        "pair_orders_parsed": parsed_orders,
        "pair_failed": pair_failed,
        "pair_disagreements": sum(not v.agree and not v.failed for v in verdicts),
    }


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.0%})" if whole else "-"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--judge", default="smollm2-135m-instruct")
    parser.add_argument("--skip-free", action="store_true", help="leave out the unconstrained judge run")
    args = parser.parse_args()
    from tuitune.evals.judge import JudgeConfig
    from tuitune.evals.runner import default_sampling, run_eval
    from tuitune.suites import load_suite

    suite = load_suite(SUITE)
    sampling = replace(default_sampling(), max_tokens=args.tokens)
    _, plain_s, plain_load = _timed(lambda: run_eval(suite, MODELS, sampling=sampling))
    runs = [("grammar (default)", True)] + ([] if args.skip_free else [("free text (--judge-free)", False)])
    rows = [("without judge", f"{plain_s:.1f}", "-", "-", "-", "-", "-", plain_load)]
    reports = []
    for name, constrained in runs:
        config = JudgeConfig(args.judge, constrained=constrained)
        report, seconds, load = _timed(lambda config=config: run_eval(suite, MODELS, sampling=sampling, judge=config))
        assert report.judge is not None and report.judge["error"] is None, report.judge
        assert report.judge["constrained"] is constrained
        figures = agreement(report)
        reports.append((name, report))
        rows.append((
            f"judge {args.judge}, {name}", f"{seconds:.1f}",
            _share(figures["parsed"], figures["cells"]),
            _share(figures["pair_orders_parsed"], 2 * figures["pairs"]),
            _share(figures["agree"], figures["parsed"]),
            _share(figures["agree"], figures["cells"]),
            f"{_share(figures['always_fail'], figures['cells'])}; pairs: {figures['pair_disagreements']} of "
            f"{figures['pairs']} disagree between orders, {figures['pair_failed']} failed",
            load,
        ))  # fmt: skip
    print(table(
        ("eval", "wall s", "rubric verdicts parseable", "pairwise verdicts parseable",
         "agrees with string checks (parseable cells)", "agrees (all cells, failed = disagree)",
         "always-'fail' baseline · pairwise", "load avg (1/5/15 min) before → after"),
        rows,
    ))  # fmt: skip
    for name, report in reports:
        print(f"\n{name}:")
        for prompt in report.prompts:
            for column in report.columns:
                cell = report.cell(prompt.id, column.label)
                (result,) = [r for r in cell.results if r.check.judged]
                strings = all(r.passed for r in cell.results if not r.check.judged)
                mark = "pass" if strings else "fail"
                print(f"  {prompt.id:13} {column.label:22} strings {mark}  judge {result.detail}")
        for verdict in report.pairwise:
            print("  ", verdict.as_json())


if __name__ == "__main__":
    main()
