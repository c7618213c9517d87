"""Held-out loss: how likely each model finds the reference replies of a dataset it was not trained on.

Checks on generated answers say whether a model *says* the right thing; the loss says how much probability
it puts on the reference answer, token by token, which moves smoothly with training and needs no sampling.
It is computed by llama.cpp on the GGUF (with the LoRA adapter attached for a finetuned model), so it
measures the model that actually runs, on exactly the token ids training uses: the trainer's ``Formatter``
renders and tokenizes each example, and only the reply tokens count, as the trainer masks them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuitune.errors import TuituneError

if TYPE_CHECKING:
    from tuitune.catalog import Catalog
    from tuitune.engines import ResolvedModel
    from tuitune.training.formatting import Sequence as TrainingSequence

ProgressCallback = Callable[[int, int], None]  # (sequences done, total)


@dataclass
class LossResult:
    model: str
    adapter_scale: float | None  # the LoRA strength of a finetuned model; None for other models
    mean_loss: float  # cross-entropy in nats per reply token
    perplexity: float  # exp(mean_loss)
    tokens: int  # reply tokens scored
    examples: int  # examples with at least one scored reply

    def as_json(self) -> dict:
        return asdict(self)


def max_length() -> int:
    """The trainer's default --max-length: longer sequences are cut the same way before scoring."""
    from tuitune.training.runs import TrainConfig

    return TrainConfig.max_length


def reply_nll(logits: Any, input_ids: Sequence[int], prompt_tokens: int) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of the reply tokens and their count, from teacher-forced logits.

    The logits at position t predict token t + 1; the tokens from ``prompt_tokens`` on are the trained ones.
    Log-softmax in float64, with the row maximum subtracted so that exp never overflows.
    """
    import numpy as np

    start = max(prompt_tokens, 1)  # the first token has no logits predicting it
    if start >= len(input_ids):
        return 0.0, 0
    rows = np.asarray(logits[start - 1 : len(input_ids) - 1], dtype=np.float64)
    targets = np.asarray(input_ids[start:], dtype=np.int64)
    peak = rows.max(axis=1, keepdims=True)
    log_norm = peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=1))
    picked = rows[np.arange(len(targets)), targets]
    return float((log_norm - picked).sum()), len(targets)


def _formatting(model: ResolvedModel, catalog: Catalog) -> tuple[Path, str | None]:
    """The GGUF whose tokenizer and template format the data, and the fallback chat format, as open_engine uses."""
    from tuitune.sources import base_entry, model_path

    entry = model.entry
    if entry is None:
        assert model.path is not None
        return model.path, None
    if entry.remote:
        raise TuituneError(
            f"held-out loss needs the model's logits; '{entry.id}' is a remote endpoint, which does not give them"
        )
    if entry.kind == "finetuned":
        base = base_entry(entry, catalog)
        return model_path(base, catalog), entry.chat_format or base.chat_format
    return model_path(entry, catalog), entry.chat_format


def _sequences(gguf: Path, chat_format: str | None, examples: list) -> tuple[list[TrainingSequence], int]:
    """The scored sequences (cut to the trainer's max length, as it does) and how many examples they come from."""
    from tuitune.training.formatting import Formatter, fit_to_length

    limit = max_length()
    formatter = Formatter(gguf, chat_format)
    try:
        sequences, lines = [], set()
        for example in examples:
            for sequence in formatter.sequences(example):
                fitted = fit_to_length(sequence, limit)
                if fitted is not None and fitted.reply_tokens > 0:
                    sequences.append(fitted)
                    lines.add(fitted.line)
        return sequences, len(lines)
    finally:
        formatter.close()


def heldout_loss(
    data: Path,
    models: Sequence[str],
    adapter_scales: Sequence[float] | None = None,
    catalog: Catalog | None = None,
    on_progress: ProgressCallback | None = None,
    gpu_layers: int | None = None,
) -> list[LossResult]:
    """Mean cross-entropy and perplexity of ``data``'s reference replies under each model (and scale).

    ``data`` is any format the trainer accepts; a malformed file raises its ``DatasetError`` (file and line).
    ``adapter_scales`` apply to the finetuned models, one result per scale, as in ``run_eval``.
    """
    from tuitune.catalog import load_catalog
    from tuitune.engines import open_engine
    from tuitune.evals.runner import plan_columns
    from tuitune.training.data import load_examples

    examples = load_examples(Path(data))
    catalog = catalog if catalog is not None else load_catalog()
    plan = plan_columns(models, adapter_scales, catalog)
    formatted: dict[tuple[Path, str | None], tuple[list, int]] = {}
    work = []
    for model, columns in plan:
        key = _formatting(model, catalog)  # endpoints fail here, before any model loads
        if key not in formatted:
            formatted[key] = _sequences(key[0], key[1], examples)
            if not formatted[key][0]:
                raise TuituneError(f"{data}: no reply tokens to score (every example was cut away or has no reply)")
        work.append((model, columns, *formatted[key]))
    total = sum(len(sequences) * len(columns) for _, columns, sequences, _ in work)
    done = 0
    results = []
    for model, columns, sequences, used in work:
        # logits for every position cost n_ctx × vocabulary floats: size the context to the longest sequence
        n_ctx = max(len(sequence.input_ids) for sequence in sequences)
        first = columns[0].adapter_scale
        engine = open_engine(model, n_ctx=n_ctx, adapter_scale=1.0 if first is None else first, catalog=catalog,
                             logits_all=True, gpu_layers=gpu_layers)  # fmt: skip
        try:
            for column in columns:
                if column.adapter_scale is not None:
                    engine.set_adapter_scale(column.adapter_scale)  # type: ignore[attr-defined]
                nll, tokens = 0.0, 0
                for sequence in sequences:
                    logits = engine.logits(sequence.input_ids)  # type: ignore[attr-defined]
                    seq_nll, seq_tokens = reply_nll(logits, sequence.input_ids, sequence.prompt_tokens)
                    nll, tokens = nll + seq_nll, tokens + seq_tokens
                    done += 1
                    if on_progress is not None:
                        on_progress(done, total)
                mean = nll / tokens
                perplexity = math.exp(mean) if mean < 700 else math.inf
                results.append(LossResult(model.id, column.adapter_scale, mean, perplexity, tokens, used))
        finally:
            engine.close()
    return results
