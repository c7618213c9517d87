"""Training datasets: load the formats people already have, and check a file before any training starts.

Three formats are accepted, detected per example: OpenAI chat JSONL (``{"messages": [...]}`` with an optional
per-message ``weight``), legacy prompt/completion JSONL, and alpaca (``instruction``/``input``/``output``) as
JSONL or as one JSON array. A run that fails after ten minutes on line 4,812 wastes the ten minutes, so
``check_dataset`` reports every problem with its line number up front, and ``load_examples`` refuses the
first one with the file, the line and what to do.

Standard library only: the checker runs in the CLI and the TUI without torch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tuitune.engines.base import Message
from tuitune.errors import DatasetError
from tuitune.untrusted import LimitError, json_decode, json_loads

ROLES = ("system", "user", "assistant")
MIN_EXAMPLES = 10  # OpenAI's fine-tuning API refuses fewer; a handful of examples teaches nothing reliable
CHARS_PER_TOKEN = 4  # the usual rough estimate for English text when no tokenizer is given
TEMPLATE_TOKENS_PER_MESSAGE = 4  # role markers and separators a chat template adds around each message

Format = Literal["chat", "completion", "alpaca"]
Severity = Literal["error", "warning"]
FORMAT_NAMES: dict[str, str] = {"chat": "OpenAI chat", "completion": "prompt/completion", "alpaca": "alpaca"}
_KEYS: dict[str, set[str]] = {
    "chat": {"messages"},
    "completion": {"prompt", "completion"},
    "alpaca": {"instruction", "input", "output"},
}
_MESSAGE_KEYS = {"role", "content", "weight"}
_CHAT_EXAMPLE = '{"messages": [{"role": "user", "content": "…"}, {"role": "assistant", "content": "…"}]}'
_WHITESPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class Example:
    """One training example, normalized: chat and alpaca as messages, prompt/completion kept as raw text."""

    line: int  # where the example starts in its file (1-based)
    messages: list[Message] | None
    prompt: str | None
    completion: str | None
    weights: list[int] | None  # one per message (1 = trained) when any message sets "weight"; else None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset; ``line`` is None for the file as a whole."""

    line: int | None
    message: str  # what is wrong; what to do
    severity: Severity = "error"

    def text(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        label = "warning: " if self.severity == "warning" else ""
        return f"{where}: {label}{self.message}"


@dataclass
class DatasetReport:
    """Everything ``tuitune data check`` prints: the problems, then what one epoch costs."""

    path: Path
    max_length: int
    format: str | None = None  # e.g. "OpenAI chat JSONL"
    examples: int = 0  # valid examples
    trained_replies: int = 0  # sequences the trainer builds: one per trained assistant reply
    total_tokens: int = 0  # context + reply tokens over all sequences, before any cut
    trained_tokens: int = 0  # reply tokens that carry loss, after cuts
    tokens_per_epoch: int = 0  # tokens the model reads in one epoch, after cuts
    file_tokens: int = 0  # every example's tokens once, from characters: what a fine-tuning service bills per epoch
    estimated: bool = True  # counts come from characters / 4, not from the model's tokenizer
    tokens_per_second: float | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when training can start: warnings (duplicates, too long) are allowed."""
        return not self.errors

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "warning"]

    @property
    def seconds_per_epoch(self) -> float | None:
        if not self.tokens_per_second:
            return None
        return self.tokens_per_epoch / self.tokens_per_second

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "ok": self.ok,
            "examples": self.examples,
            "trained_replies": self.trained_replies,
            "total_tokens": self.total_tokens,
            "trained_tokens": self.trained_tokens,
            "tokens_per_epoch": self.tokens_per_epoch,
            "file_tokens": self.file_tokens,
            "max_length": self.max_length,
            "estimated": self.estimated,
            "tokens_per_second": self.tokens_per_second,
            "seconds_per_epoch": self.seconds_per_epoch,
            "problems": [
                {"line": problem.line, "severity": problem.severity, "message": problem.message}
                for problem in self.problems
            ],
        }

    def format_text(self) -> str:
        """The human report, ready to print: a summary, then one problem per line, then the verdict."""
        note = " (estimated from characters; --base MODEL counts with the model's tokenizer)" if self.estimated else ""
        if self.seconds_per_epoch is not None:
            timing = f"≈ {_duration(self.seconds_per_epoch)} at {self.tokens_per_second:,.0f} tokens/s"
        else:
            timing = "unknown (--base MODEL estimates it for this machine)"
        lines = [f"{self.path}: {self.format or 'no examples read'}"]
        if self.format is not None:
            lines += [
                f"  examples          {self.examples:,}",
                f"  trained replies   {self.trained_replies:,}",
                f"  tokens            {self.total_tokens:,}{note}",
                f"  trained tokens    {self.trained_tokens:,} (replies only; the context is masked)",
                f"  tokens per epoch  {self.tokens_per_epoch:,} (max length {self.max_length:,})",
                f"  tokens in file    {self.file_tokens:,} (each example once: what a service bills per epoch)",
                f"  time per epoch    {timing}",
            ]
        errors, warnings = len(self.errors), len(self.warnings)
        if self.problems:
            lines.append("")
            lines.extend(problem.text() for problem in self.problems)
            lines.append("")
        counted = f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"
        if errors:
            lines.append(f"not ready: {counted}; fix the errors above and check again")
        else:
            lines.append(f"ok: {counted}" if warnings else "ok: no problems")
        return "\n".join(lines)


# -- public API --------------------------------------------------------------------------------------------


def load_examples(path: Path) -> list[Example]:
    """Every example of ``path``, or ``DatasetError`` on the first error (warnings do not stop training)."""
    path = Path(path)
    scan = _Scan(path)
    examples = []
    for item in scan:
        if isinstance(item, Problem):
            if item.severity == "error":
                raise DatasetError(_located(path, item))
        else:
            examples.append(item)
    few = _too_few(examples, scan)
    if few is not None:
        raise DatasetError(_located(path, few))
    return examples


def check_dataset(
    path: Path,
    max_length: int = 1024,
    count_tokens: Callable[[Example], list[tuple[int, int]]] | None = None,
    tokens_per_second: float | None = None,
) -> DatasetReport:
    """Every problem of ``path`` with its line, and the token counts of one epoch.

    ``count_tokens(example)`` gives (prompt tokens, reply tokens) per trained reply, as the trainer will build
    them; without it, tokens are estimated from characters.
    """
    path = Path(path)
    report = DatasetReport(
        path=path, max_length=max_length, estimated=count_tokens is None, tokens_per_second=tokens_per_second
    )
    scan = _Scan(path)
    seen: dict[str, int] = {}
    examples: list[Example] = []
    for item in scan:
        if isinstance(item, Problem):
            report.problems.append(item)
            continue
        key = _identity(item)
        if key in seen:
            report.problems.append(
                Problem(item.line, f"same example as line {seen[key]}; remove one (a copy trains it twice)", "warning")
            )
        else:
            seen[key] = item.line
        try:
            sequences = count_tokens(item) if count_tokens is not None else _estimate_tokens(item)
        except Exception as error:  # the model's chat template may refuse a conversation (e.g. roles must alternate)
            report.problems.append(
                Problem(item.line, f"the model cannot format this example ({error}); change the conversation")
            )
            continue
        examples.append(item)
        report.file_tokens += example_tokens(item)
        long = _length_problem(item.line, sequences, max_length, report.estimated)
        if long is not None:
            report.problems.append(long)
        for prompt_tokens, reply_tokens in sequences:
            context, trained = _fit(prompt_tokens, reply_tokens, max_length)
            report.total_tokens += prompt_tokens + reply_tokens
            if trained > 0:
                report.trained_replies += 1
                report.trained_tokens += trained
                report.tokens_per_epoch += context + trained
    report.examples = len(examples)
    if scan.format is not None:
        report.format = f"{FORMAT_NAMES[scan.format]} {'JSON array' if scan.array else 'JSONL'}"
    few = _too_few(examples, scan)
    if few is not None:
        report.problems.append(few)
    return report


# -- reading -----------------------------------------------------------------------------------------------


class _Scan:
    """Iterates a dataset file in order, yielding each valid ``Example`` and each ``Problem`` as it is found.

    After iteration, ``format`` is the file's format (that of its first example) and ``array`` whether the file
    was one JSON array rather than JSONL.
    """

    def __init__(self, path: Path):
        self.path = path
        self.format: str | None = None
        self.format_line = 0
        self.array = False
        self.read_error = False  # the file could not be read at all: no "too few examples" on top

    def __iter__(self) -> Iterator[Example | Problem]:
        text = _read_text(self.path)
        if isinstance(text, Problem):
            self.read_error = True
            yield text
            return
        self.array = text.lstrip().startswith("[")
        records = _array_records(text) if self.array else _jsonl_records(text)
        for record in records:
            if isinstance(record, Problem):
                yield record
                continue
            line, value = record
            yield from self._example(line, value)

    def _example(self, line: int, value: Any) -> Iterator[Example | Problem]:
        if not isinstance(value, dict):
            yield Problem(line, f"each example must be a JSON object, not {_json_type(value)}; write {_CHAT_EXAMPLE}")
            return
        kind = _detect(value)
        if kind is None:
            keys = ", ".join(sorted(value)) or "none"
            yield Problem(
                line,
                f'unknown format (keys: {keys}); use "messages" (OpenAI chat), "prompt" + "completion", '
                'or "instruction" + "output" (alpaca)',
            )
            return
        if self.format is None:
            self.format, self.format_line = kind, line
        elif kind != self.format:
            yield Problem(
                line,
                f"a {FORMAT_NAMES[kind]} example in a file of {FORMAT_NAMES[self.format]} examples "
                f"(line {self.format_line}); keep one format per file: convert this example or move it to its own file",
            )
            return
        problems: list[Problem] = []
        unknown = set(value) - _KEYS[kind]
        if unknown:
            problems.append(
                Problem(
                    line,
                    f"unknown key(s) {_names(unknown)}; {FORMAT_NAMES[kind]} examples allow only {_names(_KEYS[kind])}",
                )
            )
        parse = {"chat": _parse_chat, "completion": _parse_completion, "alpaca": _parse_alpaca}[kind]
        example = parse(line, value, problems)
        yield from problems
        if not problems and example is not None:
            yield example


def _read_text(path: Path) -> str | Problem:
    """The file's text, or the one problem that stops it from being read (missing, directory, not UTF-8, empty)."""
    if path.is_dir():
        return Problem(None, "is a directory, not a dataset file; give the .jsonl or .json file inside it")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Problem(None, "no such file; check the path")
    except OSError as error:
        return Problem(None, f"cannot read the file ({error.strerror}); check its permissions")
    data = data.removeprefix(b"\xef\xbb\xbf")  # a BOM, as some Windows editors write it
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        return Problem(
            line,
            f"not UTF-8 text (byte 0x{data[error.start]:02x} at column {column}); "
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE)",
        )
    if not text.strip():
        return Problem(None, f"the file is empty; add at least {MIN_EXAMPLES} examples, one JSON object per line")
    return text


def _jsonl_records(text: str) -> Iterator[tuple[int, Any] | Problem]:
    """(line, value) for each non-blank line; a Problem for each line that is not valid JSON."""
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            yield number, json_loads(raw)
        except LimitError as error:
            yield Problem(number, f"{error}; an example needs only a few levels and plain numbers: fix this line")
        except json.JSONDecodeError as error:
            hint = "each line of a JSONL file must be one complete JSON object"
            if raw.strip() in ("{", "["):
                hint = "JSONL needs each example on one line: pretty-printed JSON objects spanning lines don't work"
            yield Problem(number, f"invalid JSON ({error.msg}, column {error.colno}); {hint}")


def _array_records(text: str) -> Iterator[tuple[int, Any] | Problem]:
    """(line where it starts, value) for each element of a JSON array; stops at the first syntax error."""
    counted_to, line = 0, 1

    def line_at(position: int) -> int:
        nonlocal counted_to, line
        line += text.count("\n", counted_to, position)
        counted_to = position
        return line

    position = _WHITESPACE.match(text, text.index("[") + 1).end()
    if text.startswith("]", position):
        position += 1
    else:
        while True:
            start = position
            try:
                value, position = json_decode(text, position)
            except json.JSONDecodeError as error:
                yield Problem(
                    error.lineno, f"invalid JSON ({error.msg}, column {error.colno}); fix the syntax of the array"
                )
                return
            except LimitError as error:
                yield Problem(line_at(start), f"{error}; an example needs only a few levels and plain numbers: fix it")
                return
            yield line_at(start), value
            position = _WHITESPACE.match(text, position).end()
            if text.startswith(",", position):
                position = _WHITESPACE.match(text, position + 1).end()
                continue
            if text.startswith("]", position):
                position += 1
                break
            yield Problem(line_at(position), "invalid JSON (expected ',' or ']' after an example); fix the array")
            return
    if text[position:].strip():
        after = _WHITESPACE.match(text, position).end()
        yield Problem(line_at(after), "text after the closing ']' of the array; remove it")


# -- parsing one example -----------------------------------------------------------------------------------


def _detect(value: dict[str, Any]) -> str | None:
    if "messages" in value:
        return "chat"
    if "instruction" in value or "output" in value:
        return "alpaca"
    if "prompt" in value or "completion" in value:
        return "completion"
    return None


def _parse_chat(line: int, value: dict[str, Any], problems: list[Problem]) -> Example | None:
    raw = value["messages"]
    if not isinstance(raw, list) or not raw:
        problems.append(Problem(line, f'"messages" must be a non-empty list; write {_CHAT_EXAMPLE}'))
        return None
    messages: list[Message] = []
    weights: list[int] = []
    weighted = False
    for number, message in enumerate(raw, 1):
        where = f"message {number}"
        if not isinstance(message, dict):
            problems.append(Problem(line, f'{where} is {_json_type(message)}; write {{"role": …, "content": …}}'))
            continue
        unknown = set(message) - _MESSAGE_KEYS
        if unknown:
            problems.append(
                Problem(line, f"{where}: unknown key(s) {_names(unknown)}; allowed: {_names(_MESSAGE_KEYS)}")
            )
        role = message.get("role")
        if "role" not in message:
            problems.append(Problem(line, f'{where}: missing "role"; use one of {", ".join(ROLES)}'))
        elif role not in ROLES:
            problems.append(Problem(line, f"{where}: bad role {json.dumps(role)}; use one of {', '.join(ROLES)}"))
        content = _text_field(message, "content", f"{where}", line, problems)
        weight = 1 if role == "assistant" else 0
        if "weight" in message:
            weighted = True
            if type(message["weight"]) is not int or message["weight"] not in (0, 1):
                problems.append(
                    Problem(line, f'{where}: "weight" must be 0 or 1 (0 = not trained), not {message["weight"]!r}')
                )
            elif role != "assistant":
                problems.append(
                    Problem(
                        line,
                        f'{where}: "weight" applies only to assistant messages; remove it from this {role} message',
                    )
                )
            else:
                weight = message["weight"]
        if isinstance(role, str) and content is not None:
            messages.append(Message(role, content))
            weights.append(weight)
    if problems:
        return None
    if not any(message.role == "assistant" for message in messages):
        problems.append(Problem(line, "no assistant turn: nothing to learn; add the reply as an assistant message"))
        return None
    if not any(weights):
        problems.append(Problem(line, 'every assistant message has "weight": 0, so nothing is trained; set one to 1'))
        return None
    return Example(line, messages, None, None, weights if weighted else None)


def _parse_completion(line: int, value: dict[str, Any], problems: list[Problem]) -> Example | None:
    prompt = _text_field(value, "prompt", "", line, problems, allow_empty=True)
    completion = _text_field(value, "completion", "", line, problems)
    if problems or prompt is None or completion is None:
        return None
    return Example(line, None, prompt, completion, None)


def _parse_alpaca(line: int, value: dict[str, Any], problems: list[Problem]) -> Example | None:
    instruction = _text_field(value, "instruction", "", line, problems)
    output = _text_field(value, "output", "", line, problems)
    extra = ""
    if "input" in value:
        extra = _text_field(value, "input", "", line, problems, allow_empty=True) or ""
    if problems or instruction is None or output is None:
        return None
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return Example(line, [Message("user", user), Message("assistant", output)], None, None, None)


def _text_field(
    value: dict[str, Any], key: str, where: str, line: int, problems: list[Problem], allow_empty: bool = False
) -> str | None:
    """``value[key]`` when it is a usable string; otherwise record why not and return None."""
    prefix = f"{where}: " if where else ""
    if key not in value or value[key] is None:
        problems.append(Problem(line, f'{prefix}missing "{key}"; add it as a string'))
        return None
    text = value[key]
    if not isinstance(text, str):
        problems.append(Problem(line, f'{prefix}"{key}" must be a string, not {_json_type(text)}'))
        return None
    if not allow_empty and not text.strip():
        problems.append(Problem(line, f'{prefix}empty "{key}"; write the text'))
        return None
    return text


# -- checks ------------------------------------------------------------------------------------------------


def _too_few(examples: list[Example], scan: _Scan) -> Problem | None:
    if len(examples) >= MIN_EXAMPLES or scan.read_error:
        return None
    return Problem(
        None,
        f"only {_plural(len(examples), 'valid example')}; at least {MIN_EXAMPLES} are needed (the OpenAI rule), "
        "and a few dozen teach much more reliably: add examples",
    )


def _identity(example: Example) -> str:
    """A key equal for exact duplicates."""
    messages = [[m.role, m.content] for m in example.messages] if example.messages is not None else None
    return json.dumps([messages, example.weights, example.prompt, example.completion], ensure_ascii=False)


def _approx_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def example_tokens(example: Example) -> int:
    """An example's tokens counted once, every message with its role markers (estimated from characters): what
    a fine-tuning service bills per epoch, unlike the trainer's sequences, which repeat a conversation's context."""
    if example.messages is None:
        return _approx_tokens(example.prompt or "") + _approx_tokens(example.completion or "") + 2
    return sum(_approx_tokens(message.content) + TEMPLATE_TOKENS_PER_MESSAGE for message in example.messages)


def _estimate_tokens(example: Example) -> list[tuple[int, int]]:
    """(prompt, reply) token estimates per trained reply, mirroring how the trainer builds its sequences."""
    if example.messages is None:
        return [(_approx_tokens(example.prompt or "") + 1, _approx_tokens(example.completion or "") + 1)]
    weights = example.weights or [1] * len(example.messages)
    result = []
    context = 0
    for message, weight in zip(example.messages, weights, strict=True):
        if message.role == "assistant" and weight:
            result.append((context + TEMPLATE_TOKENS_PER_MESSAGE, _approx_tokens(message.content) + 1))
        context += _approx_tokens(message.content) + TEMPLATE_TOKENS_PER_MESSAGE
    return result


def _fit(prompt_tokens: int, reply_tokens: int, max_length: int) -> tuple[int, int]:
    """(context tokens, trained reply tokens) left after the trainer's cut (see ``formatting.fit_to_length``):
    the oldest context goes first, then the end of the reply; a reply whose context fills max_length is dropped."""
    excess = prompt_tokens + reply_tokens - max_length
    if excess <= 0:
        return prompt_tokens, reply_tokens
    if excess < prompt_tokens:
        return prompt_tokens - excess, reply_tokens
    if prompt_tokens >= max_length:
        return 0, 0
    return prompt_tokens, max_length - prompt_tokens


def _length_problem(line: int, sequences: list[tuple[int, int]], max_length: int, estimated: bool) -> Problem | None:
    """A warning naming how many tokens would be cut from an example longer than max_length."""
    over = [(prompt, reply) for prompt, reply in sequences if prompt + reply > max_length]
    if not over:
        return None
    approx = "≈ " if estimated else ""
    context_cut = reply_cut = dropped = 0
    for prompt, reply in over:
        context, trained = _fit(prompt, reply, max_length)
        if trained == 0:
            dropped += 1
            continue
        context_cut += prompt - context
        reply_cut += reply - trained
    parts = []
    if context_cut:
        parts.append(f"{approx}{context_cut:,} context tokens would be cut")
    if reply_cut:
        parts.append(f"{approx}{reply_cut:,} reply tokens would be cut")
    if dropped:
        them = "it" if dropped == 1 else "them"
        parts.append(f"{_plural(dropped, 'reply')} would not be trained (the context before {them} fills max length)")
    longest = max(prompt + reply for prompt, reply in over)
    return Problem(
        line,
        f"{approx}{longest:,} tokens, longer than max length {max_length:,}: {' and '.join(parts)}; "
        "raise --max-length or shorten the example",
        "warning",
    )


# -- wording -----------------------------------------------------------------------------------------------


def _located(path: Path, problem: Problem) -> str:
    where = f"{path}, line {problem.line}" if problem.line is not None else str(path)
    return f"{where}: {problem.message}"


def _names(keys: set[str]) -> str:
    return ", ".join(f'"{key}"' for key in sorted(keys))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _plural(count: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    return f"{count:,} {noun if count == 1 else plural}"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "< 1 s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest:02d} s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min"
