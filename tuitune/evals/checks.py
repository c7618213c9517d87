"""Checks on one model answer: does it contain the right word, stop by itself, avoid rambling?

A suite (``suites/*.toml``) attaches checks to its prompts; a run scores each answer by the weighted share of
checks it passes. The checks are deliberately simple and deterministic, so a score can be explained in one line
per check (``CheckResult.detail``), and they never echo the model's own text (it is untrusted).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tuitune.errors import SuiteError

CHECK_KINDS = (
    "contains",
    "not_contains",
    "regex",
    "equals",
    "max_repetition",
    "min_tokens",
    "max_tokens",
    "stops_cleanly",
    "json_valid",
    "judge_rubric",
)
JUDGED_KINDS = ("judge_rubric",)  # graded by a judge model (``tuitune eval --judge``), not by rules

_TEXT_KINDS = ("contains", "not_contains", "regex", "equals")
_TOKEN_KINDS = ("min_tokens", "max_tokens")
_KEYS = {  # the keys a check table may have, besides `type` and `weight`
    **{kind: ("value", "case_sensitive") for kind in _TEXT_KINDS},
    "max_repetition": ("value", "n"),
    **{kind: ("value",) for kind in _TOKEN_KINDS},
    "stops_cleanly": (),
    "json_valid": (),
    "judge_rubric": ("rubric", "scale", "threshold"),
}
_VALUE_HINTS = {
    **{kind: 'a non-empty string, e.g. value = "sit"' for kind in _TEXT_KINDS},
    "regex": "a regular expression string, e.g. value = '\\bsit\\b'",
    "max_repetition": "a number from 0 to 1 (the largest share of repeats allowed), e.g. value = 0.3",
    **{kind: "a whole number of tokens of at least 1, e.g. value = 20" for kind in _TOKEN_KINDS},
}
_WORD = re.compile(r"\w+(?:'\w+)*")
_FENCE = re.compile(
    r"^[ \t]*```[ \t]*(?:json)?[ \t]*\n(.*?)\n[ \t]*```[ \t]*$", re.DOTALL | re.IGNORECASE | re.MULTILINE
)


@dataclass(frozen=True)
class Check:
    """One test of an answer; ``value`` is text or a regex, a max share for max_repetition, or a token count."""

    kind: str
    value: str | float | int | None = None
    case_sensitive: bool = False
    n: int = 3
    weight: float = 1.0
    scale: str = ""  # judge_rubric: "1-10" or "pass/fail" (the rubric itself is ``value``)
    threshold: int | None = None  # judge_rubric on 1-10: passes at or above this grade

    @property
    def judged(self) -> bool:
        """Whether a judge model grades this check (it is skipped without ``--judge``)."""
        return self.kind in JUDGED_KINDS

    def label(self) -> str:
        """A short name for tables: 'contains "sit"', 'repetition ≤ 0.30', 'stops cleanly', 'min 20 tokens'."""
        case = " (exact case)" if self.case_sensitive and self.kind in _TEXT_KINDS else ""
        if self.kind == "contains":
            return f"contains {_quote(self.value)}{case}"
        if self.kind == "not_contains":
            return f"without {_quote(self.value)}{case}"
        if self.kind == "regex":
            return f"matches /{_short(self.value)}/{case}"
        if self.kind == "equals":
            return f"equals {_quote(self.value)}{case}"
        if self.kind == "max_repetition":
            grams = "" if self.n == 3 else f" ({self.n}-grams)"
            return f"repetition ≤ {_number(self.value):.2f}{grams}"
        if self.kind == "min_tokens":
            return f"min {self.value} tokens"
        if self.kind == "max_tokens":
            return f"max {self.value} tokens"
        if self.kind == "stops_cleanly":
            return "stops cleanly"
        if self.kind == "json_valid":
            return "valid JSON"
        if self.kind == "judge_rubric":
            bar = f" ≥ {self.threshold}" if self.scale == "1-10" else ""
            return f"judge {_quote(self.value)} {self.scale}{bar}"
        return self.kind


@dataclass(frozen=True)
class CheckResult:
    check: Check
    passed: bool
    detail: str  # why, one short line: 'missing "sit"', 'repetition 0.52 > 0.30', 'finish: length'
    grade: int | str | None = None  # judge_rubric: the judge's 1..10 or "pass"/"fail"; None when it failed
    judge_failed: bool = False  # the judge gave no valid verdict (or none at all): not passed, counted apart


def _short(value: object, limit: int = 32) -> str:
    text = str(value).replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(value: object) -> str:
    return f'"{_short(value)}"'


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_check(raw: object, where: str) -> Check:
    """A Check from one TOML check table (``{type = "contains", value = "sit"}``); SuiteError names ``where``."""
    if not isinstance(raw, dict):
        raise SuiteError(f'{where}: a check must be a table such as {{ type = "contains", value = "sit" }}')
    kind = raw.get("type")
    if kind is None:
        raise SuiteError(f"{where}: check has no type; add type = one of {', '.join(CHECK_KINDS)}")
    if kind not in CHECK_KINDS:
        raise SuiteError(f"{where}: unknown check type {_quote(kind)}; use one of {', '.join(CHECK_KINDS)}")
    allowed = ("type", "weight", *_KEYS[kind])
    unknown = sorted(str(key) for key in raw if key not in allowed)
    if unknown:
        raise SuiteError(f"{where}: {kind} check does not take {', '.join(unknown)}; its keys are {', '.join(allowed)}")
    if kind == "judge_rubric":
        return _judge_check(raw, where)
    weight = raw.get("weight", 1.0)
    if not _is_number(weight) or weight <= 0:
        raise SuiteError(f"{where}: {kind} check weight must be a positive number, e.g. weight = 2")
    case_sensitive = raw.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise SuiteError(f"{where}: {kind} check case_sensitive must be true or false")
    n = raw.get("n", 3)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 20:
        raise SuiteError(f"{where}: {kind} check n (the word n-gram size) must be a whole number from 1 to 20")
    value = raw.get("value")
    if "value" in _KEYS[kind]:
        hint = _VALUE_HINTS[kind]
        if value is None:
            raise SuiteError(f"{where}: {kind} check needs a value: {hint}")
        if kind in _TEXT_KINDS:
            if not isinstance(value, str) or not value.strip():
                raise SuiteError(f"{where}: {kind} check value must be {hint}")
            if kind == "regex":
                try:
                    re.compile(value)
                except re.error as error:
                    raise SuiteError(
                        f"{where}: regex {_quote(value)} is invalid ({error}); fix the pattern "
                        "(TOML 'single quotes' keep backslashes as they are)"
                    ) from None
        elif kind == "max_repetition":
            if not _is_number(value) or not 0 <= value <= 1:
                raise SuiteError(f"{where}: {kind} check value must be {hint}")
            value = float(value)
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SuiteError(f"{where}: {kind} check value must be {hint}")
    return Check(kind=kind, value=value, case_sensitive=case_sensitive, n=n, weight=float(weight))


def _judge_check(raw: dict, where: str) -> Check:
    """``{ type = "judge_rubric", rubric = "…", scale = "1-10", threshold = 7 }`` (or scale = "pass/fail")."""
    from tuitune.evals.judge import SCALES

    rubric = raw.get("rubric")
    if not isinstance(rubric, str) or not rubric.strip():
        raise SuiteError(f'{where}: judge_rubric check needs rubric = "what a good answer does", a non-empty string')
    scale = raw.get("scale", "1-10")
    if scale not in SCALES:
        raise SuiteError(f"{where}: judge_rubric scale must be {' or '.join(_quote(s) for s in SCALES)}")
    threshold = raw.get("threshold")
    if scale == "pass/fail":
        if threshold is not None:
            raise SuiteError(f'{where}: judge_rubric threshold applies to scale = "1-10", not "pass/fail"; remove it')
    elif threshold is None:
        threshold = 7
    elif not isinstance(threshold, int) or isinstance(threshold, bool) or not 1 <= threshold <= 10:
        raise SuiteError(f"{where}: judge_rubric threshold must be a whole number from 1 to 10 (pass at or above)")
    weight = raw.get("weight", 1.0)
    if not _is_number(weight) or weight <= 0:
        raise SuiteError(f"{where}: judge_rubric check weight must be a positive number, e.g. weight = 2")
    return Check(kind="judge_rubric", value=rubric.strip(), weight=float(weight), scale=scale, threshold=threshold)


def repetition(text: str, n: int = 3) -> float:
    """How much of ``text`` repeats itself, from 0 (nothing) to 1: the base model's rambling, as one number.

    The larger of two shares:
    (a) word n-grams (lowercased words, punctuation stripped) that repeat an n-gram seen earlier in the text,
        out of all n-grams; a paragraph said three times scores about 2/3;
    (b) non-empty lines (stripped) that repeat an earlier line, out of all non-empty lines; this catches short
        lines said again and again ("Customer: ..." / "Agent: ...") that are too short for (a).
    Text with fewer than two n-grams (or lines) cannot repeat itself and scores 0.0.
    """
    n = max(1, n)
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return max(_repeat_share(grams), _repeat_share(lines))


def _repeat_share(items: Sequence[object]) -> float:
    if len(items) < 2:
        return 0.0
    seen: set[object] = set()
    repeats = 0
    for item in items:
        if item in seen:
            repeats += 1
        else:
            seen.add(item)
    return repeats / len(items)


def _parse_json(text: str) -> str:
    """'' when ``text`` (stripped) is JSON, or when its only ```json (or plain ```) fenced block is; else why not."""
    body = text.strip()
    try:
        json.loads(body)
        return ""
    except json.JSONDecodeError as error:
        why = f"not JSON: {error.msg} (line {error.lineno}, column {error.colno})"
    blocks = _FENCE.findall(body)
    if len(blocks) != 1:
        return why
    try:
        json.loads(blocks[0])
        return ""
    except json.JSONDecodeError as error:
        return f"not JSON in the ``` block: {error.msg} (line {error.lineno}, column {error.colno})"


def _run(check: Check, text: str, completion_tokens: int, finish_reason: str) -> tuple[bool, str]:
    kind, value = check.kind, check.value
    if kind in ("contains", "not_contains", "equals"):
        needle = str(value)
        haystack = text if check.case_sensitive else text.casefold()
        needle_cmp = needle if check.case_sensitive else needle.casefold()
        if kind == "equals":
            if haystack.strip() == needle_cmp.strip():
                return True, f"equals {_quote(needle)}"
            return False, f"is not {_quote(needle)}"
        found = needle_cmp in haystack
        if kind == "contains":
            return found, f"has {_quote(needle)}" if found else f"missing {_quote(needle)}"
        return not found, f"has {_quote(needle)}" if found else f"no {_quote(needle)}"
    if kind == "regex":
        try:
            match = re.search(str(value), text, 0 if check.case_sensitive else re.IGNORECASE)
        except re.error as error:
            return False, f"invalid regex: {error}"
        return (True, f"matches /{_short(value)}/") if match else (False, f"no match for /{_short(value)}/")
    if kind == "max_repetition":
        share, limit = repetition(text, check.n), _number(value)
        if share <= limit:
            return True, f"repetition {share:.2f} ≤ {limit:.2f}"
        return False, f"repetition {share:.2f} > {limit:.2f}"
    if kind == "min_tokens":
        limit = int(_number(value)) if _is_number(value) else 0
        if completion_tokens >= limit:
            return True, f"{completion_tokens} tokens ≥ {limit}"
        return False, f"{completion_tokens} tokens < {limit}"
    if kind == "max_tokens":
        limit = int(_number(value)) if _is_number(value) else 0
        if completion_tokens <= limit:
            return True, f"{completion_tokens} tokens ≤ {limit}"
        return False, f"{completion_tokens} tokens > {limit}"
    if kind == "stops_cleanly":
        return finish_reason == "stop", f"finish: {finish_reason or 'unknown'}"
    if kind == "json_valid":
        why = _parse_json(text)
        return (False, why) if why else (True, "valid JSON")
    return False, f"unknown check type {_quote(kind)}"


def run_checks(checks: Sequence[Check], text: str, completion_tokens: int, finish_reason: str) -> list[CheckResult]:
    """Every rule check on one answer, in order; ``finish_reason`` is the engine's ("stop", "length", …).

    Judged checks are skipped: a judge model grades them (``tuitune.evals.judging``), or no one does.
    """
    results = []
    for check in checks:
        if check.judged:
            continue
        passed, detail = _run(check, text, completion_tokens, finish_reason)
        results.append(CheckResult(check, passed, detail))
    return results


def score(results: Sequence[CheckResult]) -> float:
    """The weighted share of passed checks, 0..1; 1.0 when there are no checks (nothing failed)."""
    total = sum(result.check.weight for result in results)
    if total <= 0:
        return 1.0
    return sum(result.check.weight for result in results if result.passed) / total
