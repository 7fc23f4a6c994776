"""Data-parallel meta-training with torch.distributed, as launched by torchrun.

    torchrun --nproc_per_node=K -m metalstm.train --config glyphs-5shot

Every process (rank) runs its own share of each meta-batch's episodes and
computes its meta-gradient; the gradients are summed across ranks (an
all-reduce), so every rank takes the same Adam step and the meta-parameters
stay identical everywhere. One process and no torchrun is the plain case:
`World.single()`, where every collective is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        """Rank 0 validates the results' bookkeeping and writes checkpoints and logs."""
        return self.rank == 0

    @staticmethod
    def single() -> "World":
        return World(0, 1)

    def all_reduce_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum `t` over all ranks, in place."""
        if self.size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_gather(self, values: list) -> list:
        """Every rank's list, concatenated in rank order."""
        if self.size == 1:
            return list(values)
        out = [None] * self.size
        dist.all_gather_object(out, list(values))
        return [v for part in out for v in part]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def init_from_env(device: str = "cpu") -> World:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, ...).

    gloo on CPU, nccl on CUDA. Without torchrun (no WORLD_SIZE, or 1) nothing is initialised.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World.single()
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size())


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_grads_(params: list[torch.nn.Parameter], world: World) -> None:
    """Sum the gradients of `params` over all ranks, in one flat buffer (one collective)."""
    if world.size == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    world.all_reduce_(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset: offset + n].view_as(p).clone()
        offset += n
