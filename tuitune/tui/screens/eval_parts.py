"""The Eval screen's pieces that hold no state: the checked form, suite lookup, cell renderings, the detail text.

Split from ``eval.py`` so each module stays readable; the screen imports everything it needs from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.widgets import DataTable

from tuitune.atomic import write_text
from tuitune.errors import TuituneError
from tuitune.paths import app_dirs, private_app_dir, project_file
from tuitune.safe_text import inert, safe_json
from tuitune.tui.text import Part, styled

if TYPE_CHECKING:
    from tuitune.evals.runner import Cell, EvalReport
    from tuitune.suites import Suite

ANSWER_CHARS = 4000  # per answer in the detail pane: enough to read, bounded for a runaway base model


@dataclass(frozen=True)
class EvalForm:
    """What the form asks for, checked: ``run_eval`` gets only values it can use."""

    suite: Suite
    models: list[str]
    adapter_scales: list[float] | None
    repeat: int
    max_tokens: int | None
    temperature: float | None  # above 0 with repeat > 1: how stable are the answers?


def shipped_suites() -> list[Path]:
    """The suites that come with tuitune (``suites/*.toml`` in the checkout or the wheel)."""
    folder = project_file("suites")
    return sorted(folder.glob("*.toml")) if folder is not None and folder.is_dir() else []


def default_suite(suites: list[Path]) -> Path:
    """The lab's base-vs-chat suite, which the default demo pair is chosen for; else the first one."""
    return next((path for path in suites if path.stem == "why-finetune"), suites[0])


def parse_scales(text: str) -> list[float] | None:
    """``""`` → None (the runner's default), ``"1"`` → [1.0], ``"0, 0.5,1"`` → [0.0, 0.5, 1.0]."""
    parts = [part.strip() for part in text.replace(" ", ",").split(",") if part.strip()]
    if not parts:
        return None
    try:
        scales = [float(part) for part in parts]
    except ValueError:
        raise TuituneError(f"adapter scale must be numbers between 0 and 1, like 1 or 0,0.5,1; not '{text}'") from None
    bad = [scale for scale in scales if not 0.0 <= scale <= 1.0]
    if bad:
        raise TuituneError(f"adapter scale {bad[0]:g} is out of range: use numbers between 0 and 1")
    return list(dict.fromkeys(scales))


def slug(name: str) -> str:
    """A file-name-safe form of a suite name (it comes from a TOML file, so anything may be in it)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:60] or "eval"


def cell(text: str, justify: str = "left", style: str = "") -> Text:
    """A table cell that is never parsed as markup and ends in an ellipsis when the column is too narrow."""
    return Text(inert(text), style=style, no_wrap=True, overflow="ellipsis", justify=justify)  # type: ignore[arg-type]


def verdict(result: Cell | None) -> Text:
    """A matrix cell: ``✓ 1.00`` green when every check passed, ``✗ 0.33`` red otherwise, or why there is none."""
    if result is None:
        return cell("–", style="dim")
    if result.error:
        return cell("error", style="bold red")
    if not result.counted:
        return cell("stopped", style="dim")
    if result.passed:
        return cell(f"✓ {result.score:.2f}", style="green")
    return cell(f"✗ {result.score:.2f}", style="red")


def number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def win_rate(counts: dict[str, int]) -> str:
    """Wins over every vote the model took part in (a tie or a "both bad" is not a win)."""
    total = sum(counts.get(key, 0) for key in ("wins", "losses", "ties", "bad"))
    return f"{counts.get('wins', 0) / total:.0%}" if total else "-"


def detail_text(report: EvalReport, prompt_index: int, column_label: str | None) -> Text:
    """The prompt and its checks; for a model column also each check's verdict and every answer."""
    prompt = report.prompts[prompt_index]
    column = next((c for c in report.columns if c.label == column_label), None)
    parts: list[Part] = [(prompt.id, "bold")]
    if prompt.group:
        parts += ["  ", (prompt.group, "dim")]
    if column is not None:
        parts += ["  ·  ", (column.label, "bold")]
    if prompt.note:
        parts += ["\n", (prompt.note, "dim italic")]
    parts += ["\n", ("prompt ", "bold"), prompt.text.strip(), "\n"]
    result = report.cells.get((prompt.id, column.label)) if column is not None else None
    if result is None:
        parts.append(("\nchecks", "bold"))
        for check in prompt.checks:
            parts += ["\n  • ", check.label()]
        if not prompt.checks:
            parts.append(("\n  (none: this prompt is only read, not scored)", "dim"))
        if column is not None:
            parts.append(("\n\nno answer: the run stopped before this cell", "dim"))
        return styled(*parts)
    stats = [f"score {result.score:.2f}", result.mode or "?", f"{result.completion_tokens} tokens"]
    if result.tokens_per_s is not None:
        stats.append(f"{result.tokens_per_s:.0f} tok/s")
    stats += [f"finish {result.finish_reason}", f"repetition {result.repetition:.2f}"]
    if len(result.answers) > 1:
        stats.append(f"{result.distinct} distinct of {len(result.answers)}")
    parts += [("  ·  ".join(stats), "dim")]
    if result.error:
        parts += ["\n", ("error ", "bold red"), result.error]
    parts.append(("\n\nchecks" + (" (on the first answer)" if len(result.answers) > 1 else ""), "bold"))
    for check_result in result.results:
        mark, style = ("✓", "green") if check_result.passed else ("✗", "red")
        parts += ["\n  ", (mark, f"bold {style}"), " ", check_result.check.label()]
        if check_result.detail:
            parts += ["  ", (check_result.detail, "dim")]
    if not result.results:
        parts.append(("\n  (none)", "dim"))
    for number, answer in enumerate(result.answers, 1):
        title = "answer" if len(result.answers) == 1 else f"answer {number}/{len(result.answers)}"
        shown = answer if len(answer) <= ANSWER_CHARS else answer[:ANSWER_CHARS] + "…"
        parts += ["\n\n", (title, "bold"), "\n", shown if shown.strip() else ("(empty)", "dim")]
    return styled(*parts)


def check_form(value: dict[str, str], choice: object, models: list[str], finetuned: Callable[[str], bool]) -> EvalForm:
    """The form's values (text by field id) checked, or a TuituneError naming the wrong field and the fix."""
    from tuitune.suites import load_suite

    path_text = value["suite-path"]
    if path_text:
        path = Path(path_text).expanduser()
    elif isinstance(choice, str) and choice:
        path = Path(choice)
    else:
        raise TuituneError("pick a suite, or type the path of a suite .toml file")
    suite = load_suite(path)
    if not models:
        raise TuituneError("select at least one model (space toggles one in the list)")
    scales = parse_scales(value["scales"])
    if scales is not None and not any(finetuned(model) for model in models):
        raise TuituneError("an adapter scale sets a finetuned (LoRA) model's strength: select one (Train makes them)")
    repeat_text = value["repeat"] or "1"
    tokens_text = value["max-tokens"]
    try:
        repeat = int(repeat_text)
    except ValueError:
        raise TuituneError(f"repeat must be a whole number, not '{repeat_text}'") from None
    try:
        max_tokens = int(tokens_text) if tokens_text else None
    except ValueError:
        raise TuituneError(f"max tokens must be a whole number, not '{tokens_text}'") from None
    if repeat < 1:
        raise TuituneError("repeat must be at least 1")
    if max_tokens is not None and max_tokens < 1:
        raise TuituneError("max tokens must be at least 1")
    temperature_text = value["temperature"]
    try:
        temperature = float(temperature_text) if temperature_text else None
    except ValueError:
        raise TuituneError(f"temperature must be a number such as 0.7, not '{temperature_text}'") from None
    if temperature is not None and not 0 <= temperature <= 5:
        raise TuituneError("temperature must be between 0 (greedy) and 5")
    return EvalForm(suite, models, scales, repeat, max_tokens, temperature)


def sampling_for(max_tokens: int | None, temperature: float | None) -> Any:
    """None keeps the runner's defaults (greedy: the same scores twice); the form changes only what it sets."""
    changes: dict[str, Any] = {}
    if max_tokens is not None:
        changes["max_tokens"] = max_tokens
    if temperature is not None:
        changes["temperature"] = temperature
    if not changes:
        return None
    from dataclasses import replace

    from tuitune.evals.runner import default_sampling

    return replace(default_sampling(), **changes)


def fill_summary(table: DataTable, report: EvalReport | None) -> None:
    """The scoreboard: one row per column, a column per prompt group."""
    table.clear(columns=True)
    if report is None:
        return
    summaries = report.summary()
    groups = list(dict.fromkeys(group for summary in summaries for group in summary.groups))
    stability = report.repeat > 1  # with one answer per cell it is always 1.0: noise, and width
    table.add_column("column", key="column")
    for label in ("pass rate", "prompts", "checks", "repetition", "tok/s", *(("stability",) if stability else ())):
        table.add_column(Text(label, justify="right"), key=label)
    for group in groups:
        table.add_column(cell(group, "right"), key=f"group:{group}")
    for summary in summaries:
        table.add_row(
            cell(summary.column),
            cell(number(summary.pass_rate, ".0%"), "right"),
            cell(f"{summary.prompts_passed}/{summary.prompts}", "right"),
            cell(f"{summary.checks_passed}/{summary.checks}", "right"),
            cell(number(summary.mean_repetition, ".2f"), "right"),
            cell(number(summary.tokens_per_s, ".0f"), "right"),
            *((cell(number(summary.stability, ".2f"), "right"),) if stability else ()),
            *(cell(number(summary.groups.get(group), ".2f"), "right") for group in groups),
        )


def fill_votes(table: DataTable, tally: dict[str, dict[str, int]]) -> None:
    """Wins, losses, ties, both-bad and win rate per model, most wins first."""
    table.add_column("model", key="model")
    for name, key in (("W", "wins"), ("L", "losses"), ("T", "ties"), ("bad", "bad"), ("win", "rate")):
        table.add_column(Text(name, justify="right"), key=key)
    ranked = sorted(tally.items(), key=lambda item: (-item[1]["wins"], item[1]["losses"], item[0]))
    for model, counts in ranked:
        numbers = (counts["wins"], counts["losses"], counts["ties"], counts["bad"])
        table.add_row(cell(model), *(cell(str(n), "right") for n in numbers), cell(win_rate(counts), "right"),
                      key=model)  # fmt: skip


def visible_prompts(report: EvalReport | None, failures_only: bool, differences_only: bool) -> list[int]:
    """Indexes of the prompts the filters let through: failures (some column fails), differences, or both."""
    if report is None:
        return []
    differing = report.differing_prompts() if differences_only else set()
    shown = []
    for index, prompt in enumerate(report.prompts):
        if differences_only and prompt.id not in differing:
            continue
        if failures_only:
            cells = [report.cells.get((prompt.id, column.label)) for column in report.columns]
            if all(c is not None and c.passed for c in cells):
                continue
        shown.append(index)
    return shown


def export_path(report: EvalReport, fmt: str) -> Path:
    """``<data>/evals/<suite>-<time>.<fmt>``: the suite name made file-name safe."""
    return app_dirs().data / "evals" / f"{slug(report.suite)}-{datetime.now():%Y%m%d-%H%M%S}.{fmt}"


def write_export(report: EvalReport, fmt: str, path: Path) -> None:
    """The whole report (filters do not apply) as JSON, CSV or Markdown; raises OSError."""
    if fmt == "json":
        text = safe_json(report.as_json(), indent=2)
    elif fmt == "csv":
        text = report.to_csv()
    else:
        text = report.to_markdown()
    private_app_dir(path.parent)  # <data>/evals, private like the eval runs
    write_text(path, text if text.endswith("\n") else text + "\n", newline="")  # CSV carries its own line ends
