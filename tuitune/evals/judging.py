"""The judge at work during an eval: a thread of its own that grades each cell as soon as it is answered.

The judge model loads once, like an eval column, and takes jobs from a queue the column threads fill: a
column never waits for the judge (its answers keep streaming), and the judge works while the others answer.
Stop (the eval's ``cancel``) stops the judge's current reply too; a call that runs past ``timeout_s`` is
stopped and counts as "judge failed: timed out". Every failure (the judge did not load, raised, timed out,
or said nothing parseable) is a visible "judge failed" check result or a ``failed`` pairwise verdict; the
run goes on.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from tuitune.errors import TuituneError
from tuitune.evals.checks import CheckResult, score
from tuitune.evals.judge import (
    FORMATS,
    PAIRWISE,
    JudgeConfig,
    JudgeParseError,
    JudgeTemplates,
    Verdict,
    clip,
    failure_detail,
    fill,
    parse_verdict,
    verdict_grammar,
)
from tuitune.evals.results import Cell, PairVerdict

if TYPE_CHECKING:
    from collections.abc import Callable

    from tuitune.engines import Engine, ResolvedModel
    from tuitune.evals.checks import Check
    from tuitune.suites import SuitePrompt

_SWAP = {"a": "b", "b": "a", "tie": "tie"}  # a verdict asked with the answers swapped, mapped back


def rubric_calls(prompts: list[SuitePrompt], columns: int) -> int:
    """Judge calls the rubric checks take: one per judged check per cell."""
    return columns * sum(check.judged for prompt in prompts for check in prompt.checks)


def judge_info(config: JudgeConfig, model: ResolvedModel, templates: JudgeTemplates) -> dict:
    """What the results JSON records about the judge: enough to tell two judged runs apart."""
    return {
        "model": model.id,
        "sampling": asdict(config.sampling),
        "timeout_s": config.timeout_s,
        "constrained": config.constrained,  # asked under verdict_grammar (GBNF locally, response_format remotely)
        "notices": [],  # what the judge's engine said, once each (e.g. an endpoint that rejected response_format)
        "pairs": [list(pair) for pair in config.pairs] if config.pairs else None,
        "pairwise": templates.pairwise,
        "rubric_template": templates.rubric_template,
        "pairwise_template": templates.pairwise_template,
        "template_sha256": templates.digest(),
        "error": None,
    }


class JudgeRun:
    """The judge's thread and queue for one eval; ``cell_done`` from the column threads, ``finish`` at the end."""

    def __init__(
        self,
        config: JudgeConfig,
        model: ResolvedModel,
        templates: JudgeTemplates,
        prompts: list[SuitePrompt],
        pairs: list[tuple[str, str]],
        count: Callable[[int], None],
        cancel: threading.Event | None,
        opener: Callable[[], Engine],
    ):
        self.config, self.model, self.templates = config, model, templates
        self.prompts = {prompt.id: prompt for prompt in prompts}
        self.order = [prompt.id for prompt in prompts]
        self.pairs = pairs
        self.count = count  # progress: judge calls done (or skipped)
        self.cancel = cancel
        self.opener = opener
        self.load_error: str | None = None
        self.info: dict = {}  # judging.judge_info: what the results JSON says about the judge
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._answered: dict[str, dict[str, Cell]] = {}
        self._verdicts: dict[tuple[str, str, str], PairVerdict] = {}
        self._thread = threading.Thread(target=self._loop, name="tuitune-eval-judge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cell_done(self, cell: Cell) -> None:
        """A cell is final (answered, failed or stopped): queue its rubric checks and any pair it completes."""
        prompt = self.prompts[cell.prompt_id]
        answered = cell.error is None and cell.counted
        for index, result in enumerate(cell.results):
            if result.check.judged:
                if answered:
                    self._jobs.put(("rubric", prompt, cell, index))
                else:
                    self.count(1)  # an unanswered cell: nothing to grade
        with self._lock:
            cells = self._answered.setdefault(cell.prompt_id, {})
            cells[cell.column] = cell
            for a, b in self.pairs:
                if cell.column in (a, b) and a in cells and b in cells:
                    self._jobs.put(("pair", prompt, cells[a], cells[b]))

    def finish(self) -> list[PairVerdict]:
        """After every column is done: let the judge finish its queue, then the pairwise verdicts in prompt order."""
        self._jobs.put(None)
        self._thread.join()
        return [
            self._verdicts[(prompt_id, a, b)]
            for prompt_id in self.order
            for a, b in self.pairs
            if (prompt_id, a, b) in self._verdicts
        ]

    # -- the judge's thread ---------------------------------------------------------------------------
    def _loop(self) -> None:
        engine = None
        try:
            engine = self.opener()
        except Exception as error:  # the judge's cells say why; the eval's answers are still worth having
            self.load_error = str(error) if isinstance(error, TuituneError) else f"{type(error).__name__}: {error}"
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                if job[0] == "rubric":
                    self._rubric(engine, *job[1:])
                else:
                    self._pair(engine, *job[1:])
        finally:
            if engine is not None:
                engine.close()

    def _ask(self, engine: Engine | None, prompt: str, kind: str) -> tuple[Verdict | None, str]:
        """One judge call → (verdict, "") or (None, the "judge failed" detail)."""
        if engine is None:
            return None, failure_detail(f"the judge model did not load: {self.load_error}")
        if self.cancel is not None and self.cancel.is_set():
            return None, failure_detail("not judged: the run was stopped")
        from tuitune.engines.base import Message, Request

        sampling = self.config.sampling
        chat = self.model.default_mode == "chat" or (
            self.model.default_mode is None and bool(getattr(engine, "has_chat_template", False))
        )
        grammar = verdict_grammar(kind) if self.config.constrained else None
        if chat:
            request = Request.chat([Message("user", prompt)], sampling, grammar=grammar)
        else:
            request = Request.raw(prompt, sampling, grammar=grammar)
        timed_out = threading.Event()
        try:
            generation = engine.generate(request)
            done = threading.Event()
            watcher = threading.Thread(target=self._watch, args=(generation, done, timed_out), daemon=True)
            watcher.start()
            try:
                for _ in generation:
                    pass
            finally:
                done.set()
            text = generation.text
        except Exception as error:  # an endpoint down, a context overflow: this verdict fails, the run goes on
            why = str(error) if isinstance(error, TuituneError) else f"{type(error).__name__}: {error}"
            return None, failure_detail(why)
        notices = self.info.setdefault("notices", [])
        notices.extend(notice for notice in generation.notices if notice not in notices)
        if timed_out.is_set():
            return None, failure_detail(f"timed out after {self.config.timeout_s:g} s", text)
        if self.cancel is not None and self.cancel.is_set():
            return None, failure_detail("not judged: the run was stopped", text)
        try:
            return parse_verdict(text, kind), ""
        except JudgeParseError as error:
            return None, failure_detail(str(error), text)

    def _watch(self, generation, done: threading.Event, timed_out: threading.Event) -> None:
        """Stop the judge's reply on Stop/Ctrl-C or past the timeout; ends with the reply."""
        deadline = time.monotonic() + self.config.timeout_s
        while not done.wait(0.05):
            if self.cancel is not None and self.cancel.is_set():
                generation.cancel()
                return
            if time.monotonic() >= deadline:
                timed_out.set()
                generation.cancel()
                return

    def _rubric(self, engine: Engine | None, prompt: SuitePrompt, cell: Cell, index: int) -> None:
        check = cell.results[index].check
        scale = check.scale
        text = fill(
            self.templates.rubric_template,
            {"question": prompt.text, "answer": clip(cell.answers[0] if cell.answers else ""),
             "rubric": str(check.value), "scale": scale, "format": FORMATS[scale]},
        )  # fmt: skip
        verdict, failure = self._ask(engine, text, scale)
        cell.results[index] = _graded(check, verdict, failure)
        cell.score = score(cell.results)
        self.count(1)

    def _pair(self, engine: Engine | None, prompt: SuitePrompt, cell_a: Cell, cell_b: Cell) -> None:
        key = (prompt.id, cell_a.column, cell_b.column)
        missing = [cell for cell in (cell_a, cell_b) if cell.error is not None or not cell.counted]
        if missing:
            why = "; ".join(f"no answer from {cell.column}" + (f": {cell.error}" if cell.error else "")
                            for cell in missing)  # fmt: skip
            self._verdicts[key] = PairVerdict(prompt.id, cell_a.column, cell_b.column, "tie", False,
                                              (failure_detail(why),), failed=True)  # fmt: skip
            self.count(2)
            return
        first, second = clip(cell_a.answers[0]), clip(cell_b.answers[0])
        values = {"question": prompt.text, "format": FORMATS[PAIRWISE]}
        ask = self.templates.pairwise_template
        straight, failure_1 = self._ask(engine, fill(ask, {**values, "answer_a": first, "answer_b": second}), PAIRWISE)
        self.count(1)
        swapped, failure_2 = self._ask(engine, fill(ask, {**values, "answer_a": second, "answer_b": first}), PAIRWISE)
        self.count(1)
        if straight is None or swapped is None:
            reasons = tuple(v.reason if v is not None else f for v, f in ((straight, failure_1), (swapped, failure_2)))
            self._verdicts[key] = PairVerdict(prompt.id, cell_a.column, cell_b.column, "tie", False, reasons, True)
            return
        one, two = str(straight.value).lower(), _SWAP[str(swapped.value).lower()]
        agree = one == two
        self._verdicts[key] = PairVerdict(prompt.id, cell_a.column, cell_b.column, one if agree else "tie", agree,
                                          (straight.reason, swapped.reason))  # fmt: skip


def _graded(check: Check, verdict: Verdict | None, failure: str) -> CheckResult:
    """The check result of one judge verdict: passed by the threshold (1-10) or the word (pass/fail)."""
    if verdict is None:
        return CheckResult(check, False, failure, None, judge_failed=True)
    reason = f": {verdict.reason}" if verdict.reason else ""
    if check.scale == "1-10":
        threshold = check.threshold or 0
        passed = int(verdict.value) >= threshold
        detail = f"{verdict.value}/10 {'≥' if passed else '<'} {threshold}{reason}"
        return CheckResult(check, passed, detail, verdict.value)
    return CheckResult(check, verdict.value == "pass", f"{verdict.value}{reason}", verdict.value)


def pending(check: Check) -> CheckResult:
    """A judged check before the judge has graded it; what is left if the run stops first."""
    return CheckResult(check, False, failure_detail("not judged: the run was stopped"), None, judge_failed=True)
