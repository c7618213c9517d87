"""Run a suite's prompts on several models (and adapter strengths) and score every answer with its checks.

A comparison shows two answers; an eval says which model answered *well*, on every prompt, as numbers a
script or CI can compare between runs. Each model loads once, in a thread of its own (a ``Llama`` is not
thread-safe; models run in parallel as in ``compare``). A finetuned model in a scale sweep keeps its one
engine and changes the LoRA strength between columns, without reloading. Greedy sampling by default: an
eval should give the same numbers twice; ``repeat`` with a temperature measures how stable the answers are.
With a ``judge`` (``--judge MODEL``), a judge model grades the suite's judged checks and pairs of columns in a
thread of its own as the cells come in (``tuitune.evals.judging``).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from tuitune.errors import TuituneError
from tuitune.evals.checks import CheckResult, repetition, run_checks, score
from tuitune.evals.report import EvalReport
from tuitune.evals.results import Cell, Column, mean

if TYPE_CHECKING:
    from tuitune.catalog import Catalog
    from tuitune.engines import Engine, ResolvedModel, Sampling
    from tuitune.evals.judge import JudgeConfig
    from tuitune.evals.judging import JudgeRun
    from tuitune.suites import Suite, SuitePrompt

EVAL_MODES = ("auto", "raw", "chat")
MAX_PARALLEL = 4  # models loaded and generating at once (as compare's limit): memory and cores are finite
ProgressCallback = Callable[[int, int], None]


def default_sampling() -> Sampling:
    """Greedy, so that an eval run twice gives the same scores; 200 tokens is enough to see a model ramble."""
    from tuitune.engines.base import Sampling

    return Sampling(temperature=0.0, max_tokens=200, seed=42)


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
    return model.entry is not None and model.entry.has_adapter


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
    gpu_layers: int | None = None,
    judge: JudgeConfig | None = None,
) -> EvalReport:
    """Every prompt of ``suite`` on every column, ``repeat`` times; repeat i samples with seed + i.

    A model that fails to load or to answer gives cells with ``error``; the other models go on. With
    ``cancel`` set, answers in progress stop and the rest are left unanswered (``finish_reason`` cancelled).
    Without ``judge`` the suite's judged checks are left out; with it, they are graded (a failed verdict is a
    "judge failed" result, never a pass) and pairs of columns are compared (``EvalReport.pairwise``).
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
    judge_run = _judge_run(judge, suite, prompts, columns, counter, cancel, catalog, gpu_layers)
    cells: dict[tuple[str, str], Cell] = {}
    parallel = threading.Semaphore(MAX_PARALLEL)

    def store(cell: Cell) -> None:
        cells[(cell.prompt_id, cell.column)] = cell
        if judge_run is not None:
            judge_run.cell_done(cell)

    def work(model: ResolvedModel, model_columns: list[Column]) -> None:
        with parallel:
            try:
                _run_model(model, model_columns, prompts, repeat, sampling, mode, catalog, store, counter, cancel,
                           gpu_layers, judged=judge_run is not None)  # fmt: skip
            except Exception as error:  # a bug or a llama.cpp failure: this model's cells say so, the others go on
                message = str(error) if isinstance(error, TuituneError) else f"{type(error).__name__}: {error}"
                for column in model_columns:
                    for prompt in prompts:
                        if (prompt.id, column.label) not in cells:
                            store(_error_cell(prompt, column, message, judged=judge_run is not None))
                            counter.add(repeat)

    threads = [
        threading.Thread(target=work, args=(model, model_columns), name=f"tuitune-eval-{model.id}", daemon=True)
        for model, model_columns in plan
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if judge_run is None:
        return EvalReport(suite.name, columns, prompts, cells, repeat, sampling, mode)
    pairwise = judge_run.finish()
    info = {**judge_run.info, "error": judge_run.load_error}
    return EvalReport(suite.name, columns, prompts, cells, repeat, sampling, mode, judge=info, pairwise=pairwise)


def _judge_run(
    judge: JudgeConfig | None,
    suite: Suite,
    prompts: list[SuitePrompt],
    columns: list[Column],
    counter: _Counter,
    cancel: threading.Event | None,
    catalog: Catalog,
    gpu_layers: int | None,
) -> JudgeRun | None:
    """The judge's thread, started, with its calls added to the progress total; usage errors before any load."""
    if judge is None:
        return None
    from tuitune.engines import open_engine, resolve_model
    from tuitune.evals.judging import JudgeRun, judge_info, rubric_calls

    model = resolve_model(judge.model, catalog)  # an unknown judge fails here, before any model loads
    labels = [column.label for column in columns]
    if judge.pairs is not None:
        for a, b in judge.pairs:
            unknown = [label for label in (a, b) if label not in labels]
            if unknown:
                raise TuituneError(f"--judge-pairs: no column '{unknown[0]}'; the columns are {', '.join(labels)}")
            if a == b:
                raise TuituneError(f"--judge-pairs: '{a}' against itself; name two different columns")
        pairs = list(dict.fromkeys(judge.pairs))
    elif suite.judge.pairwise:
        if len(labels) < 2:
            raise TuituneError(f"suite {suite.path} asks for pairwise judgement ([judge] pairwise = true): "
                               "give at least two models")  # fmt: skip
        pairs = list(itertools.combinations(labels, 2))
    else:
        pairs = []
    if not pairs and not any(check.judged for prompt in prompts for check in prompt.checks):
        raise TuituneError(
            f"--judge: suite {suite.path} has no judged checks and no pairwise judgement; add a "
            '[[check]] with type = "judge_rubric" or [judge] pairwise = true, or leave out --judge'
        )
    counter.total += rubric_calls(prompts, len(columns)) + 2 * len(pairs) * len(prompts)
    run = JudgeRun(judge, model, suite.judge, prompts, pairs, counter.add, cancel,
                   lambda: open_engine(model, catalog=catalog, gpu_layers=gpu_layers))  # fmt: skip
    run.info = judge_info(judge, model, suite.judge)
    run.start()
    return run


def _run_model(
    model: ResolvedModel,
    columns: list[Column],
    prompts: list[SuitePrompt],
    repeat: int,
    sampling: Sampling,
    mode: str,
    catalog: Catalog,
    store: Callable[[Cell], None],
    counter: _Counter,
    cancel: threading.Event | None,
    gpu_layers: int | None = None,
    judged: bool = False,
) -> None:
    """One model's columns, in its own thread: load once, then every scale × prompt × repeat in order."""
    from tuitune.engines import open_engine

    first_scale = columns[0].adapter_scale
    engine = open_engine(model, adapter_scale=1.0 if first_scale is None else first_scale, catalog=catalog,
                         gpu_layers=gpu_layers)  # fmt: skip
    try:
        has_template = getattr(engine, "has_chat_template", None)
        for column in columns:
            if column.adapter_scale is not None:
                engine.set_adapter_scale(column.adapter_scale)  # type: ignore[attr-defined]
            for prompt in prompts:
                store(_run_cell(engine, model, has_template, column, prompt, repeat, sampling, mode, counter, cancel,
                                judged))  # fmt: skip
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
    judged: bool = False,
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
        results = _not_run(prompt, "not run: the model failed", judged)
    else:
        results = _with_judged(prompt, run_checks(prompt.checks, text, completion_tokens, finish), judged)
    return Cell(
        prompt_id=prompt.id,
        column=column.label,
        answers=answers,
        results=results,
        score=0.0 if error else score(results),
        completion_tokens=completion_tokens,
        tokens_per_s=mean(speeds) if speeds else None,
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


def _not_run(prompt: SuitePrompt, detail: str, judged: bool = False) -> list[CheckResult]:
    """Every check failed: a model that could not answer fails them, and the counts stay comparable.

    Judged checks are among them only when a judge runs (without one they are left out of every cell).
    """
    return [CheckResult(check, False, detail) for check in prompt.checks if judged or not check.judged]


def _with_judged(prompt: SuitePrompt, results: list[CheckResult], judged: bool) -> list[CheckResult]:
    """The rule checks' results with a pending result in each judged check's place, in the suite's order."""
    if not judged:
        return results
    from tuitune.evals.judging import pending

    rules = iter(results)
    return [pending(check) if check.judged else next(rules) for check in prompt.checks]


def _error_cell(prompt: SuitePrompt, column: Column, message: str, judged: bool = False) -> Cell:
    return Cell(
        prompt_id=prompt.id,
        column=column.label,
        answers=[],
        results=_not_run(prompt, "not run: the model failed", judged),
        score=0.0,
        completion_tokens=0,
        tokens_per_s=None,
        finish_reason="error",
        repetition=0.0,
        error=message,
    )
