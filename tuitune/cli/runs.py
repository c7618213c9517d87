"""`tuitune runs`: the eval runs kept in evals.sqlite3, and what `tuitune eval` does to keep and compare them.

Keeping a run must never cost its output: a database that cannot be opened or written gives one warning
line and the report is printed as always. An unknown ``--compare-to`` id fails before any model loads.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tuitune.cli.common import warn
from tuitune.errors import TuituneError

if TYPE_CHECKING:
    from tuitune.evals.compare_runs import RunComparison
    from tuitune.evals.results import EvalResults
    from tuitune.evals.store import EvalStore, RunSummary
    from tuitune.suites import Suite


def _run_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise TuituneError(f"--compare-to takes last or a run id (a number `tuitune runs` lists), not '{text}'")
    return value


class EvalKeeper:
    """Saves one `tuitune eval` run and compares it with an earlier one; resolve the old run before the models run."""

    def __init__(self, suite_path: str | Path, suite: Suite, compare_to: str | None) -> None:
        from tuitune.evals.store import EvalStore, EvalStoreError, suite_hash

        self.suite_path = str(Path(suite_path).resolve())
        self.hash = suite_hash(suite)
        self.compare_to = compare_to
        self.store: EvalStore | None = None
        self.old: RunSummary | None = None
        self.old_results: dict | None = None
        self.run_id: int | None = None
        self.partial = False
        self.comparison: RunComparison | None = None
        wanted = None if compare_to in (None, "last") else _run_id(compare_to)
        try:
            self.store = EvalStore()
        except EvalStoreError as error:
            warn(f"{error} This run is not kept{' nor compared' if compare_to else ''}.")
            return
        try:
            if compare_to == "last":
                self.old = self.store.last(suite_name=suite.name)
                if self.old is None:
                    warn(f"no earlier run of suite '{suite.name}' to compare with (--compare-to last): this is the "
                         "first")  # fmt: skip
            elif wanted is not None:
                self.old = self.store.get(wanted)  # an unknown id: one line, before the models load
            if self.old is not None:
                self.old_results = self.store.load(self.old.id)
        except BaseException:
            self.store.close()
            raise

    def keep(self, results: EvalResults, interrupted: bool) -> None:
        """Save the run (partial when stopped) and compare it; a storage failure is a warning, not an error."""
        from tuitune.evals.compare_runs import compare_runs
        from tuitune.evals.store import EvalStoreError

        data = results.as_json()
        if self.store is not None:
            try:
                self.run_id = self.store.save(data, self.suite_path, self.hash, partial=interrupted)
                self.partial = self.store.get(self.run_id).partial
            except EvalStoreError as error:
                warn(f"{error} This run is not kept.")
            finally:
                self.store.close()
        if self.old_results is not None and self.old is not None:
            self.comparison = compare_runs(self.old_results, data, self.old.id, self.run_id)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"run_id": self.run_id}
        if self.compare_to is not None:
            data["comparison"] = self.comparison.as_json() if self.comparison is not None else None
        return data

    def print_text(self, stream: TextIO | None = None) -> None:
        """The run id and the comparison, on ``stream`` (stderr when the report went to a file with --out, so
        stdout keeps its one ``wrote FILE`` line for scripts)."""
        from tuitune.safe_text import inert

        stream = stream if stream is not None else sys.stdout
        if self.run_id is not None:
            partial = " (partial: the run was stopped)" if self.partial else ""
            stream.write(f"saved as run {self.run_id}{partial}\n")
        if self.comparison is not None:
            stream.write(inert(self.comparison.format_text()))
        stream.flush()


def _when(created_at: str) -> str:
    """Local time to the minute: what a person scanning the list needs."""
    try:
        return datetime.fromisoformat(created_at).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return created_at


def _settings(value: object) -> str:
    """``temperature 0.0 · max_tokens 16`` from a stored settings dict."""
    if not isinstance(value, dict):
        return "-" if value is None else str(value)
    return " · ".join(f"{key} {item}" for key, item in value.items() if item not in (None, [], ""))


def _scores(run: RunSummary) -> str:
    return "  ".join(f"{label} {run.scores.get(label, 0.0):.0%}" for label in run.models)


def _open_store() -> EvalStore | None:
    """The store, or None when no run was ever kept (listing must not create the file)."""
    from tuitune.evals.store import EvalStore, default_eval_store_path

    return EvalStore() if default_eval_store_path().exists() else None


def cmd_runs(args: argparse.Namespace) -> int:
    from tuitune.safe_text import inert, safe_json

    if getattr(args, "runs_command", None) == "show":
        return cmd_runs_show(args)
    if args.limit is not None and args.limit < 1:
        raise TuituneError(f"--limit must be at least 1, not {args.limit}")
    if args.training:
        return _training_runs(args)
    if not args.json:
        _training_runs(args, heading=True)
    store = _open_store()
    runs = [] if store is None else store.runs(limit=args.limit)
    if store is not None:
        store.close()
    if args.json:
        print(safe_json([run.as_json() for run in runs], indent=2))
        return 0
    if not runs:
        print("no eval runs kept yet: `tuitune eval --suite FILE --models A,B` keeps each run")
        return 0
    rows = [("id", "kind", "when", "suite", "models", "scores")]
    for run in runs:
        suite = run.suite_name + (" (partial)" if run.partial else "")
        rows.append((str(run.id), run.kind, _when(run.created_at), suite, ",".join(run.models), _scores(run)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(inert("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=False)) + "  " + row[-1]))
    return 0


def training_rows(limit: int | None = None) -> list[dict[str, Any]]:
    """Local and remote training runs, newest last: name, where, base, state, step, total, last loss, job."""
    from tuitune.training.runs import list_runs, read_json, read_metrics, run_status

    rows = []
    for directory in list_runs()[-limit if limit else None :]:
        config = read_json(directory / "config.json") or {}
        remote = config.get("remote") if isinstance(config.get("remote"), dict) else None
        status = run_status(directory)
        metrics = read_metrics(directory)
        rows.append({"name": directory.name, "where": f"remote {remote.get('endpoint')}" if remote else "local",
                     "base": remote.get("model") if remote else config.get("base"), "state": status.get("state"),
                     "step": status.get("step", 0), "total_steps": status.get("total_steps"),
                     "loss": metrics[-1].get("loss") if metrics else None,
                     "job": remote.get("job_id") if remote else None,
                     "message": status.get("message")})  # fmt: skip
    return rows


def _training_runs(args: argparse.Namespace, heading: bool = False) -> int:
    from tuitune.safe_text import inert, safe_json

    rows = training_rows(args.limit)
    if args.json:
        print(safe_json(rows, indent=2))
        return 0
    if heading and not rows:  # before the eval runs: only when there are training runs to list
        return 0
    if heading:
        print("training runs")
    table = [("name", "where", "base", "state", "step", "loss")]
    for row in rows:
        step = f"{row['step']}/{row['total_steps']}" if row["total_steps"] else str(row["step"])
        loss = f"{row['loss']:.4f}" if isinstance(row["loss"], (int, float)) else "-"
        table.append((row["name"], row["where"], str(row["base"]), str(row["state"]), step, loss))
    if rows:
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        for line in table:
            print(inert("  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()))
    elif not heading:
        print("no training runs yet: `tuitune train` (or --remote ENDPOINT) starts one")
    if heading:
        print("\neval runs")
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from tuitune.evals.store import EvalStoreError
    from tuitune.safe_text import inert, safe_json

    store = _open_store()
    if store is None:
        raise EvalStoreError(f"no eval run {args.id}: none has been kept yet")
    with store:
        run = store.get(args.id)
        results = store.load(args.id)
    if args.json:
        print(safe_json({"run": run.as_json(), "results": results}, indent=2))
        return 0
    lines = [
        f"run {run.id} ({run.kind}) · {_when(run.created_at)} · suite {run.suite_name} · hash {run.suite_hash}"
        + (" · partial (stopped)" if run.partial else ""),
        f"suite file {run.suite_path or '-'}",
        "sampling " + _settings(run.extra.get("sampling")),
    ]
    if run.extra.get("judge") is not None:
        lines.append("judge " + _settings(run.extra["judge"]))
    lines.append("")
    for row in results.get("summary", []):
        lines.append(
            f"  {row['column']}: pass rate {row['pass_rate']:.0%}, prompts {row['prompts_passed']}/{row['prompts']}, "
            f"checks {row['checks_passed']}/{row['checks']}"
        )
    cells = {(c["prompt"], c["column"]): c for c in results.get("cells", [])}
    labels = run.models
    width = max([len("prompt"), *(len(p["id"]) for p in results.get("prompts", []))])
    lines += ["", "  ".join(["prompt".ljust(width), *labels])]
    for prompt in results.get("prompts", []):
        marks = []
        for label in labels:
            cell = cells.get((prompt["id"], label))
            mark = "–" if cell is None else ("error" if cell.get("error") else
                                              f"{'✓' if cell['passed'] else '✗'} {cell['score']:.2f}")  # fmt: skip
            marks.append(mark.ljust(len(label)))
        lines.append("  ".join([prompt["id"].ljust(width), *marks]).rstrip())
    print(inert("\n".join(lines)))
    return 0
