"""The trainer subprocess: ``python -m tuitune.training.train RUN_DIR [--resume]``.

A plain loop rather than HF ``Trainer``: the loss is computed with the output head applied only at positions
that carry a label (prompt tokens are masked), which skips most of the vocabulary projection — for Gemma's
262k-token vocabulary the full logits tensor is the largest cost of a step. Everything else is standard:
AdamW, cosine schedule with linear warmup, gradient clipping, optional NEFTune noise, a seeded data order.

The run directory is the only channel to the app: a JSON line per step in ``metrics.jsonl``, checkpoints
written to a temporary directory and renamed into place (a full disk leaves the previous one intact), and
``status.json``. SIGINT/SIGTERM stop after the current step and save a checkpoint; ``--resume`` restores
the adapter, optimizer, schedule and RNG state, so the loss curve continues as if never interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tuitune.errors import TuituneError
from tuitune.training.runs import (
    ATTENTION_TARGETS,
    DEFAULT_TARGETS,
    TrainConfig,
    active_marker,
    read_json,
    write_json,
)

KEEP_CHECKPOINTS = 2
PASS_TOKENS = int(os.environ.get("TUITUNE_PASS_TOKENS", "1024"))  # padded tokens per forward/backward pass


def peak_rss_mb() -> int:
    """This process's peak resident memory so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def length_chunks(batch: list, budget: int) -> list[list]:
    """A batch, sorted by length and cut into forward/backward passes of at most ``budget`` padded tokens.

    The gradient is the same as one pass over the whole batch (the loss is a sum over reply tokens, divided by
    the batch's total), but each pass pads only to its own longest sequence, and activations are held for one
    pass at a time: a batch of short examples runs as one pass (bigger matrix products, a shared prefix
    computed once for all of them), a batch of long ones in several, so memory stays bounded.
    """
    passes: list[list] = []
    for seq in sorted(batch, key=lambda seq: len(seq.input_ids)):
        current = passes[-1] if passes else None
        if current is not None and (len(current) + 1) * len(seq.input_ids) <= budget:
            current.append(seq)
        else:
            passes.append([seq])
    return passes


class Stop(Exception):
    """Raised inside the loop when a stop was requested."""


class Run:
    def __init__(self, directory: Path, resume: bool):
        self.dir = directory
        self.config = TrainConfig.from_json(directory / "config.json")
        self.resume = resume
        self.stop_requested = False
        self.status: dict[str, Any] = {"state": "starting", "pid": os.getpid(), "step": 0}

    # -- status and logs ---------------------------------------------------------------------------
    def set_status(self, **fields: Any) -> None:
        self.status.update(fields)
        write_json(self.dir / "status.json", self.status)

    def log(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        with open(self.dir / "train.log", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def metric(self, row: dict[str, Any]) -> None:
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

    # -- the run -----------------------------------------------------------------------------------
    def main(self) -> int:
        import random

        import torch

        from tuitune.catalog import load_catalog
        from tuitune.sources import model_path
        from tuitune.training.formatting import Formatter

        config = self.config
        write_json(active_marker(), {"pid": os.getpid(), "run": config.name})
        self.set_status(state="running", message="loading the base model")
        entry = load_catalog().get(config.base)
        gguf = model_path(entry)
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

        torch.manual_seed(config.seed)
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        weights = self.training_weights(entry, gguf)
        base_model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
        family = base_model.config.model_type
        targets = config.target_modules or DEFAULT_TARGETS.get(family, ATTENTION_TARGETS)
        lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                          target_modules=targets, bias="none", task_type="CAUSAL_LM")  # fmt: skip
        model = get_peft_model(base_model, lora)
        causal_lm = model.base_model.model
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        self.log(f"{config.base} ({family}): LoRA r={config.rank} alpha={config.alpha} on {', '.join(targets)}; "
                 f"{trainable:,} trainable of {total:,} parameters")  # fmt: skip

        per_step = config.batch_size * config.grad_accum
        steps_per_epoch = max(1, math.ceil(len(train_set) / per_step))
        total_steps = config.max_steps or max(1, math.ceil((config.epochs or 3) * steps_per_epoch))
        warmup = max(1, int(total_steps * config.warmup_ratio))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                      weight_decay=0.0)  # fmt: skip

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        if config.neftune_alpha:
            embeddings = causal_lm.get_input_embeddings()

            def neftune(module, inputs, output):
                if module.training:  # scaled by the whole sequence's length, also when a shared prefix runs apart
                    length = getattr(module, "sequence_length", None) or output.shape[1]
                    scale = config.neftune_alpha / math.sqrt(length * output.shape[2])
                    output = output + torch.zeros_like(output).uniform_(-scale, scale)
                return output

            embeddings.register_forward_hook(neftune)

        start_step, elapsed_before = 0, 0.0
        if self.resume:
            start_step, elapsed_before = self.restore(model, optimizer, scheduler)
        self.set_status(state="running", step=start_step, total_steps=total_steps, message="training",
                        train_examples=len(train_set), val_examples=len(val_set))  # fmt: skip
        self.log(f"{len(train_set)} training sequences, {len(val_set)} validation; {total_steps} steps of "
                 f"{per_step} ({config.batch_size} × {config.grad_accum}); from step {start_step}")  # fmt: skip

        orders: dict[int, list[int]] = {}

        def batches_for(step: int) -> list[list]:
            """The micro-batches of global ``step``: a seeded permutation per epoch, so resume sees the same."""
            result = []
            for micro in range(config.grad_accum):
                start = (step * config.grad_accum + micro) * config.batch_size
                batch = []
                for offset in range(start, start + config.batch_size):
                    epoch, index = divmod(offset, len(train_set))
                    if epoch not in orders:
                        orders[epoch] = list(range(len(train_set)))
                        random.Random(config.seed * 1000 + epoch).shuffle(orders[epoch])
                    batch.append(train_set[orders[epoch][index]])
                result.append(batch)
            return result

        started = time.monotonic()
        model.train()
        for step in range(start_step, total_steps):
            step_started = time.monotonic()
            optimizer.zero_grad(set_to_none=True)
            micro_batches = batches_for(step)
            targets_total = sum(seq.reply_tokens for batch in micro_batches for seq in batch)
            loss_sum = 0.0
            for batch in micro_batches:
                for chunk in length_chunks(batch, PASS_TOKENS):
                    loss = reply_loss(causal_lm, chunk, torch, reduction="sum") / targets_total
                    loss.backward()
                    loss_sum += loss.item()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            tokens = sum(len(seq.input_ids) for batch in micro_batches for seq in batch)
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
                row["eval_loss"] = round(evaluate(causal_lm, val_set, config.batch_size, torch), 5)
                model.train()
            self.metric(row)
            self.set_status(step=done, peak_rss_mb=peak_rss_mb())
            if done % config.save_every == 0 or done == total_steps or self.stop_requested:
                self.checkpoint(model, optimizer, scheduler, done, elapsed)
            if self.stop_requested:
                self.set_status(state="stopped", message=f"stopped at step {done}; --resume continues from there")
                self.log(f"stopped at step {done}; checkpoint saved")
                return 130
        self.finish(model, gguf, entry)
        return 0

    def training_weights(self, entry, gguf: Path) -> Path:
        """The fp32 starting weights: the dequantized GGUF, or the catalog's safetensors repo (``--weights``).

        ``auto`` is settled on the first start (hub when that repo is already downloaded) and written back to
        config.json, so ``--resume`` continues from the same weights.
        """
        from tuitune.training.convert import cached_hub_weights, fetch_hub_weights, trainable_weights

        config = self.config
        if config.weights == "auto":
            config.weights = "hub" if cached_hub_weights(entry) is not None else "gguf"
            config.write(self.dir / "config.json")
        if config.weights == "gguf":
            self.set_status(message="preparing fp32 weights from the GGUF (first time: about a minute)")
            self.log(f"weights: dequantized from {gguf.name}")
            return trainable_weights(gguf, config.base)
        spec = entry.train_weights
        last = [0.0]

        def progress(report) -> None:
            if time.monotonic() - last[0] >= 1.0:
                last[0] = time.monotonic()
                share = f" {100 * report.done / report.total:.0f}%" if report.total else ""
                self.set_status(message=f"downloading {report.filename}{share}")

        self.log(f"weights: {spec.repo if spec else '?'} (safetensors, revision {spec.revision if spec else '?'})")
        return fetch_hub_weights(entry, progress=progress)

    def checkpoint(self, model, optimizer, scheduler, step: int, elapsed: float) -> None:
        import torch

        directory = self.dir / "checkpoints"
        directory.mkdir(exist_ok=True)
        temporary = directory / f".tmp-step-{step}"
        final = directory / f"step-{step}"
        shutil.rmtree(temporary, ignore_errors=True)
        try:
            model.save_pretrained(temporary)
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "rng": torch.get_rng_state(), "step": step, "elapsed": elapsed},
                       temporary / "trainer_state.pt")  # fmt: skip
            shutil.rmtree(final, ignore_errors=True)
            os.replace(temporary, final)
        except Exception as error:  # OSError from files, RuntimeError from torch.save, safetensors' own errors
            shutil.rmtree(temporary, ignore_errors=True)
            previous = latest_checkpoint(self.dir)
            kept = f"the checkpoint at step {previous[0]} is intact" if previous else "no earlier checkpoint exists"
            reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
            raise TuituneError(
                f"could not save the checkpoint at step {step} ({reason}); {kept}. "
                "Free some disk space, then continue with --resume"
            ) from None
        for old in sorted(checkpoints(self.dir))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old[1], ignore_errors=True)
        self.log(f"checkpoint saved at step {step}")

    def restore(self, model, optimizer, scheduler) -> tuple[int, float]:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        found = latest_checkpoint(self.dir)
        if found is None:
            self.log("no checkpoint to resume from: starting at step 0")
            (self.dir / "metrics.jsonl").unlink(missing_ok=True)
            return 0, 0.0
        step, path = found
        set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
        state = torch.load(path / "trainer_state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        metrics = self.dir / "metrics.jsonl"
        if metrics.exists():  # drop the steps after the checkpoint: they are trained again
            kept = [line for line in metrics.read_text(encoding="utf-8").splitlines()
                    if _step_of(line) is not None and _step_of(line) <= step]  # fmt: skip
            metrics.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self.log(f"resumed from the checkpoint at step {step}")
        return step, float(state.get("elapsed", 0.0))

    def finish(self, model, gguf: Path, entry) -> None:
        from tuitune.catalog import add_user_entry, load_catalog
        from tuitune.training.export import export_adapter

        adapter_dir = self.dir / "adapter"
        self.set_status(message="exporting the adapter")
        model.save_pretrained(adapter_dir)
        out = export_adapter(adapter_dir, gguf, self.dir / f"{self.config.name}.gguf")
        catalog = load_catalog()
        if self.config.name not in catalog:
            add_user_entry({
                "id": self.config.name, "name": f"{self.config.name} (LoRA on {entry.id})", "kind": "finetuned",
                "family": entry.family, "mode": "chat", "base": entry.id, "pair": entry.id, "adapter": str(out),
                "description": f"LoRA finetune of {entry.id} on {Path(self.config.data).name}",
            })  # fmt: skip
        self.set_status(state="done", message=f"finished: {out}", adapter=str(out))
        self.log(f"done: adapter {out}; catalog entry '{self.config.name}' (kind finetuned, pair {entry.id})")


MIN_SHARED_PREFIX = 8  # below this, running the prefix on its own costs more than it saves


def shared_prefix_length(batch: list) -> int:
    """How many leading tokens every sequence of ``batch`` has in common, ending before any trained token.

    Chat templates that add a default system prompt (SmolLM2, Qwen2.5) start every example with the same
    dozens of tokens. The prefix stops one token before the first reply, so every trained token is predicted
    from a position after it.
    """
    first = batch[0].input_ids
    limit = min(seq.prompt_tokens for seq in batch) - 1
    length = 0
    while length < limit and all(seq.input_ids[length] == first[length] for seq in batch):
        length += 1
    return length


def reply_loss(causal_lm, batch: list, torch, reduction: str = "mean"):
    """Cross-entropy over reply tokens only, with the output head applied only where a label exists.

    When the sequences share a prefix of at least ``MIN_SHARED_PREFIX`` tokens, it is run once and its keys
    and values are repeated for the batch, inside the autograd graph: the same loss and gradients (up to
    float rounding, and LoRA dropout drawn once for the shared positions), without computing the prefix
    once per sequence.
    """
    prefix = shared_prefix_length(batch) if len(batch) > 1 else 0
    window = getattr(causal_lm.config, "sliding_window", None)
    longest = max(len(seq.input_ids) for seq in batch)
    if prefix < MIN_SHARED_PREFIX or (window and longest > window):
        prefix = 0
    length = longest - prefix
    ids = torch.zeros((len(batch), length), dtype=torch.long)
    mask = torch.zeros((len(batch), prefix + length), dtype=torch.long)
    trained = torch.zeros((len(batch), length), dtype=torch.bool)
    for row, seq in enumerate(batch):
        ids[row, : len(seq.input_ids) - prefix] = torch.tensor(seq.input_ids[prefix:])
        mask[row, : len(seq.input_ids)] = 1
        trained[row, seq.prompt_tokens - prefix : len(seq.input_ids) - prefix] = True
    causal_lm.get_input_embeddings().sequence_length = prefix + length  # read by the NEFTune hook
    if prefix:
        from transformers import DynamicCache

        cache = DynamicCache(config=causal_lm.config)
        causal_lm.model(input_ids=torch.tensor([batch[0].input_ids[:prefix]]), past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(len(batch))
        positions = torch.arange(prefix, prefix + length).expand(len(batch), -1)
        hidden = causal_lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                                 use_cache=True).last_hidden_state  # fmt: skip
    else:
        hidden = causal_lm.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    select = trained[:, 1:]  # position t predicts token t + 1
    logits = causal_lm.lm_head(hidden[:, :-1][select])
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][select], reduction=reduction)


def evaluate(causal_lm, sequences: list, batch_size: int, torch) -> float:
    causal_lm.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start : start + batch_size]
            total += reply_loss(causal_lm, batch, torch, reduction="sum").item()
            count += sum(seq.reply_tokens for seq in batch)
    return total / max(1, count)


def checkpoints(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in (directory / "checkpoints").glob("step-*"):
        if (path / "trainer_state.pt").exists() and path.name[5:].isdigit():
            found.append((int(path.name[5:]), path))
    return sorted(found)


def latest_checkpoint(directory: Path) -> tuple[int, Path] | None:
    found = checkpoints(directory)
    return found[-1] if found else None


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


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

    def request_stop(signum: int, frame: object) -> None:
        if not run.stop_requested:
            run.stop_requested = True
            run.log("stop requested: finishing the current step, then saving a checkpoint")

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        return run.main()
    except TuituneError as error:
        run.set_status(state="failed", message=str(error))
        run.log(f"error: {error}")
        return 1
    except Exception as error:
        run.set_status(state="failed", message=f"unexpected error: {error!r}")
        run.log(f"unexpected error: {error!r}")
        raise
    finally:
        marker = read_json(active_marker())
        if marker and marker.get("pid") == os.getpid():
            active_marker().unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
