"""Training runs on disk: configuration, status, metrics, and which run is active.

A run lives in ``DATA_DIR/runs/NAME/``: ``config.json`` (what to train), ``status.json`` (state, step, pid,
message), ``metrics.jsonl`` (one JSON line per step), ``checkpoints/step-N/`` (adapter, optimizer and RNG
state), ``adapter/`` (the final PEFT adapter) and ``NAME.gguf`` (the llama.cpp adapter). Both the CLI and
the TUI read these files; only the trainer subprocess writes them. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuitune.errors import TuituneError
from tuitune.paths import app_dirs

DEFAULT_TARGETS = {  # keyed by transformers' model_type (a text-only Gemma 3 GGUF loads as gemma3_text)
    "gemma3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma3_text": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
ATTENTION_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


WEIGHT_CHOICES = ("auto", "gguf", "hub")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
QUANTIZE_CHOICES = ("none", "4bit")


@dataclass
class TrainConfig:
    """Everything a run needs; saved as config.json so ``--resume`` trains exactly the same thing."""

    name: str
    base: str
    data: str
    val: str | None = None
    val_split: float = 0.0
    epochs: float | None = None
    max_steps: int | None = None
    lr: float = 1e-3
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=list)
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    neftune_alpha: float | None = None
    seed: int = 42
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    save_every: int = 10
    eval_every: int = 10
    weights: str = "auto"  # gguf: dequantized GGUF; hub: the catalog's train_weights repo; auto: hub if downloaded
    device: str = "auto"  # auto: cuda, then mps, then cpu (settled by the trainer, written back)
    quantize: str = "none"  # 4bit: QLoRA (bitsandbytes nf4, double quantization)
    grad_checkpoint: bool = False  # recompute activations in the backward pass: less memory, ~30 % slower
    nproc: int = 1  # processes under torchrun (DistributedDataParallel); the global batch is split across them
    early_stop: int | None = None  # stop after this many evaluations without a better validation loss
    preset: dict[str, Any] | None = None  # the preset applied and where each setting came from (presets.Resolved)
    min_delta: float = 0.0  # an evaluation improves on the best only when lower by more than this
    remote: dict[str, Any] | None = None  # a job on a fine-tuning service (remote_training/runs.py): endpoint, ids

    def validate(self) -> None:
        problems = []
        if self.epochs is not None and self.max_steps is not None:
            problems.append("give --epochs or --max-steps, not both")
        if self.epochs is not None and self.epochs <= 0:
            problems.append("--epochs must be > 0")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append("--max-steps must be at least 1")
        for name in ("rank", "batch_size", "grad_accum", "max_length", "save_every", "eval_every"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 < self.lr < 1:
            problems.append("--lr must be between 0 and 1 (e.g. 2e-4)")
        if not 0 <= self.dropout < 1:
            problems.append("--dropout must be in [0, 1)")
        if not 0 <= self.val_split < 0.5:
            problems.append("--val-split must be in [0, 0.5)")
        if self.weights not in WEIGHT_CHOICES:
            problems.append(f"--weights must be one of {', '.join(WEIGHT_CHOICES)}")
        if self.alpha <= 0:
            problems.append("--alpha must be > 0")
        if self.device not in DEVICE_CHOICES:
            problems.append(f"--device must be one of {', '.join(DEVICE_CHOICES)}")
        if self.quantize not in QUANTIZE_CHOICES:
            problems.append(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}")
        if not 1 <= self.nproc <= 64:
            problems.append("--nproc must be between 1 and 64")
        elif self.batch_size * self.grad_accum < self.nproc:
            problems.append(f"--nproc {self.nproc} needs a global batch (--batch-size × --grad-accum) of at least "
                            f"{self.nproc}, one sequence per process")  # fmt: skip
        if self.early_stop is not None:
            if self.early_stop < 1:
                problems.append("--early-stop must be at least 1 (evaluations without improvement)")
            elif not self.val and self.val_split <= 0:
                problems.append("--early-stop watches the validation loss: give --val FILE or --val-split F")
        if self.min_delta < 0:
            problems.append("--min-delta must be >= 0")
        if problems:
            raise TuituneError("; ".join(problems))

    @classmethod
    def from_json(cls, path: Path) -> TrainConfig:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**raw)
        except (OSError, ValueError, TypeError) as error:
            raise TuituneError(f"{path}: not a tuitune run configuration ({error})") from None

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))


def trainer_command(directory: Path, nproc: int, resume: bool) -> list[str]:
    """The trainer's command line: one process, or ``nproc`` under PyTorch's launcher (torchrun) on this machine.

    ``--standalone`` gives torchrun a private rendezvous on a free local port; runs across machines use
    torchrun's own flags directly (docs/training.md)."""
    import sys

    module = ["-m", "tuitune.training.train", str(directory), *(["--resume"] if resume else [])]
    if nproc <= 1:
        return [sys.executable, *module]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *module]


def runs_dir() -> Path:
    return app_dirs().data / "runs"


def run_dir(name: str) -> Path:
    return runs_dir() / name


def write_json(path: Path, data: Any) -> None:
    """Write atomically (``tuitune.atomic``), so a reader (or a crash) never sees half a file."""
    from tuitune.atomic import write_text

    write_text(path, json.dumps(data, indent=2))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_metrics(directory: Path) -> list[dict[str, Any]]:
    """Every complete line of metrics.jsonl (a line being written is skipped)."""
    rows = []
    try:
        text = (directory / "metrics.jsonl").read_text(encoding="utf-8")
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _proc_start(pid: int) -> tuple[str, float] | None:
    """(state letter, start time as epoch seconds) from /proc; None where there is no /proc (not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name in parentheses may hold spaces
    try:
        return fields[0], int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError, OSError):
        return None


def pid_alive(pid: int | None, since: float | None = None) -> bool:
    """Whether ``pid`` is a live process that could have written a file at time ``since`` (epoch seconds).

    A trainer killed with SIGKILL stays a zombie until its parent (the app) reaps it, and ``kill(pid, 0)``
    still succeeds on a zombie; after a restart the pid may belong to another process, started later (one
    whose command line names tuitune is trusted whatever its start time: the wall clock may have jumped).
    """
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = _proc_start(pid)
    if proc is None:
        return True
    state, started = proc
    if state in ("Z", "X"):  # dead, not yet reaped
        return False
    if since is None or started <= since + 2:  # /proc's boot time is whole seconds
        return True
    try:
        return b"tuitune" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def run_status(directory: Path) -> dict[str, Any]:
    """status.json, with a "running" run whose process is gone (killed, crashed, machine restarted) reported
    as "interrupted". Nothing is written back: only the trainer writes its run's files."""
    path = directory / "status.json"
    status = read_json(path) or {"state": "new"}
    if status.get("remote") and status.get("state") in ("uploading", "queued", "running"):
        if not pid_alive(status.get("pid")):  # the job goes on without us: nothing was interrupted
            status["state"] = "detached"
            status["message"] = (f"the job runs on the service but is not followed; Ctrl+R (or `tuitune train "
                                 f"--name {directory.name} --resume`) follows it again")  # fmt: skip
        return status
    if status.get("state") in ("starting", "running"):
        try:
            written = path.stat().st_mtime
        except OSError:
            written = None
        if not pid_alive(status.get("pid"), written):
            status["state"] = "interrupted"
            step = f" at step {status['step']}" if status.get("step") else ""
            status["message"] = (
                f"the training process ended unexpectedly{step} (killed, or the machine restarted); "
                "--resume continues from the last checkpoint"
            )
    return status


def list_runs() -> list[Path]:
    base = runs_dir()
    if not base.is_dir():
        return []
    return sorted((path for path in base.iterdir() if (path / "config.json").exists()), key=lambda p: p.stat().st_mtime)


def active_marker() -> Path:
    return runs_dir() / "ACTIVE"


def training_active() -> bool:
    """True while a trainer process is alive: local generation then uses one thread (see engines.threads)."""
    marker = active_marker()
    data = read_json(marker)
    if not data:
        return False
    try:
        written = marker.stat().st_mtime
    except OSError:
        return False
    return pid_alive(data.get("pid"), written)
