"""Training throughput: tuitune's trainer vs a plain HF ``Trainer`` + peft on the same data, model, LoRA
settings and batch, in one run; plus the peak RSS of a whole `tuitune train` run of SmolLM2-135M.

Both sides train on the same token ids (the demo dataset formatted by tuitune's llama.cpp-exact formatter),
LoRA r=16 on q/k/v/o, batch 8, AdamW with a cosine schedule, fp32 on the CPU. Tokens/s counts real
(unpadded) tokens over the steps after the first (warm-up excluded). Target: tuitune / Trainer ≥ 1.4;
peak RSS ≤ 2.5 GB.

With ``--device cuda`` both sides train on the GPU in bf16: frozen weights in bf16, LoRA parameters in fp32,
bf16 autocast (``bf16=True`` for the Trainer, ``--device cuda`` for tuitune); the Trainer's step timer waits
for the GPU. Target there: tuitune / Trainer ≥ 1.5. The peak table adds the GPU high-water mark.

    python bench/bench_train.py [--steps 20] [--rounds 2] [--models smollm2-135m-instruct,gemma-3-270m]
                                [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import table

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "tuitune-identity.jsonl"


def sequences(model_id: str) -> tuple[list, Path]:
    from tuitune.catalog import load_catalog
    from tuitune.sources import model_path
    from tuitune.training.data import load_examples
    from tuitune.training.formatting import Formatter, fit_to_length

    entry = load_catalog().get(model_id)
    gguf = model_path(entry)
    formatter = Formatter(gguf, entry.chat_format)
    result = []
    for example in load_examples(DATA):
        for sequence in formatter.sequences(example):
            fitted = fit_to_length(sequence, 512)
            if fitted is not None:
                result.append(fitted)
    formatter.close()
    return result, gguf


def hf_trainer_rate(model_id: str, steps: int, device: str = "cpu") -> float:
    """Tokens/s of transformers' Trainer with a peft LoRA model, standard loss over the full vocabulary."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from tuitune.training.convert import trainable_weights

    data, gguf = sequences(model_id)
    torch.manual_seed(42)
    cuda = device == "cuda"
    if cuda:  # bf16 weights (the same bf16 files tuitune trains from); peft keeps the adapters in fp32
        model = AutoModelForCausalLM.from_pretrained(trainable_weights(gguf, model_id, dtype="bfloat16"),
                                                     dtype=torch.bfloat16)  # fmt: skip
    else:
        model = AutoModelForCausalLM.from_pretrained(trainable_weights(gguf, model_id), torch_dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, bias="none",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                             task_type="CAUSAL_LM"))  # fmt: skip
    rows = [{"input_ids": s.input_ids, "labels": [-100] * s.prompt_tokens + s.input_ids[s.prompt_tokens :]}
            for s in data]  # fmt: skip

    def collate(batch: list[dict]) -> dict:
        length = max(len(row["input_ids"]) for row in batch)
        ids = torch.zeros((len(batch), length), dtype=torch.long)
        labels = torch.full((len(batch), length), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for index, row in enumerate(batch):
            n = len(row["input_ids"])
            ids[index, :n] = torch.tensor(row["input_ids"])
            labels[index, :n] = torch.tensor(row["labels"])
            mask[index, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    timings: list[tuple[float, int]] = []

    def wait() -> None:
        if cuda:  # the GPU runs behind the Python loop: time what it did, not what was queued
            torch.cuda.synchronize()

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            wait()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            wait()
            timings.append((time.perf_counter() - self.started, 0))

    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            tokens.append(int(inputs["attention_mask"].sum()))
            return super().training_step(model, inputs, num_items_in_batch)

    tokens: list[int] = []
    placement = {"bf16": True} if cuda else {"use_cpu": True}
    with tempfile.TemporaryDirectory() as output:
        args = TrainingArguments(output_dir=output, per_device_train_batch_size=8, max_steps=steps,
                                 learning_rate=1e-3, lr_scheduler_type="cosine", warmup_steps=max(1, steps // 10),
                                 max_grad_norm=1.0,
                                 logging_steps=steps, save_strategy="no", report_to=[], **placement, seed=42,
                                 dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True)  # fmt: skip
        CountingTrainer(model=model, args=args, train_dataset=rows, data_collator=collate,
                        callbacks=[Timer()]).train()  # fmt: skip
    seconds = sum(t for t, _ in timings[1:])
    return sum(tokens[1:]) / seconds


def tuitune_rate_and_rss(model_id: str, steps: int, device: str = "cpu") -> tuple[float, float, float | None]:
    """Tokens/s from a real `tuitune train` run's metrics, the peak RSS of its trainer process (GB), and on a
    GPU the allocator's high-water mark there (MiB)."""
    placement = ["--device", device] if device != "cpu" else []  # the CPU run's command stays as it was
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "TUITUNE_DATA_DIR": data_dir, "TUITUNE_CONFIG_DIR": data_dir + "/config"}
        subprocess.run([sys.executable, "-m", "tuitune", "train", "--name", "bench", "--base", model_id,
                        "--data", str(DATA), "--max-steps", str(steps), "--save-every", str(steps),
                        "--batch-size", "8", "--rank", "16", "--alpha", "32", *placement,
                        "--target-modules", "q_proj,k_proj,v_proj,o_proj"],  # the Trainer side's targets
                       check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)  # fmt: skip
        rows = [json.loads(line) for line in (Path(data_dir) / "runs/bench/metrics.jsonl").read_text().splitlines()]
        status = json.loads((Path(data_dir) / "runs/bench/status.json").read_text())
    peak_kb = status["peak_rss_mb"] * 1024  # the trainer's own getrusage, reported in status.json
    later = rows[1:]  # the first step warms up, as on the Trainer side
    seconds = sum(row["tokens"] / row["tokens_per_s"] for row in later)
    return sum(row["tokens"] for row in later) / seconds, peak_kb / 1024 / 1024, status.get("peak_device_mb")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved tuitune/Trainer rounds per model")
    parser.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: both sides in bf16 on the GPU (default: fp32 on the CPU)")  # fmt: skip
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_only:
        args.model = args.model or args.models.split(",")[0]
        print(hf_trainer_rate(args.model, args.steps, args.device))
        return
    cuda = args.device == "cuda"
    placement = ["--device", args.device] if cuda else []
    rows, peaks = [], []
    for model in args.models.split(","):
        steps = args.steps if "135m" in model else max(5, args.steps // 2)  # Gemma steps take ~3× longer
        ours_rates, base_rates, peak_gb, peak_gpu = [], [], 0.0, 0
        for _ in range(args.rounds):  # interleaved: this VM's speed drifts by ±10 % over minutes
            ours, peak, gpu_mb = tuitune_rate_and_rss(model, steps, args.device)
            ours_rates.append(ours)
            peak_gb = max(peak_gb, peak)
            peak_gpu = max(peak_gpu, gpu_mb or 0)
            base_rates.append(float(subprocess.run([sys.executable, __file__, "--baseline-only", "--model", model,
                                                    "--steps", str(steps), *placement], check=True,
                                                   capture_output=True, text=True,
                                                   cwd=REPO).stdout.strip().splitlines()[-1]))  # fmt: skip
        ratios = [ours / base for ours, base in zip(ours_rates, base_rates, strict=True)]
        baseline, ours = statistics.median(base_rates), statistics.median(ours_rates)
        rows.append((model, f"{steps} × {args.rounds}", f"{baseline:.0f}", f"{ours:.0f}",
                     f"**{statistics.median(ratios):.2f}** ({', '.join(f'{r:.2f}' for r in ratios)})"))  # fmt: skip
        peaks.append((model, f"**{peak_gb:.2f} GB**", f"{peak_gpu} MiB") if cuda else (model, f"**{peak_gb:.2f} GB**"))
    if cuda:
        print_cuda(rows, peaks)
        return
    print("## Training throughput: tuitune vs HF Trainer + peft (LoRA r=16, batch 8, same data)\n")
    print(
        table(
            (
                "model",
                "steps × rounds",
                "HF Trainer tokens/s",
                "tuitune tokens/s",
                "ratio, median (rounds) (target ≥ 1.4)",
            ),
            rows,
        )
    )
    print("\n## Peak RSS of a whole `tuitune train` run (trainer process; target ≤ 2.5 GB for SmolLM2)\n")
    print(table(("model", "peak RSS"), peaks))


def print_cuda(rows: list, peaks: list) -> None:
    print("## Training throughput on the GPU, bf16: tuitune vs HF Trainer + peft (LoRA r=16, batch 8, same data)\n")
    print(table(("model", "steps × rounds", "HF Trainer tokens/s", "tuitune tokens/s",
                 "ratio, median (rounds) (target ≥ 1.5)"), rows))  # fmt: skip
    print("\n## Peaks of a whole `tuitune train --device cuda` run (trainer process)\n")
    print(table(("model", "peak RSS", "peak GPU (torch.cuda.max_memory_allocated)"), peaks))


if __name__ == "__main__":
    main()
