"""Damped Hessian-vector products of one block, for the iterative strategies (CG, LiSSA)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..._utils.data import iter_batches
from .base import Block, FitContext


class BlockHessian:
    """`(H_b + λ I) V` for the rows of `V [m, P]`, H_b of the MEAN training loss.

    Products are evaluated in the model's dtype (exact Hessian-vector products,
    `torch.func.jvp` of `grad`) and returned in float64.

    Args:
        ctx: The fit context (model, loss, training loader, damping).
        block: The block.
        chunk_size: Vectors per vectorised Hessian-vector product (None: all at once).
    """

    def __init__(self, ctx: FitContext, block: Block, chunk_size: int | None = None) -> None:
        self.ctx = ctx
        self.names = list(block.param_names)
        self.numel = block.numel
        self.chunk_size = chunk_size

    def batches(self) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
        """The training batches on the model's device (validated once, by `fit`)."""
        return iter_batches(self.ctx.train_loader, self.ctx.device, "train_dataset")

    def batch(self, inputs: tuple[Tensor, ...], labels: Tensor, vectors: Tensor) -> Tensor:
        """Undamped `H_batch V` with H_batch of the batch's MEAN loss, float64."""
        hv = self.ctx.engine.hvp(inputs, labels, self.names, vectors, self.chunk_size)
        return hv.double() / len(labels)

    def __call__(self, vectors: Tensor) -> Tensor:
        """`(H_b + λ I) V` over the whole training set, float64 (summed over ranks)."""
        total = torch.zeros_like(vectors, dtype=torch.float64)
        for inputs, labels in self.ctx.own_batches():
            hv = self.ctx.engine.hvp(inputs, labels, self.names, vectors, self.chunk_size)
            total += hv.double()
        total = self.ctx.all_reduce(total)
        return total / self.ctx.n_train + self.ctx.damping * vectors.double()

    def largest_eigenvalue(self, iterations: int, seed: int) -> float:
        """Power-iteration estimate of the largest eigenvalue of `H_b + λ I`."""
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(1, self.numel, generator=gen, dtype=torch.float64).to(self.ctx.device)
        v /= v.norm()
        value = 0.0
        for _ in range(iterations):
            hv = self(v)
            value = float((hv * v).sum())
            v = hv / hv.norm().clamp_min(1e-300)
        return abs(value)
