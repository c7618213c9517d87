"""The dataset check behind `tuitune data check`, `tuitune train` and the TUI's Train screen.

It lives with the training code, not in the CLI, so that the TUI can run it without importing the CLI.
"""

from __future__ import annotations

from pathlib import Path

from tuitune.training.data import DatasetReport, check_dataset


def training_rate(gguf_size: int) -> float:
    """Rough training tokens/s on this kind of machine (2 CPU cores, LoRA r=16): 283 for the 98 MB SmolLM2,
    scaling with model size (the 253 MB Gemma gives ≈110, as measured)."""
    return 283 * 98.4e6 / max(gguf_size, 1)


def dataset_report(path: str | Path, base: str | None, max_length: int) -> DatasetReport:
    """Check a dataset file; with ``base``, count tokens with that model's tokenizer and chat template."""
    if base is None:
        return check_dataset(Path(path), max_length=max_length)
    from tuitune.catalog import load_catalog
    from tuitune.sources import model_path
    from tuitune.training.formatting import Formatter

    entry = load_catalog().get(base)
    gguf = model_path(entry)
    formatter = Formatter(gguf, entry.chat_format)
    try:
        return check_dataset(Path(path), max_length=max_length, count_tokens=formatter.count_tokens,
                             tokens_per_second=training_rate(gguf.stat().st_size))  # fmt: skip
    finally:
        formatter.close()
