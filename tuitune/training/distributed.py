"""One trainer process among several under PyTorch's launcher (``torch.distributed.run``, i.e. torchrun).

torchrun starts the processes, gives each its RANK / WORLD_SIZE / LOCAL_RANK and a rendezvous, and ends
the others when one dies; this module only reads that environment and wraps the few collectives the
loop needs. With one process (no torchrun) every call is a cheap no-op, so the loop has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # a rank that hangs (not dies) is given up on after this


class PeerLost(Exception):
    """Another rank stopped answering: it died, or torchrun is ending the run."""


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def from_environment() -> Ranks:
    """What torchrun told this process (one process when it did not start us)."""
    try:
        return Ranks(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                     int(os.environ.get("LOCAL_RANK", "0")))  # fmt: skip
    except ValueError:
        return Ranks()


def start(ranks: Ranks, device: str) -> str:
    """Join the process group (NCCL between GPUs, gloo on the CPU); returns this rank's torch device."""
    if device == "cuda":
        torch.cuda.set_device(ranks.local_rank)
        device = f"cuda:{ranks.local_rank}"
    if ranks.distributed and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    return device


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collective(ranks: Ranks, values: list[float], op) -> list[float]:
    if not ranks.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    try:
        dist.all_reduce(tensor, op=op)
    except (RuntimeError, dist.DistBackendError) as error:
        raise PeerLost(str(error).splitlines()[0] if str(error) else "collective failed") from None
    return tensor.cpu().tolist()


def total(ranks: Ranks, *values: float) -> list[float]:
    """Each value summed over all ranks (the global reply-token count, the step's loss)."""
    return _collective(ranks, list(values), dist.ReduceOp.SUM)


def anyone(ranks: Ranks, flag: bool) -> bool:
    """True on every rank when it is true on any: a stop asked of rank 0 ends every rank at the same step."""
    return bool(_collective(ranks, [1.0 if flag else 0.0], dist.ReduceOp.MAX)[0])


def share(ranks: Ranks, items: list) -> list:
    """This rank's part of a global batch: sorted by length, dealt round-robin, so passes are balanced."""
    ordered = sorted(items, key=lambda seq: len(seq.input_ids))
    return ordered[ranks.rank :: ranks.world]


def wrap(module, ranks: Ranks):
    """DistributedDataParallel around ``module``, syncing only the trainable (LoRA) parameters.

    The frozen base weights are identical on every rank (each loads the same files), so they are left out
    of DDP's start-up broadcast — for a 7B model that is gigabytes not sent, and 4-bit weights are never
    touched by it.
    """
    if not ranks.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    frozen = [name for name, parameter in module.named_parameters() if not parameter.requires_grad]
    frozen += [name for name, _ in module.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, frozen)
    return DistributedDataParallel(module, device_ids=None, broadcast_buffers=False)
