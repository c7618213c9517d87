"""`tuitune train --remote ENDPOINT …`: a LoRA job on a fine-tuning service, followed like a local run.

Order matters for "nothing lost": every check (flags, endpoint, key variable, the data as the service would
see it) runs before the run folder exists; the folder and config.json exist before the upload, and each id the
service hands back is written as soon as it arrives, so a failure at any step leaves a run that says where it
stopped. Ctrl-C stops following, not the job: the run is "detached" until `--resume` follows it again.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path

from tuitune.errors import TuituneError
from tuitune.safe_text import inert

LOCAL_ONLY = ("max_steps", "lr", "rank", "alpha", "dropout", "grad_accum", "max_length", "neftune_alpha",
              "val_split", "save_every", "eval_every", "weights", "device", "quantize", "nproc", "early_stop",
              "min_delta", "target_modules", "preset")  # fmt: skip


def default_name(model: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.")[:40] or "model"
    return f"remote-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_train_remote(args: argparse.Namespace, directory: Path) -> int:
    from tuitune.remote_training.runs import is_remote

    cancel = getattr(args, "cancel", False)
    if cancel and (args.resume or args.remote):
        raise TuituneError("--cancel takes only --name NAME: the run knows its service")
    if (cancel or args.resume) and not (directory / "config.json").exists():
        raise TuituneError(f"no run named '{args.name}' (`tuitune runs --training` lists them)")
    if args.resume and args.remote:
        raise TuituneError("--resume takes only --name NAME: the run knows its service and job")
    if (cancel or args.resume) and not is_remote(directory):
        raise TuituneError(f"run '{args.name}' trains on this machine: without --cancel, --resume continues it and "
                           "Ctrl-C (or Stop on the Train screen) stops it")  # fmt: skip
    if cancel:
        return _cancel(args, directory)
    if args.resume:
        return _resume(args.name, directory)
    return _start(args, directory)


def _resume(name: str, directory: Path) -> int:
    """Follow the job again; a run whose job was never created (refused, rate limited) creates it now, reusing
    the files already uploaded."""
    from tuitune.remote_training.runs import upload_and_create
    from tuitune.training.runs import TrainConfig, read_json

    config = TrainConfig.from_json(directory / "config.json")
    status = read_json(directory / "status.json") or {}
    if not (config.remote or {}).get("job_id"):
        print(inert(f"run '{name}' has no job yet: creating it (files already uploaded are not sent again)"))
        try:
            upload_and_create(directory, config, sys.stdout)
        except TuituneError as error:
            _failed(directory, str(error))
            raise
        return _follow(name, directory, again=False)
    if status.get("state") in ("done", "failed", "cancelled"):
        message = status.get("message") or ""
        print(inert(f"run '{name}' {_ended(status['state'])}: nothing to follow. {message}".rstrip()))
        return 0
    print(inert(f"run '{name}': following job {config.remote['job_id']} on {config.remote.get('endpoint')}"))
    return _follow(name, directory, again=True)


def _ended(state: str) -> str:
    return {"done": "is done", "failed": "failed", "cancelled": "was cancelled"}.get(state, f"is {state}")


def _start(args: argparse.Namespace, directory: Path) -> int:
    from tuitune.catalog import load_catalog
    from tuitune.engines.openai import Endpoint
    from tuitune.paths import private_app_dir
    from tuitune.remote_training.rules import check_for_service
    from tuitune.remote_training.runs import check_settings, upload_and_create
    from tuitune.training.runs import TrainConfig

    given = [name for name in LOCAL_ONLY if getattr(args, name, None) not in (None, False)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise TuituneError(f"{flags}: local training only; a service takes --val, --epochs, --batch-size, "
                           "--lr-multiplier and --suffix")  # fmt: skip
    if not args.base or not args.data:
        raise TuituneError("tuitune train --remote ENDPOINT needs --base MODEL_NAME (the service's model to finetune) "
                           "and --data FILE")  # fmt: skip
    check_settings(args.epochs, args.lr_multiplier, args.batch_size, args.suffix)
    catalog = load_catalog()
    if args.remote not in catalog or catalog.get(args.remote).kind != "endpoint":
        raise TuituneError(f"--remote takes an endpoint in the catalog; '{args.remote}' is not one (`tuitune "
                           "endpoint add NAME --base-url URL --model MODEL --api-key-env VAR` adds it)")  # fmt: skip
    if (directory / "config.json").exists():
        raise TuituneError(f"a run named '{args.name}' exists; follow it with --resume or choose another --name")
    if args.name in catalog:
        raise TuituneError(f"'{args.name}' is already a model in the catalog; choose another --name")
    endpoint = Endpoint.from_entry(catalog.get(args.remote))
    endpoint.api_key()  # an unset key variable is refused before anything is checked or uploaded
    epochs = int(args.epochs) if args.epochs is not None else None
    training = None
    for path in [Path(args.data)] + ([Path(args.val)] if args.val else []):
        check = check_for_service(path, epochs)
        if not check.ok:
            first, more = check.report.errors[0], len(check.report.errors) - 1
            others = f" (and {more} more: `tuitune data check {path}` lists them)" if more else ""
            why = "" if first.line is None and check.report.format is None else "the service would refuse it: "
            raise TuituneError(f"{path}: {first.text()}{others}; {why}nothing was uploaded")
        for problem in check.report.warnings:
            print(inert(f"{path}: {problem.text()}"), file=sys.stderr)
        training = training or check
    assert training is not None
    print(inert(f"{args.data}: {training.report.examples} examples, {training.report.format}"))
    print(training.estimate_line(), flush=True)
    remote = {"endpoint": endpoint.name, "base_url": endpoint.base_url, "model": args.base,
              "api_key_env": endpoint.api_key_env, "headers": endpoint.headers, "suffix": args.suffix,
              "batch_size": args.batch_size, "lr_multiplier": args.lr_multiplier,
              "billed_tokens_estimate": training.billed_tokens, "file_tokens": training.file_tokens}  # fmt: skip
    val = str(Path(args.val).resolve()) if args.val else None
    config = TrainConfig(name=args.name, base=args.base, data=str(Path(args.data).resolve()), val=val, epochs=epochs,
                         remote=remote)  # fmt: skip
    private_app_dir(directory)
    config.write(directory / "config.json")
    print(f"run '{config.name}': {directory} (a job on {endpoint.name})", flush=True)
    try:
        upload_and_create(directory, config, sys.stdout)
    except TuituneError as error:
        _failed(directory, str(error))
        raise
    except KeyboardInterrupt:
        _failed(directory, f"stopped before the job was created; `tuitune train --name {config.name} --resume` "
                           "creates it")  # fmt: skip
        raise
    return _follow(config.name, directory, again=False)


def _failed(directory: Path, message: str) -> None:
    from tuitune.remote_training.runs import _status

    _status(directory, "failed", message=message)


def _follow(name: str, directory: Path, again: bool) -> int:
    from tuitune.remote_training.runs import follow
    from tuitune.training.runs import pid_alive, read_json

    status = read_json(directory / "status.json") or {}
    if again and status.get("pid") and pid_alive(status.get("pid")):
        raise TuituneError(f"run '{name}' is already followed by process {status['pid']}")
    stop = threading.Event()
    try:
        state = follow(directory, sys.stdout, stop.is_set)
    except KeyboardInterrupt:
        from tuitune.remote_training.runs import _detach

        _detach(directory, sys.stdout)
        return 130
    if state == "done":
        return 0
    if state == "detached":
        return 130
    status = read_json(directory / "status.json") or {}
    raise TuituneError(f"run '{name}': {status.get('message') or _ended(state)}")


def _cancel(args: argparse.Namespace, directory: Path) -> int:
    from tuitune.remote_training.runs import cancel
    from tuitune.training.runs import read_json

    status = read_json(directory / "status.json") or {}
    if status.get("state") in ("done", "failed", "cancelled"):
        print(inert(f"run '{args.name}' {_ended(status['state'])}: there is no job to cancel"))
        return 0
    state = cancel(directory)
    print(inert(f"run '{args.name}': the service says the job is {state}"))
    return 0
