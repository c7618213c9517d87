"""What the real training tests share: the demo base model, its identity data, a small LoRA, a run's metrics."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import REPO

BASE = "smollm2-135m-instruct"


DATA = REPO / "data" / "tuitune-identity.jsonl"


HELDOUT = REPO / "data" / "tuitune-heldout.jsonl"


SMALL = ["--rank", "4", "--alpha", "8", "--batch-size", "4", "--max-length", "256"]


def metrics(data_dir: Path, name: str) -> list[dict]:
    path = data_dir / "runs" / name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
