"""torchrun set-up in one place: which process this is, and the few collective helpers the loop needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from models.device import resolve_device

__all__ = ["DistributedContext", "init_distributed_mode", "all_reduce_sum"]


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job; a single process is rank 0 of world size 1."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process prints progress and writes files."""
        return self.rank == 0


def init_distributed_mode(device_request: str = "auto") -> tuple[DistributedContext, torch.device]:
    """Read torchrun's environment, join the process group, and pick this process's device.

    ``device_request`` goes through ``models.device.resolve_device`` (``auto``: CUDA when available,
    else CPU; ``cpu``, ``cuda`` or ``cuda:N``), which raises ``ValueError`` for a malformed or missing
    device. Under torchrun each process takes GPU ``LOCAL_RANK`` (NCCL) when that resolves to CUDA,
    or the CPU with the gloo backend.
    """
    device = resolve_device(device_request)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistributedContext(), device
    context = DistributedContext(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ["WORLD_SIZE"]),
    )
    if device.type == "cuda":
        torch.cuda.set_device(context.local_rank)
        device = torch.device("cuda", context.local_rank)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return context, device


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all processes (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()
