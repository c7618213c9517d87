"""The trainer process: ``python -m tuitune.training.train RUN_DIR [--resume]``, or several under torchrun.

A plain loop rather than HF ``Trainer``: the loss is computed with the output head applied only at positions
that carry a label (prompt tokens are masked, see ``loss.py``), which skips most of the vocabulary
projection. Everything else is standard: AdamW, cosine schedule with linear warmup, gradient clipping,
optional NEFTune noise, a seeded data order — on the CPU in fp32, on a GPU in bf16 (or 4-bit QLoRA), with
the LoRA parameters and optimizer in fp32 everywhere.

Under torchrun each process takes its share of every global batch; the loss is divided by the global
number of reply tokens, so the curve matches one process at the same batch. Rank 0 alone writes the run
directory, the only channel to the app: a JSON line per step in ``metrics.jsonl``, checkpoints
(``checkpoints.py``) and ``status.json``. SIGINT/SIGTERM stop every rank after the current step and save a
checkpoint; ``--resume`` restores the adapter, optimizer, schedule and RNG state.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from tuitune.errors import TuituneError
from tuitune.training.early_stop import EarlyStop
from tuitune.training.runs import (
    TrainConfig,
    active_marker,
    read_json,
    read_metrics,
    write_json,
)

PASS_TOKENS = int(os.environ.get("TUITUNE_PASS_TOKENS", "1024"))  # padded tokens per forward/backward pass


def peak_rss_mb() -> int:
    """This process's peak resident memory so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


class Run:
    def __init__(self, directory: Path, resume: bool):
        from tuitune.training.distributed import from_environment

        self.dir = directory
        self.config = TrainConfig.from_json(directory / "config.json")
        self.resume = resume
        self.ranks = from_environment()
        self.stop_requested = False
        self.status: dict[str, Any] = {"state": "starting", "pid": os.getpid(), "step": 0}
        self.device = "cpu"

    # -- status and logs (rank 0 only) ---------------------------------------------------------------
    def set_status(self, **fields: Any) -> None:
        self.status.update(fields)
        if self.ranks.is_main:
            write_json(self.dir / "status.json", self.status)

    def log(self, message: str) -> None:
        if not self.ranks.is_main:
            return
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        with open(self.dir / "train.log", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def fail(self, message: str) -> int:
        self.set_status(state="failed", message=message)
        self.log(f"error: {message}")
        if not self.ranks.is_main:
            print(f"rank {self.ranks.rank}: {message}", file=sys.stderr, flush=True)
        return 1

    def metric(self, row: dict[str, Any]) -> None:
        if self.ranks.is_main:
            with open(self.dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")

    # -- data --------------------------------------------------------------------------------------
    def sequences(self, formatter, path: str) -> list:
        from tuitune.training.data import load_examples
        from tuitune.training.formatting import fit_to_length

        result = []
        for example in load_examples(Path(path)):
            for sequence in formatter.sequences(example):
                fitted = fit_to_length(sequence, self.config.max_length)
                if fitted is not None and fitted.reply_tokens > 0:
                    result.append(fitted)
        return result

    def datasets(self, entry, gguf: Path) -> tuple[list, list]:
        import random

        from tuitune.training.formatting import Formatter

        config = self.config
        formatter = Formatter(gguf, entry.chat_format)
        try:
            train_set = self.sequences(formatter, config.data)
            val_set = self.sequences(formatter, config.val) if config.val else []
        finally:
            formatter.close()
        if not train_set:
            raise TuituneError(f"{config.data}: no trainable examples (every reply is empty or too long)")
        if not val_set and config.val_split > 0:
            shuffled = list(train_set)
            random.Random(config.seed).shuffle(shuffled)
            count = max(1, int(len(shuffled) * config.val_split))
            val_set, train_set = shuffled[:count], shuffled[count:]
        return train_set, val_set

    # -- the model -----------------------------------------------------------------------------------
    # -- the run -----------------------------------------------------------------------------------
    def main(self) -> int:
        import random

        import torch

        from tuitune.catalog import load_catalog
        from tuitune.sources import model_path
        from tuitune.training import checkpoints, distributed, setup
        from tuitune.training.devices import autocast_context, peak_device_mb
        from tuitune.training.loss import ReplyLoss, length_chunks, summed_eval_loss

        config, ranks = self.config, self.ranks
        if self.resume and (read_json(self.dir / "status.json") or {}).get("early_stopped"):
            self.log("this run stopped early (see status.json): nothing to resume, its best adapter is exported")
            return 0
        if ranks.is_main:
            write_json(active_marker(), {"pid": os.getpid(), "run": config.name})
        self.set_status(state="running", message="loading the base model")
        device_kind, precision = setup.settle_device(self)
        entry = load_catalog().get(config.base)
        gguf = model_path(entry)
        train_set, val_set = self.datasets(entry, gguf)

        torch.manual_seed(config.seed)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks.world))
        model, causal_lm = setup.load_model(self, entry, gguf, precision)
        autocast = autocast_context(device_kind, precision)
        loss_module = distributed.wrap(ReplyLoss(causal_lm, share_prefix=not config.grad_checkpoint), ranks)
        scaler = torch.amp.GradScaler(device_kind) if precision.loss_scaling else None

        per_step = config.batch_size * config.grad_accum
        steps_per_epoch = max(1, math.ceil(len(train_set) / per_step))
        total_steps = config.max_steps or max(1, math.ceil((config.epochs or 3) * steps_per_epoch))
        warmup = max(1, int(total_steps * config.warmup_ratio))
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        if config.neftune_alpha:
            setup.add_neftune(causal_lm, config.neftune_alpha)

        start_step, elapsed_before = 0, 0.0
        if self.resume:
            restored = checkpoints.restore(self.dir, model, optimizer, scheduler, scaler)
            if restored is None:
                self.log("no checkpoint to resume from: starting at step 0")
                if ranks.is_main:
                    (self.dir / "metrics.jsonl").unlink(missing_ok=True)
            else:
                start_step, elapsed_before = restored
                if ranks.is_main:
                    checkpoints.truncate_metrics(self.dir, start_step)
                self.log(f"resumed from the checkpoint at step {start_step}")
        early = None  # the best validation loss so far (rebuilt from the kept metrics on resume)
        if config.early_stop is not None:
            early = EarlyStop.from_metrics(read_metrics(self.dir) if self.resume else [], config.early_stop,
                                           config.min_delta)  # fmt: skip
        self.set_status(state="running", step=start_step, total_steps=total_steps, message="training",
                        train_examples=len(train_set), val_examples=len(val_set), device=self.device)  # fmt: skip
        split = f", split over {ranks.world} processes" if ranks.distributed else ""
        self.log(f"{len(train_set)} training sequences, {len(val_set)} validation; {total_steps} steps of "
                 f"{per_step} ({config.batch_size} × {config.grad_accum}{split}); from step {start_step}")  # fmt: skip

        orders: dict[int, list[int]] = {}

        def examples_of(step: int) -> list:
            """The global batch of ``step``: a seeded permutation per epoch, so resume (and every rank) sees it."""
            batch = []
            for offset in range(step * per_step, (step + 1) * per_step):
                epoch, index = divmod(offset, len(train_set))
                if epoch not in orders:
                    orders[epoch] = list(range(len(train_set)))
                    random.Random(config.seed * 1000 + epoch).shuffle(orders[epoch])
                batch.append(train_set[orders[epoch][index]])
            return batch

        started = time.monotonic()
        model.train()
        last = start_step
        end = start_step if early is not None and early.should_stop else total_steps  # stopped by Ctrl-C as it ended
        for step in range(start_step, end):
            step_started = time.monotonic()
            optimizer.zero_grad(set_to_none=True)
            batch = examples_of(step)
            mine = distributed.share(ranks, batch)
            (targets_total,) = distributed.total(ranks, sum(seq.reply_tokens for seq in mine))
            passes = length_chunks(mine, PASS_TOKENS)
            loss_sum = 0.0
            for index, chunk in enumerate(passes):
                last = index == len(passes) - 1  # DDP averages gradients once, after the rank's last pass
                with nullcontext() if last or not ranks.distributed else loss_module.no_sync(), autocast():
                    loss = loss_module(chunk) / targets_total
                    scaled = loss * ranks.world  # DDP divides by the world size; the loss is already global
                    (scaler.scale(scaled) if scaler else scaled).backward()
                loss_sum += loss.item()
            (loss_sum,) = distributed.total(ranks, loss_sum)
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            tokens = sum(len(seq.input_ids) for seq in batch)
            now = time.monotonic()
            elapsed = elapsed_before + (now - started)
            done = step + 1
            rate = (done - start_step) / (now - started)
            row = {
                "step": done,
                "epoch": round(done * per_step / len(train_set), 3),
                "loss": round(loss_sum, 5),
                "eval_loss": None,
                "lr": scheduler.get_last_lr()[0],
                "tokens": tokens,
                "tokens_per_s": round(tokens / max(1e-9, now - step_started), 1),
                "elapsed": round(elapsed, 2),
                "eta": round((total_steps - done) / rate, 1) if rate > 0 else None,
            }
            if val_set and (done % config.eval_every == 0 or done == total_steps):
                summed, count = summed_eval_loss(causal_lm, val_set[ranks.rank :: ranks.world], config.batch_size,
                                                 autocast)  # fmt: skip
                summed, count = distributed.total(ranks, summed, count)
                row["eval_loss"] = round(summed / max(1, count), 5)
                model.train()
            improved = early is not None and row["eval_loss"] is not None and early.update(done, row["eval_loss"])
            if early is not None:
                row["best_step"] = early.best_step
            self.metric(row)
            best = {"best_step": early.best_step, "best_eval_loss": early.best_loss} if early else {}
            self.set_status(step=done, peak_rss_mb=peak_rss_mb(), peak_device_mb=peak_device_mb(device_kind), **best)
            stopping = distributed.anyone(ranks, self.stop_requested)
            if ranks.is_main and (done % config.save_every == 0 or done == total_steps or stopping or improved):
                checkpoints.save(self.dir, model, optimizer, scheduler, scaler, done, elapsed,
                                 keep=early.best_step if early else None)  # fmt: skip
                self.log(f"checkpoint saved at step {done}{' (best validation loss)' if improved else ''}")
            last = done
            if stopping:
                self.set_status(state="stopped", message=f"stopped at step {done}; --resume continues from there")
                self.log(f"stopped at step {done}; checkpoint saved")
                return 0 if ranks.distributed else 130  # torchrun reports any non-zero exit as a crash
            if early is not None and distributed.anyone(ranks, early.should_stop):
                self.log(f"stopping early at step {done}: {early.reason()}")
                break
        if ranks.is_main:
            self.finish(model, gguf, entry, early, last)
        return 0

    def finish(self, model, gguf: Path, entry, early: EarlyStop | None, last: int) -> None:
        """Export the adapter — with early stopping, the best checkpoint's, which may be older than the last step."""
        from tuitune.catalog import add_user_entry, load_catalog
        from tuitune.training import checkpoints
        from tuitune.training.export import export_adapter

        adapter_dir = self.dir / "adapter"
        self.set_status(message="exporting the adapter")
        best: dict[str, Any] = {}
        if early is not None and early.best_step is not None:
            if early.best_step != last:
                checkpoints.load_adapter(self.dir, model, early.best_step)
                self.log(f"exporting the best checkpoint: step {early.best_step} (validation {early.best_loss:.4f})")
            best = {"best_step": early.best_step, "best_eval_loss": early.best_loss, "early_stopped": early.should_stop}
            if early.should_stop:
                best["stop_reason"] = early.reason()
        model.save_pretrained(adapter_dir)
        out = export_adapter(adapter_dir, gguf, self.dir / f"{self.config.name}.gguf")
        catalog = load_catalog()
        if self.config.name not in catalog:
            add_user_entry({
                "id": self.config.name, "name": f"{self.config.name} (LoRA on {entry.id})", "kind": "finetuned",
                "family": entry.family, "mode": "chat", "base": entry.id, "pair": entry.id, "adapter": str(out),
                "description": f"LoRA finetune of {entry.id} on {Path(self.config.data).name}",
            })  # fmt: skip
        message = f"finished: {out}"
        if best.get("early_stopped"):
            message = f"stopped early at step {last}: {best['stop_reason']}; exported step {best['best_step']}: {out}"
        elif best and best["best_step"] != last:
            message = f"finished; exported the best checkpoint (step {best['best_step']}): {out}"
        self.set_status(state="done", message=message, adapter=str(out), **best)
        self.log(f"done: adapter {out}; catalog entry '{self.config.name}' (kind finetuned, pair {entry.id})")


def quiet_libraries() -> None:
    """Progress bars and deprecation chatter from transformers belong in no one's terminal or log."""
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(prog="python -m tuitune.training.train")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    run = Run(args.run_dir, args.resume)
    if run.config.quantize == "none":
        # peft and transformers import bitsandbytes whenever it is installed: 1.5 s and 44 MB here, for nothing
        # in a run that quantizes nothing. A None entry makes both see it as absent (importlib's documented rule).
        sys.modules.setdefault("bitsandbytes", None)

    def request_stop(signum: int, frame: object) -> None:
        if not run.stop_requested:
            run.stop_requested = True
            run.log("stop requested: finishing the current step, then saving a checkpoint")

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        return run.main()
    except TuituneError as error:
        return run.fail(str(error))
    except Exception as error:
        message = explain_failure(error, run)
        if message is not None:
            return run.fail(message)
        run.set_status(state="failed", message=f"unexpected error: {error!r}")
        run.log(f"unexpected error: {error!r}")
        raise
    finally:
        marker = read_json(active_marker())
        if marker and marker.get("pid") == os.getpid():
            active_marker().unlink(missing_ok=True)
        if "torch" in sys.modules:
            from tuitune.training import distributed

            distributed.stop()


def _short_reason(error: Exception) -> str:
    """The gist of a collective's error: gloo's and NCCL's start with a source location and go on for lines."""
    import re

    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". ")[0][:160]


def explain_failure(error: Exception, run: Run) -> str | None:
    """One line for the failures a user can act on: out of memory, another process of the run lost."""
    from tuitune.training.checkpoints import latest_checkpoint
    from tuitune.training.distributed import PeerLost

    step = run.status.get("step", 0)
    found = latest_checkpoint(run.dir)
    kept = f"the checkpoint at step {found[0]} is intact" if found else "no checkpoint was saved yet"
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return (f"{run.device} ran out of memory at step {step}; {kept}. Try --quantize 4bit, --grad-checkpoint, "
                "a smaller --batch-size or --max-length (`tuitune data check --base` shows the estimate)")  # fmt: skip
    if run.ranks.distributed and isinstance(error, (PeerLost, RuntimeError)):
        reason = _short_reason(error)
        return (f"another process of this {run.ranks.world}-process run ended unexpectedly at step {step} "
                f"({reason}); {kept}: --resume continues from it")  # fmt: skip
    return None


if __name__ == "__main__":
    sys.exit(main())
