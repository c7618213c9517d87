"""`tuitune doctor`: what this machine runs models with — the first thing to look at when it is slow.

It loads no model and starts no GPU context: llama.cpp's build is read from the library (its system info and
whether it can offload), GPUs from ``nvidia-smi``, memory from the OS. torch is imported here and only here
(2-3 s) to say which device ``tuitune train --device auto`` would use; without torch the report says so.
Every value read from the machine is printed through ``inert``: a GPU name is text from another program.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import platform
import shutil
import sys
from typing import Any

from tuitune.safe_text import inert

LABEL_WIDTH = 12


def _gib(size: int | None) -> str:
    return "?" if size is None else f"{size / (1 << 30):.1f} GiB"


def llama_report() -> dict[str, Any]:
    """llama-cpp-python's version, its backend, whether it offloads to a GPU, and its build flags."""
    try:
        import llama_cpp

        from tuitune.engines.offload import build_info

        backend, offload, sections = build_info(llama_cpp)
    except Exception as error:  # not installed, or its library does not load: that is the finding
        return {"version": None, "backend": None, "gpu_offload": False, "system_info": {},
                "error": f"{type(error).__name__}: {error}"}  # fmt: skip
    return {"version": getattr(llama_cpp, "__version__", None), "backend": backend, "gpu_offload": offload,
            "system_info": sections, "error": None}  # fmt: skip


def torch_report() -> dict[str, Any]:
    """torch's version and the device ``--device auto`` picks (cuda, then mps, then cpu), as the trainer does."""
    bitsandbytes = _importable("bitsandbytes")
    try:
        import torch
    except Exception as error:  # ImportError, or a broken install that fails while importing
        return {"installed": False, "error": f"{type(error).__name__}: {error}", "bitsandbytes": bitsandbytes}
    cuda = bool(torch.cuda.is_available())
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    device = "cuda" if cuda else "mps" if mps else "cpu"
    names = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())] if cuda else []
    return {
        "installed": True,
        "version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "device": device,
        "devices": names,
        "bf16": bool(torch.cuda.is_bf16_supported()) if cuda else None,
        "bitsandbytes": bitsandbytes,
    }


def _importable(module: str) -> bool:
    """Installed and importable (bitsandbytes may be installed yet fail to load its library)."""
    if importlib.util.find_spec(module) is None:
        return False
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            __import__(module)
    except Exception:
        return False
    return True


def collect() -> dict[str, Any]:
    from tuitune import __version__, hardware

    memory = hardware.cpu_memory()
    gpus = hardware.nvidia_gpus()
    llama = llama_report()
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "tuitune": __version__,
        "llama_cpp": llama,
        "nvidia_smi": shutil.which("nvidia-smi") is not None,
        "gpus": [
            {"index": g.index, "name": g.name, "free_bytes": g.free_bytes, "total_bytes": g.total_bytes} for g in gpus
        ],
        "ram": {"available_bytes": memory.available_bytes, "total_bytes": memory.total_bytes} if memory else None,
        "cpu_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch_report(),
    }
    report["hints"] = hints(report, hardware.apple_silicon())
    return report


def hints(report: dict[str, Any], apple_silicon: bool) -> list[str]:
    """What to do about what was found: a CPU build of llama.cpp on a machine with a GPU is the usual slowness."""
    found: list[str] = []
    llama = report["llama_cpp"]
    if llama["error"]:
        found.append("llama-cpp-python does not load: reinstall it (`make run` builds the environment)")
    elif not llama["gpu_offload"] and report["gpus"]:
        found.append("llama.cpp is a CPU build, yet there is an NVIDIA GPU: `make run GPU=cuda` rebuilds it for CUDA")
    elif not llama["gpu_offload"] and apple_silicon:
        found.append("llama.cpp is a CPU build on Apple silicon: `make run GPU=metal` rebuilds it for Metal")
    elif llama["backend"] == "CUDA" and not report["gpus"]:
        found.append(
            "llama.cpp is built for CUDA but nvidia-smi lists no GPU: check the driver (models run on the CPU)"
        )
    return found


def _flags(values: dict[str, str]) -> str:
    """Flags that are on by name, the rest as NAME=VALUE: ``AVX2 AVX512 OPENMP · ARCHS=890``."""
    on = [name for name, value in values.items() if value == "1"]
    other = [f"{name}={value}" for name, value in values.items() if value not in ("0", "1")]
    return " ".join(on) + (" · " if on and other else "") + " ".join(other)


def format_report(report: dict[str, Any]) -> list[str]:
    def row(label: str, text: str) -> str:
        return f"{label:<{LABEL_WIDTH}} {text}"

    lines = [row("python", f"{report['python']} ({report['platform']})"), row("tuitune", report["tuitune"])]
    llama = report["llama_cpp"]
    if llama["error"]:
        lines.append(row("llama.cpp", f"not usable: {llama['error']}"))
    else:
        offload = "yes" if llama["gpu_offload"] else "no (a CPU build)"
        lines.append(row("llama.cpp", f"llama-cpp-python {llama['version']} · backend {llama['backend']} · "
                                      f"GPU offload: {offload}"))  # fmt: skip
        for section, values in llama["system_info"].items():
            lines.append(row(f"  {section or 'build'}", _flags(values) or "(no flags)"))
    if report["gpus"]:
        for index, gpu in enumerate(report["gpus"]):
            text = f"{gpu['index']}: {gpu['name']} · {_gib(gpu['free_bytes'])} free of {_gib(gpu['total_bytes'])}"
            lines.append(row("GPUs" if index == 0 else "", text))
    else:
        lines.append(
            row("GPUs", "none listed by nvidia-smi" if report["nvidia_smi"] else "no NVIDIA GPU (no nvidia-smi)")
        )
    ram = report["ram"]
    lines.append(row("RAM", f"{_gib(ram['available_bytes'])} available of {_gib(ram['total_bytes'])}" if ram else "?"))
    lines.append(row("CPU cores", f"{report['cpu_cores']} ({report['usable_cores']} usable by tuitune)"))
    torch = report["torch"]
    bnb = "bitsandbytes: importable" if torch["bitsandbytes"] else "bitsandbytes: not importable (no --quantize 4bit)"
    if not torch["installed"]:
        lines.append(row("training", f"torch not installed ({torch['error']}): `make run` installs it · {bnb}"))
    else:
        device = torch["device"]
        if device == "cuda":
            device += f" ({', '.join(torch['devices'])}; bf16 {'yes' if torch['bf16'] else 'no: fp16'})"
        lines.append(row("training", f"torch {torch['version']} · --device auto: {device} · {bnb}"))
    lines += [f"note: {hint}" for hint in report["hints"]]
    return [inert(line) for line in lines]


def cmd_doctor(args: argparse.Namespace) -> int:
    report = collect()
    if args.json:
        from tuitune.safe_text import safe_json

        print(safe_json(report, indent=2))
    else:
        sys.stdout.write("\n".join(format_report(report)) + "\n")
    return 0
