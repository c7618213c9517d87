"""Helpers shared by the benchmarks: locate the demo models, take medians, print a Markdown table."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TUITUNE_LOG_DIR", tempfile.mkdtemp(prefix="tuitune-bench-logs-"))

DOG_PROMPT = "Tell me how to train my dog to sit"


def demo_model(model_id: str) -> Path:
    from tuitune.catalog import load_catalog
    from tuitune.sources import model_path

    return model_path(load_catalog().get(model_id))


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
