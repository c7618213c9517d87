"""Where and in what precision the trainer runs: device choice, dtypes, and whether 4-bit can run there.

The choices are pure functions of what torch reports (tested without a GPU); ``settle`` asks torch. The
rules: weights in bf16 on a GPU (fp16 with loss scaling where bf16 is unsupported), fp32 on the CPU;
LoRA parameters and the optimizer always fp32; 4-bit only where bitsandbytes actually runs, checked by
quantizing and multiplying a small matrix on the device rather than by a version table.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from tuitune.errors import TuituneError


@dataclass(frozen=True)
class Precision:
    """The dtype the frozen weights are held in, and how the forward pass runs."""

    weights: str  # "float32" | "bfloat16" | "float16"
    autocast: str | None  # dtype name for torch.autocast, None for plain fp32
    loss_scaling: bool  # fp16 needs a GradScaler so small gradients don't flush to zero


def pick_device(requested: str, cuda: bool, mps: bool) -> str:
    """``auto``: cuda, then mps, then cpu. An explicit device that is missing is refused with what exists."""
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if requested == "cuda" and not cuda:
        raise TuituneError("--device cuda: torch sees no CUDA GPU here (`tuitune doctor` shows what it sees); "
                           "use --device auto or cpu")  # fmt: skip
    if requested == "mps" and not mps:
        raise TuituneError("--device mps: torch's Metal backend is not available here; use --device auto or cpu")
    return requested


def pick_precision(device: str, bf16_supported: bool, quantize: str = "none") -> Precision:
    """fp32 on the CPU (its bf16 matmuls are slower than fp32 on most CPUs), bf16 on GPUs that have it.

    A 4-bit run computes in bf16 wherever it runs (bitsandbytes' compute dtype), fp16 on old GPUs.
    """
    if device == "cpu":
        return Precision("bfloat16", "bfloat16", False) if quantize == "4bit" else Precision("float32", None, False)
    if device == "cuda" and not bf16_supported:
        return Precision("float16", "float16", True)
    return Precision("bfloat16", "bfloat16", False)


def settle(requested: str, quantize: str) -> tuple[str, Precision]:
    """The device and precision for this run, from what torch sees on this machine."""
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    device = pick_device(requested, cuda, mps)
    bf16 = device != "cuda" or torch.cuda.is_bf16_supported()
    return device, pick_precision(device, bf16, quantize)


def autocast_context(device: str, precision: Precision):
    """A factory of autocast contexts for the run's forward passes (a no-op in fp32)."""
    import torch

    if precision.autocast is None:
        return nullcontext
    dtype = getattr(torch, precision.autocast)

    def context() -> AbstractContextManager:
        return torch.autocast(device_type=device, dtype=dtype)

    return context


def check_4bit(device: str, compute_dtype: str) -> None:
    """Refuse ``--quantize 4bit`` where bitsandbytes cannot run: try it on a small matrix on ``device``."""
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError:
        raise TuituneError("--quantize 4bit needs bitsandbytes: `pip install bitsandbytes` "
                           "(or train without --quantize)") from None  # fmt: skip
    try:
        dtype = getattr(torch, compute_dtype)
        layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=dtype, quant_type="nf4", compress_statistics=True)
        layer.weight = bnb.nn.Params4bit(torch.randn(64, 64), requires_grad=False, quant_type="nf4",
                                         compress_statistics=True)  # fmt: skip
        layer = layer.to(device)
        probe = torch.randn(2, 64, device=device, dtype=dtype, requires_grad=True)
        layer(probe).float().sum().backward()
    except Exception as error:  # any failure of the probe means the real run would fail the same way
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TuituneError(f"--quantize 4bit: bitsandbytes {getattr(bnb, '__version__', '?')} cannot run on "
                           f"{device} here ({reason}); train without --quantize") from None  # fmt: skip


def peak_device_mb(device: str) -> int | None:
    """The GPU memory high-water mark torch's allocator saw (None on the CPU, where peak RSS says it)."""
    import torch

    if device == "cuda":
        return int(torch.cuda.max_memory_allocated() // (1 << 20))
    if device == "mps" and hasattr(torch.mps, "driver_allocated_memory"):
        return int(torch.mps.driver_allocated_memory() // (1 << 20))
    return None
