"""Early stopping on the validation loss: the best evaluation so far, and how many since did not beat it.

Kept apart from the trainer (no torch here) so the rule is one small thing: an evaluation improves when it
is lower than the best by more than ``min_delta``; after ``patience`` evaluations in a row that do not, the
run stops. A resumed run rebuilds this state from the metrics it kept (``from_metrics``), so stopping
decisions are the same as if it had never been interrupted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class EarlyStop:
    patience: int | None  # None: only the best is tracked, training never stops early
    min_delta: float = 0.0
    best_step: int | None = None
    best_loss: float | None = None
    bad: int = 0  # evaluations since the best that did not improve on it

    def update(self, step: int, loss: float) -> bool:
        """Record the evaluation at ``step``; True when it is the new best."""
        if not math.isfinite(loss):
            self.bad += 1
            return False
        if self.best_loss is None or loss < self.best_loss - self.min_delta:
            self.best_step, self.best_loss, self.bad = step, loss, 0
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience

    def reason(self) -> str:
        evaluations = "1 evaluation" if self.patience == 1 else f"{self.patience} evaluations"
        return (f"the validation loss has not improved for {evaluations} (best {self.best_loss:.4f} "
                f"at step {self.best_step})")  # fmt: skip

    @classmethod
    def from_metrics(cls, rows: list[dict[str, Any]], patience: int | None, min_delta: float = 0.0) -> EarlyStop:
        """The state after the evaluations in ``rows`` (metrics.jsonl lines, in step order)."""
        state = cls(patience, min_delta)
        for row in rows:
            loss, step = row.get("eval_loss"), row.get("step")
            if isinstance(loss, (int, float)) and isinstance(step, int):
                state.update(step, float(loss))
        return state
