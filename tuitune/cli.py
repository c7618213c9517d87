"""Headless command line: a thin layer over the same functions the TUI uses.

Imports stay light at module level (no llama_cpp, torch or transformers) so ``tuitune --help`` and
``tuitune models`` start instantly; heavy modules load inside the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from tuitune import __version__
from tuitune.errors import TuituneError

DEMO_PAIR = "gemma-3-270m,smollm2-135m-instruct"
DOG_PROMPT = "Tell me how to train my dog to sit"


# -- output helpers --------------------------------------------------------------------------------
class Style:
    """ANSI styling of tuitune's own labels, only on a terminal and never with NO_COLOR."""

    def __init__(self, stream: TextIO):
        self.enabled = stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _stream_in_thread(generation) -> Iterator[str]:
    """Run a generation in a worker thread so Ctrl-C in the main thread can cancel it cleanly."""
    chunks: queue.Queue = queue.Queue()
    done = object()

    def pump() -> None:
        try:
            for chunk in generation:
                chunks.put(chunk)
        except BaseException as error:
            chunks.put(error)
        finally:
            chunks.put(done)

    worker = threading.Thread(target=pump, name="tuitune-generate", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = chunks.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    except KeyboardInterrupt:
        generation.cancel()
        worker.join()
        raise


def _sampling(args: argparse.Namespace):
    from tuitune.engines.base import RANDOM_SEED, Sampling

    defaults = Sampling()
    seed = defaults.seed
    if args.seed is not None:
        if args.seed == "random":
            seed = RANDOM_SEED
        else:
            try:
                seed = int(args.seed)
            except ValueError:
                raise TuituneError(f"--seed must be an integer or 'random', not '{args.seed}'") from None
    if args.max_tokens is not None and args.max_tokens < 1:
        raise TuituneError("--max-tokens must be at least 1")
    if args.temperature is not None and args.temperature < 0:
        raise TuituneError("--temperature must be 0 (greedy) or more")
    return Sampling(
        temperature=defaults.temperature if args.temperature is None else args.temperature,
        top_p=defaults.top_p if args.top_p is None else args.top_p,
        top_k=defaults.top_k if args.top_k is None else args.top_k,
        min_p=defaults.min_p if args.min_p is None else args.min_p,
        repeat_penalty=defaults.repeat_penalty if args.repeat_penalty is None else args.repeat_penalty,
        max_tokens=defaults.max_tokens if args.max_tokens is None else args.max_tokens,
        seed=seed,
        stop=tuple(args.stop or ()),
    )


# -- commands --------------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    from tuitune.catalog import load_catalog
    from tuitune.safe_text import safe_json
    from tuitune.sources import is_installed

    catalog = load_catalog()
    rows = []
    for entry in catalog:
        rows.append(
            {
                "id": entry.id,
                "name": entry.name,
                "kind": entry.kind,
                "family": entry.family,
                "mode": entry.mode,
                "pair": entry.pair,
                "source": entry.source.describe() if entry.source else entry.endpoint.get("base_url", entry.base),
                "size": entry.size,
                "quant": entry.quant,
                "installed": is_installed(entry),
                "license": entry.license,
            }
        )
    if args.json:
        print(safe_json({"catalog_files": [str(p) for p in catalog.files], "models": rows}, indent=2))
        return 0
    header = ("ID", "KIND", "FAMILY", "PAIR", "SOURCE", "SIZE", "INSTALLED")
    table = [header] + [
        (r["id"], r["kind"], r["family"], r["pair"] or "-", r["source"] or "-", human_size(r["size"]),
         "yes" if r["installed"] else "no")
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"\ncatalog: {', '.join(str(p) for p in catalog.files)}", file=sys.stderr)
    return 0


def _print_result(result, out: TextIO, style: Style) -> None:
    from tuitune.safe_text import inert

    title = f"── {result.model} · {result.mode} "
    print(style.bold(title + "─" * max(3, 72 - len(title))), file=out)
    for notice in result.notices:
        print(style.dim(f"note: {inert(notice)}"), file=out)
    if result.error:
        print(f"error: {inert(result.error)}", file=out)
    else:
        print(inert(result.text.strip("\n")) or style.dim("(empty answer)"), file=out)
        print(style.dim(result.stats.summary(with_prompt=True)), file=out)
    print(file=out)


class _Progress:
    """A one-line token counter on stderr while models generate (terminal only)."""

    def __init__(self, labels: list[str]):
        self.labels = labels
        self.counts = [0] * len(labels)
        self.enabled = sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def chunk(self, prompt_index: int, model_index: int, text: str) -> None:
        self.counts[model_index] += 1

    def _tick(self) -> None:
        while not self._stop.wait(0.2):
            line = "  ".join(f"{label}: {count}" for label, count in zip(self.labels, self.counts, strict=True))
            sys.stderr.write(f"\r\x1b[2Kgenerating… {line}")
            sys.stderr.flush()

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def cmd_compare(args: argparse.Namespace) -> int:
    from tuitune.compare import Prompt, run_comparisons
    from tuitune.safe_text import inert, safe_json

    models = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    if not models:
        raise TuituneError("compare needs --models A,B (see `tuitune models`)")
    if len(models) > 4:
        raise TuituneError(f"compare takes at most 4 models, got {len(models)}")
    if args.suite and args.prompt:
        raise TuituneError("give either a PROMPT or --suite FILE, not both")
    suite = None
    if args.suite:
        from tuitune.suites import load_suite

        suite = load_suite(args.suite)
        prompts = [Prompt(p.text, p.messages, p.mode, p.id) for p in suite.prompts]  # type: ignore[arg-type]
    elif args.prompt:
        prompts = [Prompt(args.prompt)]
    else:
        raise TuituneError("compare needs a PROMPT or --suite FILE")
    sampling = _sampling(args)
    with _Progress(models) as progress:
        comparisons = run_comparisons(
            prompts, models, mode=args.mode, sampling=sampling, system=args.system,
            n_ctx=args.ctx, on_chunk=progress.chunk, adapter_scale=args.adapter_scale,
        )  # fmt: skip
    failed = any(result.error for comparison in comparisons for result in comparison.results)
    if args.json:
        if suite is None:
            print(safe_json(comparisons[0].as_json(), indent=2))
        else:
            payload = {"suite": suite.name, "comparisons": [c.as_json() for c in comparisons]}
            print(safe_json(payload, indent=2))
        return 1 if failed else 0
    style = Style(sys.stdout)
    for comparison in comparisons:
        print(style.bold(f"▌ {inert(comparison.prompt.text.strip())}"))
        print()
        for result in comparison.results:
            _print_result(result, sys.stdout, style)
    if failed:
        errors = {r.model: r.error for c in comparisons for r in c.results if r.error}
        for model, error in errors.items():
            print(f"tuitune: {model}: {error}", file=sys.stderr)
    return 1 if failed else 0


class _EvalProgress:
    """``done/total`` on stderr while an eval runs (terminal only); called from the runner's worker threads."""

    def __init__(self, what: str):
        self.what = what
        self.enabled = sys.stderr.isatty()
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        if self.enabled:
            with self._lock:
                sys.stderr.write(f"\r\x1b[2Kevaluating… {done}/{total} {self.what}")
                sys.stderr.flush()

    def __enter__(self) -> _EvalProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            with self._lock:
                sys.stderr.write("\r\x1b[2K")
                sys.stderr.flush()


def _eval_sampling(args: argparse.Namespace):
    """The sampling flags over the eval's greedy default (not chat's temperature 0.7): scores must repeat."""
    from dataclasses import replace

    from tuitune.evals.runner import default_sampling

    given = _sampling(args)
    default = default_sampling()
    return replace(
        given,
        temperature=default.temperature if args.temperature is None else given.temperature,
        max_tokens=default.max_tokens if args.max_tokens is None else given.max_tokens,
    )


def _until_interrupted(run, cancel: threading.Event):
    """``run()`` in a thread; Ctrl-C sets ``cancel`` so the answers so far still make a report. → (result, bool)"""
    box: dict[str, object] = {}
    done = threading.Event()  # not Thread.join: a join interrupted by Ctrl-C can report a live thread as ended

    def target() -> None:
        try:
            box["result"] = run()
        except BaseException as error:
            box["error"] = error
        finally:
            done.set()

    threading.Thread(target=target, name="tuitune-eval", daemon=True).start()
    interrupted = False
    while not done.is_set():
        try:
            done.wait(0.1)
        except KeyboardInterrupt:
            if interrupted:
                raise  # a second Ctrl-C: stop waiting for the current answers
            interrupted = True
            cancel.set()
            print("\nstopping… (Ctrl-C again to quit at once)", file=sys.stderr)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"], interrupted


def _write_out(path: str, text: str) -> Path:
    target = Path(path).expanduser()
    try:
        with open(target, "w", encoding="utf-8", newline="") as handle:  # CSV carries its own line ends
            handle.write(text if text.endswith("\n") else text + "\n")
    except OSError as error:
        raise TuituneError(f"cannot write {target}: {error.strerror or error}") from None
    return target


def cmd_eval(args: argparse.Namespace) -> int:
    from tuitune.safe_text import inert, safe_json

    models = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    if not models:
        raise TuituneError("eval needs --models A,B (see `tuitune models`)")
    if bool(args.suite) == bool(args.data):
        raise TuituneError("eval needs --suite FILE (checks on answers) or --data FILE (held-out loss), one of them")
    if args.json and args.format:
        raise TuituneError("give --json or --format md|csv, not both")
    if args.data:
        suite_only = ("repeat", "format", "temperature", "max_tokens", "seed", "top_p", "top_k", "min_p",
                      "repeat_penalty", "stop")  # fmt: skip
        given = [f"--{name.replace('_', '-')}" for name in suite_only if getattr(args, name) is not None]
        if args.mode != "auto":
            given.append("--mode")
        if given:
            raise TuituneError(f"{', '.join(given)}: only with --suite; --data scores the reference replies as written")
        from tuitune.evals.loss import heldout_loss
        from tuitune.evals.report import format_loss_table

        with _EvalProgress("replies") as progress:
            results = heldout_loss(Path(args.data), models, args.adapter_scale, on_progress=progress)
        payload = {"data": str(args.data), "results": [result.as_json() for result in results]}
        text = safe_json(payload, indent=2) if args.json else format_loss_table(results)
        if args.out:
            print(f"wrote {_write_out(args.out, text)}")
        else:
            print(text)
        return 0

    from tuitune.evals.runner import run_eval
    from tuitune.suites import load_suite

    repeat = 1 if args.repeat is None else args.repeat
    if repeat < 1:
        raise TuituneError(f"--repeat must be at least 1, not {repeat}")
    suite = load_suite(args.suite)
    sampling = _eval_sampling(args)
    cancel = threading.Event()
    with _EvalProgress("answers") as progress:
        report, interrupted = _until_interrupted(
            lambda: run_eval(suite, models, args.adapter_scale, repeat=repeat, sampling=sampling, mode=args.mode,
                             on_progress=progress, cancel=cancel),
            cancel,
        )  # fmt: skip
    fmt = "json" if args.json else args.format
    if args.out:
        fmt = fmt or "md"
    if fmt == "json":
        text = safe_json(report.as_json(), indent=2)
    elif fmt == "csv":
        text = report.to_csv()
    elif fmt == "md":
        text = report.to_markdown()
    else:
        text = report.format_text()
    if args.out:
        print(f"wrote {_write_out(args.out, text)}")
    else:
        sys.stdout.write(text if fmt == "json" else inert(text))  # safe_json escaped the JSON already
        if not text.endswith("\n"):
            sys.stdout.write("\n")
    errors = {cell.column: cell.error for cell in report.cells.values() if cell.error}
    for column, error in errors.items():  # a model that could not run is an error; a failed check is a result
        print(f"tuitune: {column}: {inert(error)}", file=sys.stderr)
    if interrupted:
        print("tuitune: interrupted: the report shows the answers given so far", file=sys.stderr)
        return 130
    return 1 if errors else 0


def _open_for_chat(args: argparse.Namespace):
    from tuitune.engines import open_engine, resolve_model

    model = resolve_model(args.model)
    if args.adapter_scale is not None and (model.entry is None or model.entry.kind != "finetuned"):
        raise TuituneError(f"--adapter-scale sets a finetuned (LoRA) model's strength; '{model.id}' is not one")
    scale = 1.0 if args.adapter_scale is None else args.adapter_scale
    engine = open_engine(model, n_ctx=args.ctx, adapter_scale=scale)
    mode = args.mode or model.default_mode or ("chat" if engine.has_chat_template else "raw")
    return model, engine, mode


def cmd_chat(args: argparse.Namespace) -> int:
    from tuitune.compare import Prompt, Result, build_request
    from tuitune.safe_text import inert, safe_json

    sampling = _sampling(args)
    model, engine, mode = _open_for_chat(args)
    try:
        if args.prompt is None:
            return _repl(engine, model.id, mode, sampling, args.system)
        generation = engine.generate(build_request(Prompt(args.prompt), mode, sampling, args.system))
        if args.json:
            for _ in _stream_in_thread(generation):
                pass
            result = Result(model.id, mode, generation.text, generation.stats, list(generation.notices))
            print(safe_json(result.as_json(), indent=2))
            return 0
        style = Style(sys.stderr)
        for chunk in _stream_in_thread(generation):
            sys.stdout.write(inert(chunk))
            sys.stdout.flush()
        sys.stdout.write("\n")
        for notice in generation.notices:
            print(style.dim(f"note: {inert(notice)}"), file=sys.stderr)
        print(style.dim(generation.stats.summary(with_prompt=True)), file=sys.stderr)
        return 0
    finally:
        engine.close()


REPL_HELP = """commands: /reset (forget the conversation)  /system TEXT  /mode raw|chat  /exit (or Ctrl-D)
Ctrl-C stops an answer."""


def _repl(engine, model_id: str, mode: str, sampling, system: str | None) -> int:
    from tuitune.engines.base import Message, Request
    from tuitune.safe_text import inert

    style = Style(sys.stdout)
    history: list[Message] = []
    print(style.dim(f"{model_id} · {mode} mode · {REPL_HELP}"))
    while True:
        try:
            line = input(style.bold("you› "))
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print()
            return 0
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command, _, rest = text.partition(" ")
            if command in ("/exit", "/quit"):
                return 0
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
            for chunk in _stream_in_thread(generation):
                sys.stdout.write(inert(chunk))
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
        except TuituneError as error:
            print(f"\nerror: {error}")
            continue
        print()
        for notice in generation.notices:
            print(style.dim(f"note: {inert(notice)}"))
        print(style.dim(generation.stats.summary(with_prompt=True)))
        if mode == "chat" and generation.text:  # a stopped answer keeps what was shown; an empty one is dropped
            history += [Message("user", line), Message("assistant", generation.text)]


class _PullProgress:
    """A progress bar with bytes, speed and ETA on a terminal; a plain line every 10 % otherwise."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tty = stream.isatty()
        self.last_step = -1
        self.phase = ""

    def __call__(self, progress) -> None:
        from tuitune.downloads import human_bytes

        eta = progress.eta_s
        eta_text = f"ETA {int(eta // 60)}:{int(eta % 60):02d}" if eta is not None else "ETA ?"
        done = f"{human_bytes(progress.done)} / {human_bytes(progress.total)}"
        if progress.phase == "checking":
            line = f"checking the {human_bytes(progress.done)} kept from an earlier pull…"
        elif progress.phase in ("verifying", "done"):
            line = f"{done}  verifying sha256…" if progress.phase == "verifying" else f"{done}  done"
        else:
            line = f"{done}  {human_bytes(progress.speed)}/s  {eta_text}"
        fraction = progress.fraction
        if self.tty:
            width = 24
            filled = int(width * (fraction or 0))
            bar = "█" * filled + "·" * (width - filled)
            percent = f"{fraction * 100:3.0f}%" if fraction is not None else "  ?%"
            self.stream.write(f"\r{percent} {bar} {line}\x1b[K")
            if progress.phase == "done":
                self.stream.write("\n")
            self.stream.flush()
            return
        step = int((fraction or 0) * 10)
        if step != self.last_step or progress.phase != self.phase:
            self.last_step, self.phase = step, progress.phase
            percent = f"{fraction * 100:.0f}% " if fraction is not None else ""
            print(f"{percent}{line}", file=self.stream, flush=True)


def _entry_for_repo_file(args: argparse.Namespace, catalog):
    """`pull REPO FILE`: the user catalog entry for that file (existing, or one to add after the pull)."""
    import re

    from tuitune.catalog import ModelEntry, Source

    repo, filename = args.targets
    if repo.count("/") != 1:
        raise TuituneError(f"'{repo}' is not a Hub repo id (org/name)")
    if not filename.endswith(".gguf"):
        raise TuituneError(f"'{filename}' is not a .gguf file; tuitune runs GGUF models")
    model_id = args.name or re.sub(r"[^a-z0-9._-]+", "-", filename.removesuffix(".gguf").lower()).strip("-.")
    source = Source(kind="hf", repo=repo, file=filename, revision=args.revision or "main")
    if model_id in catalog:
        existing = catalog.get(model_id)
        if existing.source == source:
            return existing, False
        raise TuituneError(
            f"a model with id '{model_id}' is already in the catalog ({existing.origin}); choose another --name"
        )
    kind = args.kind or ("chat" if re.search(r"chat|instruct|(^|[-_.])it([-_.]|$)", filename, re.I) else "base")
    mode = "chat" if kind == "chat" else "raw"
    entry = ModelEntry(id=model_id, name=model_id, kind=kind, family="unknown", mode=mode, source=source)
    return entry, True


def cmd_pull(args: argparse.Namespace) -> int:
    from tuitune.catalog import add_user_entry, load_catalog
    from tuitune.downloads import human_bytes, pull_model
    from tuitune.sources import hf_local_file

    catalog = load_catalog()
    if len(args.targets) == 1:
        if "/" in args.targets[0]:
            raise TuituneError(f"give the file too: tuitune pull {args.targets[0]} FILE.gguf (see the repo's files)")
        if args.name or args.revision or args.kind:
            raise TuituneError("--name, --revision and --kind go with `pull REPO FILE`")
        entry, new = catalog.get(args.targets[0]), False
        if entry.source is None or entry.source.kind != "hf":
            where = entry.source.describe() if entry.source else entry.kind
            raise TuituneError(f"model '{entry.id}' does not come from the Hub (source: {where})")
    elif len(args.targets) == 2:
        entry, new = _entry_for_repo_file(args, catalog)
    else:
        raise TuituneError("usage: tuitune pull MODEL_ID | tuitune pull REPO_ID FILENAME")
    if hf_local_file(entry) is not None and not new:
        print(f"{entry.id} is already downloaded: {hf_local_file(entry)}")
        return 0
    progress = None if args.quiet else _PullProgress(sys.stderr)
    try:
        path = pull_model(entry, progress=progress)
    except KeyboardInterrupt:
        raise TuituneError(f"pull of {entry.id} interrupted; the bytes so far are kept: pull again to resume") from None
    if new:
        from tuitune.gguf import read_gguf

        info = read_gguf(path)
        fields = {"id": entry.id, "name": entry.name, "kind": entry.kind, "family": info.architecture or "unknown",
                  "mode": entry.mode, "size": info.file_size}  # fmt: skip
        if info.quantization:
            fields["quant"] = info.quantization
        source = {"hf": entry.source.repo, "file": entry.source.file}
        if entry.source.revision != "main":
            source["revision"] = entry.source.revision
        fields["source"] = source
        user = add_user_entry(fields)
        print(f"added '{entry.id}' ({entry.kind}) to {user}")
    print(f"{entry.id}: {path} ({human_bytes(path.stat().st_size)}, sha256 verified)")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from tuitune.catalog import load_catalog
    from tuitune.downloads import human_bytes, remove_model

    entry = load_catalog().get(args.model)
    removed = remove_model(entry)
    if not removed:
        print(f"nothing downloaded for {entry.id}")
        return 0
    for path, size in removed:
        print(f"removed {path} ({human_bytes(size)})")
    print(f"{entry.id} is no longer installed; its catalog entry stays (`tuitune pull {entry.id}` gets it back)")
    return 0


def _training_rate(gguf_size: int) -> float:
    """Rough training tokens/s on this kind of machine (2 CPU cores, LoRA r=16): 283 for the 98 MB SmolLM2,
    scaling with model size (the 253 MB Gemma gives ≈110, as measured)."""
    return 283 * 98.4e6 / max(gguf_size, 1)


def _dataset_report(path: str, base: str | None, max_length: int):
    from tuitune.training.data import check_dataset

    if base is None:
        return check_dataset(Path(path), max_length=max_length)
    from tuitune.catalog import load_catalog
    from tuitune.sources import model_path
    from tuitune.training.formatting import Formatter

    entry = load_catalog().get(base)
    gguf = model_path(entry)
    formatter = Formatter(gguf, entry.chat_format)
    try:
        return check_dataset(Path(path), max_length=max_length, count_tokens=formatter.count_tokens,
                             tokens_per_second=_training_rate(gguf.stat().st_size))  # fmt: skip
    finally:
        formatter.close()


def cmd_data_check(args: argparse.Namespace) -> int:
    report = _dataset_report(args.file, args.base, args.max_length)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.format_text())
    return 0 if report.ok else 1


def _follow_run(process, directory: Path, out: TextIO) -> int:
    """Print each new metrics line until the trainer exits; Ctrl-C reaches the trainer too (same group)."""
    from tuitune.training.runs import read_json, read_metrics

    shown = 0
    while True:
        try:
            code = process.wait(timeout=0.5)
        except KeyboardInterrupt:
            print("stopping after the current step (the checkpoint is saved)…", file=out, flush=True)
            continue
        except subprocess.TimeoutExpired:
            code = None
        rows = read_metrics(directory)
        total = (read_json(directory / "status.json") or {}).get("total_steps", "?")
        for row in rows[shown:]:
            eta = row.get("eta")
            parts = [f"step {row['step']}/{total}", f"epoch {row['epoch']:.2f}", f"loss {row['loss']:.4f}"]
            if row.get("eval_loss") is not None:
                parts.append(f"eval {row['eval_loss']:.4f}")
            parts += [f"lr {row['lr']:.2e}", f"{row['tokens_per_s']:.0f} tok/s"]
            if eta is not None:
                parts.append(f"ETA {int(eta // 60)}:{int(eta % 60):02d}")
            print("  ".join(parts), file=out, flush=True)
        shown = len(rows)
        if code is not None:
            return code


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tuitune.catalog import _ID_PATTERN, load_catalog
    from tuitune.sources import model_path
    from tuitune.training.runs import TrainConfig, run_dir, run_status, training_active

    if not _ID_PATTERN.match(args.name):
        raise TuituneError(f"--name '{args.name}' may use only letters, digits, '.', '_' and '-'")
    directory = run_dir(args.name)
    catalog = load_catalog()
    if args.resume:
        if not (directory / "config.json").exists():
            raise TuituneError(f"no run named '{args.name}' to resume (runs live in {directory.parent})")
        config = TrainConfig.from_json(directory / "config.json")
        if run_status(directory).get("state") == "running":
            raise TuituneError(f"run '{args.name}' is still running")
    else:
        if args.base is None or args.data is None:
            raise TuituneError("tuitune train needs --base MODEL and --data FILE (or --resume)")
        if (directory / "config.json").exists():
            raise TuituneError(f"a run named '{args.name}' exists; continue it with --resume or choose another --name")
        if args.name in catalog:
            raise TuituneError(f"'{args.name}' is already a model in the catalog; choose another --name")
        config = TrainConfig(name=args.name, base=args.base, data=str(Path(args.data).resolve()),
                             val=str(Path(args.val).resolve()) if args.val else None)  # fmt: skip
        overrides = {
            key: getattr(args, key)
            for key in (
                "epochs",
                "max_steps",
                "lr",
                "rank",
                "alpha",
                "dropout",
                "batch_size",
                "grad_accum",
                "max_length",
                "neftune_alpha",
                "seed",
                "val_split",
                "save_every",
                "eval_every",
                "weights",
            )
            if getattr(args, key) is not None
        }
        if args.target_modules:
            overrides["target_modules"] = [name.strip() for name in args.target_modules.split(",") if name.strip()]
        config = replace(config, **overrides)
        config.validate()
        entry = catalog.get(config.base)
        if entry.kind not in ("base", "chat"):
            raise TuituneError(f"--base must be a local base or chat model; '{entry.id}' is {entry.kind}")
        model_path(entry)  # not installed: fail now, not after the data check
        if config.weights == "hub" and entry.train_weights is None:
            raise TuituneError(
                f"'{entry.id}' names no train_weights repo in the catalog; add "
                'train_weights = { hf = "org/name" } to its entry, or use --weights gguf'
            )
        for path in filter(None, (config.data, config.val)):
            report = _dataset_report(path, config.base, config.max_length)
            if not report.ok:
                print(report.format_text())
                raise TuituneError(f"{path} has problems (above); fix them and train again")
        if training_active():
            raise TuituneError("another training run is active; two on 2 cores would each run at a crawl")
        directory.mkdir(parents=True, exist_ok=True)
        config.write(directory / "config.json")
    command = [sys.executable, "-m", "tuitune.training.train", str(directory)] + (["--resume"] if args.resume else [])
    print(f"run '{config.name}': {directory}", flush=True)
    with open(directory / "stderr.log", "ab") as errors:  # library warnings and tracebacks, not the terminal
        process = subprocess.Popen(command, stderr=errors)
    code = _follow_run(process, directory, sys.stdout)
    status = run_status(directory)
    if code == 0:
        print(f"done: `tuitune chat {config.name}` runs it; `tuitune compare --models {config.base},{config.name}` "
              "compares it with its base")  # fmt: skip
    elif code == 130 or status.get("state") == "stopped":
        print(f"stopped: `tuitune train --name {config.name} --resume` continues from the last checkpoint")
    else:
        details = directory / "stderr.log"
        raise TuituneError(f"training failed: {status.get('message', 'no message')} (details: {details})")
    return 0 if code == 0 else code


def cmd_paths(args: argparse.Namespace) -> int:
    from tuitune.catalog import shipped_catalog_path
    from tuitune.paths import app_dirs

    dirs = app_dirs()
    rows = [
        ("catalog (shipped)", shipped_catalog_path()),
        ("catalog (yours)", dirs.user_catalog),
        ("config", dirs.config),
        ("data", dirs.data),
        ("cache", dirs.cache),
        ("logs", dirs.logs),
    ]
    for label, path in rows:
        print(f"{label:18} {path}")
    return 0


# -- parser ----------------------------------------------------------------------------------------
def _add_sampling_flags(
    parser: argparse.ArgumentParser, title: str, max_tokens_help: str, temperature_help: str
) -> None:
    group = parser.add_argument_group(title)
    group.add_argument("--max-tokens", type=int, metavar="N", help=max_tokens_help)
    group.add_argument("--temperature", type=float, metavar="T", help=temperature_help)
    group.add_argument("--top-p", type=float, metavar="P")
    group.add_argument("--top-k", type=int, metavar="K")
    group.add_argument("--min-p", type=float, metavar="P")
    group.add_argument("--repeat-penalty", type=float, metavar="R", help="default 1.0 (off)")
    group.add_argument("--seed", metavar="S", help="integer, or 'random' for a fresh seed per answer")
    group.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")


def _add_generation_flags(parser: argparse.ArgumentParser) -> None:
    _add_sampling_flags(parser, "sampling (defaults: temperature 0.7, top-p 0.95, top-k 40, min-p 0.05, seed 42)",
                        "answer length limit (default 256)", "0 = greedy, deterministic")  # fmt: skip
    parser.add_argument("--system", metavar="TEXT", help="system prompt (chat mode)")
    parser.add_argument("--ctx", type=int, metavar="N", help="context size in tokens (default: model's, up to 4096)")
    parser.add_argument("--json", action="store_true", help="print one JSON result instead of text")


def _adapter_scale(text: str) -> float:
    from tuitune.engines.llama import check_adapter_scale

    try:
        return check_adapter_scale(text)
    except TuituneError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


EVAL_MODES = ("auto", "raw", "chat")


def _adapter_scales(text: str) -> list[float]:
    """``--adapter-scale 1`` or ``0,0.5,1`` (a sweep): each value checked like a single scale."""
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give a number from 0 to 1, or several: 0,0.5,1")
    return [_adapter_scale(value) for value in values]


def _add_adapter_scale_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--adapter-scale", type=_adapter_scale, metavar="S",
        help="LoRA strength of a finetuned model: 0 = its base … 1 = the finetune (default 1)",
    )  # fmt: skip


def cmd_export_adapter(args: argparse.Namespace) -> int:
    from tuitune.engines import resolve_model
    from tuitune.sources import model_path
    from tuitune.training.export import export_adapter

    model = resolve_model(args.base)
    if model.entry is not None and model.entry.kind not in ("base", "chat"):
        raise TuituneError(f"--base must be the local base or chat model the adapter was trained on; "
                           f"'{model.id}' is {model.entry.kind}")  # fmt: skip
    base = model_path(model.entry) if model.entry is not None else model.path
    if not args.out.endswith(".gguf"):
        raise TuituneError(f"--out {args.out}: name the adapter file *.gguf")
    out = export_adapter(Path(args.peft_dir).expanduser(), base, Path(args.out).expanduser())
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), a LoRA adapter for {model.id}")
    return 0


def _key_value(text: str, separator: str, what: str) -> tuple[str, str]:
    name, found, value = text.partition(separator)
    if not found or not name.strip():
        raise TuituneError(f"{what} '{text}' should look like NAME{separator}VALUE")
    return name.strip(), value.strip()


def _parameter_value(text: str) -> object:
    """``--param top_k=20`` → 20: numbers and true/false as such, anything else a string."""
    import json

    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (int, float, bool, str)) else text


def cmd_endpoint_add(args: argparse.Namespace) -> int:
    from tuitune.catalog import _ID_PATTERN, ENV_NAME, add_user_entry, load_catalog

    if not _ID_PATTERN.match(args.name):
        raise TuituneError(f"NAME '{args.name}' may use only letters, digits, '.', '_' and '-'")
    if args.name in load_catalog():
        raise TuituneError(f"'{args.name}' is already a model in the catalog; choose another NAME")
    if args.api_key_env is not None and not ENV_NAME.match(args.api_key_env):
        # never echo it: a pasted key would land in the terminal's scrollback a second time
        raise TuituneError(
            "--api-key-env takes the NAME of an environment variable (like OPENAI_API_KEY), not the key itself"
        )
    fields: dict[str, object] = {"id": args.name, "name": args.display_name or f"{args.model} @ {args.base_url}",
                                 "kind": "endpoint", "family": args.family, "mode": args.mode,
                                 "base_url": args.base_url.rstrip("/"), "model": args.model}  # fmt: skip
    if args.api_key_env:
        fields["api_key_env"] = args.api_key_env
    if args.header:
        fields["headers"] = dict(_key_value(item, ":", "--header") for item in args.header)
    if args.param:
        fields["parameters"] = {
            name: _parameter_value(value) for name, value in (_key_value(p, "=", "--param") for p in args.param)
        }
    if args.timeout is not None:
        fields["timeout"] = args.timeout
    if args.pair:
        fields["pair"] = args.pair
    user = add_user_entry(fields)
    print(f"added endpoint '{args.name}' to {user}; `tuitune endpoint test {args.name}` checks it")
    return 0


def cmd_endpoint_test(args: argparse.Namespace) -> int:
    from tuitune.catalog import load_catalog
    from tuitune.engines import Message, Request, Sampling, open_engine, resolve_model
    from tuitune.safe_text import inert

    entry = load_catalog().get(args.name)
    if entry.kind != "endpoint":
        raise TuituneError(f"'{entry.id}' is a {entry.kind} model, not an endpoint")
    engine = open_engine(resolve_model(entry.id))
    endpoint = engine.endpoint
    key = "none"
    if endpoint.api_key_env:
        key = f"from {endpoint.api_key_env} ({'set' if os.environ.get(endpoint.api_key_env) else 'NOT SET'})"
    print(f"{entry.id}: {endpoint.base_url}, model {endpoint.model}, key {key}")
    models = engine.list_models()
    print(f"the server offers {len(models)} model(s):")
    for model in models:
        print(f"  {inert(model)}{'   <- this entry' if model == endpoint.model else ''}")
    if endpoint.model not in models:
        print(f"note: '{endpoint.model}' is not in that list; some servers accept other names, most answer 404")
    generation = engine.generate(Request.chat([Message("user", "Say hello.")], Sampling(temperature=0, max_tokens=8)))
    text = generation.run()
    print(f"chat check: {inert(text)!r} ({generation.stats.summary()})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from tuitune.serve import serve

    return serve(args.model, host=args.host, port=args.port, adapter_scale=args.adapter_scale, n_ctx=args.ctx,
                 api_key_env=args.api_key_env)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuitune",
        description="See what finetuning does to a language model: base vs chat, side by side.",
        epilog=f'Try: tuitune compare "{DOG_PROMPT}" --models {DEMO_PAIR}',
    )
    parser.add_argument("--version", action="version", version=f"tuitune {__version__}")
    parser.add_argument("--compare", metavar="A,B", help="open the TUI's Compare screen with these models")
    parser.add_argument("--prompt", metavar="TEXT", help="with --compare: send this prompt at start")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    models = commands.add_parser("models", help="list the model catalog")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    chat = commands.add_parser("chat", help="chat with one model (one answer, or a REPL without PROMPT)")
    chat.add_argument("model", metavar="MODEL", help="catalog id or path to a .gguf file")
    chat.add_argument("prompt", metavar="PROMPT", nargs="?")
    chat.add_argument("--mode", choices=("raw", "chat"), help="raw completion or chat template (default: catalog's)")
    _add_generation_flags(chat)
    _add_adapter_scale_flag(chat)
    chat.set_defaults(func=cmd_chat)

    compare = commands.add_parser("compare", help="the same prompt on several models at once")
    compare.add_argument("prompt", metavar="PROMPT", nargs="?")
    compare.add_argument("--models", metavar="A,B[,C,D]", required=True, help="catalog ids or .gguf paths")
    compare.add_argument(
        "--mode", choices=("auto", "raw", "chat", "both"), default="auto",
        help="auto: each model's default; both: every model raw and templated (the lab's 2×2)",
    )  # fmt: skip
    compare.add_argument("--suite", metavar="FILE", help="run every prompt of a suite TOML file")
    _add_generation_flags(compare)
    _add_adapter_scale_flag(compare)
    compare.set_defaults(func=cmd_compare)

    evaluate = commands.add_parser(
        "eval", help="score models on a suite's checks, or by held-out loss on a dataset",
        description="--suite: every prompt on every model (greedy by default), each answer scored by the suite's "
        "checks; a scoreboard and a per-prompt matrix. --data: mean loss and perplexity of a dataset's reference "
        "replies under each model, computed by llama.cpp. Failed checks are results: the exit code is 0 unless a "
        "model could not run.",
    )  # fmt: skip
    evaluate.add_argument("--suite", metavar="FILE", help="a suite TOML file with checks (e.g. suites/identity.toml)")
    evaluate.add_argument("--data", metavar="FILE", help="held-out loss on a dataset in any format train accepts")
    evaluate.add_argument("--models", metavar="A,B[,…]", required=True, help="catalog ids or .gguf paths")
    evaluate.add_argument(
        "--adapter-scale", type=_adapter_scales, metavar="S|S1,S2,…",
        help="LoRA strength of the finetuned models; several values: one column per strength (a sweep)",
    )  # fmt: skip
    evaluate.add_argument("--repeat", type=int, metavar="N", help="answers per prompt, repeat i with seed + i (1)")
    evaluate.add_argument("--mode", choices=EVAL_MODES, default="auto", help="auto: each model's default mode")
    _add_sampling_flags(evaluate, "sampling (defaults: greedy, 200 tokens, seed 42)",
                        "answer length limit (default 200)", "default 0 (greedy, deterministic)")  # fmt: skip
    evaluate.add_argument("--json", action="store_true", help="everything as JSON, the answers included")
    evaluate.add_argument("--format", choices=("md", "csv"), help="Markdown or CSV (no answers) instead of text")
    evaluate.add_argument("--out", metavar="FILE", help="write the report to FILE (Markdown unless --json/--format)")
    evaluate.set_defaults(func=cmd_eval)

    export = commands.add_parser(
        "export-adapter", help="convert a PEFT LoRA adapter directory into a llama.cpp adapter .gguf",
        description="Writes the LoRA GGUF llama.cpp attaches to MODEL's GGUF. DoRA, per-layer rank/alpha, "
        "modules_to_save and trained biases have no llama.cpp equivalent and are refused.",
    )  # fmt: skip
    export.add_argument("peft_dir", metavar="PEFT_DIR", help="directory with adapter_config.json + safetensors")
    export.add_argument("--base", required=True, metavar="MODEL", help="catalog id or .gguf the adapter was trained on")
    export.add_argument("--out", required=True, metavar="FILE.gguf", help="where to write the adapter")
    export.set_defaults(func=cmd_export_adapter)

    data = commands.add_parser("data", help="check a training dataset")
    data_commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    check = data_commands.add_parser("check", help="report every problem with its line, and token counts")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--base", metavar="MODEL", help="count tokens with this model's tokenizer and template")
    check.add_argument("--max-length", type=int, default=512, metavar="N", help="tokens per example (default 512)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_data_check)

    train = commands.add_parser("train", help="LoRA-finetune a catalog model (runs in a subprocess, resumable)")
    train.add_argument("--name", required=True, metavar="NAME", help="run name and the finetuned model's id")
    train.add_argument("--base", metavar="MODEL", help="catalog id of the model to finetune")
    train.add_argument("--data", metavar="FILE", help="chat, prompt/completion or alpaca JSONL/JSON")
    train.add_argument("--val", metavar="FILE", help="validation set (else --val-split of the data)")
    train.add_argument("--val-split", type=float, metavar="F", help="share of the data held out (default 0)")
    train.add_argument("--epochs", type=float, metavar="N", help="default 3")
    train.add_argument("--max-steps", type=int, metavar="N")
    train.add_argument("--lr", type=float, metavar="LR", help="default 1e-3")
    train.add_argument("--rank", type=int, metavar="R", help="LoRA rank (default 16)")
    train.add_argument("--alpha", type=float, metavar="A", help="LoRA alpha (default 32)")
    train.add_argument("--dropout", type=float, metavar="P", help="LoRA dropout (default 0.05)")
    train.add_argument("--target-modules", metavar="A,B", help="default: attention (+ MLP for gemma3)")
    train.add_argument("--batch-size", type=int, metavar="N", help="default 8")
    train.add_argument("--grad-accum", type=int, metavar="N", help="default 1")
    train.add_argument("--max-length", type=int, metavar="N", help="tokens per example (default 512)")
    train.add_argument("--neftune-alpha", type=float, metavar="A", help="NEFTune noise (off by default)")
    train.add_argument("--seed", type=int, metavar="S", help="default 42")
    train.add_argument("--weights", choices=("auto", "gguf", "hub"),
                       help="start from the dequantized GGUF, or the catalog's train_weights safetensors repo "
                       "(downloaded from the Hub); auto (default) uses that repo once downloaded")  # fmt: skip
    train.add_argument("--save-every", type=int, metavar="N", help="checkpoint every N steps (default 10)")
    train.add_argument("--eval-every", type=int, metavar="N", help="validation loss every N steps (default 10)")
    train.add_argument("--resume", action="store_true", help="continue the run NAME from its last checkpoint")
    train.set_defaults(func=cmd_train)

    pull = commands.add_parser(
        "pull", help="download a model from the Hugging Face Hub (resumes an interrupted pull)",
        description="tuitune pull MODEL_ID, or tuitune pull REPO_ID FILENAME to add a user catalog entry. "
        "HF_ENDPOINT picks the Hub, HF_TOKEN (or `hf auth login`) is sent for gated repos.",
    )  # fmt: skip
    pull.add_argument("targets", nargs="+", metavar="MODEL_ID | REPO_ID FILENAME")
    pull.add_argument("--revision", metavar="R", help="branch, tag or commit (default main)")
    pull.add_argument("--name", metavar="ID", help="catalog id for a REPO FILE pull (default: from the file name)")
    pull.add_argument("--kind", choices=("base", "chat"), help="for a REPO FILE pull (default: guessed from the name)")
    pull.add_argument("--quiet", action="store_true", help="no progress output")
    pull.set_defaults(func=cmd_pull)

    rm = commands.add_parser("rm", help="delete a downloaded model's file (the catalog entry stays)")
    rm.add_argument("model", metavar="MODEL_ID")
    rm.set_defaults(func=cmd_rm)

    endpoint = commands.add_parser("endpoint", help="remote models on OpenAI-compatible servers")
    endpoint_commands = endpoint.add_subparsers(dest="endpoint_command", metavar="{add,test}", required=True)
    add = endpoint_commands.add_parser(
        "add", help="add a remote model to your catalog",
        description="The key is never stored: --api-key-env names the environment variable that holds it.",
    )  # fmt: skip
    add.add_argument("name", metavar="NAME", help="the id to use in chat, compare and the TUI")
    add.add_argument("--base-url", required=True, metavar="URL", help="API root, e.g. http://127.0.0.1:8000/v1")
    add.add_argument("--model", required=True, metavar="M", help="the model name the server expects")
    add.add_argument("--api-key-env", metavar="VAR", help="name of the environment variable holding the key")
    add.add_argument("--header", action="append", metavar="'NAME: VALUE'", help="extra request header (repeat)")
    add.add_argument("--param", action="append", metavar="NAME=VALUE", help="extra request field (repeat)")
    add.add_argument("--timeout", type=float, metavar="S", help="seconds without data before giving up (60)")
    add.add_argument("--mode", choices=("chat", "raw"), default="chat", help="default mode (chat)")
    add.add_argument("--family", default="remote", help="model family shown in lists (remote)")
    add.add_argument("--pair", metavar="MODEL", help="the model to compare it with by default")
    add.add_argument("--display-name", metavar="TEXT", help="name shown in lists")
    add.set_defaults(func=cmd_endpoint_add)
    test = endpoint_commands.add_parser("test", help="check an endpoint: list its models, ask for a short answer")
    test.add_argument("name", metavar="NAME")
    test.set_defaults(func=cmd_endpoint_test)

    serve = commands.add_parser(
        "serve", help="serve a catalog model over the OpenAI-compatible API (llama-cpp-python's server)",
        description="Binds to 127.0.0.1 unless --host says otherwise. Needs the server extra: "
        "pip install 'tuitune[server]'.",
    )  # fmt: skip
    serve.add_argument("model", metavar="MODEL", help="catalog id: base, chat or finetuned (base + adapter)")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    serve.add_argument("--adapter-scale", type=_adapter_scale, default=1.0, metavar="S", help="LoRA strength 0…1")
    serve.add_argument("--ctx", type=int, metavar="N", help="context length (default: the catalog's, ≤ 4096)")
    serve.add_argument("--api-key-env", metavar="VAR", help="require the key in this environment variable")
    serve.set_defaults(func=cmd_serve)

    paths = commands.add_parser("paths", help="where tuitune keeps config, data, cache and logs")
    paths.set_defaults(func=cmd_paths)
    return parser


def _run_tui(args: argparse.Namespace) -> int:
    if args.prompt and not args.compare:
        raise TuituneError("--prompt goes with --compare A,B")
    models = [m.strip() for m in (args.compare or "").split(",") if m.strip()] or None
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if not getattr(args, "func", None):
            return _run_tui(args)
        return args.func(args)
    except TuituneError as error:
        print(f"tuitune: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ntuitune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
