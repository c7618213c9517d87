"""``main``: parse, check the arguments, run the command, and turn every failure into one line and an exit code.

Exit codes: 0 done; 1 an error the message explains (or an unexpected one, its traceback in ``cli.log``);
2 an unusable command line (argparse's usage errors, arguments that are not UTF-8); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import traceback
from datetime import datetime
from pathlib import Path

from tuitune.cli.common import InputError, invalid_utf8, one_line, split_models
from tuitune.cli.parser import build_parser
from tuitune.errors import TuituneError

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
CLI_LOG = "cli.log"


def _parsers_used(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[argparse.ArgumentParser]:
    """The top-level parser and the (sub)command parsers that ``args`` came through, outermost first."""
    chain = [parser]
    while True:
        chosen = None
        for action in chain[-1]._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(args, action.dest, None) or "")
        if chosen is None:
            return chain
        chain.append(chosen)


def _argument_label(action: argparse.Action) -> str:
    """How the user wrote the argument: its long option (``--system``), or a positional's metavar (``PROMPT``)."""
    if action.option_strings:
        return max(action.option_strings, key=len)
    return str(action.metavar or action.dest.upper())


def refuse_invalid_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every argument must be UTF-8: tuitune prints them back and sends them to models (checked before loading)."""
    labels: dict[str, str] = {}
    for used in _parsers_used(parser, args):  # a subcommand's PROMPT wins over the top level's --prompt
        for action in used._actions:
            if action.dest != argparse.SUPPRESS and not isinstance(action, argparse._SubParsersAction):
                labels[action.dest] = _argument_label(action)
    for dest, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            problem = invalid_utf8(text) if isinstance(text, str) else None
            if problem is not None:
                raise InputError(f"{labels.get(dest, dest)} is not valid UTF-8 ({problem})")


def _run_tui(args: argparse.Namespace) -> int:
    if args.prompt and not args.compare:
        raise TuituneError("--prompt goes with --compare A,B")
    models = split_models(args.compare) or None
    if models:
        from tuitune.catalog import load_catalog
        from tuitune.engines import resolve_model

        catalog = load_catalog()
        for model in models:
            resolve_model(model, catalog)  # unknown ids fail here, before the screen opens
        if len(models) > 4:
            raise TuituneError(f"Compare shows at most 4 panes, got {len(models)}")
    from tuitune.tui import run_tui

    return run_tui(compare_models=models, prompt=args.prompt)


def _log_traceback(error: BaseException, command: str | None) -> str:
    """Append the traceback to cli.log; returns where it went, or why it could not be written.

    The command line is not logged: it may hold prompts or a pasted key.
    """
    from tuitune import __version__
    from tuitune.paths import app_dirs, private_app_dir

    path: Path | None = None
    try:
        path = app_dirs().logs / CLI_LOG
        private_app_dir(path.parent)  # tracebacks may quote prompts and paths: the user's alone
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")
        with open(path, "a", encoding="utf-8", errors="backslashreplace") as log:
            log.write(f"--- {stamp} tuitune {__version__} {command or '(app)'}\n")
            log.write("".join(traceback.format_exception(error)))
    except Exception as failure:  # the log must never replace the error it reports
        return f"no traceback saved: cannot write {path or CLI_LOG}: {failure}"
    return f"traceback in {path}"


def _end_now(code: int) -> None:
    """Exit at once: after Ctrl-C a worker thread may sit in llama.cpp for a while, and shutting the
    interpreter down around it can wait or crash. Output is flushed first; nothing else is left to save."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe must not stop the exit
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """The `tuitune` command. ``argv`` None means the real process: an interrupt then ends it at once."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        refuse_invalid_arguments(parser, args)
        if not getattr(args, "func", None):
            return _run_tui(args)
        return args.func(args)
    except InputError as error:
        print(f"tuitune: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except TuituneError as error:
        print(f"tuitune: error: {one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\ntuitune: interrupted", file=sys.stderr)
        if argv is None and threading.active_count() > 1:
            _end_now(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as error:
        where = _log_traceback(error, getattr(args, "command", None))
        message = one_line(error)
        kind = type(error).__name__
        print(f"tuitune: unexpected error: {kind}{': ' + message if message else ''} ({one_line(where)})",
              file=sys.stderr)  # fmt: skip
        return EXIT_ERROR
