"""`tuitune chat` (one answer, or a REPL) and `tuitune compare` (the same prompt on several models)."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tuitune.cli.common import (
    Style,
    TokenProgress,
    invalid_utf8,
    sampling_from,
    split_models,
    stream_in_thread,
    warn,
)
from tuitune.errors import TuituneError
from tuitune.safe_text import inert

EMPTY_RAW_PROMPT = "the PROMPT is empty: raw mode continues the text you give, so give some (or use --mode chat)"


def print_result(result, out: TextIO, style: Style) -> None:
    """One model's answer under its name; a stream cut by an error keeps what it had, marked as cut."""
    title = f"── {inert(result.model)} · {result.mode} "
    print(style.bold(title + "─" * max(3, 72 - len(title))), file=out)
    for notice in result.notices:
        print(style.dim(f"note: {inert(notice)}"), file=out)
    text = inert(result.text.strip("\n"))
    if result.error and not text:
        print(f"error: {inert(result.error)}", file=out)
    elif result.error:
        print(text, file=out)
        print(f"[answer cut: {inert(result.error)}]", file=out)
    else:
        print(text or style.dim("(empty answer)"), file=out)
        print(style.dim(result.stats.summary(with_prompt=True)), file=out)
    print(file=out)


def cmd_compare(args: argparse.Namespace) -> int:
    from tuitune.compare import Prompt, run_comparisons
    from tuitune.safe_text import safe_json

    models = split_models(args.models)
    if not models:
        raise TuituneError("compare needs --models A,B (see `tuitune models`)")
    if len(models) > 4:
        raise TuituneError(f"compare takes at most 4 models, got {len(models)}")
    if args.suite and args.prompt is not None:
        raise TuituneError("give either a PROMPT or --suite FILE, not both")
    suite = None
    if args.suite:
        from tuitune.suites import load_suite

        suite = load_suite(args.suite)
        prompts = [Prompt(p.text, p.messages, p.mode, p.id) for p in suite.prompts]  # type: ignore[arg-type]
    elif args.prompt:
        prompts = [Prompt(args.prompt)]
    elif args.prompt == "":
        raise TuituneError("the PROMPT is empty: give some text to compare the models on")
    else:
        raise TuituneError("compare needs a PROMPT or --suite FILE")
    sampling = sampling_from(args)
    with TokenProgress(models) as progress:
        comparisons = run_comparisons(
            prompts, models, mode=args.mode, sampling=sampling, system=args.system,
            n_ctx=args.ctx, on_chunk=progress.chunk, adapter_scale=args.adapter_scale, gpu_layers=args.gpu_layers,
        )  # fmt: skip
    errors = {r.model: r.error for c in comparisons for r in c.results if r.error}
    if args.json:
        if suite is None:
            print(safe_json(comparisons[0].as_json(), indent=2))
        else:
            payload = {"suite": suite.name, "comparisons": [c.as_json() for c in comparisons]}
            print(safe_json(payload, indent=2))
    else:
        style = Style(sys.stdout)
        for comparison in comparisons:
            print(style.bold(f"▌ {inert(comparison.prompt.text.strip())}"))
            print()
            for result in comparison.results:
                print_result(result, sys.stdout, style)
        sys.stdout.flush()  # the answers first, then which model failed
    for model, error in errors.items():
        warn(f"{model}: {error}")
    return 1 if errors else 0


def _open_for_chat(args: argparse.Namespace):
    from tuitune.engines import open_engine, resolve_model

    model = resolve_model(args.model)
    if args.adapter_scale is not None and (model.entry is None or not model.entry.has_adapter):
        raise TuituneError(f"--adapter-scale sets a finetuned (LoRA) model's strength; '{model.id}' is not one")
    if args.prompt == "" and (args.mode or model.default_mode) == "raw":
        raise TuituneError(EMPTY_RAW_PROMPT)  # before the model loads, when the mode is known already
    scale = 1.0 if args.adapter_scale is None else args.adapter_scale
    engine = open_engine(model, n_ctx=args.ctx, adapter_scale=scale, gpu_layers=args.gpu_layers)
    mode = args.mode or model.default_mode or ("chat" if engine.has_chat_template else "raw")
    return model, engine, mode


def cmd_chat(args: argparse.Namespace) -> int:
    from tuitune.compare import Prompt, Result, build_request
    from tuitune.safe_text import safe_json

    sampling = sampling_from(args)
    model, engine, mode = _open_for_chat(args)
    interrupted = False
    try:
        if args.prompt is None:
            return _repl(engine, model.id, mode, sampling, args.system)
        if args.prompt == "" and mode == "raw":
            raise TuituneError(EMPTY_RAW_PROMPT)  # llama.cpp asserts on a prompt of no tokens
        generation = engine.generate(build_request(Prompt(args.prompt), mode, sampling, args.system))
        if args.json:
            for _ in stream_in_thread(generation):
                pass
            result = Result(model.id, mode, generation.text, generation.stats, list(generation.notices),
                            backend=getattr(engine, "backend", None))  # fmt: skip
            print(safe_json(result.as_json(), indent=2))
            return 0
        style = Style(sys.stderr)
        for chunk in stream_in_thread(generation):
            sys.stdout.write(inert(chunk))
            sys.stdout.flush()
        sys.stdout.write("\n")
        for notice in generation.notices:
            print(style.dim(f"note: {inert(notice)}"), file=sys.stderr)
        print(style.dim(generation.stats.summary(with_prompt=True)), file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        interrupted = True  # the worker may still be inside llama.cpp: freeing the model under it would crash
        raise
    finally:
        if not interrupted:
            engine.close()


REPL_HELP = """commands: /reset (forget the conversation)  /system TEXT  /mode raw|chat  /exit (or Ctrl-D)
Ctrl-C stops an answer."""


def _read_line(prompt: str) -> str | None:
    """One REPL line, None at the end of input (Ctrl-D) or on Ctrl-C at the prompt."""
    try:
        return input(prompt)
    except (EOFError, KeyboardInterrupt):
        print()
        return None


def _tolerate_invalid_stdin() -> None:
    """Read stdin with surrogateescape, so bytes that are not UTF-8 reach the check instead of crashing input()."""
    reconfigure = getattr(sys.stdin, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")


def _repl(engine, model_id: str, mode: str, sampling, system: str | None) -> int:
    """Chat line by line. A line that is not UTF-8 is refused and not sent; it makes the exit status 1."""
    from tuitune.engines.base import Message, Request

    _tolerate_invalid_stdin()
    style = Style(sys.stdout)
    history: list[Message] = []
    refused = False
    print(style.dim(f"{inert(model_id)} · {mode} mode · {REPL_HELP}"))
    while True:
        line = _read_line(style.bold("you› "))
        if line is None:
            return 1 if refused else 0
        problem = invalid_utf8(line)
        if problem is not None:
            sys.stdout.flush()
            warn(f"error: that line is not valid UTF-8 ({problem}); it was not sent")
            refused = True
            continue
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command, _, rest = text.partition(" ")
            if command in ("/exit", "/quit"):
                return 1 if refused else 0
            if command == "/reset":
                history.clear()
                print(style.dim("conversation cleared"))
            elif command == "/system":
                system = rest.strip() or None
                print(style.dim(f"system prompt {'set' if system else 'cleared'}"))
            elif command == "/mode" and rest.strip() in ("raw", "chat"):
                mode = rest.strip()
                print(style.dim(f"{mode} mode{' (each line is a fresh completion)' if mode == 'raw' else ''}"))
            else:
                print(style.dim(REPL_HELP))
            continue
        if mode == "raw":
            request = Request.raw(line, sampling)
        else:
            messages = ([Message("system", system)] if system else []) + history + [Message("user", line)]
            request = Request.chat(messages, sampling)
        generation = engine.generate(request)
        sys.stdout.write(style.bold("model› "))
        try:
            for chunk in stream_in_thread(generation, wait_after_cancel=None):
                sys.stdout.write(inert(chunk))
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
        except TuituneError as error:
            print(f"\nerror: {inert(str(error))}")
            continue
        print()
        for notice in generation.notices:
            print(style.dim(f"note: {inert(notice)}"))
        print(style.dim(generation.stats.summary(with_prompt=True)))
        if mode == "chat" and generation.text:  # a stopped answer keeps what was shown; an empty one is dropped
            history += [Message("user", line), Message("assistant", generation.text)]
