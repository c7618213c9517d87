"""`tuitune train`, `data check` and `export-adapter`: finetuning from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from tuitune.errors import TuituneError
from tuitune.safe_text import inert

TRAIN_SETTINGS = ("epochs", "max_steps", "lr", "rank", "alpha", "dropout", "batch_size", "grad_accum", "max_length",
                  "neftune_alpha", "seed", "val_split", "save_every", "eval_every", "weights", "device", "quantize",
                  "nproc", "early_stop", "min_delta")  # fmt: skip


def cmd_data_check(args: argparse.Namespace) -> int:
    """The dataset report; with --base, also the memory plan of training on it with the default settings
    (and --device/--quantize). A plan that does not fit is reported, not an error: the data is fine."""
    from tuitune.training.report import checked_dataset

    if args.base is None and (args.device or args.quantize):
        raise TuituneError("--device and --quantize plan the memory of training, which needs --base MODEL")
    report, counts = checked_dataset(args.file, args.base, args.max_length)
    memory: dict | str | None = None
    if args.base is not None:
        from tuitune.training.planner import estimate
        from tuitune.training.runs import TrainConfig

        config = TrainConfig(name="data-check", base=args.base, data=str(args.file), max_length=args.max_length,
                             device=args.device or "auto", quantize=args.quantize or "none")  # fmt: skip
        try:
            plan = estimate(args.base, config, counts=counts)
            memory = plan.as_dict() if args.json else plan.summary() if plan.fits else plan.refusal()
        except TuituneError as error:  # a header the planner cannot size: the dataset report still stands
            memory = f"cannot plan ({error})"
    if args.json:
        extra = {"memory": memory if isinstance(memory, dict) else {"error": memory}} if memory else {}
        print(json.dumps({**report.as_dict(), **extra}, indent=2, ensure_ascii=False))
    else:
        print(inert(report.format_text()))
        if memory is not None:
            print(inert(f"memory: {memory}"))
    return 0 if report.ok else 1


def _follow_run(process, directory: Path, out: TextIO, forward_stop: bool = False) -> int:
    """Print each new metrics line until the trainer exits. Ctrl-C reaches a single trainer too (same group);
    with ``forward_stop`` (torchrun, in its own session) it is sent on to rank 0, named in status.json."""
    from tuitune.training.runs import read_json, read_metrics

    shown = 0
    while True:
        try:
            code = process.wait(timeout=0.5)
        except KeyboardInterrupt:
            print("stopping after the current step (the checkpoint is saved)…", file=out, flush=True)
            pid = (read_json(directory / "status.json") or {}).get("pid")
            if forward_stop and isinstance(pid, int) and pid > 0:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGINT)
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


def _new_run_config(args: argparse.Namespace, catalog, directory: Path):
    """The config of a run that does not exist yet, checked (flags, base model, data) before anything starts."""
    from dataclasses import fields, replace

    from tuitune.sources import model_path
    from tuitune.training.planner import check_plan, estimate
    from tuitune.training.presets import choose, load_presets, resolve
    from tuitune.training.report import checked_dataset
    from tuitune.training.runs import TrainConfig, training_active

    named = getattr(args, "preset", None)
    presets = load_presets()
    preset = choose(presets, named, None) if named is not None else None  # an unknown name fails first
    if (args.base or (preset and preset.base)) is None or (args.data or (preset and preset.data)) is None:
        raise TuituneError("tuitune train needs --base MODEL and --data FILE (or --resume, or a recipe such as "
                           "--preset instruct-demo)")  # fmt: skip
    if (directory / "config.json").exists():
        raise TuituneError(f"a run named '{args.name}' exists; continue it with --resume or choose another --name")
    if args.name in catalog:
        raise TuituneError(f"'{args.name}' is already a model in the catalog; choose another --name")
    entry = catalog.get(args.base or preset.base)
    if named is None:
        preset = choose(presets, None, entry.family)
    given = {key: getattr(args, key) for key in TRAIN_SETTINGS}
    given.update(base=args.base, data=str(Path(args.data).resolve()) if args.data else None,
                 val=str(Path(args.val).resolve()) if args.val else None)  # fmt: skip
    if args.target_modules:
        given["target_modules"] = [name.strip() for name in args.target_modules.split(",") if name.strip()]
    resolved = resolve(preset, given)
    known = {item.name for item in fields(TrainConfig)}
    config = TrainConfig(name=args.name, base=entry.id, data=resolved.values["data"], preset=resolved.record())
    config = replace(config, **{key: value for key, value in resolved.values.items() if key in known})
    if args.grad_checkpoint:
        config = replace(config, grad_checkpoint=True)
    config.validate()
    heading = f"preset {preset.name} ({preset.origin})" if preset else "no preset (the plain defaults)"
    print(inert(f"{heading}:\n  " + "\n  ".join(resolved.lines())), flush=True)
    if entry.kind not in ("base", "chat"):
        raise TuituneError(f"--base must be a local base or chat model; '{entry.id}' is {entry.kind}")
    model_path(entry)  # not installed: fail now, not after the data check
    if config.weights == "hub" and entry.train_weights is None:
        raise TuituneError(
            f"'{entry.id}' names no train_weights repo in the catalog; add "
            'train_weights = { hf = "org/name" } to its entry, or use --weights gguf'
        )
    counts = None
    for path in filter(None, (config.data, config.val)):
        report, found = checked_dataset(path, config.base, config.max_length)
        counts = counts or found  # the training data sizes the largest pass
        if not report.ok:
            print(inert(report.format_text()))
            raise TuituneError(f"{path} has problems (above); fix them and train again")
    if training_active():
        raise TuituneError("another training run is active; two on 2 cores would each run at a crawl")
    plan = estimate(entry, config, counts=counts)
    check_plan(plan)  # refuses with what would fit, before any weights are loaded
    print(inert(f"memory: {plan.summary()}"), flush=True)
    return config


def cmd_train(args: argparse.Namespace) -> int:
    from tuitune.catalog import _ID_PATTERN, load_catalog
    from tuitune.paths import private_app_dir
    from tuitune.training.runs import TrainConfig, run_dir, run_status, trainer_command

    if args.name is None and getattr(args, "remote", None) and args.base:
        from tuitune.cli.remote_train import default_name

        args.name = default_name(args.base)
    if args.name is None:
        from tuitune.training.presets import recipe_for

        recipe = recipe_for(getattr(args, "preset", None))  # --preset instruct-demo --resume: that run
        if recipe is None or recipe.run_name is None:
            raise TuituneError("tuitune train needs --name NAME (a recipe, e.g. --preset instruct-demo, names its run)")
        args.name = recipe.run_name
    if not _ID_PATTERN.match(args.name):
        raise TuituneError(f"--name '{args.name}' may use only letters, digits, '.', '_' and '-'")
    directory = run_dir(args.name)
    if getattr(args, "remote", None) or getattr(args, "cancel", False) or (args.resume and _remote_run(directory)):
        from tuitune.cli.remote_train import cmd_train_remote

        return cmd_train_remote(args, directory)
    for flag in ("lr_multiplier", "suffix"):
        if getattr(args, flag, None) is not None:
            raise TuituneError(f"--{flag.replace('_', '-')} applies to a service's job: add --remote ENDPOINT")
    catalog = load_catalog()
    if args.resume:
        if not (directory / "config.json").exists():
            raise TuituneError(f"no run named '{args.name}' to resume (runs live in {directory.parent})")
        config = TrainConfig.from_json(directory / "config.json")
        status = run_status(directory)
        if status.get("state") == "running":
            raise TuituneError(f"run '{args.name}' is still running")
        if status.get("state") == "done" and status.get("early_stopped"):
            print(inert(f"run '{args.name}' stopped early at step {status.get('step')}: {status.get('stop_reason')}; "
                        f"nothing to resume. Its best adapter (step {status.get('best_step')}) is exported: "
                        f"{status.get('adapter')}"))  # fmt: skip
            return 0
    else:
        config = _new_run_config(args, catalog, directory)
        private_app_dir(directory)  # 0700, like the history: the run's data and logs are the user's
        config.write(directory / "config.json")
    if args.prepare:
        print(f"run '{config.name}' prepared in {directory}; start it on each node with torchrun, e.g.\n"
              f"  torchrun --nnodes N --node-rank RANK --nproc-per-node {config.nproc} --rdzv-backend c10d "
              f"--rdzv-endpoint HEAD:29500 -m tuitune.training.train {directory}\n"
              f"or here with `tuitune train --name {config.name} --resume`")  # fmt: skip
        return 0
    command = trainer_command(directory, config.nproc, args.resume)
    processes = f", {config.nproc} processes under torchrun" if config.nproc > 1 else ""
    print(f"run '{config.name}': {directory}{processes}", flush=True)
    with open(directory / "stderr.log", "ab") as errors:  # library warnings and tracebacks, not the terminal
        # torchrun gets a session of its own: Ctrl-C is passed to rank 0 alone, which stops every rank at the
        # same step; torchrun itself would kill them after 30 s.
        process = subprocess.Popen(command, stderr=errors, start_new_session=config.nproc > 1)
    code = _follow_run(process, directory, sys.stdout, forward_stop=config.nproc > 1)
    status = run_status(directory)
    if code == 0 and status.get("state") == "stopped":
        code = 130
    if code == 0:
        print(f"done: `tuitune chat {config.name}` runs it; `tuitune compare --models {config.base},{config.name}` "
              "compares it with its base")  # fmt: skip
    elif code == 130 or status.get("state") == "stopped":
        print(f"stopped: `tuitune train --name {config.name} --resume` continues from the last checkpoint")
    else:
        details = directory / "stderr.log"
        raise TuituneError(f"training failed: {status.get('message', 'no message')} (details: {details})")
    return 0 if code == 0 else code


def _remote_run(directory: Path) -> bool:
    from tuitune.remote_training.runs import is_remote

    return is_remote(directory)


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
    print(f"wrote {inert(str(out))} ({out.stat().st_size / 1e6:.1f} MB), a LoRA adapter for {inert(model.id)}")
    return 0
