"""DDP through ``torchrun``: the process's rank and world size, and an all-reduce that is a no-op
in a single process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    """This process's place in the job (``rank`` of ``world``); the default is a single process."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_dist(device_kind: str) -> Dist:
    """Join the process group set up by ``torchrun`` (NCCL on CUDA, gloo on CPU); a single process
    (``WORLD_SIZE`` unset or 1) gets ``Dist()`` and no process group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def all_reduce(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum ``t`` over the ranks in place (nothing to do in a single process); returns ``t``."""
    if d.world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def barrier(d: Dist) -> None:
    """Wait for every rank (nothing to do in a single process)."""
    if d.world > 1:
        torch.distributed.barrier()


def end_process_group() -> None:
    """Leave the process group, if this process joined one (``torchrun``): the process that ran
    :func:`init_dist` calls it before it exits. Without it the gloo/NCCL threads are torn down by the
    interpreter's exit, which can abort a rank ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
