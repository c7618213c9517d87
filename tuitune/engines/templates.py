"""GGUF chat templates, rendered with a time and a size budget.

A GGUF's ``tokenizer.chat_template`` is Jinja code written by whoever made the file. jinja2's immutable sandbox
keeps it away from Python's internals but lets it loop for minutes or build a 100 GB string, and
llama-cpp-python's ``Jinja2ChatFormatter`` renders it with no limit at all. This renderer is written here
because none of that can be bolted onto the formatter from outside. It passes the same variables and gives the
same text as that formatter, and adds:

- a time budget (``TIME_LIMIT_S``): during a render, and only in the thread that renders, a trace function
  (``sys.settrace``) checks the clock and the cancel flag at every line of template code and every Python call
  it makes. Every loop body is template code, so no loop escapes the check, whatever it iterates over (a
  checked ``range`` would miss a loop over a list built by a filter). The trace function of the thread is put
  back afterwards.
- a size budget (``MAX_CHARS``): ``+``, ``*``, ``**``, ``%`` and ``~`` are checked before Python computes them
  (``'a' * 10**11`` is refused before it allocates), so are calls and filters that can grow a string
  (``center``, ``indent``, ``replace``, ``join``, ``format``…), and the output is counted as it is produced.
- cancellation: a render in a worker thread stops at its next line once ``should_stop()`` is true; on the main
  thread Ctrl-C still raises KeyboardInterrupt, which is never caught here.

Every failure is a ``TemplateError``: one line naming the model, what went wrong and where, and what to do.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import update_wrapper
from types import FrameType, TracebackType
from typing import Any

from tuitune.errors import TuituneError

TIME_LIMIT_S = 2.0
MAX_CHARS = 1_000_000  # the longest prompt, or any string or list built on the way, a template may produce
MAX_INT_BITS = 100_000  # integers past this are only good for burning time
RAW = "switch to raw mode (--mode raw)"
# llama-cpp-python compiles a GGUF's templates as it loads the model, so a broken one keeps the model from loading.
FIX = "fix it (`gguf-new-metadata --chat-template …` from the gguf package writes a copy) or use another GGUF file"
_TEMPLATE_FILE = "<template>"  # the file name jinja2 gives code compiled from a string
_active = threading.local()  # the budget of the render running in this thread, if any


class TemplateError(TuituneError):
    """A chat template that does not compile, or that failed or was refused while rendering."""


class RenderStopped(TuituneError):
    """The generation was cancelled while its chat template was rendering."""


@dataclass(frozen=True)
class RenderedChat:
    """What llama-cpp-python's formatter returns that tuitune uses: the prompt text (BOS included by the
    template itself) and the stop strings (the EOS text)."""

    prompt: str
    stop: tuple[str, ...]


class _Abort(BaseException):
    """Ends a render from inside it; not an Exception, so no ``except Exception`` in jinja2 can swallow it."""

    def __init__(self, reason: str, line: int | None):
        super().__init__(reason)
        self.reason, self.line = reason, line


class _Raised(Exception):
    """The template called ``raise_exception(message)``."""


class _Budget:
    """The limits of one render, checked by the trace function and by the sandbox's operators."""

    def __init__(self, deadline: float, should_stop: Callable[[], bool] | None, template: Any, time_limit: float):
        self.deadline, self.should_stop, self.template, self.time_limit = deadline, should_stop, template, time_limit

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if self.should_stop is not None and self.should_stop():
            raise _Abort("stopped", None)
        if time.monotonic() > self.deadline:
            raise _Abort(f"ran past its {self.time_limit:g} s budget", self.line(frame))
        return self.trace

    def line(self, frame: FrameType | None) -> int | None:
        """The template line the innermost template frame is on."""
        while frame is not None and frame.f_code.co_filename != _TEMPLATE_FILE:
            frame = frame.f_back
        return self.template.get_corresponding_lineno(frame.f_lineno) if frame is not None else None


def _refuse_if_over(size: int, what: str) -> None:
    if size > MAX_CHARS:
        budget = getattr(_active, "budget", None)
        line = budget.line(sys._getframe(1)) if budget is not None else None
        raise _Abort(f"would build {what} of about {size:,} characters, over the {MAX_CHARS:,} limit", line)


def _weight(value: Any, limit: int = MAX_CHARS) -> int:
    """Roughly how many characters ``value`` prints as; counting stops just past ``limit``."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        else:
            total += 8
    return total


def _big_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_CHARS


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]")
_BRACE_FIELD = re.compile(r"\{[^{}]*\}")


def _widths(numbers: Sequence[str | None], args: Any) -> int:
    star = max((abs(a) for a in (args if isinstance(args, tuple) else (args,)) if isinstance(a, int)), default=0)
    return sum(star if n == "*" else (int(n) if len(n) <= 7 else MAX_CHARS + 1) for n in numbers if n)


def _percent_size(text: str, args: Any) -> int:
    """An upper bound on ``text % args``: the text, the arguments and every field width."""
    numbers = [n for match in _PERCENT_SPEC.finditer(text) for n in match.groups()]
    return len(text) + _weight(args) + _widths(numbers, args)


def _format_size(text: str, args: tuple, kwargs: Mapping[str, Any]) -> int:
    """An upper bound on ``text.format(*args, **kwargs)``."""
    numbers = [n for field in _BRACE_FIELD.findall(text) for n in re.findall(r"\d+", field)]
    return len(text) + _weight(args) + _weight(dict(kwargs)) + _widths(numbers, ())


def _grown_size(text: str, method: str, args: tuple, kwargs: Mapping[str, Any]) -> int:
    """An upper bound on what the string method (or filter) ``method`` makes of ``text``; 0 if it cannot grow."""
    if method == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        old, new = args[0], args[1]
        count = len(text) + 1 if not old else text.count(old)
        return len(text) + count * max(0, len(new) - len(old))
    if method == "join" and args:
        return _weight(args[0]) + len(text) * max(0, len(args[0]) - 1)
    if method in ("format", "format_map"):
        return _format_size(text, args, kwargs)
    if method == "expandtabs" and args and isinstance(args[0], int):
        return len(text) + text.count("\t") * args[0]
    if method == "translate" and args and isinstance(args[0], dict):
        return len(text) * max((_weight(v) for v in args[0].values()), default=1)
    if method == "indent":
        width = kwargs.get("width", args[0] if args else 4)
        pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        return len(text) + (text.count("\n") + 1) * pad
    return 0


def _check_args(name: str, args: tuple, kwargs: Mapping[str, Any]) -> None:
    if any(_big_int(a) for a in (*args, *kwargs.values())):
        _refuse_if_over(MAX_CHARS + 1, f"a string with {name}()")


def _check_result(name: str, result: Any) -> Any:
    if isinstance(result, str | list | tuple):
        _refuse_if_over(len(result), f"a value with {name}()")
    return result


def _materialize(args: tuple) -> tuple:
    """A join over a generator is measured on a list, and then joins that list (a generator runs once)."""
    if args and not isinstance(args[0], str | list | tuple | dict):
        return (list(args[0]), *args[1:])
    return args


def _checked_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a jinja2 filter so that it cannot grow a string past the budget."""
    from jinja2 import Environment
    from jinja2.nodes import EvalContext
    from jinja2.runtime import Context

    def checked(*args: Any, **kwargs: Any) -> Any:
        lead = 0
        while lead < len(args) and isinstance(args[lead], Context | EvalContext | Environment):
            lead += 1
        if lead < len(args):
            value, rest = args[lead], args[lead + 1 :]
            _check_args(name, rest, kwargs)
            if name == "join":
                (value,) = _materialize((value,))
                args = (*args[:lead], value, *rest)
                _refuse_if_over(
                    _grown_size(str(kwargs.get("d", rest[0] if rest else "")), "join", (value,), {}), "a join"
                )
            elif name == "format" and isinstance(value, str):
                _refuse_if_over(_percent_size(value, rest or kwargs), "a formatted string")
            elif isinstance(value, str):
                _refuse_if_over(_grown_size(value, name, rest, kwargs), f"a string with |{name}")
        return _check_result(f"|{name}", function(*args, **kwargs))

    return update_wrapper(checked, function)  # keeps jinja2's pass_context/pass_eval_context marks


def _sandbox() -> Any:
    """A jinja2 ImmutableSandboxedEnvironment whose operators, calls and filters are held to the budget."""
    import jinja2
    import jinja2.ext
    from jinja2.compiler import CodeGenerator
    from jinja2.runtime import markup_join, str_join
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class SkipGenerationTags(jinja2.ext.Extension):
        """Hugging Face's ``{% generation %}…{% endgeneration %}`` marks trained text; rendering ignores it."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    class CheckedConcat(CodeGenerator):
        """Compiles ``a ~ b`` to a size-checked join instead of jinja2's plain one."""

        def visit_Concat(self, node: Any, frame: Any) -> None:
            self.write("environment.checked_concat(context, (")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    class BudgetSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"+", "*", "**", "%"})
        code_generator_class = CheckedConcat

        def __init__(self) -> None:
            super().__init__(
                loader=jinja2.BaseLoader(),
                trim_blocks=True,
                lstrip_blocks=True,
                extensions=[SkipGenerationTags, jinja2.ext.loopcontrols],  # as Hugging Face's chat templates
            )
            self.filters["tojson"] = _tojson
            self.filters = {name: _checked_filter(name, f) for name, f in self.filters.items()}

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _check_binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

        def checked_concat(self, context: Any, parts: tuple) -> str:
            _refuse_if_over(sum(_weight(p) for p in parts), "a string with ~")
            return (markup_join if context.eval_ctx.autoescape else str_join)(parts)

        def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
            name = getattr(obj, "__name__", "a function")
            owner = getattr(obj, "__self__", getattr(getattr(obj, "__wrapped__", None), "__self__", None))
            _check_args(name, args, kwargs)
            if isinstance(owner, str):
                if name == "join":
                    args = _materialize(args)
                _refuse_if_over(_grown_size(owner, name, args, kwargs), f"a string with .{name}()")
            return _check_result(name, super().call(context, obj, *args, **kwargs))

    return BudgetSandbox()


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too big, before Python allocates it."""
    sized = (str, list, tuple)
    if operator == "+" and isinstance(left, sized) and isinstance(right, sized):
        _refuse_if_over(_weight(left) + _weight(right), "a value with +")
    elif operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, sized) and isinstance(times, int):
                _refuse_if_over(_weight(seq) * max(times, 0), "a value with *")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            _refuse_if_over(MAX_CHARS + 1, "an integer with *")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        if right * left.bit_length() > MAX_INT_BITS:
            _refuse_if_over(MAX_CHARS + 1, "an integer with **")
    elif operator == "%" and isinstance(left, str):
        _refuse_if_over(_percent_size(left, right), "a string with %")


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    """Hugging Face's ``tojson``: no HTML escaping, non-ASCII kept (jinja2's own escapes both)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: Any) -> None:
    raise _Raised(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _traceback_line(tb: TracebackType | None) -> int | None:
    """The template line of the innermost template frame (jinja2 has rewritten the traceback to template lines)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILE:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class ChatTemplate:
    """One compiled chat template of one model; ``render`` may run in any single thread at a time."""

    def __init__(self, source: str, model: str, bos_token: str = "", eos_token: str = ""):
        self.model, self.bos_token, self.eos_token = model, bos_token, eos_token
        with compile_errors(model):
            self._compiled = _sandbox().from_string(source)

    def render(
        self,
        messages: Sequence[Any],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict] | None = None,
        should_stop: Callable[[], bool] | None = None,
        time_limit: float = TIME_LIMIT_S,
    ) -> RenderedChat:
        """The prompt for ``messages`` (``Message`` objects or role/content dicts), within the budget.

        ``should_stop`` is polled at every line: once it is true the render ends with ``RenderStopped``.
        """
        variables = {
            "messages": [m if isinstance(m, Mapping) else {"role": m.role, "content": m.content} for m in messages],
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "add_generation_prompt": add_generation_prompt,
            "raise_exception": _raise_exception,
            "strftime_now": _strftime_now,
            "tools": tools,
            "functions": None,  # defined but empty, as llama-cpp-python passes them (`is defined` tests agree)
            "function_call": None,
            "tool_choice": None,
        }
        budget = _Budget(time.monotonic() + time_limit, should_stop, self._compiled, time_limit)
        pieces: list[str] = []
        size = 0
        previous = sys.gettrace()
        _active.budget = budget
        sys.settrace(budget.trace)
        try:
            for piece in self._compiled.generate(**variables):
                size += len(piece)
                if size > MAX_CHARS:
                    raise _Abort(f"produced more than {MAX_CHARS:,} characters", None)
                pieces.append(piece)
        except _Abort as abort:
            if abort.reason == "stopped":
                raise RenderStopped(f"rendering {self.model}'s chat template was stopped") from None
            where = f" (line {abort.line})" if abort.line else ""
            raise TemplateError(f"{self.model}'s chat template {abort.reason}{where}; {RAW}") from None
        except _Raised as raised:
            raise TemplateError(
                f"{self.model}'s chat template refused the conversation: {_one_line(str(raised)) or 'no reason given'}"
                f"; change the conversation, or {RAW}"
            ) from None
        except Exception as error:
            line = _traceback_line(error.__traceback__)
            reason = _one_line(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
            raise TemplateError(
                f"{self.model}'s chat template failed{f' on line {line}' if line else ''}: {reason}; {RAW}"
            ) from None
        finally:
            sys.settrace(previous)
            _active.budget = None
        return RenderedChat("".join(pieces), (self.eos_token,))


@contextmanager
def compile_errors(model: str) -> Iterator[None]:
    """A template that does not compile, here or inside ``llama_cpp.Llama()``, becomes a one-line TemplateError."""
    import jinja2

    try:
        yield
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(
            f"{model}'s chat template does not compile: {_one_line(error.message or 'syntax error')} "
            f"on line {error.lineno}; {FIX}"
        ) from None
    except jinja2.TemplateError as error:
        raise TemplateError(f"{model}'s chat template does not compile: {_one_line(str(error))}; {FIX}") from None


def model_chat_template(llm: Any, model: str, source: str | None = None) -> ChatTemplate | None:
    """The compiled chat template of a loaded ``llama_cpp.Llama`` (``source`` replaces the GGUF's), or None."""
    source = source if source is not None else llm.metadata.get("tokenizer.chat_template")
    if not source:
        return None
    eos, bos = llm.token_eos(), llm.token_bos()
    text = llm._model.token_get_text
    return ChatTemplate(
        source, model, bos_token=text(bos) if bos != -1 else "", eos_token=text(eos) if eos != -1 else ""
    )
