"""Run a suite's prompts on several models (and adapter strengths) and score every answer with its checks.

A comparison shows two answers; an eval says which model answered *well*, on every prompt, as numbers a
script or CI can compare between runs. Each model loads once, in a thread of its own (a ``Llama`` is not
thread-safe; models run in parallel as in ``compare``). A finetuned model in a scale sweep keeps its one
engine and changes the LoRA strength between columns, without reloading. Greedy sampling by default: an
eval should give the same numbers twice; ``repeat`` with a temperature measures how stable the answers are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from tuitune.errors import TuituneError
from tuitune.evals.checks import CheckResult, repetition, run_checks, score

if TYPE_CHECKING:
    from tuitune.catalog import Catalog
    from tuitune.engines import Engine, ResolvedModel, Sampling
    from tuitune.suites import Suite, SuitePrompt

EVAL_MODES = ("auto", "raw", "chat")
MAX_PARALLEL = 4  # models loaded and generating at once (as compare's limit): memory and cores are finite
ProgressCallback = Callable[[int, int], None]


def default_sampling() -> Sampling:
    """Greedy, so that an eval run twice gives the same scores; 200 tokens is enough to see a model ramble."""
    from tuitune.engines.base import Sampling

    return Sampling(temperature=0.0, max_tokens=200, seed=42)


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


@dataclass
class EvalReport:
    suite: str
    columns: list[Column]
    prompts: list[SuitePrompt]
    cells: dict[tuple[str, str], Cell]  # (prompt id, column label)
    repeat: int
    sampling: Sampling | None = None  # what every answer was sampled with (seed + i for repeat i)
    mode: str = "auto"

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
                    by_group[group] = _mean(scores)
            rows.append(
                ColumnSummary(
                    column=column.label,
                    pass_rate=_mean([cell.score for cell in counted]),
                    prompts_passed=sum(cell.passed for cell in counted),
                    prompts=len(counted),
                    checks_passed=sum(result.passed for cell in counted for result in cell.results),
                    checks=sum(len(cell.results) for cell in counted),
                    mean_repetition=_mean([cell.repetition for cell in answered]),
                    tokens_per_s=_mean(speeds) if speeds else None,
                    stability=_mean([cell.distinct / self.repeat for cell in answered]),
                    groups=by_group,
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
        }

    def to_markdown(self) -> str:
        from tuitune.evals.report import to_markdown

        return to_markdown(self)

    def to_csv(self) -> str:
        from tuitune.evals.report import to_csv

        return to_csv(self)

    def format_text(self) -> str:
        from tuitune.evals.report import format_text

        return format_text(self)


def _result_json(result: CheckResult) -> dict:
    check = result.check
    return {"label": check.label(), "kind": check.kind, "weight": check.weight, "passed": result.passed,
            "detail": result.detail}  # fmt: skip


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


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def _scale_text(scale: float) -> str:
    return f"{scale:g}"


def plan_columns(
    models: Sequence[str], adapter_scales: Sequence[float] | None, catalog: Catalog
) -> list[tuple[ResolvedModel, list[Column]]]:
    """Each model with its columns: one per scale for a finetuned model when scales are given, else one.

    Unknown ids, duplicate models and scales without a finetuned model fail here, before anything loads.
    """
    from tuitune.engines import resolve_model
    from tuitune.engines.llama import check_adapter_scale

    if not models:
        raise TuituneError("no models given: pass --models A,B")
    resolved = [resolve_model(ref, catalog) for ref in models]
    seen: set[str] = set()
    for model in resolved:
        if model.id in seen:
            raise TuituneError(f"model '{model.id}' is given twice; each model is one column (or one per scale)")
        seen.add(model.id)
    scales = None
    if adapter_scales is not None:
        scales = list(dict.fromkeys(check_adapter_scale(scale) for scale in adapter_scales))
        if not scales:
            raise TuituneError("--adapter-scale needs at least one value from 0 to 1")
        if not any(_finetuned(model) for model in resolved):
            raise TuituneError("--adapter-scale sets the strength of a finetuned (LoRA) model; none is being evaluated")
    plan = []
    for model in resolved:
        if not _finetuned(model):
            plan.append((model, [Column(model.id, model.id)]))
        elif scales is None:
            plan.append((model, [Column(model.id, model.id, 1.0)]))
        else:
            plan.append((model, [Column(f"{model.id}@{_scale_text(s)}", model.id, s) for s in scales]))
    return plan


def _finetuned(model: ResolvedModel) -> bool:
    return model.entry is not None and model.entry.kind == "finetuned"


class _Counter:
    """Answers done of the total, reported from the worker threads in order (a lock keeps it monotonic)."""

    def __init__(self, total: int, callback: ProgressCallback | None):
        self.total, self.done, self.callback = total, 0, callback
        self._lock = threading.Lock()

    def add(self, count: int = 1) -> None:
        if count <= 0:
            return
        with self._lock:
            self.done = min(self.total, self.done + count)
            if self.callback is not None:
                self.callback(self.done, self.total)


def run_eval(
    suite: Suite,
    models: Sequence[str],
    adapter_scales: Sequence[float] | None = None,
    repeat: int = 1,
    sampling: Sampling | None = None,
    mode: str = "auto",
    catalog: Catalog | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> EvalReport:
    """Every prompt of ``suite`` on every column, ``repeat`` times; repeat i samples with seed + i.

    A model that fails to load or to answer gives cells with ``error``; the other models go on. With
    ``cancel`` set, answers in progress stop and the rest are left unanswered (``finish_reason`` cancelled).
    """
    from tuitune.catalog import load_catalog

    if mode not in EVAL_MODES:
        raise TuituneError(f"unknown mode '{mode}': use one of {', '.join(EVAL_MODES)}")
    if repeat < 1:
        raise TuituneError(f"--repeat must be at least 1, not {repeat}")
    prompts = list(suite.prompts)
    ids = [prompt.id for prompt in prompts]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise TuituneError(f"suite {suite.path}: two prompts have the id '{duplicate}'; give each prompt its own id")
    catalog = catalog if catalog is not None else load_catalog()
    plan = plan_columns(models, adapter_scales, catalog)
    sampling = sampling or default_sampling()
    columns = [column for _, model_columns in plan for column in model_columns]
    counter = _Counter(len(prompts) * len(columns) * repeat, on_progress)
    cells: dict[tuple[str, str], Cell] = {}
    parallel = threading.Semaphore(MAX_PARALLEL)

    def work(model: ResolvedModel, model_columns: list[Column]) -> None:
        with parallel:
            try:
                _run_model(model, model_columns, prompts, repeat, sampling, mode, catalog, cells, counter, cancel)
            except Exception as error:  # a bug or a llama.cpp failure: this model's cells say so, the others go on
                message = str(error) if isinstance(error, TuituneError) else f"{type(error).__name__}: {error}"
                for column in model_columns:
                    for prompt in prompts:
                        if (prompt.id, column.label) not in cells:
                            cells[(prompt.id, column.label)] = _error_cell(prompt, column, message)
                            counter.add(repeat)

    threads = [
        threading.Thread(target=work, args=(model, model_columns), name=f"tuitune-eval-{model.id}", daemon=True)
        for model, model_columns in plan
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return EvalReport(suite.name, columns, prompts, cells, repeat, sampling, mode)


def _run_model(
    model: ResolvedModel,
    columns: list[Column],
    prompts: list[SuitePrompt],
    repeat: int,
    sampling: Sampling,
    mode: str,
    catalog: Catalog,
    cells: dict[tuple[str, str], Cell],
    counter: _Counter,
    cancel: threading.Event | None,
) -> None:
    """One model's columns, in its own thread: load once, then every scale × prompt × repeat in order."""
    from tuitune.engines import open_engine

    first_scale = columns[0].adapter_scale
    engine = open_engine(model, adapter_scale=1.0 if first_scale is None else first_scale, catalog=catalog)
    try:
        has_template = getattr(engine, "has_chat_template", None)
        for column in columns:
            if column.adapter_scale is not None:
                engine.set_adapter_scale(column.adapter_scale)  # type: ignore[attr-defined]
            for prompt in prompts:
                cell = _run_cell(engine, model, has_template, column, prompt, repeat, sampling, mode, counter, cancel)
                cells[(prompt.id, column.label)] = cell
    finally:
        engine.close()


def _run_cell(
    engine: Engine,
    model: ResolvedModel,
    has_template: bool | None,
    column: Column,
    prompt: SuitePrompt,
    repeat: int,
    sampling: Sampling,
    mode: str,
    counter: _Counter,
    cancel: threading.Event | None,
) -> Cell:
    from tuitune.compare import Prompt, build_request, modes_for
    from tuitune.engines.base import RANDOM_SEED

    request_prompt = Prompt(prompt.text, prompt.messages, prompt.mode, prompt.id)  # type: ignore[arg-type]
    request_mode = modes_for(model, has_template, mode, request_prompt)[0]
    answers: list[str] = []
    speeds: list[float] = []
    first = None
    error: str | None = None
    for index in range(repeat):
        if cancel is not None and cancel.is_set():
            counter.add(repeat - index)
            break
        seed = sampling.seed if sampling.seed == RANDOM_SEED else sampling.seed + index
        _cold_start(engine)
        generation = engine.generate(build_request(request_prompt, request_mode, replace(sampling, seed=seed)))
        try:
            for _ in generation:
                if cancel is not None and cancel.is_set():
                    generation.cancel()
        except TuituneError as failure:  # e.g. a prompt longer than the context: this cell only
            error = str(failure)
        answers.append(generation.text)
        if first is None:
            first = generation.stats
        if generation.stats.decode_tokens_per_s is not None:
            speeds.append(generation.stats.decode_tokens_per_s)
        counter.add()
        if error is not None:
            counter.add(repeat - index - 1)
            break
    text = answers[0] if answers else ""
    completion_tokens = first.completion_tokens if first is not None else 0
    finish = "error" if error else (first.finish_reason if first is not None else "cancelled")
    if error is not None:
        results = _not_run(prompt, "not run: the model failed")
    else:
        results = run_checks(prompt.checks, text, completion_tokens, finish)
    return Cell(
        prompt_id=prompt.id,
        column=column.label,
        answers=answers,
        results=results,
        score=0.0 if error else score(results),
        completion_tokens=completion_tokens,
        tokens_per_s=_mean(speeds) if speeds else None,
        finish_reason=finish,
        repetition=repetition(text),
        error=error,
        mode=request_mode,
    )


def _cold_start(engine: Engine) -> None:
    """Forget the prompt cache, so every answer is computed the same way whatever ran before it.

    llama.cpp reuses the KV of a prompt prefix it has already seen and evaluates only the rest; the smaller
    batch takes other kernels, whose rounding can flip a greedy near-tie (measured: SmolLM2 answered the
    amazon-agent prompt differently the second time). Without this, greedy repeats would "differ" and a
    score would depend on which prompt ran before. Re-reading a suite prompt costs milliseconds.
    """
    forget = getattr(engine, "forget_prompt_cache", None)  # llama.cpp keeps one; remote and scripted engines do not
    if forget is not None:
        forget()


def _not_run(prompt: SuitePrompt, detail: str) -> list[CheckResult]:
    """Every check failed: a model that could not answer fails them, and the counts stay comparable."""
    return [CheckResult(check, False, detail) for check in prompt.checks]


def _error_cell(prompt: SuitePrompt, column: Column, message: str) -> Cell:
    return Cell(
        prompt_id=prompt.id,
        column=column.label,
        answers=[],
        results=_not_run(prompt, "not run: the model failed"),
        score=0.0,
        completion_tokens=0,
        tokens_per_s=None,
        finish_reason="error",
        repetition=0.0,
        error=message,
    )
