"""The README's hardware table: what the memory planner says LoRA training needs, per model size and device.

Shapes come from the models' published configs (layers, widths, heads, vocabulary, parameter counts; the
demo models' from their GGUF headers). The settings are tuitune's defaults (LoRA r=16 on attention, batch 8)
with sequences of 512 tokens, almost all of them reply: the planner's worst case, an upper bound.

    python bench/hardware_table.py [--max-length 512] [--batch-size 8]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from _common import table

from tuitune.training.planner import ModelShape, human, plan_for_shape, read_shape
from tuitune.training.runs import TrainConfig


def published(name: str, arch: str, layers: int, hidden: int, ffn: int, heads: int, kv_heads: int, vocab: int,
              parameters: float, tied: bool) -> ModelShape:  # fmt: skip
    """A shape from a model card's config.json numbers: matrices are everything but the embeddings (and head)."""
    embeddings = vocab * hidden * (1 if tied else 2)
    return ModelShape(name=name, architecture=arch, layers=layers, hidden=hidden, ffn=ffn, heads=heads,
                      kv_heads=kv_heads, head_dim=hidden // heads, value_dim=hidden // heads, vocab=vocab,
                      parameters=int(parameters), matrices=int(parameters) - embeddings)  # fmt: skip


SHAPES = [
    ("Qwen2.5 1.5B", dict(arch="qwen2", layers=28, hidden=1536, ffn=8960, heads=12, kv_heads=2, vocab=151936,
                          parameters=1.54e9, tied=True)),
    ("Llama 3.2 3B", dict(arch="llama", layers=28, hidden=3072, ffn=8192, heads=24, kv_heads=8, vocab=128256,
                          parameters=3.21e9, tied=True)),
    ("Llama 2 7B", dict(arch="llama", layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32, vocab=32000,
                        parameters=6.74e9, tied=False)),
    ("Llama 3.1 8B", dict(arch="llama", layers=32, hidden=4096, ffn=14336, heads=32, kv_heads=8, vocab=128256,
                          parameters=8.03e9, tied=False)),
    ("Qwen2.5 14B", dict(arch="qwen2", layers=48, hidden=5120, ffn=13824, heads=40, kv_heads=8, vocab=152064,
                         parameters=14.77e9, tied=False)),
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    config = TrainConfig(name="table", base="x", data="x", max_length=args.max_length, batch_size=args.batch_size)
    shapes = [read_shape("smollm2-135m-instruct"), read_shape("gemma-3-270m")]
    shapes += [published(name, **numbers) for name, numbers in SHAPES]
    unknown = (None, "", "")

    def need(shape: ModelShape, device: str, **changes) -> str:
        return human(plan_for_shape(shape, replace(config, **changes), device, free=unknown).total_bytes)

    rows = [(shape.name, need(shape, "cpu"), need(shape, "cuda"), need(shape, "cuda", grad_checkpoint=True),
             need(shape, "cuda", quantize="4bit"), need(shape, "cuda", quantize="4bit", grad_checkpoint=True))
            for shape in shapes]  # fmt: skip
    print(f"LoRA r=16, batch {args.batch_size}, sequences of {args.max_length} tokens (worst case)\n")
    print(table(("model", "CPU fp32 (RAM)", "GPU bf16", "bf16 + --grad-checkpoint", "--quantize 4bit",
                 "4bit + --grad-checkpoint"), rows))  # fmt: skip


if __name__ == "__main__":
    main()
