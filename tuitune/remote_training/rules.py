"""What a fine-tuning service accepts, checked before anything is uploaded, and what the job will bill.

The same checker as local training (training/data.py) reads the file; on top of it come the service's own
rules, so a file it would refuse after a slow upload is refused here, with the line: chat JSONL only (one
``{"messages": […]}`` object per line: no JSON array, no prompt/completion or alpaca rows) and at most
``MAX_FILE_BYTES`` (the checker already asks for OpenAI's ten examples at least). Billed tokens follow the
formula OpenAI documents: the tokens in the training file times the number of epochs, estimated here from
characters (the service's tokenizer is not available offline).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tuitune.training.data import CHARS_PER_TOKEN, DatasetReport, Problem, check_dataset

MAX_FILE_BYTES = 512 * 1024**2  # OpenAI's limit for one uploaded fine-tuning file
SERVICE_MAX_TOKENS = 65_536  # per example; longer ones are cut by the service (a warning here, as locally)
DEFAULT_EPOCHS = 3  # assumed for the estimate when the service picks ("auto")


@dataclass(frozen=True)
class ServiceCheck:
    """The data report with the service's rules applied, and the billed-token estimate."""

    report: DatasetReport
    file_tokens: int  # every token of every example, once (the data report's file_tokens)
    epochs: int
    epochs_given: bool

    @property
    def ok(self) -> bool:
        return self.report.ok

    @property
    def billed_tokens(self) -> int:
        return self.file_tokens * self.epochs

    def estimate_line(self) -> str:
        epochs = f"{self.epochs} epochs" if self.epochs_given else f"{self.epochs} epochs (assumed: the service picks)"
        return (f"billed tokens ≈ {self.file_tokens:,} in the file × {epochs} = {self.billed_tokens:,} "
                f"(estimated from characters, {CHARS_PER_TOKEN} per token)")  # fmt: skip


def check_for_service(path: Path, epochs: int | None) -> ServiceCheck:
    """``path`` checked as the service would check it (errors carry their line); tokens counted for billing."""
    path = Path(path)
    report = check_dataset(path, max_length=SERVICE_MAX_TOKENS)
    extra: list[Problem] = []
    if report.format is not None and not report.format.startswith("OpenAI chat"):
        extra.append(Problem(None, f"the service takes OpenAI chat JSONL and this file is {report.format}: write "
                                   'each example as {"messages": [{"role": "user", "content": PROMPT}, {"role": '
                                   '"assistant", "content": REPLY}]}'))  # fmt: skip
    elif report.format is not None and report.format.endswith("JSON array"):
        extra.append(Problem(None, "the service takes JSONL (one example per line), not one JSON array; write each "
                                   "example on its own line"))  # fmt: skip
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    if size > MAX_FILE_BYTES:
        extra.append(Problem(None, f"{size / 1024**2:,.0f} MB; the service takes files up to 512 MB: split it"))
    report.problems.extend(extra)
    return ServiceCheck(report, report.file_tokens, epochs or DEFAULT_EPOCHS, epochs is not None)
