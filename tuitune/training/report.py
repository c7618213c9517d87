"""The dataset check behind `tuitune data check`, `tuitune train` and the TUI's Train screen, and the token
counts the memory planner sizes the largest pass with.

It lives with the training code, not in the CLI, so that the TUI can run it without importing the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuitune.training.data import DatasetReport, check_dataset
from tuitune.training.planner import TokenCounts


def training_rate(gguf_size: int) -> float:
    """Rough training tokens/s on this kind of machine (2 CPU cores, LoRA r=16): 283 for the 98 MB SmolLM2,
    scaling with model size (the 253 MB Gemma gives ≈110, as measured)."""
    return 283 * 98.4e6 / max(gguf_size, 1)


class _Recorder:
    """``count_tokens`` for the data check that also keeps what the planner needs: each sequence's length
    and reply tokens after the trainer's cut to ``max_length``, and the prefix every sequence shares."""

    def __init__(self, formatter: Any, max_length: int):
        self.formatter = formatter
        self.max_length = max_length
        self.sequences: list[tuple[int, int]] = []
        self.prefix: list[int] | None = None
        self.prefix_limit = max_length

    def __call__(self, example: Any) -> list[tuple[int, int]]:
        from tuitune.training.formatting import fit_to_length

        built = self.formatter.sequences(example)
        for sequence in built:
            fitted = fit_to_length(sequence, self.max_length)
            if fitted is None or fitted.reply_tokens <= 0:
                continue  # the trainer drops it too
            self.sequences.append((len(fitted.input_ids), fitted.reply_tokens))
            self._share(fitted.input_ids, fitted.prompt_tokens)
        return [(sequence.prompt_tokens, sequence.reply_tokens) for sequence in built]

    def _share(self, ids: list[int], prompt_tokens: int) -> None:
        """Shorten the common prefix to what ``ids`` shares, ending before the first trained token."""
        self.prefix_limit = min(self.prefix_limit, prompt_tokens - 1)
        if self.prefix is None:
            self.prefix = list(ids)
        same = 0
        for mine, theirs in zip(self.prefix, ids, strict=False):
            if mine != theirs:
                break
            same += 1
        del self.prefix[same:]

    def counts(self) -> TokenCounts:
        shared = max(0, min(len(self.prefix or ()), self.prefix_limit))
        return TokenCounts(tuple(self.sequences), shared)


def checked_dataset(path: str | Path, base: str | None, max_length: int) -> tuple[DatasetReport, TokenCounts | None]:
    """The dataset report and, with ``base``, the token counts of the sequences the trainer will build."""
    if base is None:
        return check_dataset(Path(path), max_length=max_length), None
    from tuitune.catalog import load_catalog
    from tuitune.sources import model_path
    from tuitune.training.formatting import Formatter

    entry = load_catalog().get(base)
    gguf = model_path(entry)
    formatter = Formatter(gguf, entry.chat_format)
    try:
        recorder = _Recorder(formatter, max_length)
        report = check_dataset(Path(path), max_length=max_length, count_tokens=recorder,
                               tokens_per_second=training_rate(gguf.stat().st_size))  # fmt: skip
        return report, recorder.counts()
    finally:
        formatter.close()


def dataset_report(path: str | Path, base: str | None, max_length: int) -> DatasetReport:
    """Check a dataset file; with ``base``, count tokens with that model's tokenizer and chat template."""
    return checked_dataset(path, base, max_length)[0]
