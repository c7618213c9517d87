"""`tuitune eval`: a suite's checks on every model's answers, or held-out loss on a dataset."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from tuitune.cli.common import CountProgress, sampling_from, split_models, warn, write_out
from tuitune.errors import TuituneError

EVAL_MODES = ("auto", "raw", "chat")
SUITE_ONLY_FLAGS = ("repeat", "format", "temperature", "max_tokens", "seed", "top_p", "top_k", "min_p",
                    "repeat_penalty", "stop", "judge", "judge_pairs", "judge_temperature", "judge_max_tokens",
                    "judge_timeout", "judge_free")  # fmt: skip


def _eval_sampling(args: argparse.Namespace):
    """The sampling flags over the eval's greedy default (not chat's temperature 0.7): scores must repeat."""
    from dataclasses import replace

    from tuitune.evals.runner import default_sampling

    given = sampling_from(args)
    default = default_sampling()
    return replace(
        given,
        temperature=default.temperature if args.temperature is None else given.temperature,
        max_tokens=default.max_tokens if args.max_tokens is None else given.max_tokens,
    )


def _until_interrupted(run, cancel: threading.Event):
    """``run()`` in a thread; Ctrl-C sets ``cancel`` so the answers so far still make a report. → (result, bool)"""
    box: dict[str, object] = {}
    done = threading.Event()  # not Thread.join: a join interrupted by Ctrl-C can report a live thread as ended

    def target() -> None:
        try:
            box["result"] = run()
        except BaseException as error:
            box["error"] = error
        finally:
            done.set()

    threading.Thread(target=target, name="tuitune-eval", daemon=True).start()
    interrupted = False
    while not done.is_set():
        try:
            done.wait(0.1)
        except KeyboardInterrupt:
            if interrupted:
                raise  # a second Ctrl-C: stop waiting for the current answers
            interrupted = True
            cancel.set()
            print("\nstopping… (Ctrl-C again to quit at once)", file=sys.stderr)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"], interrupted


def _heldout_loss(args: argparse.Namespace, models: list[str]) -> int:
    from tuitune.evals.loss import heldout_loss
    from tuitune.evals.report import format_loss_table
    from tuitune.safe_text import safe_json

    given = [f"--{name.replace('_', '-')}" for name in SUITE_ONLY_FLAGS if getattr(args, name) is not None]
    if args.mode != "auto":
        given.append("--mode")
    if given:
        raise TuituneError(f"{', '.join(given)}: only with --suite; --data scores the reference replies as written")
    with CountProgress("replies") as progress:
        results = heldout_loss(Path(args.data), models, args.adapter_scale, on_progress=progress,
                               gpu_layers=args.gpu_layers)  # fmt: skip
    payload = {"data": str(args.data), "results": [result.as_json() for result in results]}
    text = safe_json(payload, indent=2) if args.json else format_loss_table(results)
    if args.out:
        print(f"wrote {write_out(args.out, text)}")
    else:
        print(text)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tuitune.safe_text import inert, safe_json

    models = split_models(args.models)
    if not models:
        raise TuituneError("eval needs --models A,B (see `tuitune models`)")
    if bool(args.suite) == bool(args.data):
        raise TuituneError("eval needs --suite FILE (checks on answers) or --data FILE (held-out loss), one of them")
    if args.json and args.format:
        raise TuituneError("give --json or --format md|csv, not both")
    if args.data:
        return _heldout_loss(args, models)

    from tuitune.evals.runner import run_eval
    from tuitune.suites import load_suite

    repeat = 1 if args.repeat is None else args.repeat
    if repeat < 1:
        raise TuituneError(f"--repeat must be at least 1, not {repeat}")
    suite = load_suite(args.suite)
    from tuitune.cli.runs import EvalKeeper

    keeper = EvalKeeper(args.suite, suite, getattr(args, "compare_to", None))  # an unknown run id fails here
    sampling = _eval_sampling(args)
    from tuitune.evals.judge import judge_config

    judge = judge_config(args.judge, args.judge_pairs, args.judge_temperature, args.judge_max_tokens,
                         args.judge_timeout, args.judge_free)  # fmt: skip
    cancel = threading.Event()
    with CountProgress("answers") as progress:
        report, interrupted = _until_interrupted(
            lambda: run_eval(suite, models, args.adapter_scale, repeat=repeat, sampling=sampling, mode=args.mode,
                             on_progress=progress, cancel=cancel, gpu_layers=args.gpu_layers, judge=judge),
            cancel,
        )  # fmt: skip
    keeper.keep(report, interrupted)  # saved before printing; a storage failure is one warning line
    fmt = "json" if args.json else args.format
    if args.out:
        fmt = fmt or "md"
    if fmt == "json":
        text = safe_json({**report.as_json(), **keeper.as_json()}, indent=2)
    elif fmt == "csv":
        text = report.to_csv()
    elif fmt == "md":
        text = report.to_markdown()
    else:
        text = report.format_text()
    if args.out:
        print(f"wrote {write_out(args.out, text)}")
    else:
        sys.stdout.write(text if fmt == "json" else inert(text))  # safe_json escaped the JSON already
        if not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
    if fmt != "json" or args.out:
        keeper.print_text(sys.stderr if args.out else sys.stdout)  # with --json on stdout: in the JSON
    errors = {cell.column: cell.error for cell in report.cells.values() if cell.error}
    for column, error in errors.items():  # a model that could not run is an error; a failed check is a result
        warn(f"{column}: {error}")
    if report.judge is not None and report.judge.get("error"):  # graded nothing: as bad as a model that failed
        errors["judge"] = report.judge["error"]
        warn(f"judge {report.judge['model']}: {report.judge['error']}")
    if interrupted:
        warn("interrupted: the report shows the answers given so far")
        return 130
    return 1 if errors else 0
