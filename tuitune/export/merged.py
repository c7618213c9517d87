"""Merge a finetune's LoRA into its base: one standalone GGUF, f16 or quantized by llama.cpp.

Hand-written because llama.cpp's own ``llama-export-lora`` tool is a separate C++ program that llama-cpp-python
does not expose (it ships the library only). The merge itself is small: de-quantize each base tensor with gguf-py,
add ``scale × alpha / rank × B·A`` where the adapter has a pair for it (llama.cpp's own formula), and write f16
(1-D tensors and norms f32, as llama.cpp's converter does) with every metadata key kept. It runs tensor by tensor,
so memory stays near one tensor. Other types are made from that f16 file by llama.cpp's quantizer
(``llama_model_quantize``, the code behind ``llama-quantize``), then the f16 file is deleted.

The adapter's Q/K rows are already in llama.cpp's per-head order (tuitune.training.export permutes them), the same
order as the base's tensors, so ``B·A`` is added as it is.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuitune.errors import TuituneError

Progress = Callable[[str], None]

# --quant name -> (llama.cpp's LLAMA_FTYPE_MOSTLY_* suffix, about how many bits a weight takes). The i-quants are
# left out: llama.cpp needs an importance matrix for them.
QUANTS: dict[str, tuple[str, float]] = {
    "f16": ("F16", 16.0),
    "q8_0": ("Q8_0", 8.5),
    "q6_k": ("Q6_K", 6.6),
    "q5_k_m": ("Q5_K_M", 5.7),
    "q5_k_s": ("Q5_K_S", 5.5),
    "q5_1": ("Q5_1", 6.0),
    "q5_0": ("Q5_0", 5.5),
    "q4_k_m": ("Q4_K_M", 4.9),
    "q4_k_s": ("Q4_K_S", 4.6),
    "q4_1": ("Q4_1", 5.0),
    "q4_0": ("Q4_0", 4.5),
    "q3_k_l": ("Q3_K_L", 4.3),
    "q3_k_m": ("Q3_K_M", 3.9),
    "q3_k_s": ("Q3_K_S", 3.5),
    "q2_k": ("Q2_K", 3.4),
}
MOSTLY_F16 = 1  # llama_ftype value of general.file_type for an f16 file
F16_MAX = 65504.0
_SKIPPED_KEYS = ("general.architecture", "general.file_type", "general.alignment")


def parse_quant(name: str) -> str:
    """The canonical (lower-case) quant name; an unknown one is refused with the list of known names."""
    quant = str(name).strip().lower()
    if quant not in QUANTS:
        raise TuituneError(f"unknown quant type '{name}': use one of {', '.join(QUANTS)}")
    return quant


def require_gguf() -> None:
    """gguf-py reads and writes the files; it comes with the training extra."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise TuituneError("merging needs the gguf package: pip install 'tuitune[train]'") from None


def file_name(tune_id: str, quant: str) -> str:
    return f"{tune_id}-{quant}.gguf"


def _keeps_f32(name: str, ndim: int) -> bool:
    """llama.cpp's converter keeps 1-D tensors, norms and MoE routers in f32 in an f16 file."""
    return ndim <= 1 or name.endswith("_norm.weight") or ".ffn_gate_inp." in name


def _plan(reader: Any) -> list[tuple[Any, tuple[int, ...], bool]]:
    """(tensor, numpy shape, kept in f32) for every base tensor, in file order."""
    plan = []
    for tensor in reader.tensors:
        shape = tuple(int(size) for size in reversed(tensor.shape.tolist()))
        plan.append((tensor, shape, _keeps_f32(tensor.name, len(shape))))
    return plan


def open_base(base: Path) -> Any:
    """gguf-py's reader of the base (a memory map; parsing the vocabulary takes a second or two, so open it once)."""
    from gguf import GGUFReader

    try:
        return GGUFReader(base)
    except (OSError, ValueError) as error:
        raise TuituneError(f"cannot read {base} as a GGUF ({error}); download the base model again") from None


def estimate_bytes(reader: Any, quant: str) -> int:
    """Peak bytes in the export folder: the f16 file, plus the quantized one while llama.cpp writes it."""
    plan = _plan(reader)
    metadata = min(Path(reader.data.filename).stat().st_size, 64 * 1024 * 1024)  # the vocabulary etc., generously
    f16 = metadata + sum(int(tensor.n_elements) * (4 if f32 else 2) for tensor, _, f32 in plan)
    return f16 if quant == "f16" else f16 + int(f16 * QUANTS[quant][1] / 16 * 1.15)


def _read_adapter(adapter: Path, arch: str) -> tuple[float, dict[str, tuple[Any, Any]]]:
    """The adapter's alpha and {base tensor name: (A, B)} in float32, numpy order: A (rank, in), B (out, rank)."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(adapter)

    def text(key: str) -> str | None:
        field = reader.fields.get(key)
        return None if field is None else str(field.contents())

    if text("general.type") != "adapter" or text("adapter.type") != "lora":
        raise TuituneError(f"{adapter} is not a llama.cpp LoRA adapter; export the adapter again")
    if text("general.architecture") != arch:
        raise TuituneError(f"{adapter} is for a '{text('general.architecture')}' model but the base is '{arch}'")
    alpha_field = reader.fields.get("adapter.lora.alpha")
    alpha = float(alpha_field.contents()) if alpha_field is not None else 0.0
    parts: dict[str, dict[str, Any]] = {}
    for tensor in reader.tensors:
        base, dot, part = tensor.name.rpartition(".")
        if not dot or part not in ("lora_a", "lora_b"):
            raise TuituneError(f"{adapter}: tensor {tensor.name} is not a LoRA weight; only lora_a/lora_b merge")
        parts.setdefault(base, {})[part] = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    pairs = {}
    for base, pair in parts.items():
        if set(pair) != {"lora_a", "lora_b"}:
            raise TuituneError(f"{adapter}: {base} has only one of lora_a/lora_b; the adapter is incomplete")
        a, b = pair["lora_a"], pair["lora_b"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise TuituneError(f"{adapter}: {base} has lora_a {a.shape} and lora_b {b.shape}, which do not multiply")
        pairs[base] = (a, b)
    return alpha, pairs


def merge_to_f16(
    reader: Any, adapter: Path, out: Path, scale: float, name: str | None = None, progress: Progress | None = None
) -> int:
    """Write ``out``: the base (``open_base``) + ``scale`` × the adapter, as f16 with the base's metadata.

    Returns how many tensors the adapter changed."""
    import numpy as np
    from gguf import GGUFValueType, GGUFWriter
    from gguf.quants import dequantize

    base = Path(reader.data.filename)
    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        raise TuituneError(f"{base} has no general.architecture; it is not a model GGUF llama.cpp can load")
    arch = str(arch_field.contents())
    alpha, pairs = _read_adapter(adapter, arch)
    plan = _plan(reader)
    shapes = {tensor.name: shape for tensor, shape, _ in plan}
    for target, (a, b) in pairs.items():
        if shapes.get(target) != (b.shape[0], a.shape[1]):
            found = "not in the base" if target not in shapes else f"{shapes[target]} in the base"
            raise TuituneError(
                f"the adapter changes {target} ({b.shape[0]}x{a.shape[1]}) but it is {found}: it was trained on "
                "another model"
            )

    writer = GGUFWriter(out, arch)
    try:
        for field in reader.fields.values():
            skipped = field.name in _SKIPPED_KEYS or (name and field.name == "general.name")
            if skipped or field.name.startswith(("GGUF.", "quantize.")):
                continue  # written by the writer, set below, or describing the base's own quantization
            kind = field.types[0]
            sub_type = field.types[-1] if kind == GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), kind, sub_type=sub_type)
        writer.add_uint32("general.file_type", MOSTLY_F16)
        if name:
            writer.add_key_value("general.name", name, GGUFValueType.STRING)
        alignment = reader.fields.get("general.alignment")
        if alignment is not None:
            writer.add_custom_alignment(int(alignment.contents()))
        for tensor, shape, f32 in plan:
            dtype = np.dtype(np.float32 if f32 else np.float16)
            writer.add_tensor_info(tensor.name, shape, dtype, int(tensor.n_elements) * dtype.itemsize)
        if progress is not None:
            progress(f"merging {len(pairs)} adapted tensor(s) into {len(plan)} at scale {scale:g}, writing f16…")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor, shape, f32 in plan:
            try:
                weights = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32).reshape(shape)
            except NotImplementedError:
                raise TuituneError(
                    f"{base}: tensor {tensor.name} is {tensor.tensor_type.name}, which gguf-py cannot de-quantize; "
                    "use a base GGUF in another quant type"
                ) from None
            if tensor.name in pairs and scale:
                a, b = pairs[tensor.name]
                factor = scale * alpha / a.shape[0] if alpha else scale  # llama.cpp: alpha 0 means no alpha/rank
                weights = weights + np.float32(factor) * (b @ a)
            if not f32:
                if weights.size and float(np.abs(weights).max()) > F16_MAX:
                    raise TuituneError(f"{tensor.name} has values beyond f16's range; this model cannot merge to f16")
                weights = weights.astype(np.float16)
            writer.write_tensor_data(np.ascontiguousarray(weights))
    finally:
        writer.close()
    return len(pairs)


def quantize(source: Path, target: Path, quant: str) -> None:
    """llama.cpp's quantizer, f16 ``source`` to ``target``, in a thread so that Ctrl-C still reaches Python."""
    import llama_cpp

    from tuitune.engines import llama_log

    llama_log.install()  # llama.cpp's per-tensor lines go to llama.log, not over the progress lines
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{QUANTS[quant][0]}")
    params.nthread = os.cpu_count() or 1
    result: list[int] = []
    worker = threading.Thread(
        target=lambda: result.append(
            llama_cpp.llama_model_quantize(os.fsencode(source), os.fsencode(target), ctypes.byref(params))
        ),
        name="tuitune-quantize",
        daemon=True,
    )
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
    if result != [0]:
        if _disk_nearly_full(target.parent, source.stat().st_size * QUANTS[quant][1] / 16):
            raise OSError(errno.ENOSPC, "No space left on device")
        raise TuituneError(
            f"llama.cpp could not quantize to {quant} (the reason is in {llama_log.log_path()}); try another --quant"
        )


def _disk_nearly_full(folder: Path, expected: float) -> bool:
    import shutil

    try:
        return shutil.disk_usage(folder).free < expected
    except OSError:
        return False


def write_merged(
    reader: Any,
    adapter: Path,
    folder: Path,
    file: str,
    quant: str,
    scale: float,
    name: str | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Write ``folder/file``: the base (``open_base``) merged with ``adapter``, as ``quant``.

    Returns the seconds each phase took."""
    times = {}
    start = time.perf_counter()
    target = folder / file
    f16 = target if quant == "f16" else folder / f".{file}.f16.tmp"
    merged = merge_to_f16(reader, adapter, f16, scale, name, progress)
    times["merge"] = time.perf_counter() - start
    if progress is not None:
        progress(f"merged {merged} tensor(s) into f16 in {times['merge']:.1f} s")
    if quant != "f16":
        if progress is not None:
            progress(f"quantizing to {quant} with llama.cpp…")
        start = time.perf_counter()
        try:
            quantize(f16, target, quant)
        finally:
            f16.unlink(missing_ok=True)
        times["quantize"] = time.perf_counter() - start
        if progress is not None:
            progress(f"quantized to {quant} in {times['quantize']:.1f} s")
    return times
