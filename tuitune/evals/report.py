"""An eval report as text for the terminal, Markdown for a pull request or a notebook, and CSV for a sheet.

None of these formats carries the answers (only ``EvalReport.as_json`` does): they are the scoreboard and the
matrix of verdicts, small enough to diff between runs. Everything that came from a file or a model is made
inert, and Markdown table cells are escaped, so a prompt id with a ``|`` cannot break a table.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tuitune.evals.checks import CheckResult
from tuitune.evals.results import Cell, Column, ColumnSummary, EvalResults
from tuitune.safe_text import inert

if TYPE_CHECKING:
    from tuitune.evals.loss import LossResult

DIFFERS = "≠"


def _settings(report: EvalResults) -> str:
    """One line saying how the answers were sampled, so a saved report says what produced it."""
    parts = [f"{_plural(len(report.prompts), 'prompt')} × {_plural(len(report.columns), 'column')}"]
    sampling = report.sampling
    if sampling is not None:
        parts.append("greedy" if sampling.temperature == 0 else f"temperature {sampling.temperature:g}")
        parts.append(f"max {sampling.max_tokens} tokens")
        if sampling.seed == -1:
            parts.append("random seeds")
        elif report.repeat > 1:
            parts.append(f"seeds {sampling.seed}…{sampling.seed + report.repeat - 1}")
        else:
            parts.append(f"seed {sampling.seed}")
    if report.repeat > 1:
        parts.append(f"{report.repeat} runs per prompt")
    parts.append(f"mode {report.mode}")
    judge = report.judge
    if judge is not None:
        temperature = judge["sampling"]["temperature"]
        how = "greedy" if temperature == 0 else f"temperature {temperature:g}"
        parts.append(f"judge {judge['model']} ({how}, max {judge['sampling']['max_tokens']} tokens)")
    return " · ".join(parts)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _speed(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _stability(summary: ColumnSummary, repeat: int) -> str:
    """Mean distinct answers out of the runs: "1.0/3" means the same answer every time; "-": no answers."""
    return f"{summary.stability * repeat:.1f}/{repeat}" if summary.stability else "-"


def _groups(report: EvalResults) -> list[str]:
    return list(dict.fromkeys(prompt.group for prompt in report.prompts if prompt.group))


def _summary_rows(report: EvalResults) -> tuple[list[str], list[list[str]]]:
    groups = _groups(report)
    header = ["column", "pass rate", "prompts passed", "checks passed", "mean repetition", "tok/s",
              "distinct answers / runs", *groups]  # fmt: skip
    judged = report.judge is not None
    if judged:
        header.append("judge failed")
    rows = []
    for summary in report.summary():
        rows.append(
            [
                summary.column,
                _percent(summary.pass_rate),
                f"{summary.prompts_passed}/{summary.prompts}",
                f"{summary.checks_passed}/{summary.checks}",
                f"{summary.mean_repetition:.2f}" if summary.stability else "-",
                _speed(summary.tokens_per_s),
                _stability(summary, report.repeat),
                *(_percent(summary.groups.get(group)) for group in groups),
                *([str(summary.judge_failed)] if judged else []),
            ]
        )
    return header, rows


def _unjudged(report: EvalResults) -> int:
    """Judged checks left out because no judge ran (``--judge MODEL`` grades them)."""
    if report.judge is not None:
        return 0
    return sum(check.judged for prompt in report.prompts for check in prompt.checks)


def pairwise_lines(report: EvalResults) -> list[str]:
    """One line per pair of columns: wins, ties, order disagreements (with their prompts) and failures."""
    lines = []
    pairs = list(dict.fromkeys((v.model_a, v.model_b) for v in report.pairwise))
    for a, b in pairs:
        verdicts = [v for v in report.pairwise if (v.model_a, v.model_b) == (a, b)]
        ok = [v for v in verdicts if not v.failed]
        wins_a, wins_b = sum(v.winner == "a" for v in ok), sum(v.winner == "b" for v in ok)
        disagree = [v.prompt for v in ok if not v.agree]
        line = f"{a} vs {b}: {a} {wins_a} won, {b} {wins_b} won, {sum(v.winner == 'tie' for v in ok)} tied"
        if disagree:
            line += f" ({len(disagree)} as the two orders disagreed: {', '.join(disagree)})"
        failed = [v.prompt for v in verdicts if v.failed]
        if failed:
            line += f"; judge failed on {len(failed)}: {', '.join(failed)}"
        lines.append(line)
    return lines


def verdict(cell: Cell | None, repeat: int = 1) -> str:
    """A matrix cell: ``✓ 1.00`` when every check passed, ``✗ 0.33`` otherwise, with distinct/runs on repeats."""
    if cell is None:
        return "–"
    if cell.error:
        return "error"
    if not cell.counted:
        return "stopped"
    text = f"{'✓' if cell.passed else '✗'} {cell.score:.2f}"
    return f"{text} ({cell.distinct}/{repeat})" if repeat > 1 else text


def _matrix_rows(report: EvalResults) -> tuple[list[str], list[list[str]]]:
    groups = bool(_groups(report))
    header = ["prompt", *(["group"] if groups else []), *(column.label for column in report.columns)]
    rows = []
    for prompt in report.prompts:
        cells = [verdict(report.cells.get((prompt.id, column.label)), report.repeat) for column in report.columns]
        rows.append([prompt.id, *([prompt.group] if groups else []), *cells])
    return header, rows


def _failures(report: EvalResults) -> list[str]:
    """One line per cell that did not pass: which checks failed and why (the checks never quote the answer).

    A column whose every prompt failed with the same error (a model that did not load) gets one line.
    """
    lines, said = [], set()
    for column in report.columns:
        errors = {report.cells[key].error if key in report.cells else None for key in _column_keys(report, column)}
        if len(errors) == 1 and None not in errors:
            lines.append(f"{column.label} (every prompt): error: {errors.pop()}")
            said.add(column.label)
    for prompt in report.prompts:
        for column in report.columns:
            cell = report.cells.get((prompt.id, column.label))
            if cell is None or cell.passed or not cell.counted or column.label in said:
                continue
            if cell.error:
                lines.append(f"{prompt.id} · {column.label}: error: {cell.error}")
                continue
            failed = [f"{r.check.label()} ({r.detail})" for r in cell.results if not r.passed]
            lines.append(f"{prompt.id} · {column.label}: " + "; ".join(failed))
    return lines


def _column_keys(report: EvalResults, column: Column) -> list[tuple[str, str]]:
    return [(prompt.id, column.label) for prompt in report.prompts]


def _table(header: list[str], rows: list[list[str]], right: set[int], marks: Sequence[str] = ()) -> list[str]:
    """A plain-text table; ``marks`` is a one-character gutter per row (e.g. ≠ where the columns disagree)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    gutter = bool(marks)

    def line(row: list[str], mark: str = " ") -> str:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        return ((mark + " ") if gutter else "") + "  ".join(cells).rstrip()

    return [line(header), *(line(row, marks[i] if gutter else " ") for i, row in enumerate(rows))]


def format_text(report: EvalResults) -> str:
    """For the terminal: the scoreboard, then the per-prompt matrix, then what failed and why."""
    differing = report.differing_prompts()
    header, rows = _summary_rows(report)
    lines = [f"{report.suite}: {_settings(report)}", ""]
    lines += _table(header, rows, right=set(range(1, len(header))))
    lines.append("")
    header, rows = _matrix_rows(report)
    marks = [DIFFERS if prompt.id in differing else " " for prompt in report.prompts]
    lines += _table(header, rows, right=set(), marks=marks)
    lines.append("")
    notes = ["✓ every check passed, ✗ not; the number is the weighted share of checks passed"]
    if report.repeat > 1:
        notes.append("(distinct answers/runs)")
    if differing:
        notes.append(f"{DIFFERS}: the columns disagree")
    lines.append("; ".join(notes))
    if _unjudged(report):
        lines.append(f"{_plural(_unjudged(report), 'judged check')} not run: pass --judge MODEL to grade them")
    if report.pairwise:
        lines += ["", "pairwise (judge, asked in both orders):"] + [f"  {line}" for line in pairwise_lines(report)]
    failures = _failures(report)
    if failures:
        lines += ["", "failed:"] + [f"  {failure}" for failure in failures]
    return inert("\n".join(lines))


def _md(text: str) -> str:
    """A Markdown table cell: no line breaks, pipes escaped, controls made visible."""
    return inert(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\t", " ")


def _md_table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    rule = ["---:" if i in right else "---" for i in range(len(header))]
    return [
        "| " + " | ".join(_md(cell) for cell in header) + " |",
        "| " + " | ".join(rule) + " |",
        *("| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows),
    ]


def to_markdown(report: EvalResults) -> str:
    """The scoreboard and the matrix of verdicts as Markdown tables; the answers are not included."""
    lines = [f"# Eval: {_md(report.suite)}", "", _md(_settings(report)), "", "## Scoreboard", ""]
    header, rows = _summary_rows(report)
    lines += _md_table(header, rows, right=set(range(1, len(header))))
    lines += ["", "## Per prompt", ""]
    header, rows = _matrix_rows(report)
    lines += _md_table(header, rows, right=set())
    lines += ["", "✓ every check passed, ✗ not; the number is the weighted share of checks passed."]
    differing = [prompt.id for prompt in report.prompts if prompt.id in report.differing_prompts()]
    if differing:
        lines.append(f"The columns disagree on: {_md(', '.join(differing))}.")
    if _unjudged(report):
        lines.append(f"{_plural(_unjudged(report), 'judged check')} not run: pass --judge MODEL to grade them.")
    if report.pairwise:
        lines += ["", "## Pairwise (judge, asked in both orders)", ""]
        lines += [f"- {_md(line)}" for line in pairwise_lines(report)]
    failures = _failures(report)
    if failures:
        lines += ["", "## Failed checks", ""] + [f"- {_md(failure)}" for failure in failures]
    return "\n".join(lines) + "\n"


def to_csv(report: EvalResults) -> str:
    """One row per (prompt, column): scores, every check's pass/fail (a column per check label), speed."""
    labels = list(dict.fromkeys(check.label() for prompt in report.prompts for check in prompt.checks))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["prompt", "group", "column", "model", "adapter_scale", "mode", "score", "passed", "error",
                     "finish_reason", "completion_tokens", "tokens_per_s", "repetition", "distinct", "runs",
                     *labels])  # fmt: skip
    for prompt in report.prompts:
        for column in report.columns:
            cell = report.cells.get((prompt.id, column.label))
            if cell is None:
                continue
            verdicts: dict[str, list[str]] = {}
            for result in cell.results:
                verdicts.setdefault(result.check.label(), []).append(_csv_verdict(result))
            writer.writerow(
                [
                    prompt.id,
                    prompt.group,
                    column.label,
                    column.model,
                    "" if column.adapter_scale is None else f"{column.adapter_scale:g}",
                    cell.mode,
                    f"{cell.score:.4f}",
                    "yes" if cell.passed else "no",
                    inert(cell.error or ""),
                    cell.finish_reason,
                    cell.completion_tokens,
                    "" if cell.tokens_per_s is None else f"{cell.tokens_per_s:.2f}",
                    f"{cell.repetition:.4f}",
                    cell.distinct,
                    report.repeat,
                    *(";".join(verdicts.get(label, [])) for label in labels),
                ]
            )
    return out.getvalue()


def _csv_verdict(result: CheckResult) -> str:
    """pass/fail; a judged check adds its grade ("pass 8/10"), or says "judge failed"."""
    if result.judge_failed:
        return "judge failed"
    verdict = "pass" if result.passed else "fail"
    return f"{verdict} {result.grade}/10" if isinstance(result.grade, int) else verdict


def format_loss_table(results: Sequence[LossResult]) -> str:
    """The held-out loss table: lower loss (and perplexity) means the model finds the reference replies likelier."""
    header = ["MODEL", "SCALE", "EXAMPLES", "TOKENS", "MEAN LOSS", "PERPLEXITY"]
    rows = [
        [
            result.model,
            "-" if result.adapter_scale is None else f"{result.adapter_scale:g}",
            str(result.examples),
            str(result.tokens),
            f"{result.mean_loss:.4f}",
            f"{result.perplexity:.2f}",
        ]
        for result in results
    ]
    return inert("\n".join(_table(header, rows, right=set(range(1, len(header))))))


class EvalReport(EvalResults):
    """An eval's results with their renderings: what the runner returns, and what the CLI and the TUI save."""

    def to_markdown(self) -> str:
        return to_markdown(self)

    def to_csv(self) -> str:
        return to_csv(self)

    def format_text(self) -> str:
        return format_text(self)
