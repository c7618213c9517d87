"""What an eval produced: the columns, one cell per prompt and column, and the scoreboard computed from them.

The runner fills these and the report module renders them; both import this module and neither imports the
other's internals, so the two stay free of an import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from tuitune.evals.checks import CheckResult

if TYPE_CHECKING:
    from tuitune.engines import Sampling
    from tuitune.suites import SuitePrompt


@dataclass(frozen=True)
class Column:
    """One column of the matrix: a model, or a finetuned model at one LoRA strength in a scale sweep."""

    label: str  # "smollm2-135m-instruct", or "tuitune-identity@0.5" in a scale sweep
    model: str
    adapter_scale: float | None = None  # the LoRA strength of a finetuned model; None for other models


@dataclass
class Cell:
    """One prompt on one column: the answers of every repeat, and the checks of the first one."""

    prompt_id: str
    column: str  # Column.label
    answers: list[str]  # one per repeat
    results: list[CheckResult]  # checks on the first answer
    score: float  # checks.score(results)
    completion_tokens: int
    tokens_per_s: float | None
    finish_reason: str
    repetition: float  # checks.repetition(first answer)
    error: str | None = None
    mode: str = ""  # raw or chat: how the prompt was sent

    @property
    def distinct(self) -> int:
        """How many different answers the repeats gave (1 = the model says the same thing every time)."""
        return len(set(self.answers))

    @property
    def passed(self) -> bool:
        return self.error is None and all(result.passed for result in self.results)

    @property
    def counted(self) -> bool:
        """Whether the cell is a result: a stopped run's unanswered cells say nothing about the model."""
        return self.error is not None or self.finish_reason != "cancelled"

    def as_json(self) -> dict:
        return {
            "prompt": self.prompt_id,
            "column": self.column,
            "mode": self.mode,
            "score": round(self.score, 4),
            "passed": self.passed,
            "checks": [_result_json(result) for result in self.results],
            "answers": self.answers,
            "distinct": self.distinct,
            "completion_tokens": self.completion_tokens,
            "tokens_per_s": _round(self.tokens_per_s),
            "finish_reason": self.finish_reason,
            "repetition": round(self.repetition, 4),
            "error": self.error,
        }


@dataclass
class ColumnSummary:
    """The scoreboard row of one column."""

    column: str
    pass_rate: float  # mean cell score
    prompts_passed: int
    prompts: int
    checks_passed: int
    checks: int
    mean_repetition: float
    tokens_per_s: float | None  # mean over the answered cells
    stability: float  # mean distinct answers / runs: 1/repeat (always the same answer) … 1 (all different)
    groups: dict[str, float] = field(default_factory=dict)  # mean score per prompt group; empty without groups
    judge_failed: int = 0  # judged checks the judge gave no valid verdict for (they count as not passed)


@dataclass(frozen=True)
class PairVerdict:
    """The judge's pairwise verdict on one prompt, asked twice with the answers swapped.

    ``as_json`` is exactly ``{"prompt": PROMPT_ID, "model_a": COLUMN_LABEL_A, "model_b": COLUMN_LABEL_B,
    "winner": "a"|"b"|"tie", "agree": true|false, "reasons": ["…", "…"], "failed": false}``: ``winner`` is
    the column that won in both orders, or "tie" when the judge said tie twice or the two orders disagreed
    (``agree`` false: position bias); ``failed`` when a verdict could not be had (no answer, an unparseable
    reply, a judge error), then ``winner`` is "tie", ``agree`` false and ``reasons`` say why.
    """

    prompt: str
    model_a: str
    model_b: str
    winner: str  # "a", "b" or "tie"
    agree: bool
    reasons: tuple[str, ...]
    failed: bool = False

    def as_json(self) -> dict:
        return {"prompt": self.prompt, "model_a": self.model_a, "model_b": self.model_b, "winner": self.winner,
                "agree": self.agree, "reasons": list(self.reasons), "failed": self.failed}  # fmt: skip


def pairwise_summary(verdicts: Sequence[PairVerdict]) -> dict | None:
    """``{"wins": {COLUMN_LABEL: wins}, "ties": n, "disagreements": n, "failed": n}``; None without verdicts.

    Disagreements (the two orders differed) are ties too; failed verdicts are neither wins nor ties.
    """
    if not verdicts:
        return None
    wins: dict[str, int] = {}
    for verdict in verdicts:
        wins.setdefault(verdict.model_a, 0)
        wins.setdefault(verdict.model_b, 0)
        if not verdict.failed and verdict.winner != "tie":
            wins[verdict.model_a if verdict.winner == "a" else verdict.model_b] += 1
    return {
        "wins": wins,
        "ties": sum(v.winner == "tie" and not v.failed for v in verdicts),
        "disagreements": sum(not v.agree and not v.failed for v in verdicts),
        "disagreeing_prompts": list(dict.fromkeys(v.prompt for v in verdicts if not v.agree and not v.failed)),
        "failed": sum(v.failed for v in verdicts),
    }


@dataclass
class EvalResults:
    """Every cell of a run and the scoreboard derived from them; ``report.EvalReport`` adds the renderings."""

    suite: str
    columns: list[Column]
    prompts: list[SuitePrompt]
    cells: dict[tuple[str, str], Cell]  # (prompt id, column label)
    repeat: int
    sampling: Sampling | None = None  # what every answer was sampled with (seed + i for repeat i)
    mode: str = "auto"
    judge: dict | None = None  # the judge's model id, sampling, templates and their hashes; None without --judge
    pairwise: list[PairVerdict] = field(default_factory=list)  # the judge's pairwise verdicts, prompt by prompt

    def cell(self, prompt_id: str, column: str) -> Cell:
        return self.cells[(prompt_id, column)]

    def summary(self) -> list[ColumnSummary]:
        """One row per column. Errors count as failures (score 0); cells a cancel left unanswered do not count."""
        groups = list(dict.fromkeys(prompt.group for prompt in self.prompts if prompt.group))
        rows = []
        for column in self.columns:
            cells = [self.cells.get((prompt.id, column.label)) for prompt in self.prompts]
            counted = [cell for cell in cells if cell is not None and cell.counted]
            answered = [cell for cell in counted if cell.error is None]
            speeds = [cell.tokens_per_s for cell in answered if cell.tokens_per_s is not None]
            by_group: dict[str, float] = {}
            for group in groups:
                scores = [
                    cell.score
                    for prompt, cell in zip(self.prompts, cells, strict=True)
                    if prompt.group == group and cell is not None and cell.counted
                ]
                if scores:
                    by_group[group] = mean(scores)
            rows.append(
                ColumnSummary(
                    column=column.label,
                    pass_rate=mean([cell.score for cell in counted]),
                    prompts_passed=sum(cell.passed for cell in counted),
                    prompts=len(counted),
                    checks_passed=sum(result.passed for cell in counted for result in cell.results),
                    checks=sum(len(cell.results) for cell in counted),
                    mean_repetition=mean([cell.repetition for cell in answered]),
                    tokens_per_s=mean(speeds) if speeds else None,
                    stability=mean([cell.distinct / self.repeat for cell in answered]),
                    groups=by_group,
                    judge_failed=sum(result.judge_failed for cell in counted for result in cell.results),
                )
            )
        return rows

    def differing_prompts(self) -> set[str]:
        """Prompts on which the columns disagree: some pass every check and some do not."""
        differing = set()
        for prompt in self.prompts:
            cells = [self.cells.get(key) for key in self._keys(prompt)]
            verdicts = {cell.passed for cell in cells if cell is not None and cell.counted}
            if len(verdicts) > 1:
                differing.add(prompt.id)
        return differing

    def _keys(self, prompt: SuitePrompt) -> list[tuple[str, str]]:
        return [(prompt.id, column.label) for column in self.columns]

    def as_json(self) -> dict:
        """Everything, answers included (print it with ``safe_json``: the answers are untrusted text)."""
        return {
            "suite": self.suite,
            "repeat": self.repeat,
            "mode": self.mode,
            "sampling": asdict(self.sampling) if self.sampling is not None else None,
            "columns": [asdict(column) for column in self.columns],
            "prompts": [_prompt_json(prompt) for prompt in self.prompts],
            "summary": [asdict(row) for row in self.summary()],
            "differing_prompts": [p.id for p in self.prompts if p.id in self.differing_prompts()],
            "cells": [self.cells[key].as_json() for p in self.prompts for key in self._keys(p) if key in self.cells],
            "judge": self.judge,
            "pairwise": [verdict.as_json() for verdict in self.pairwise],
            "pairwise_summary": pairwise_summary(self.pairwise),
        }


def _result_json(result: CheckResult) -> dict:
    check = result.check
    data = {"label": check.label(), "kind": check.kind, "weight": check.weight, "passed": result.passed,
            "detail": result.detail}  # fmt: skip
    if check.judged:
        data.update(grade=result.grade, judge_failed=result.judge_failed)
    return data


def _prompt_json(prompt: SuitePrompt) -> dict:
    return {
        "id": prompt.id,
        "group": prompt.group,
        "text": prompt.text,
        "messages": [asdict(message) for message in prompt.messages],
        "mode": prompt.mode,
        "note": prompt.note,
        "checks": [{"label": check.label(), **asdict(check)} for check in prompt.checks],
    }


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None
