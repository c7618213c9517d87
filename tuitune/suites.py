"""Prompt suites: a TOML list of prompts run on every model (``suites/why-finetune.toml``).

A prompt is either ``text`` (sent raw, or wrapped as one user message in chat mode) or ``messages``;
an optional ``mode`` pins it to raw or chat whatever mode the run uses.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from tuitune.engines.base import Message
from tuitune.errors import SuiteError

_PROMPT_FIELDS = {"id", "text", "messages", "mode", "note"}
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class SuitePrompt:
    id: str
    text: str
    messages: tuple[Message, ...] = ()
    mode: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    prompts: tuple[SuitePrompt, ...]
    path: Path


def _prompt_lines(text: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1) if line.strip().replace(" ", "") == "[[prompt]]"]


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SuiteError(f"cannot read suite {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SuiteError(f"{path}: TOML syntax error: {error}") from None
    raw_prompts = data.get("prompt")
    if not isinstance(raw_prompts, list) or not raw_prompts:
        raise SuiteError(f'{path}: no prompts; add [[prompt]] tables with text = "…"')
    lines = _prompt_lines(text)
    prompts: list[SuitePrompt] = []
    for index, raw in enumerate(raw_prompts):
        where = f"{path}{f', line {lines[index]}' if index < len(lines) else ''}: prompt #{index + 1}"
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
        messages: list[Message] = []
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
        prompts.append(
            SuitePrompt(
                id=str(raw.get("id", f"prompt-{index + 1}")),
                text=prompt_text,
                messages=tuple(messages),
                mode=mode,
                note=str(raw.get("note", "")),
            )
        )
    return Suite(str(data.get("name", path.stem)), str(data.get("description", "")), tuple(prompts), path)
