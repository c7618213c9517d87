"""What the machine has — memory, GPUs — read without importing torch or loading a model.

The app and the CLI need these numbers at moments when importing torch (2-3 s) is not acceptable: the
memory planner on the Train screen, the free-memory check before a model is offloaded to a GPU. NVIDIA
GPUs are listed by ``nvidia-smi`` (it ships with the driver, so it is there whenever CUDA can run); the
CPU's memory comes from ``/proc/meminfo`` (Linux) or ``sysctl`` (macOS). torch's own view of a device,
which the trainer uses, is in :mod:`tuitune.training.devices`.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass

NVIDIA_SMI_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class Memory:
    available_bytes: int
    total_bytes: int


def cpu_memory() -> Memory | None:
    """RAM available to a new process (Linux ``MemAvailable``; on macOS the total, which is all we can know)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle if line.split()[1:]}
        return Memory(fields.get("MemAvailable", fields.get("MemFree", 0)), fields.get("MemTotal", 0))
    except (OSError, ValueError, IndexError):
        pass
    if sys.platform == "darwin":
        try:
            total = int(subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True,
                                       timeout=NVIDIA_SMI_TIMEOUT_S).stdout.strip())  # fmt: skip
            return Memory(total, total)
        except (OSError, ValueError, subprocess.SubprocessError):
            return None
    return None


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """Rows of ``--query-gpu=index,name,memory.free,memory.total --format=csv,noheader,nounits`` (MiB)."""
    gpus = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 4:
            continue
        try:
            gpus.append(Gpu(int(parts[0]), parts[1], int(parts[2]) << 20, int(parts[3]) << 20))
        except ValueError:
            continue
    return gpus


def nvidia_gpus() -> list[Gpu]:
    """The NVIDIA GPUs the driver sees, with free memory now; empty without a driver (or with a broken one)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    query = [smi, "--query-gpu=index,name,memory.free,memory.total", "--format=csv,noheader,nounits"]
    try:
        result = subprocess.run(query, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = parse_nvidia_smi(result.stdout) if result.returncode == 0 else []
    if visible is not None:  # the same subset, in the same order, that CUDA programs will see
        wanted = [int(part) for part in visible.split(",") if part.strip().isdigit()]
        by_index = {gpu.index: gpu for gpu in gpus}
        gpus = [by_index[index] for index in wanted if index in by_index]
    return gpus


def apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def likely_training_device() -> str:
    """What ``--device auto`` will pick, guessed without torch: cuda with an NVIDIA GPU, mps on Apple silicon."""
    if nvidia_gpus():
        return "cuda"
    if apple_silicon():
        return "mps"
    return "cpu"


def device_memory(device: str) -> Memory | None:
    """Free and total memory of a training device: the first visible GPU for cuda, RAM for cpu and mps
    (Apple's GPU shares it)."""
    if device == "cuda":
        gpus = nvidia_gpus()
        return Memory(gpus[0].free_bytes, gpus[0].total_bytes) if gpus else None
    return cpu_memory()
