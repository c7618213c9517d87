"""A judge model grades answers: the templates it is asked with, and the strict parsing of its verdicts.

A suite's ``judge_rubric`` checks ask the judge to grade one answer against a rubric (``scale = "1-10"`` with
a ``threshold``, or ``"pass/fail"``); a pairwise judgement asks it which of two columns' answers is better,
twice with the answers swapped (``tuitune.evals.judging`` runs both). The prompts are readable templates
(``[judge] rubric_template`` / ``pairwise_template`` in the suite, else the defaults below) whose
``{placeholders}`` are substituted once, left to right, by a function: an answer that contains ``{answer_b}``
or braces stays literal text, and is never formatted again.

By default the judge is asked under a grammar (``verdict_grammar``) that admits only the strict verdict JSON:
a local llama.cpp judge samples under it (tokens outside it are masked), an endpoint gets it as a JSON-schema
``response_format``. The reason comes first, bounded to ``GRAMMAR_REASON_CHARS``, then the verdict: a short
rationale before the verdict, and the whole reply fits the default 128 tokens. ``--judge-free`` turns it off.

A verdict is parsed strictly. Accepted: a JSON object with the verdict key (the whole reply, a ```json fence,
or one object embedded in prose), or a last line ``VERDICT: X``. Anything else (no verdict, two verdicts that
disagree, a score out of range) is a ``JudgeParseError``: the check shows "judge failed", never a pass.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tuitune.safe_text import inert

if TYPE_CHECKING:
    from tuitune.engines import Sampling
    from tuitune.engines.base import Grammar

SCALES = ("1-10", "pass/fail")
PAIRWISE = "pairwise"
RUBRIC_PLACEHOLDERS = ("question", "answer", "rubric", "scale", "format")
PAIRWISE_PLACEHOLDERS = ("question", "answer_a", "answer_b", "format")
REQUIRED = {"rubric_template": ("answer",), "pairwise_template": ("answer_a", "answer_b")}
ANSWER_CHARS = 3000  # per answer in a judge prompt: a rambling base model must not overflow the judge's context
REASON_CHARS = 160  # a judge's reason, shown on one line
RAW_CHARS = 80  # of an unparseable reply, shown in the "judge failed" detail
# the grammar's bound on a reason: a token nearly always holds a whole character, and the JSON around it is at
# most 33 characters, so even a reason of one-character tokens (digits, in SmolLM2) ends within 128 tokens
GRAMMAR_REASON_CHARS = 90

DEFAULT_RUBRIC_TEMPLATE = """\
You are grading an AI assistant's answer to a question.

Question:
<<<
{question}
>>>

Answer:
<<<
{answer}
>>>

Rubric: {rubric}
Grade the answer against the rubric on the scale {scale}.
{format}"""

DEFAULT_PAIRWISE_TEMPLATE = """\
You are comparing two AI assistants' answers to the same question.

Question:
<<<
{question}
>>>

Answer A:
<<<
{answer_a}
>>>

Answer B:
<<<
{answer_b}
>>>

Which answer is more helpful, correct and to the point? The order of the answers says nothing about them.
{format}"""

FORMATS = {  # what {format} expands to: the reply the parser accepts, spelled out for the judge (the grammar's order)
    "1-10": 'Reply with only a JSON object: {"reason": "<one sentence>", "score": <a whole number from 1 to 10>}',
    "pass/fail": 'Reply with only a JSON object: {"reason": "<one sentence>", "verdict": "pass" or "fail"}',
    PAIRWISE: 'Reply with only a JSON object: {"reason": "<one sentence>", "winner": "A" or "B" or "tie"}',
}
_KEYS = {"1-10": "score", "pass/fail": "verdict", PAIRWISE: "winner"}
_GBNF_VALUES = {"1-10": '[1-9] | "10"', "pass/fail": '"\\"pass\\"" | "\\"fail\\""',
                PAIRWISE: '"\\"A\\"" | "\\"B\\"" | "\\"tie\\""'}  # fmt: skip
_SCHEMA_VALUES = {"1-10": {"type": "integer", "enum": list(range(1, 11))},
                  "pass/fail": {"type": "string", "enum": ["pass", "fail"]},
                  PAIRWISE: {"type": "string", "enum": ["A", "B", "tie"]}}  # fmt: skip
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FENCE = re.compile(r"```[ \t]*(?:json)?[ \t]*\n(.*?)\n[ \t]*```", re.DOTALL | re.IGNORECASE)
_VERDICT_LINE = re.compile(r"^\s*VERDICT\s*:\s*(.+?)\s*$", re.IGNORECASE)
_REASON_LINE = re.compile(r"^\s*REASON\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


class JudgeParseError(ValueError):
    """The judge's reply holds no valid verdict; the message says why, in one line."""


@dataclass(frozen=True)
class Verdict:
    """A parsed verdict: an int 1..10, "pass"/"fail", or "A"/"B"/"tie"; the reason is inert and one line."""

    value: int | str
    reason: str


@dataclass(frozen=True)
class JudgeTemplates:
    """A suite's ``[judge]`` table: the two templates and whether columns are compared pairwise."""

    rubric_template: str = DEFAULT_RUBRIC_TEMPLATE
    pairwise_template: str = DEFAULT_PAIRWISE_TEMPLATE
    pairwise: bool = False

    def digest(self) -> dict[str, str]:
        """sha256 of each template, so two runs' results say whether the judge was asked the same way."""
        return {
            "rubric_template": hashlib.sha256(self.rubric_template.encode()).hexdigest(),
            "pairwise_template": hashlib.sha256(self.pairwise_template.encode()).hexdigest(),
        }


@dataclass(frozen=True)
class JudgeConfig:
    """``--judge MODEL`` and its settings: the model reference, its sampling, explicit column pairs."""

    model: str
    sampling: Sampling = field(default_factory=lambda: judge_sampling())
    pairs: tuple[tuple[str, str], ...] | None = None  # column labels; None: every pair if the suite says pairwise
    timeout_s: float = 120.0  # per judge call; longer counts as "judge failed: timed out"
    constrained: bool = True  # ask under verdict_grammar (False: --judge-free, the reply is free text)


def judge_sampling(temperature: float = 0.0, max_tokens: int = 128):
    """Greedy by default: the same answers get the same grades twice; 128 tokens is a verdict and a sentence."""
    from tuitune.engines.base import Sampling

    return Sampling(temperature=temperature, max_tokens=max_tokens, seed=42)


def verdict_grammar(kind: str) -> Grammar:
    """The grammar (GBNF) and JSON schema that admit only a strict verdict for ``kind``: reason, then verdict.

    Written by hand rather than converted from the schema: llama-cpp-python's converter lets a string hold raw
    newlines and control characters, which strict JSON (the parser) rejects.
    """
    from tuitune.engines.base import Grammar

    key = _KEYS[kind]
    gbnf = "\n".join([
        f'root ::= "{{" ws "\\"reason\\"" ws ":" ws reason "," ws "\\"{key}\\"" ws ":" ws value ws "}}"',
        f"reason ::= \"\\\"\" char{{0,{GRAMMAR_REASON_CHARS}}} \"\\\"\"",
        "char ::= [^\"\\\\\\x00-\\x1F\\x7F]",
        f"value ::= {_GBNF_VALUES[kind]}",
        'ws ::= " "?',
    ])  # fmt: skip
    schema = {
        "type": "object",
        "properties": {"reason": {"type": "string", "maxLength": GRAMMAR_REASON_CHARS}, key: _SCHEMA_VALUES[kind]},
        "required": ["reason", key],
        "additionalProperties": False,
    }
    return Grammar(f"tuitune_verdict_{key}", gbnf + "\n", json.dumps(schema))


def placeholders(template: str) -> list[str]:
    """The ``{name}`` placeholders of a template, in order (other braces, e.g. JSON examples, are literal)."""
    return [match.group(1) for match in _PLACEHOLDER.finditer(template)]


def template_problem(template: str, key: str) -> tuple[str, str] | None:
    """(the offending placeholder as written, what is wrong) for a bad template, or None when it is usable."""
    allowed = RUBRIC_PLACEHOLDERS if key == "rubric_template" else PAIRWISE_PLACEHOLDERS
    for name in placeholders(template):
        if name not in allowed:
            return "{" + name + "}", f"unknown placeholder; {key} may use {', '.join('{' + a + '}' for a in allowed)}"
    for name in REQUIRED[key]:
        if name not in placeholders(template):
            return "", f"{key} must contain {{{name}}} (where the answer goes)"
    return None


def fill(template: str, values: dict[str, str]) -> str:
    """Substitute every placeholder once, left to right; the values are inserted literally, never re-scanned."""
    return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), template)


def clip(answer: str, limit: int = ANSWER_CHARS) -> str:
    return answer if len(answer) <= limit else answer[:limit] + " […cut]"


def one_line(text: str, limit: int) -> str:
    """Untrusted text for a table or a detail line: inert, whitespace collapsed, at most ``limit`` characters."""
    flat = " ".join(inert(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def parse_verdict(text: str, kind: str) -> Verdict:
    """The verdict in a judge's reply for ``kind`` ("1-10", "pass/fail" or "pairwise"); JudgeParseError if none."""
    key = _KEYS[kind]
    objects = _json_objects(text)
    found = [obj for obj in objects if key in obj]
    if found:
        values = {json.dumps(obj[key], sort_keys=True) for obj in found}
        if len(values) > 1:
            raise JudgeParseError(f'{len(found)} JSON verdicts that differ ("{key}": {", ".join(sorted(values))})')
        obj = found[0]
        reason = obj.get("reason", "")
        if not isinstance(reason, str):
            raise JudgeParseError('"reason" must be a string')
        return Verdict(_value(obj[key], kind, from_json=True), one_line(reason, REASON_CHARS))
    lines = [line for line in text.splitlines() if line.strip()]
    match = _VERDICT_LINE.match(lines[-1]) if lines else None
    if match:
        reasons = _REASON_LINE.findall(text)
        reason = one_line(reasons[-1] if reasons else "", REASON_CHARS)
        return Verdict(_value(match.group(1), kind, from_json=False), reason)
    raise JudgeParseError(f'no verdict: expected a JSON object with "{key}" or a last line VERDICT: …')


def _json_objects(text: str) -> list[dict]:
    """JSON objects in the reply: the whole of it, else its ```json fences, else objects embedded in prose."""
    body = text.strip()
    try:
        whole = json.loads(body)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        return [whole]
    fenced = []
    for block in _FENCE.findall(body):
        try:
            value = json.loads(block)
        except ValueError:
            continue
        if isinstance(value, dict):
            fenced.append(value)
    if fenced:
        return fenced
    decoder, objects, index = json.JSONDecoder(), [], body.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(body, index)
        except ValueError:
            index = body.find("{", index + 1)
            continue
        if isinstance(value, dict):
            objects.append(value)
        index = body.find("{", end)
    return objects


def _value(raw: object, kind: str, from_json: bool) -> int | str:
    if kind == "1-10":
        if from_json:
            if not isinstance(raw, int) or isinstance(raw, bool):
                raise JudgeParseError(f"score {one_line(json.dumps(raw), 24)} is not a whole number from 1 to 10")
            number = raw
        else:
            if not re.fullmatch(r"\d{1,3}", str(raw)):
                raise JudgeParseError(f"VERDICT {one_line(str(raw), 24)} is not a whole number from 1 to 10")
            number = int(str(raw))
        if not 1 <= number <= 10:
            raise JudgeParseError(f"score {number} is out of range 1-10")
        return number
    word = raw.strip().lower() if isinstance(raw, str) else None
    allowed = ("pass", "fail") if kind == "pass/fail" else ("a", "b", "tie")
    if word not in allowed:
        shown = one_line(json.dumps(raw) if from_json else str(raw), 24)
        raise JudgeParseError(f"verdict {shown} is not one of {'/'.join(allowed)}")
    return word if kind == "pass/fail" else ("tie" if word == "tie" else word.upper())


def failure_detail(why: str, raw: str = "") -> str:
    """The "judge failed" line of a check: why, and the start of what the judge said (inert, shortened)."""
    said = one_line(raw, RAW_CHARS)
    return f"judge failed: {one_line(why, REASON_CHARS)}" + (f"; said: {said}" if said else "")


def judge_config(
    model: str | None,
    pairs: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout_s: float | None = None,
    free: bool | None = None,
) -> JudgeConfig | None:
    """``--judge`` and its flags checked into a JudgeConfig (None without ``--judge``); TuituneError if unusable."""
    import math

    from tuitune.errors import TuituneError

    if model is None:
        given = [flag for flag, value in (("--judge-pairs", pairs), ("--judge-temperature", temperature),
                                          ("--judge-max-tokens", max_tokens), ("--judge-timeout", timeout_s),
                                          ("--judge-free", free or None))
                 if value is not None]  # fmt: skip
        if given:
            raise TuituneError(f"{', '.join(given)}: only with --judge MODEL")
        return None
    if not model.strip():
        raise TuituneError("--judge needs a model: a catalog id, an endpoint, ORG/REPO[:QUANT] or a .gguf path")
    if temperature is not None and (not math.isfinite(temperature) or not 0 <= temperature <= 2):
        raise TuituneError(f"--judge-temperature must be from 0 to 2, not {temperature:g}")
    if max_tokens is not None and max_tokens < 1:
        raise TuituneError(f"--judge-max-tokens must be at least 1, not {max_tokens}")
    if timeout_s is not None and (not math.isfinite(timeout_s) or timeout_s <= 0):
        raise TuituneError(f"--judge-timeout must be a positive number of seconds, not {timeout_s:g}")
    pair_list = None
    if pairs is not None:
        labels = [label.strip() for label in pairs.split(",")]
        if len(labels) != 2 or not all(labels):
            raise TuituneError(f"--judge-pairs takes two column labels, A,B (not '{one_line(pairs, 60)}')")
        pair_list = ((labels[0], labels[1]),)
    sampling = judge_sampling(0.0 if temperature is None else temperature, 128 if max_tokens is None else max_tokens)
    return JudgeConfig(model.strip(), sampling, pair_list, 120.0 if timeout_s is None else timeout_s, not free)
