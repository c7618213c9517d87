"""Prompt suites: a TOML list of prompts run on every model (``suites/why-finetune.toml``).

A prompt is either ``text`` (sent raw, or wrapped as one user message in chat mode) or ``messages``;
an optional ``mode`` pins it to raw or chat whatever mode the run uses, and an optional ``group``
("identity", "control", …) lets a scoreboard add prompts up by group.

Checks score the answers (see ``tuitune.evals.checks``): top-level ``[[check]]`` tables apply to every
prompt, ``[[prompt.check]]`` tables to the prompt above them; a prompt's checks are the suite's then its own.
An optional ``[judge]`` table sets the judge's templates and ``pairwise = true`` (see ``tuitune.evals.judge``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tuitune.engines.base import Message
from tuitune.errors import SuiteError
from tuitune.evals.checks import Check, parse_check
from tuitune.evals.judge import JudgeTemplates, template_problem
from tuitune.untrusted import load_config_toml, read_config_text

_SUITE_FIELDS = {"name", "description", "prompt", "check", "judge"}
_JUDGE_FIELDS = ("pairwise", "rubric_template", "pairwise_template")
_PROMPT_FIELDS = {"id", "text", "messages", "mode", "note", "group", "check"}
_ROLES = ("system", "user", "assistant")
_HEADER = re.compile(r"^\s*\[\[([^\[\]]*)\]\]\s*(?:#.*)?$")  # linear: the old lazy group backtracked cubically


@dataclass(frozen=True)
class SuitePrompt:
    id: str
    text: str
    messages: tuple[Message, ...] = ()
    mode: str | None = None
    note: str = ""
    checks: tuple[Check, ...] = ()  # the suite's checks, then the prompt's own
    group: str = ""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    prompts: tuple[SuitePrompt, ...]
    path: Path
    checks: tuple[Check, ...] = ()  # suite-level only; already included in every prompt's checks
    judge: JudgeTemplates = field(default_factory=JudgeTemplates)

    @property
    def judged(self) -> bool:
        """Whether a judge has anything to do here: a judged check on some prompt, or pairwise = true."""
        return self.judge.pairwise or any(check.judged for prompt in self.prompts for check in prompt.checks)


@dataclass
class _Lines:
    """Line numbers of the array-table headers, so errors can point at them (TOML itself forgets lines)."""

    prompts: list[int]
    checks: list[int]
    prompt_checks: dict[int, list[int]]  # prompt index → its [[prompt.check]] header lines


def _header_lines(text: str) -> _Lines:
    lines = _Lines([], [], {})
    for number, line in enumerate(text.splitlines(), 1):
        match = _HEADER.match(line)
        if not match:
            continue
        name = re.sub(r"\s+", "", match.group(1))
        if name == "prompt":
            lines.prompts.append(number)
        elif name == "check":
            lines.checks.append(number)
        elif name == "prompt.check" and lines.prompts:
            lines.prompt_checks.setdefault(len(lines.prompts) - 1, []).append(number)
    return lines


def _at(path: Path, lines: list[int], index: int, fallback: int | None = None) -> str:
    line = lines[index] if index < len(lines) else fallback
    return f"{path}, line {line}" if line is not None else str(path)


def _check_list(raw: object, where: str, table: str) -> list:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SuiteError(f'{where}: check must be a list of tables; write [[{table}]] then type = "…"')
    return raw


def _line_of(text: str, needle: str, start: int = 0) -> int | None:
    index = text.find(needle, start)
    return None if index < 0 else text.count("\n", 0, index) + 1


def _judge_table(raw: object, path: Path, text: str) -> JudgeTemplates:
    """The ``[judge]`` table, its templates checked: an unknown placeholder names the file, line and name."""
    if raw is None:
        return JudgeTemplates()
    header = re.search(r"^\s*\[\s*judge\s*\]", text, re.MULTILINE)
    table_line = _line_of(text, header.group(0)) if header else None
    where = f"{path}, line {table_line}" if table_line else str(path)
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: judge must be a table: [judge], then pairwise = true and/or its templates")
    unknown = sorted(str(key) for key in raw if key not in _JUDGE_FIELDS)
    if unknown:
        allowed = ", ".join(_JUDGE_FIELDS)
        raise SuiteError(f"{where}: [judge] does not take {', '.join(unknown)}; its keys are {allowed}")
    pairwise = raw.get("pairwise", False)
    if not isinstance(pairwise, bool):
        raise SuiteError(f"{where}: [judge] pairwise must be true or false")
    templates = {}
    for key in ("rubric_template", "pairwise_template"):
        if key not in raw:
            continue
        template = raw[key]
        key_at = re.search(rf"^\s*{key}\s*=", text, re.MULTILINE)
        key_line = _line_of(text, key_at.group(0)) if key_at else table_line
        if not isinstance(template, str) or not template.strip():
            raise SuiteError(f'{path}, line {key_line}: [judge] {key} must be a non-empty string (""" … """)')
        problem = template_problem(template, key)
        if problem is not None:
            name, why = problem
            line = _line_of(text, name, key_at.start() if key_at else 0) if name else key_line
            raise SuiteError(f"{path}, line {line}: [judge] {key}: {name + ': ' if name else ''}{why}")
        templates[key] = template
    return JudgeTemplates(pairwise=pairwise, **templates)


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    text = read_config_text(path, SuiteError, "suite")
    data = load_config_toml(text, path, SuiteError)
    unknown = set(data) - _SUITE_FIELDS
    if unknown:
        raise SuiteError(
            f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(_SUITE_FIELDS))} (prompts go in [[prompt]], checks in [[check]])"
        )
    raw_prompts = data.get("prompt")
    if not isinstance(raw_prompts, list) or not raw_prompts:
        raise SuiteError(f'{path}: no prompts; add [[prompt]] tables with text = "…"')
    lines = _header_lines(text)
    judge = _judge_table(data.get("judge"), path, text)
    suite_checks = tuple(
        parse_check(raw, f"{_at(path, lines.checks, index)}: check #{index + 1}")
        for index, raw in enumerate(_check_list(data.get("check"), str(path), "check"))
    )
    prompts: list[SuitePrompt] = []
    for index, raw in enumerate(raw_prompts):
        prompt_line = lines.prompts[index] if index < len(lines.prompts) else None
        where = f"{_at(path, lines.prompts, index)}: prompt #{index + 1}"
        if not isinstance(raw, dict):
            raise SuiteError(f"{where}: each [[prompt]] must be a table")
        unknown = set(raw) - _PROMPT_FIELDS
        if unknown:
            raise SuiteError(
                f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_PROMPT_FIELDS))}"
            )
        mode = raw.get("mode")
        if mode not in (None, "raw", "chat"):
            raise SuiteError(f"{where}: mode must be raw or chat")
        group = raw.get("group", "")
        if not isinstance(group, str):
            raise SuiteError(f'{where}: group must be a string, e.g. group = "control"')
        messages: list[Message] = []
        if not isinstance(raw.get("messages", []), list):
            raise SuiteError(f'{where}: messages must be a list, e.g. messages = [{{ role = "user", content = "…" }}]')
        for number, message in enumerate(raw.get("messages", []), 1):
            if (
                not isinstance(message, dict)
                or message.get("role") not in _ROLES
                or not isinstance(message.get("content"), str)
            ):
                raise SuiteError(f"{where}: message {number} needs role ({'/'.join(_ROLES)}) and content")
            messages.append(Message(message["role"], message["content"]))
        prompt_text = raw.get("text")
        if prompt_text is None and not messages:
            raise SuiteError(f'{where}: needs text = "…" or messages = [...]')
        if prompt_text is not None and (not isinstance(prompt_text, str) or not prompt_text.strip()):
            raise SuiteError(f"{where}: text must be a non-empty string")
        if prompt_text is None:  # raw mode sends the conversation's user turns as plain text
            prompt_text = "\n".join(m.content for m in messages if m.role != "system")
        check_lines = lines.prompt_checks.get(index, [])
        own_checks = tuple(
            parse_check(
                check, f"{_at(path, check_lines, number, prompt_line)}: prompt #{index + 1}, check #{number + 1}"
            )
            for number, check in enumerate(_check_list(raw.get("check"), where, "prompt.check"))
        )
        prompts.append(
            SuitePrompt(
                id=str(raw.get("id", f"prompt-{index + 1}")),
                text=prompt_text,
                messages=tuple(messages),
                mode=mode,
                note=str(raw.get("note", "")),
                checks=suite_checks + own_checks,
                group=group.strip(),
            )
        )
    name, description = str(data.get("name", path.stem)), str(data.get("description", ""))
    return Suite(name, description, tuple(prompts), path, suite_checks, judge)
