"""The memory planner: will a LoRA run fit in the training device's memory, and if not, what would?

A run that does not fit fails late — after loading, sometimes after the first steps — with an out-of-memory
kill or a CUDA error that suggests nothing. The planner answers before anything starts, from the model's
shape in its GGUF header (no torch, no model load: milliseconds) and the run's settings. One trainer
process peaks at the sum of:

- **runtime**: Python, torch, transformers, peft and llama.cpp's vocab-only tokenizer in RAM (measured,
  ``CPU_RUNTIME``); a CUDA process instead counts its context and kernels on the GPU (``CUDA_CONTEXT``).
- **weights**: every tensor of the GGUF's table at 4 bytes (fp32: the CPU path) or 2 (bf16/fp16 on cuda
  and mps); with 4-bit, the layers' matrices in nf4 — half a byte per weight plus block scales (one per 64
  weights, 8-bit under double quantization, with one fp32 per 256 scales) — and embeddings, output head and
  norms in bf16, plus one matrix dequantized at a time. A tied output head is not in the table: counted once.
- **LoRA + AdamW**: ``r × (in + out)`` parameters per adapted matrix and layer, each fp32 with its gradient
  and AdamW's two moments: 16 bytes per trainable parameter.
- **activations** of the largest forward/backward pass. The trainer cuts a batch into passes of at most
  ``PASS_TOKENS`` padded tokens (a longer sequence is a pass of its own) and runs a prefix shared by the
  whole pass once. Autograd keeps, per token and layer, the norms' inputs and outputs, the MLP's gate and up,
  attention's q, k, v and output, and for each adapted matrix the dropout's mask and output: counted from the
  shape (``ModelShape.layer_elements``: within 10 % of the bytes torch saves, measured for SmolLM2 and
  Gemma 3). ``ACT_FACTOR`` covers backward temporaries, and on the CPU glibc's heap, which keeps the blocks
  one pass freed (its mmap threshold rises after the first big frees) while the next pass, of other shapes,
  takes new ones: resident memory settles after 2-3 steps.
  With gradient checkpointing each layer keeps only its input, and one layer is recomputed at a time.
- **output head**, applied only at reply positions but with the whole vocabulary there: ``HEAD_COPIES``
  fp32 copies (log-probabilities, their gradient, the logits' gradient) of ``reply tokens × vocab``.
  Gemma's 262k vocabulary makes this the largest part of a pass.

With ``nproc`` processes each holds ``ceil(batch / nproc)`` sequences of a batch; on the CPU and mps
(unified memory) they share the RAM, on CUDA each has its own GPU. The largest pass comes from the
dataset's token counts when known (``TokenCounts``: the longest sequence pads the pass, which holds the
longest reply and average ones), else from the worst case ``max_length`` allows. How close this is, as
measured: docs/training.md, "Memory planner".
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuitune.errors import TuituneError
from tuitune.training.runs import ATTENTION_TARGETS, DEFAULT_TARGETS, TrainConfig

if TYPE_CHECKING:
    from tuitune.catalog import ModelEntry
    from tuitune.gguf import GGUFInfo

MB = 1_000_000
GB = 1_000_000_000
PASS_TOKENS = int(os.environ.get("TUITUNE_PASS_TOKENS", "1024"))  # the trainer's budget per pass (train.py)
MIN_SHARED_PREFIX = 8  # the trainer runs a shared prefix apart from this length on (loss.py)

CPU_RUNTIME = 470 * MB  # measured: python + torch + transformers + peft + llama.cpp vocab, before the model
CUDA_CONTEXT = 500 * MB  # CUDA context, cuBLAS workspace and kernels on the GPU (typical; not measured here)
ACT_FACTOR = {"cpu": 2.0, "gpu": 1.4}  # cpu: fitted to 11 runs (2 models, 2 target sets, 4 pass shapes);
#                                        gpu: the first-step part of the CPU figure, without heap growth
HEAD_COPIES = 3  # fp32 log-probs, their gradient, the logits' gradient (fitted with ACT_FACTOR["cpu"])
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights + an 8-bit scale per 64 + an fp32 per 256 scales
LORA_STATE_BYTES = 16  # fp32 parameter, gradient, AdamW exp_avg and exp_avg_sq

# The model_type transformers gives a GGUF architecture, which the trainer looks DEFAULT_TARGETS up with.
HF_MODEL_TYPES = {"gemma3": "gemma3_text"}
# LoRA target module → (input, output) features, as ModelShape attributes.
MODULE_DIMS = {"q_proj": ("hidden", "q_dim"), "k_proj": ("hidden", "kv_dim"), "v_proj": ("hidden", "v_dim"),
               "o_proj": ("o_in", "hidden"), "gate_proj": ("hidden", "ffn"), "up_proj": ("hidden", "ffn"),
               "down_proj": ("ffn", "hidden")}  # fmt: skip


def _is_matrix(tensor: str) -> bool:
    """A layer's weight matrix (what bitsandbytes quantizes), not a norm or an embedding."""
    return tensor.startswith("blk.") and tensor.endswith(".weight") and "norm" not in tensor


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs of a model, read from its GGUF header."""

    name: str
    architecture: str
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int  # query and key width per head
    value_dim: int  # value width per head
    vocab: int
    parameters: int  # elements of every tensor
    matrices: int  # elements of the layers' weight matrices: what 4-bit quantizes
    sliding_window: int | None = None  # the trainer shares no prefix past it
    logit_softcap: bool = False  # gemma2's tanh(logits / c) × c keeps two more vocab-sized tensors

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def v_dim(self) -> int:
        return self.kv_heads * self.value_dim

    @property
    def o_in(self) -> int:
        return self.heads * self.value_dim

    @classmethod
    def from_gguf(cls, info: GGUFInfo, name: str | None = None) -> ModelShape:
        arch, meta = info.architecture, info.metadata

        def number(key: str, default: int | None = None) -> int:
            value = meta.get(f"{arch}.{key}", default)
            if isinstance(value, list):  # per-layer values (OpenELM): the largest layer decides
                value = max(value, default=default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise TuituneError(f"{info.path.name}: its GGUF header has no usable {arch}.{key}; the memory "
                                   "planner cannot size this model")  # fmt: skip
            return int(value)

        hidden, heads = number("embedding_length"), number("attention.head_count")
        head_dim = number("attention.key_length", hidden // heads)
        tensors = info.tensor_elements
        matrices = sum(count for tensor, count in tensors.items() if _is_matrix(tensor))
        window = meta.get(f"{arch}.attention.sliding_window")
        return cls(
            name=name or info.name or info.path.stem, architecture=arch, layers=number("block_count"),
            hidden=hidden, ffn=number("feed_forward_length"), heads=heads,
            kv_heads=number("attention.head_count_kv", heads), head_dim=head_dim,
            value_dim=number("attention.value_length", head_dim), vocab=info.vocab_size or number("vocab_size"),
            parameters=sum(tensors.values()), matrices=matrices,
            sliding_window=window if isinstance(window, int) and window > 0 else None,
            logit_softcap=bool(meta.get(f"{arch}.final_logit_softcapping")),
        )  # fmt: skip

    def _dims(self, target: str) -> tuple[int, int]:
        names = MODULE_DIMS.get(target, ("hidden", "hidden"))  # a name we do not know: a square matrix
        return getattr(self, names[0]), getattr(self, names[1])

    def lora_parameters(self, targets: Iterable[str], rank: int) -> int:
        return self.layers * sum(rank * sum(self._dims(target)) for target in targets)

    def layer_elements(self, targets: Iterable[str], rank: int) -> int:
        """Elements autograd keeps per token and layer: two norms' input and output (4h), MLP gate and up
        (2f), q, k, v and attention output (4q + 2kv); per adapted matrix, dropout's output and mask (the CPU
        keeps it as floats) and r."""
        count = 4 * self.hidden + 2 * self.ffn + 4 * self.q_dim + 2 * self.kv_dim
        return count + sum(2 * self._dims(target)[0] + rank for target in targets)


@dataclass(frozen=True)
class TokenCounts:
    """The dataset as the trainer builds it: (tokens, reply tokens) per sequence after the cut to
    ``max_length``, and how many leading tokens every sequence shares (a default system prompt)."""

    sequences: tuple[tuple[int, int], ...]
    shared_prefix: int = 0


@dataclass(frozen=True)
class Pass:
    """The largest forward/backward pass of one process."""

    sequences: int
    padded: int  # every sequence is padded to the longest
    reply_tokens: int
    prefix: int  # run once for the pass
    from_data: bool  # from the dataset's token counts (else the worst case max_length allows)

    @property
    def tokens(self) -> int:
        return self.prefix + self.sequences * (self.padded - self.prefix)


def per_rank_batch(config: TrainConfig) -> int:
    """Sequences of a micro-batch one process holds: the batch is dealt round-robin over ``nproc``."""
    return max(1, math.ceil(config.batch_size / max(1, config.nproc)))


def candidate_passes(config: TrainConfig, shape: ModelShape, counts: TokenCounts | None) -> list[Pass]:
    """For each sequence length L of the data, the pass the trainer builds when a batch's longest is L:
    ``PASS_TOKENS // L`` sequences (at least one, at most a rank's batch) holding the longest reply up to L
    and average ones. Without counts: ``max_length`` sequences that are reply but for one token."""
    batch = per_rank_batch(config)

    def packed(length: int) -> int:
        return min(batch, max(1, PASS_TOKENS // length))

    if counts is None or not counts.sequences:
        length = config.max_length
        return [Pass(packed(length), length, packed(length) * (length - 1), 0, False)]
    shared = counts.shared_prefix if counts.shared_prefix >= MIN_SHARED_PREFIX and not config.grad_checkpoint else 0
    passes, seen, reply_sum, reply_max = [], 0, 0, 0
    ordered = sorted(counts.sequences)
    for index, (length, reply) in enumerate(ordered):
        seen, reply_sum, reply_max = seen + 1, reply_sum + reply, max(reply_max, reply)
        if index + 1 < len(ordered) and ordered[index + 1][0] == length:
            continue
        sequences = min(packed(length), seen)
        replies = reply_max + round((sequences - 1) * reply_sum / seen)
        windowed = shape.sliding_window is not None and length > shape.sliding_window
        prefix = shared if sequences > 1 and not windowed else 0
        passes.append(Pass(sequences, length, replies, min(prefix, length - 1), True))
    return passes


@dataclass(frozen=True)
class Plan:
    """One process's peak memory, by part, against what the device has free."""

    model: str
    device: str
    precision: str  # fp32 | bf16 | 4-bit
    parts: tuple[tuple[str, int], ...]
    nproc: int
    free_bytes: int | None  # None: unknown
    where: str  # "RAM", "this GPU", "each GPU"
    largest_pass: Pass
    shared_memory: bool = True  # the processes share one memory (CPU, mps): all of them must fit
    blocked: str = ""  # why it cannot run whatever the memory (fewer GPUs than processes)
    alternatives: tuple[tuple[str, int], ...] = ()  # (setting, bytes needed) that fit, when this does not

    @property
    def total_bytes(self) -> int:
        """The peak of one trainer process."""
        return sum(size for _, size in self.parts)

    @property
    def needed_bytes(self) -> int:
        return self.total_bytes * (self.nproc if self.shared_memory else 1)

    @property
    def fits(self) -> bool:
        return not self.blocked and (self.free_bytes is None or self.needed_bytes <= self.free_bytes)

    def _needs(self) -> str:
        text = f"{self.model} in {self.precision} on {self.device} needs ≈ {human(self.needed_bytes)}"
        if self.nproc > 1:
            text += f" ({self.nproc} processes × {human(self.total_bytes)})" if self.shared_memory else " per GPU"
        return text if self.largest_pass.from_data else f"{text} at most"

    def summary(self) -> str:
        """One line: what the run needs, what is free, the verdict."""
        if self.blocked:
            return f"{self._needs()}; {self.blocked}"
        if self.free_bytes is None:
            return f"{self._needs()}; free memory unknown"
        return f"{self._needs()}; {self.where} has {human(self.free_bytes)} free: {'fits' if self.fits else 'too big'}"

    def refusal(self) -> str:
        """Why the run would not fit, its parts, and the settings that would fit, each with what it needs."""
        if self.blocked:
            return f"{self._needs()}; {self.blocked}"
        parts = ", ".join(f"{label} {human(size)}" for label, size in self.parts if size)
        free = human(self.free_bytes) if self.free_bytes is not None else "an unknown amount of memory"
        text = f"{self._needs()} ({parts}); {self.where} has {free} free"
        if not self.alternatives:
            return f"{text}. Nothing smaller fits (4-bit, gradient checkpointing, smaller batches, shorter " \
                "sequences): use a smaller model or more memory"  # fmt: skip
        return f"{text}. What fits: " + "; ".join(f"{how} needs ≈ {human(size)}" for how, size in self.alternatives)

    def as_dict(self) -> dict[str, Any]:
        biggest = self.largest_pass
        return {
            "model": self.model, "device": self.device, "precision": self.precision, "nproc": self.nproc,
            "parts": dict(self.parts), "total_bytes": self.total_bytes, "needed_bytes": self.needed_bytes,
            "free_bytes": self.free_bytes, "fits": self.fits, "summary": self.summary(),
            "largest_pass": {"sequences": biggest.sequences, "padded_length": biggest.padded,
                             "reply_tokens": biggest.reply_tokens, "shared_prefix": biggest.prefix,
                             "from_data": biggest.from_data},
            "alternatives": [{"setting": how, "needed_bytes": size} for how, size in self.alternatives],
        }  # fmt: skip


def human(size: float) -> str:
    """≈ 17 GB, 2.3 GB, 450 MB: the precision an estimate deserves."""
    if size >= 10 * GB:
        return f"{size / GB:.0f} GB"
    return f"{size / GB:.1f} GB" if size >= GB else f"{size / MB:.0f} MB"


def targets_for(shape: ModelShape, config: TrainConfig) -> list[str]:
    """The LoRA targets the trainer picks: its lookup is by transformers' model_type, not the GGUF's name."""
    family = HF_MODEL_TYPES.get(shape.architecture, shape.architecture)
    return config.target_modules or DEFAULT_TARGETS.get(family, ATTENTION_TARGETS)


def parts_for(shape: ModelShape, config: TrainConfig, device: str, counts: TokenCounts | None):
    """(label, bytes) for each part of one process's peak, and the pass it assumed (module docstring)."""
    quantized = config.quantize == "4bit"
    if quantized:  # plus one matrix dequantized to bf16 for its product
        weights = NF4_BYTES * shape.matrices + 2 * (shape.parameters - shape.matrices)
        weights += 2 * shape.hidden * max(shape.ffn, shape.q_dim)
    else:
        weights = shape.parameters * (4 if device == "cpu" else 2)
    targets = targets_for(shape, config)
    width = 4 if device == "cpu" and not quantized else 2  # bytes per activation: fp32, or bf16 autocast
    layer = shape.layer_elements(targets, config.rank) * width
    factor = ACT_FACTOR["cpu" if device == "cpu" else "gpu"]
    copies = HEAD_COPIES + (2 if shape.logit_softcap else 0)

    def pass_bytes(one: Pass) -> tuple[float, float]:
        if config.grad_checkpoint:  # layer inputs kept; one layer's tensors while it is recomputed
            kept = one.tokens * (shape.layers * shape.hidden * width + layer)
        else:  # plus the shared prefix's keys and values, repeated for each sequence
            kept = one.tokens * layer * shape.layers + one.sequences * one.prefix * 2 * shape.kv_dim * width
        return kept * factor, one.reply_tokens * shape.vocab * 4 * copies

    largest = max(candidate_passes(config, shape, counts), key=lambda one: sum(pass_bytes(one)))
    activations, head = pass_bytes(largest)
    runtime = CUDA_CONTEXT if device == "cuda" else CPU_RUNTIME
    lora = shape.lora_parameters(targets, config.rank) * LORA_STATE_BYTES
    result = (("runtime", runtime), ("weights", int(weights)), ("LoRA + AdamW", lora),
              ("activations", int(activations)), ("output head", int(head)))  # fmt: skip
    return result, largest


def resolve_device(device: str) -> str:
    """``auto`` as the trainer will settle it, guessed without torch."""
    if device != "auto":
        return device
    from tuitune.hardware import likely_training_device

    return likely_training_device()


def free_memory(device: str, nproc: int) -> tuple[int | None, str, str]:
    """(free bytes, where, why it cannot run at all) for ``device``; None when unknown."""
    from tuitune import hardware

    if device != "cuda":
        memory = hardware.cpu_memory()
        return (memory.available_bytes if memory else None), "RAM", ""
    gpus = hardware.nvidia_gpus()
    if not gpus:
        return None, "this GPU", "nvidia-smi lists no NVIDIA GPU here: use --device cpu (or auto)"
    where = "this GPU" if nproc == 1 else "each GPU"
    if len(gpus) < nproc:
        return None, where, f"{nproc} processes need {nproc} GPUs; {len(gpus)} visible"
    return min(gpu.free_bytes for gpu in gpus[:nproc]), where, ""


def plan_for_shape(
    shape: ModelShape, config: TrainConfig, device: str | None = None, counts: TokenCounts | None = None,
    free: tuple[int | None, str, str] | None = None,
) -> Plan:  # fmt: skip
    """The plan for a known shape; ``free`` is (free bytes, where, blocked) in place of this machine's."""
    device = resolve_device(device or config.device)
    free_bytes, where, blocked = free if free is not None else free_memory(device, config.nproc)
    parts, largest = parts_for(shape, config, device, counts)
    precision = "4-bit" if config.quantize == "4bit" else "fp32" if device == "cpu" else "bf16"
    plan = Plan(shape.name, device, precision, parts, config.nproc, free_bytes, where, largest,
                shared_memory=device != "cuda", blocked=blocked)  # fmt: skip
    if plan.fits or blocked or free_bytes is None:
        return plan
    return replace(plan, alternatives=tuple(alternatives(shape, config, device, counts, free_bytes)))


def alternatives(shape: ModelShape, config: TrainConfig, device: str, counts: TokenCounts | None,
                 free_bytes: int) -> list[tuple[str, int]]:  # fmt: skip
    """Settings that fit, each the smallest change of its kind: 4-bit (CUDA's QLoRA), gradient checkpointing,
    both; the largest batch (with gradient accumulation keeping the global batch) and the longest
    ``max_length`` that fit; the CPU's RAM when a GPU is too small."""

    def needed(changed: TrainConfig, on: str = device) -> int:
        total = sum(size for _, size in parts_for(shape, changed, on, counts)[0])
        return total * (changed.nproc if on != "cuda" else 1)

    groups: list[list[tuple[str, TrainConfig]]] = []
    quantize = device == "cuda" and config.quantize != "4bit"
    if quantize:
        groups.append([("--quantize 4bit", replace(config, quantize="4bit"))])
    if not config.grad_checkpoint:
        groups.append([("--grad-checkpoint", replace(config, grad_checkpoint=True))])
    if quantize and not config.grad_checkpoint:
        groups.append([("--quantize 4bit --grad-checkpoint", replace(config, quantize="4bit", grad_checkpoint=True))])
    smaller, batch, accum = [], config.batch_size, config.grad_accum
    while batch // 2 >= max(1, config.nproc):
        batch, accum = batch // 2, accum * 2
        changed = replace(config, batch_size=batch, grad_accum=accum)
        smaller.append((f"--batch-size {batch} --grad-accum {accum}", changed))
    shorter, length = [], config.max_length
    while length > 128:
        length //= 2
        shorter.append((f"--max-length {length}", replace(config, max_length=length)))
    found: list[tuple[str, int]] = []
    for group in [*groups, smaller, shorter]:
        for how, changed in group:
            size = needed(changed)
            if size <= free_bytes:
                found.append((how, size))
                break
    if device == "cuda":
        ram, _, _ = free_memory("cpu", config.nproc)
        size = needed(replace(config, quantize="none"), "cpu")
        if ram is not None and size <= ram:
            found.append((f"--device cpu (RAM: {human(ram)} free; far slower)", size))
    return found


def read_shape(model: ModelEntry | str | Path) -> ModelShape:
    """The shape of a catalog entry, a catalog id or a .gguf file, from its header (milliseconds)."""
    from tuitune.gguf import read_gguf

    if isinstance(model, Path) or (isinstance(model, str) and model.endswith(".gguf")):
        return ModelShape.from_gguf(read_gguf(model), Path(model).stem)
    if isinstance(model, str):
        from tuitune.catalog import load_catalog

        model = load_catalog().get(model)
    from tuitune.sources import model_path

    return ModelShape.from_gguf(read_gguf(model_path(model)), model.id)


def estimate(
    model: ModelEntry | str | Path, config: TrainConfig, device: str | None = None,
    counts: TokenCounts | None = None,
) -> Plan:  # fmt: skip
    """The plan for training ``model`` (catalog entry, id or .gguf) with ``config`` on ``device`` (default:
    the config's; ``auto``: what the trainer will pick)."""
    return plan_for_shape(read_shape(model), config, device, counts)


def check_plan(plan: Plan) -> None:
    """Refuse a run that will not fit, before anything is loaded."""
    if not plan.fits:
        raise TuituneError(plan.refusal())
