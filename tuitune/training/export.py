"""Export a PEFT LoRA adapter to the GGUF LoRA format llama.cpp attaches to a loaded base model.

The format is in the shared notes (lora-gguf §3): the base's architecture, ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``; per adapted weight ``<base tensor>.lora_a`` (r, in) and
``.lora_b`` (out, r) as PEFT stores them. One trap: llama.cpp keeps the llama architecture's Q and K rows
regrouped per head, so ``lora_b`` of q_proj/k_proj must get the same row permutation. Getting it wrong is
invisible in a quick chat and shows only in a logit comparison, which is what tests/training/test_adapter.py does.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from tuitune.errors import ModelFileError, TuituneError
from tuitune.gguf import read_gguf

# PEFT module name -> llama.cpp tensor name inside blk.{i}.
MODULES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
# GGUF architectures the exporter knows, and whether llama.cpp stores their Q/K rows permuted per head.
ARCHITECTURES = {"llama": True, "gemma": False, "gemma2": False, "gemma3": False, "qwen2": False, "qwen3": False}
# transformers model_type -> GGUF architecture, to catch an adapter trained on another kind of model.
_MODEL_TYPES = {
    "llama": "llama",
    "mistral": "llama",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
}
_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
# adapter_config.json options that change the forward pass in ways a llama.cpp LoRA cannot express.
_UNSUPPORTED = {
    "use_dora": "DoRA (use_dora) rescales each weight by a learned magnitude",
    "use_qalora": "QA-LoRA (use_qalora) pools the input in groups",
    "use_bdlora": "block-diagonal LoRA (use_bdlora)",
    "lora_bias": "lora_bias adds a trained bias",
    "trainable_token_indices": "trainable_token_indices trains embedding rows",
    "target_parameters": "target_parameters adapts raw parameters, not Linear modules",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "layer_replication": "layer_replication duplicates layers",
    "arrow_config": "Arrow routing (arrow_config)",
    "fan_in_fan_out": "fan_in_fan_out (Conv1D layers)",
}


def _refuse(peft_dir: Path, problems: list[str]) -> TuituneError:
    return TuituneError(f"cannot export {peft_dir} to a llama.cpp adapter: {'; '.join(problems)}")


def _read_config(peft_dir: Path) -> dict[str, Any]:
    path = peft_dir / "adapter_config.json"
    if not path.is_file():
        raise TuituneError(
            f"{peft_dir} is not a PEFT adapter directory (no adapter_config.json); "
            "pass the directory model.save_pretrained() wrote"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TuituneError(f"{path} could not be read as JSON ({error}); save the adapter again") from None
    if not isinstance(config, dict):
        raise TuituneError(f"{path} is not a PEFT adapter config (expected a JSON object)")
    return config


def _check_config(peft_dir: Path, config: dict[str, Any]) -> list[str]:
    """Every reason this adapter has no llama.cpp equivalent, each with what to do instead."""
    problems = []
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        problems.append(f"it is a {peft_type} adapter; only LoRA adapters can be exported")
    for key, what in _UNSUPPORTED.items():
        if config.get(key):
            problems.append(f"{what}, which llama.cpp cannot run; retrain with plain LoRA ({key} off)")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            problems.append(
                f"{key} gives some layers their own {'rank' if key == 'rank_pattern' else 'alpha'} "
                f"({', '.join(sorted(config[key]))}), but a llama.cpp adapter has one alpha; retrain without {key}"
            )
    if config.get("modules_to_save"):
        problems.append(
            f"modules_to_save ({', '.join(config['modules_to_save'])}) trains full copies of those modules, which "
            "a llama.cpp LoRA adapter cannot carry; retrain without modules_to_save"
        )
    if config.get("bias", "none") != "none":
        problems.append(
            f"bias = '{config['bias']}' trains biases, which a llama.cpp adapter cannot carry; use bias='none'"
        )
    targets = config.get("target_modules")
    if isinstance(targets, list):
        unknown = sorted({str(name).rsplit(".", 1)[-1] for name in targets} - set(MODULES))
        if unknown:
            problems.append(
                f"target module(s) {', '.join(unknown)} have no llama.cpp adapter tensor; "
                f"target only {', '.join(MODULES)}"
            )
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            problems.append(f"'{key}' in adapter_config.json is {value!r}, not a positive number")
    return problems


def _check_base_type(config: dict[str, Any], arch: str) -> str | None:
    """The adapter's training base, when its config is still on disk, must be the same kind of model."""
    base_dir = config.get("base_model_name_or_path")
    if not isinstance(base_dir, str) or not base_dir:
        return None
    hf_config = Path(base_dir) / "config.json"
    try:
        model_type = json.loads(hf_config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None
    expected = _MODEL_TYPES.get(str(model_type))
    if expected is not None and expected != arch:
        return (
            f"it was trained on a {model_type} model ({base_dir}) but the base GGUF is {arch}; "
            "export it against the GGUF of the model it was trained on"
        )
    return None


def _expected_shapes(metadata: dict[str, Any], arch: str) -> dict[str, tuple[int, int]]:
    """(out, in) of each adaptable weight, from the base's metadata; empty when a size is not a plain int."""

    def number(key: str) -> int | None:
        value = metadata.get(f"{arch}.{key}")
        return int(value) if isinstance(value, int) else None

    n_embd, n_ff, n_head = number("embedding_length"), number("feed_forward_length"), number("attention.head_count")
    n_head_kv = number("attention.head_count_kv") or n_head
    if not (n_embd and n_ff and n_head):
        return {}
    head_k = number("attention.key_length") or n_embd // n_head
    head_v = number("attention.value_length") or n_embd // n_head
    return {
        "attn_q": (n_head * head_k, n_embd),
        "attn_k": (n_head_kv * head_k, n_embd),
        "attn_v": (n_head_kv * head_v, n_embd),
        "attn_output": (n_embd, n_head * head_v),
        "ffn_gate": (n_ff, n_embd),
        "ffn_up": (n_ff, n_embd),
        "ffn_down": (n_embd, n_ff),
    }


def permute_rows(b: Any, n_head: int) -> Any:
    """llama.cpp's Q/K row order: per head, interleave the two rotary halves (as convert_hf_to_gguf does)."""
    rows = b.shape[0]
    if rows % (2 * n_head):
        raise TuituneError(f"cannot regroup {rows} rows into {n_head} heads: the adapter does not fit this base")
    return b.reshape(n_head, 2, rows // n_head // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def export_adapter(peft_dir: Path, base_gguf: Path, out: Path, *, _reorder_qk: bool = True) -> Path:
    """Write ``out``: the PEFT LoRA in ``peft_dir`` as a llama.cpp LoRA GGUF for the base ``base_gguf``.

    Refuses, with one message listing every reason, adapters llama.cpp cannot run exactly (DoRA, per-layer
    rank/alpha, modules_to_save, biases, unknown modules, another architecture). ``_reorder_qk`` exists only
    so the tests can show the Q/K row permutation matters.
    """
    import numpy as np

    peft_dir, base_gguf, out = Path(peft_dir), Path(base_gguf), Path(out)
    config = _read_config(peft_dir)
    problems = _check_config(peft_dir, config)
    info = read_gguf(base_gguf)
    arch = info.architecture
    if arch not in ARCHITECTURES:
        problems.append(
            f"the base {base_gguf.name} is a '{arch}' model; exporting adapters is supported for "
            f"{', '.join(ARCHITECTURES)}"
        )
    mismatch = _check_base_type(config, arch)
    if mismatch:
        problems.append(mismatch)
    if problems:
        raise _refuse(peft_dir, problems)

    weights_path = peft_dir / "adapter_model.safetensors"
    if not weights_path.is_file():
        hint = (
            " (adapter_model.bin is the old format: save with safe_serialization=True)"
            if (peft_dir / "adapter_model.bin").exists()
            else ""
        )
        raise TuituneError(f"{peft_dir} has no adapter_model.safetensors{hint}")
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(f"{weights_path} is damaged ({error}); save the adapter again") from None

    metadata = info.metadata
    n_layers = metadata.get(f"{arch}.block_count")
    shapes = _expected_shapes(metadata, arch)
    n_head = int(metadata.get(f"{arch}.attention.head_count", 0) or 0)
    n_head_kv = int(metadata.get(f"{arch}.attention.head_count_kv", 0) or 0) or n_head
    rank = int(config["r"])
    tensors: dict[str, dict[str, Any]] = {}
    unknown_keys = []
    for key, array in state.items():
        match = _KEY.search(key)
        if match is None or match.group(2) not in MODULES:
            unknown_keys.append(key)
            continue
        layer, module, part = int(match.group(1)), match.group(2), match.group(3)
        pair = tensors.setdefault(f"blk.{layer}.{MODULES[module]}.weight", {"module": module, "layer": layer})
        if part in pair:
            raise _refuse(peft_dir, [f"two tensors map to the same weight ({key}); is it a multi-model adapter?"])
        pair[part] = array
    if unknown_keys:
        shown = ", ".join(unknown_keys[:3]) + (f" and {len(unknown_keys) - 3} more" if len(unknown_keys) > 3 else "")
        raise _refuse(
            peft_dir,
            [f"tensor(s) {shown} are not LoRA weights of {', '.join(MODULES)}; llama.cpp adapters carry only those"],
        )
    if not tensors:
        raise _refuse(peft_dir, ["it holds no LoRA weights"])

    ordered = []
    for name, pair in sorted(tensors.items(), key=lambda item: (item[1]["layer"], item[0])):
        if "A" not in pair or "B" not in pair:
            raise _refuse(peft_dir, [f"{name} has only lora_{'A' if 'A' in pair else 'B'}; the file is incomplete"])
        a, b = pair["A"].astype(np.float32), pair["B"].astype(np.float32)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise _refuse(peft_dir, [f"{name}: lora_A {a.shape} / lora_B {b.shape} do not have rank r={rank}"])
        if isinstance(n_layers, int) and pair["layer"] >= n_layers:
            raise _refuse(peft_dir, [f"{name}: layer {pair['layer']} but the base has {n_layers} layers"])
        expected = shapes.get(name.split(".")[2])
        if expected is not None and (b.shape[0], a.shape[1]) != expected:
            raise _refuse(
                peft_dir,
                [
                    f"{name} is {b.shape[0]}x{a.shape[1]} in the adapter but {expected[0]}x{expected[1]} in "
                    f"{base_gguf.name}: it was trained on a different model"
                ],
            )
        if _reorder_qk and ARCHITECTURES[arch] and pair["module"] in ("q_proj", "k_proj"):
            b = permute_rows(b, n_head if pair["module"] == "q_proj" else n_head_kv)
        ordered.append((name, a, b))

    alpha = float(config["lora_alpha"])
    if config.get("use_rslora"):
        alpha *= math.sqrt(rank)  # PEFT scales by alpha/sqrt(r); llama.cpp by alpha/r
    return _write(out, arch, alpha, ordered)


def _write(out: Path, arch: str, alpha: float, tensors: list[tuple[str, Any, Any]]) -> Path:
    """Write the adapter GGUF to a temporary file next to ``out``, then rename it into place."""
    import numpy as np
    from gguf import GGUFType, GGUFWriter, Keys

    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        writer = GGUFWriter(temporary, arch)
        writer.add_type(GGUFType.ADAPTER)
        writer.add_string(Keys.Adapter.TYPE, "lora")
        writer.add_float32(Keys.Adapter.LORA_ALPHA, alpha)
        for name, a, b in tensors:
            writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a))
            writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(temporary, out)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise TuituneError(f"could not write {out}: {error.strerror or error}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return out
