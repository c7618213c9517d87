"""How many of a model's layers llama.cpp puts on the GPU, and how a loaded model reports where it runs.

llama.cpp does not check before it allocates: asked for every layer on a GPU that is too small, the load fails
with an allocation error deep in its log (or, with memory shared with the CPU, the machine swaps). So tuitune
estimates the model's size on the GPU from the GGUF header — each layer's tensors plus its share of the KV
cache for the context, the output head, and a reserve per device — offloads as many layers as fit in the
memory free now, and refuses with the numbers when not even one fits.

``plan_offload`` is the pure decision (tested with made-up numbers). ``decide_offload`` asks llama.cpp and the
machine, and only when the build can offload at all: on a CPU build it costs one ctypes call, no nvidia-smi.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuitune.errors import ModelFileError, StoppedError, TuituneError
from tuitune.gguf import GGUFInfo

MIB = 1 << 20
GIB = 1 << 30
DEVICE_RESERVE = 512 * MIB  # per device: the driver's context, llama.cpp's compute buffers, fragmentation
UBATCH = 512  # llama.cpp's default n_ubatch: with the head on the GPU, its logits take vocab × UBATCH × 4 bytes
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS: llama.cpp refuses a model with more
KV_ELEMENT_BYTES = 2  # the KV cache is f16 unless told otherwise
METAL_SHARE = 0.75  # Metal lets one process use about this share of the unified memory
GPU_BACKENDS = {"CUDA": "CUDA", "ROCM": "ROCm", "HIP": "ROCm", "METAL": "Metal", "MTL": "Metal",
                "VULKAN": "Vulkan", "SYCL": "SYCL", "MUSA": "MUSA", "CANN": "CANN", "OPENCL": "OpenCL"}  # fmt: skip
_LAYER = re.compile(r"blk\.(\d+)\.")
_LIBRARY = re.compile(r"ggml-([a-z]+)\.(?:so|dylib|dll)", re.IGNORECASE)


@dataclass(frozen=True)
class Backend:
    """Where a loaded model runs: in the pane header, the ``--json`` stats and ``tuitune doctor``."""

    name: str  # CPU | CUDA | Metal | Vulkan | ROCm | … (CPU whenever no layer is offloaded)
    layers: int = 0  # repeating layers on the GPU
    total_layers: int = 0
    devices: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``CUDA 28/28 layers``, or ``CPU``."""
        return f"{self.name} {self.layers}/{self.total_layers} layers" if self.layers else "CPU"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "gpu_layers": self.layers, "layers": self.total_layers, "label": self.label,
                "devices": list(self.devices)}  # fmt: skip


@dataclass(frozen=True)
class Footprint:
    """A model's size on a GPU, from its GGUF header."""

    layer_bytes: tuple[int, ...]  # the weights of blk.0 … blk.N-1
    output_bytes: int  # the output head (and its norm): on the GPU only once every layer is
    kv_bytes_per_token: tuple[int, ...]  # K and V of one token, per layer
    vocab: int = 0

    @property
    def layers(self) -> int:
        return len(self.layer_bytes)

    def layer_need(self, index: int, n_ctx: int) -> int:
        return self.layer_bytes[index] + self.kv_bytes_per_token[index] * n_ctx

    @property
    def output_need(self) -> int:
        return self.output_bytes + self.vocab * UBATCH * 4

    def whole(self, n_ctx: int) -> int:
        return sum(self.layer_need(index, n_ctx) for index in range(self.layers)) + self.output_need


@dataclass(frozen=True)
class OffloadPlan:
    layers: int  # repeating layers to put on the GPU (llama.cpp takes the last ones)
    total_layers: int
    n_gpu_layers: int  # for ``Llama(n_gpu_layers=…)``: -1 is every layer and the output head
    need_bytes: int  # what that takes on the GPU, the reserve included
    free_bytes: int | None  # None: the free memory is unknown, nothing was checked


def size_text(size: int | None) -> str:
    if size is None:
        return "unknown"
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / MIB:.0f} MiB"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def layer_count(info: GGUFInfo) -> int:
    """The repeating layers (``<arch>.block_count``), else the ``blk.N`` tensors counted.

    The count comes from the file and sizes lists here: more than llama.cpp's 512 is a damaged header, refused
    before ``[0] * layers`` can raise MemoryError (2^40) or OverflowError (2^63)."""
    count = _int(info.metadata.get(f"{info.architecture}.block_count"))
    if count is None or count <= 0:
        found = {int(match.group(1)) for name in info.tensor_bytes if (match := _LAYER.match(name))}
        count = max(found) + 1 if found else 0
    if count > MAX_LAYERS:
        raise ModelFileError(
            f"{info.path} has a corrupt GGUF header ({info.architecture}.block_count or a blk.N tensor says "
            f"{count:,} layers; llama.cpp allows {MAX_LAYERS}): re-download or reinstall the model"
        )
    return count


def _per_layer(value: Any, layers: int, default: int) -> list[int]:
    """A metadata value that is one number, or one per layer (some models vary KV heads by layer)."""
    if isinstance(value, list):
        numbers = [item if _int(item) is not None else default for item in value]
        return (numbers + [max(numbers, default=default)] * layers)[:layers]
    return [_int(value) if _int(value) is not None else default] * layers


def footprint_from_gguf(info: GGUFInfo) -> Footprint:
    """Per-layer weights from the tensor table (an even split of the file when a tensor type is unknown), and the
    f16 KV cache per token from the attention metadata (an upper bound for sliding-window layers)."""
    arch, meta = info.architecture, info.metadata
    layers = layer_count(info)
    tensors = info.tensor_bytes
    if info.expected_size is None or not tensors:  # a type tuitune cannot size: assume even layers
        share = info.file_size // (layers + 1 if layers else 1)
        layer_bytes, output = [share] * layers, share
    else:
        layer_bytes = [0] * layers
        output = 0
        for name, size in tensors.items():
            match = _LAYER.match(name)
            if match and int(match.group(1)) < layers:
                layer_bytes[int(match.group(1))] += size
            elif name.startswith("output"):
                output += size
        if "output.weight" not in tensors:  # tied embeddings: llama.cpp copies token_embd to the head's device
            output += tensors.get("token_embd.weight", 0)
    embedding = _int(meta.get(f"{arch}.embedding_length")) or 0
    heads = _int(meta.get(f"{arch}.attention.head_count")) or 0
    head_dim = embedding // heads if heads else 0
    kv_heads = _per_layer(meta.get(f"{arch}.attention.head_count_kv"), layers, heads)
    key = _int(meta.get(f"{arch}.attention.key_length")) or head_dim
    value = _int(meta.get(f"{arch}.attention.value_length")) or head_dim
    kv = tuple(count * (key + value) * KV_ELEMENT_BYTES for count in kv_heads)
    vocab = info.vocab_size or _int(meta.get(f"{arch}.vocab_size")) or 0
    return Footprint(tuple(layer_bytes), output, kv, vocab)


def plan_offload(
    model_id: str,
    footprint: Footprint,
    n_ctx: int,
    free_bytes: int | None,
    limit: int | None = None,
    devices: int = 1,
    where: str = "the GPU",
) -> OffloadPlan:
    """As many layers as fit in ``free_bytes`` (all of them when it is None), at most ``limit`` (None: no limit).

    llama.cpp offloads the *last* layers first and the output head only when every layer is on the GPU. Raises
    a TuituneError with the sizes when not even one layer fits; ``limit`` 0 is the CPU, without any check.
    """
    total = footprint.layers
    cap = total if limit is None or limit < 0 else min(limit, total)
    if cap == 0:
        return OffloadPlan(0, total, 0, 0, free_bytes)
    reserve = DEVICE_RESERVE * max(1, devices)
    suffix = [0] * (total + 1)  # suffix[k]: the last k layers
    for k in range(1, total + 1):
        suffix[k] = suffix[k - 1] + footprint.layer_need(total - k, n_ctx)

    def need(k: int, head: bool) -> int:
        return reserve + suffix[k] + (footprint.output_need if head else 0)

    if free_bytes is None or need(cap, cap == total) <= free_bytes:
        layers, head = cap, cap == total
    else:
        layers, head = cap, False
        while layers > 0 and need(layers, False) > free_bytes:
            layers -= 1
    if layers == 0:
        raise TuituneError(
            f"{model_id} does not fit on {where}: one layer needs {size_text(need(1, False))} with a {n_ctx:,}-token "
            f"context (the whole model {size_text(need(total, True))}, {size_text(reserve)} of it a reserve for "
            f"the GPU's own buffers) and {size_text(free_bytes)} is free. Free GPU memory, lower the context "
            "(--ctx), or run it on the CPU with --gpu-layers 0 (gpu_layers = 0 in models.toml)"
        )
    return OffloadPlan(layers, total, -1 if head else layers, need(layers, head), free_bytes)


# -- what the llama.cpp build can do ---------------------------------------------------------------------
def parse_system_info(text: str) -> dict[str, dict[str, str]]:
    """``llama_print_system_info()`` as {backend: {flag: value}}: ``CUDA : ARCHS = 890 | … | CPU : AVX2 = 1 | …``.

    Older builds print flags without a backend name (``AVX = 1 | CUDA = 1 | …``): those go under ``""``.
    """
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for piece in text.split("|"):
        piece = piece.strip()
        if " : " in piece or piece.endswith(" :"):
            name, _, piece = piece.partition(":")
            current = name.strip()
            sections.setdefault(current, {})
            piece = piece.strip()
        if "=" in piece:
            flag, _, value = piece.partition("=")
            sections.setdefault(current, {})[flag.strip()] = value.strip()
    return sections


def gpu_backend_name(sections: dict[str, dict[str, str]], libraries: Sequence[str] = ()) -> str | None:
    """The GPU backend a build has: a section of the system info, a legacy ``CUDA = 1`` flag, or a ggml library
    file (``libggml-vulkan.so``: not every backend prints its flags)."""
    for name in sections:
        if name.upper() in GPU_BACKENDS:
            return GPU_BACKENDS[name.upper()]
    for flag, value in sections.get("", {}).items():
        if flag.upper() in GPU_BACKENDS and value == "1":
            return GPU_BACKENDS[flag.upper()]
    for library in libraries:
        match = _LIBRARY.search(library)
        if match and match.group(1).upper() in GPU_BACKENDS:
            return GPU_BACKENDS[match.group(1).upper()]
    return None


def build_info(llama_cpp: Any) -> tuple[str, bool, dict[str, dict[str, str]]]:
    """(backend name, GPU offload supported, system info flags) of the loaded llama.cpp."""
    raw = llama_cpp.llama_print_system_info()
    sections = parse_system_info(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw))
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    if not offload:
        return "CPU", False, sections
    library_dir = Path(llama_cpp.__file__).parent / "lib"
    libraries = sorted(path.name for path in library_dir.glob("*ggml-*")) if library_dir.is_dir() else []
    return gpu_backend_name(sections, libraries) or "GPU", True, sections


def device_memory(backend: str) -> tuple[int | None, list[str]]:
    """(free bytes on the devices llama.cpp will use, their names); None when this backend's free memory is
    unknown to tuitune (ROCm, SYCL, Vulkan on a non-NVIDIA GPU): the load then goes ahead unchecked."""
    from tuitune import hardware

    if backend in ("CUDA", "Vulkan"):
        gpus = hardware.nvidia_gpus()
        if gpus:
            return sum(gpu.free_bytes for gpu in gpus), [f"{gpu.index}: {gpu.name}" for gpu in gpus]
        return None, []
    if backend == "Metal":
        memory = hardware.cpu_memory()
        return (int(memory.available_bytes * METAL_SHARE) if memory else None), ["Apple GPU (unified memory)"]
    return None, []


def load_failure_hint(backend: Backend) -> str:
    """What else a failed load may mean once layers were on a GPU: the estimate was short of what it took."""
    if not backend.layers:
        return ""
    return f", or it did not fit on the GPU ({backend.label}): try fewer layers with --gpu-layers N, or 0 for the CPU"


_GPU_LOAD = threading.Lock()


@contextmanager
def gpu_load_turn(llama_cpp: Any, limit: int | None, cancelled: Callable[[], bool], model_id: str) -> Iterator[None]:
    """One model at a time decides and loads onto the GPU: Compare opens its panes at once, and two loads that
    both read the same free memory would each plan to fill it. CPU loads (a CPU build, ``--gpu-layers 0``) never
    wait; a load waiting its turn can still be stopped."""
    if limit == 0 or not llama_cpp.llama_supports_gpu_offload():
        yield
        return
    while not _GPU_LOAD.acquire(timeout=0.1):
        if cancelled():
            raise StoppedError(f"loading {model_id} was stopped")
    try:
        yield
    finally:
        _GPU_LOAD.release()


def decide_offload(model_id: str, info: GGUFInfo, n_ctx: int, limit: int | None, llama_cpp: Any) -> tuple[int, Backend]:
    """``n_gpu_layers`` for the load, and the Backend the engine reports. ``limit``: --gpu-layers / gpu_layers."""
    if not llama_cpp.llama_supports_gpu_offload() or limit == 0:
        return 0, Backend("CPU", 0, layer_count(info))
    name, _, _ = build_info(llama_cpp)
    free, devices = device_memory(name)
    where = f"{name} device{'s' if len(devices) > 1 else ''} {', '.join(devices)}" if devices else f"the {name} GPU"
    plan = plan_offload(model_id, footprint_from_gguf(info), n_ctx, free, limit, max(1, len(devices)), where)
    return plan.n_gpu_layers, Backend(name if plan.layers else "CPU", plan.layers, plan.total_layers, tuple(devices))
