"""Setting up a run: the device and precision, the starting weights, the model with its LoRA adapters.

Only the trainer process imports this module. ``run`` is the trainer's ``Run`` (its config, ranks, log and
status); rank 0 prepares weights on disk while the other ranks of a multi-process run wait for it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from tuitune.training.runs import ATTENTION_TARGETS, DEFAULT_TARGETS


def load_model(run, entry, gguf: Path, precision):
    """The base model in the run's dtype (or 4-bit) on the run's device, with LoRA adapters in fp32."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = run.config
    dtype = getattr(torch, precision.weights)
    options: dict[str, Any] = {"dtype": dtype, "trust_remote_code": False}
    if config.quantize == "4bit":
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, precision.autocast or "bfloat16"))  # fmt: skip
        options["device_map"] = {"": run.device}
    base_model = AutoModelForCausalLM.from_pretrained(training_weights(run, entry, gguf, precision), **options)
    if config.quantize != "4bit":
        base_model.to(run.device)
    family = base_model.config.model_type
    targets = config.target_modules or DEFAULT_TARGETS.get(family, ATTENTION_TARGETS)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(base_model, lora)
    for parameter in model.parameters():  # the adapters and their optimizer state stay fp32 on every device
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    causal_lm = model.base_model.model
    if config.grad_checkpoint:
        causal_lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        causal_lm.config.use_cache = False
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    how = "4-bit nf4" if config.quantize == "4bit" else precision.weights
    run.log(f"{config.base} ({family}) on {run.device} in {how}"
             f"{', gradient checkpointing' if config.grad_checkpoint else ''}"
             f"{f', {run.ranks.world} processes' if run.ranks.distributed else ''}: LoRA r={config.rank} "
             f"alpha={config.alpha} on {', '.join(targets)}; {trainable:,} trainable of {total:,} "
             "parameters")  # fmt: skip
    return model, causal_lm


def settle_device(run):
    from tuitune.training import distributed
    from tuitune.training.devices import check_4bit, settle

    config = run.config
    device, precision = settle(config.device, config.quantize)
    if config.device == "auto" and run.ranks.is_main:  # written back: --resume continues on the same device
        config.device = device
        config.write(run.dir / "config.json")
    if config.quantize == "4bit":
        check_4bit(device, precision.autocast or "bfloat16")
    run.device = distributed.start(run.ranks, device)
    return device, precision


def training_weights(run, entry, gguf: Path, precision) -> Path:
    """The starting weights, prepared by rank 0 while the other ranks wait, then read by all."""
    from tuitune.training import distributed

    if not run.ranks.is_main:
        distributed.total(run.ranks, 0.0)
    path = _prepare_weights(run, entry, gguf, precision)
    if run.ranks.is_main:
        distributed.total(run.ranks, 0.0)
    return path


def _prepare_weights(run, entry, gguf: Path, precision) -> Path:
    """The dequantized GGUF in the run's dtype (fp32, or bf16: half the disk), or the catalog's safetensors
    repo (``--weights hub``), loaded as they are.

    ``auto`` is settled on the first start (hub when that repo is already downloaded) and written back to
    config.json, so ``--resume`` continues from the same weights.
    """
    from tuitune.training.convert import cached_hub_weights, fetch_hub_weights, hf_cache_weights, trainable_weights

    config = run.config
    if config.weights == "auto":
        downloaded = cached_hub_weights(entry) or hf_cache_weights(entry)
        config.weights = "hub" if downloaded is not None else "gguf"
        if run.ranks.is_main:
            config.write(run.dir / "config.json")
    if config.weights == "gguf":
        dtype = "float32" if precision.weights == "float32" else "bfloat16"
        run.set_status(message=f"preparing {dtype} weights from the GGUF (first time: about a minute)")
        run.log(f"weights: dequantized from {gguf.name} ({dtype})")
        return trainable_weights(gguf, config.base, dtype=dtype)
    spec = entry.train_weights
    last = [0.0]

    def progress(report) -> None:
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            share = f" {100 * report.done / report.total:.0f}%" if report.total else ""
            run.set_status(message=f"downloading {report.filename}{share}")

    directory = fetch_hub_weights(entry, progress=progress)
    where = " from the Hugging Face cache" if cached_hub_weights(entry) is None else ""
    run.log(f"weights: {spec.repo if spec else '?'} (safetensors, revision {spec.revision if spec else '?'}{where})")
    return directory


def add_neftune(causal_lm, alpha: float) -> None:
    """NEFTune: uniform noise on the input embeddings while training, scaled by the whole sequence's length
    (also when a shared prefix runs apart)."""
    import torch

    embeddings = causal_lm.get_input_embeddings()

    def neftune(module, inputs, output):
        if module.training:
            length = getattr(module, "sequence_length", None) or output.shape[1]
            scale = alpha / math.sqrt(length * output.shape[2])
            output = output + torch.zeros_like(output).uniform_(-scale, scale)
        return output

    embeddings.register_forward_hook(neftune)
