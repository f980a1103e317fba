"""`hessian="cg"`: conjugate gradient on each damped block with exact Hessian-vector products."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._hvp import BlockHessian
from .base import Block, CurvatureStrategy, FitContext, register_strategy


@dataclass(frozen=True)
class CGSettings:
    """Settings of `hessian="cg"`.

    Attributes:
        tol: Stop when `‖(H + λI) x - v‖ <= tol ‖v‖` for every test vector. None: 1e-10
            for float64 models, 1e-6 for float32 ones (the floor that products in the
            model's dtype allow).
        max_iter: Iteration cap per block; each iteration is one pass over the training
            set. A warning names the blocks that did not reach `tol`.
        hvp_chunk_size: Test vectors per vectorised Hessian-vector product (None: all).
    """

    tol: float | None = None
    max_iter: int = 1000
    hvp_chunk_size: int | None = None

    def __post_init__(self) -> None:
        if self.tol is not None and not 0 < self.tol < 1:
            raise ValueError(f"tol must be in (0, 1); got {self.tol!r}.")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive int; got {self.max_iter!r}.")


def conjugate_gradient(
    operator, rhs: Tensor, tol: float, max_iter: int, desc: str = "", show_progress: bool = False
) -> tuple[Tensor, Tensor, int]:
    """Solves `A x = b` for every row b of `rhs [m, P]` (A symmetric positive definite).

    The m systems run in lockstep, one `operator` call per iteration for all of them;
    a system that has converged stops moving.

    Returns:
        `(x [m, P], relative residuals [m], iterations)`, float64.
    """
    b = rhs.double()
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    b_norm = b.norm(dim=1).clamp_min(1e-300)
    rs = (r * r).sum(1)
    active = (rs.sqrt() / b_norm) > tol
    it = 0
    with tqdm(total=max_iter, desc=desc, disable=not show_progress, leave=False) as bar:
        while active.any() and it < max_iter:
            ap = operator(p)
            curvature = (p * ap).sum(1)
            if (curvature[active] <= 0).any():
                warnings.warn(
                    f"{desc}: the damped Hessian block is not positive definite (negative "
                    "curvature met); CG may not converge. Increase damping.",
                    stacklevel=3,
                )
            alpha = torch.where(active, rs / curvature.where(active, torch.ones_like(rs)), 0)
            x += alpha[:, None] * p
            r -= alpha[:, None] * ap
            rs_new = (r * r).sum(1)
            beta = torch.where(active, rs_new / rs.clamp_min(1e-300), 0)
            p = r + beta[:, None] * p
            rs = rs_new
            active &= (rs.sqrt() / b_norm) > tol
            it += 1
            bar.update()
    return x, rs.sqrt() / b_norm, it


@register_strategy
class CGStrategy(CurvatureStrategy):
    """Solves `(H_b + λ I) x = v` by conjugate gradient, batched over test examples.

    Nothing is fitted: every `inverse_hvp` runs CG, one pass over the training set per
    iteration, with exact Hessian-vector products. Its accuracy is that of `exact` up to
    `tol`; `self.iterations[b]` and `self.residuals[b]` record the last solve per block.
    """

    name = "cg"
    Settings = CGSettings
    shardable = True

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Validates the training set once; CG itself runs at `inverse_hvp`."""
        self.blocks = blocks
        self.ctx = ctx
        ctx.validate()
        self.operators = [BlockHessian(ctx, b, self.settings.hvp_chunk_size) for b in blocks]
        self.iterations: dict[int, int] = {}
        self.residuals: dict[int, Tensor] = {}
        dtype = next(ctx.model.parameters()).dtype
        self.tol = self.settings.tol or (1e-10 if dtype == torch.float64 else 1e-6)

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """`(H_b + λ I)^{-1} v` for each row of `vectors [m, P]`, float64."""
        name = self.blocks[block].name or "<model>"
        x, residual, it = conjugate_gradient(
            self.operators[block],
            vectors,
            self.tol,
            self.settings.max_iter,
            f"CG {name}",
            self.ctx.show_progress,
        )
        self.iterations[block], self.residuals[block] = it, residual
        worst = float(residual.max())
        if worst > self.tol:
            warnings.warn(
                f"CG on block {name!r} stopped after {it} iterations at relative residual "
                f"{worst:.1e} > tol {self.tol:.0e}; raise CGSettings(max_iter=...) or damping.",
                stacklevel=2,
            )
        return x
