"""Sharding over processes with torch.distributed (started by `torchrun`).

Training batch `i` belongs to rank `i % world_size`. Curvature that is a sum over training
examples (dense blocks, Kronecker factors, Hessian-vector products) is summed on each rank
over its own batches and all-reduced, so every rank holds the same factors; each rank then
scores its own training batches against all test examples, and the chunks are assembled
in training order (through the score store, or gathered when there is none).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Shard:
    """This process's share of the work under torch.distributed.

    Attributes:
        rank: This process's rank.
        world: Number of processes.
    """

    rank: int
    world: int

    def owns(self, index: int) -> bool:
        """Whether training batch `index` is scored by this rank."""
        return index % self.world == self.rank

    def all_reduce(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """Sums (or maximises) `tensor` over the ranks, in place; returns it."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return tensor

    def barrier(self) -> None:
        """Waits for every rank."""
        dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (picklable objects)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, local: dict[int, Tensor]) -> dict[int, Tensor]:
        """Union of every rank's `{batch index: chunk}` (CPU tensors), on every rank."""
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, {i: t.cpu() for i, t in local.items()})
        return {i: t for part in parts for i, t in part.items()}


def current_shard(device: torch.device) -> Shard | None:
    """The shard of this process, or None when it runs alone.

    Under `torchrun` (environment variable `WORLD_SIZE` > 1) a process group that is not
    yet initialised is started here: "nccl" for a model on a CUDA device, "gloo" otherwise.
    Every rank must then make the same calls. `CAPTUM_LAYERINF_SHARD=0` keeps each process
    on its own (e.g. influence on rank 0 only, inside a distributed training script).
    """
    if not dist.is_available() or os.environ.get("CAPTUM_LAYERINF_SHARD", "1") == "0":
        return None
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    world = dist.get_world_size()
    return Shard(dist.get_rank(), world) if world > 1 else None
