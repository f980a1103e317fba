"""`hessian="cg"`: conjugate gradient on each damped block with exact Hessian-vector products."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._hvp import BlockHessian
from .base import Block, CurvatureStrategy, FitContext, register_strategy


@dataclass(frozen=True)
class CGSettings:
    """Settings of `hessian="cg"`.

    Attributes:
        tol: Stop when the true relative residual `‖(H + λI) x - v‖ / ‖v‖ <= tol` for
            every test vector (recomputed from x, not the recurrence's). None: 1e-10 for
            float64 models, 1e-5 for float32 ones (products in float32 reach about 1e-6
            on a small CNN at damping 1e-3, and no lower).
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
    operator: Callable[[Tensor], Tensor],
    rhs: Tensor,
    tol: float,
    max_iter: int,
    desc: str = "",
    show_progress: bool = False,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
    callback: Callable[[int, Tensor], None] | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Solves `A x = b` for every row b of `rhs [m, P]` (A symmetric positive definite).

    The m systems run in lockstep, one `operator` call per iteration for all of them;
    a system that has converged stops moving. With a `preconditioner` M (≈ A⁻¹, symmetric
    positive definite) this is preconditioned CG, with the Polak-Ribière β, which tolerates
    a preconditioner evaluated in low precision.

    The recurrence residual drifts from the true one `b - A x` in floating point. When it
    falls below `tol`, the true residual is computed (one more `operator` call); where that
    is still above `tol`, CG restarts from x with the true residual. It stops when the true
    residual meets `tol`, after `max_iter` iterations, or when a restart no longer halves
    the true residual (the precision floor of `operator`). The residuals returned are the
    true ones.

    Args:
        operator: `V [m, P] -> A V`, float64.
        rhs: Right-hand sides `[m, P]`.
        tol: Target relative residual `‖b - A x‖ / ‖b‖`.
        max_iter: Most CG iterations (true-residual checks not counted).
        desc: Label of the progress bar and warnings.
        show_progress: Show a progress bar.
        preconditioner: `R [m, P] -> M R`, or None (plain CG).
        callback: Called as `callback(iteration, x)` after every iteration.

    Returns:
        `(x [m, P], true relative residuals [m], iterations)`, float64.
    """
    b = rhs.double()
    b_norm = b.norm(dim=1).clamp_min(1e-300)
    x = torch.zeros_like(b)
    r = b.clone()
    true = torch.ones_like(b_norm)
    it = 0
    with tqdm(total=max_iter, desc=desc, disable=not show_progress, leave=False) as bar:
        while True:
            active = (r.norm(dim=1) / b_norm) > tol
            z = r if preconditioner is None else preconditioner(r).double()
            p, rz = z.clone(), (r * z).sum(1)
            while active.any() and it < max_iter:
                ap = operator(p)
                curvature = (p * ap).sum(1)
                if (curvature[active] <= 0).any():
                    warnings.warn(
                        f"{desc}: the damped Hessian block is not positive definite (negative "
                        "curvature met); CG may not converge. Increase damping.",
                        stacklevel=3,
                    )
                alpha = torch.where(active, rz / curvature.where(active, torch.ones_like(rz)), 0)
                x += alpha[:, None] * p
                r_new = r - alpha[:, None] * ap
                z = r_new if preconditioner is None else preconditioner(r_new).double()
                # Polak-Ribière: equals Fletcher-Reeves for an exact symmetric M.
                beta = torch.where(active, (z * (r_new - r)).sum(1) / rz.clamp_min(1e-300), 0)
                p = z + beta.clamp_min(0)[:, None] * p
                r, rz = r_new, (r_new * z).sum(1)
                active &= (r.norm(dim=1) / b_norm) > tol
                it += 1
                bar.update()
                if callback is not None:
                    callback(it, x)
            r = b - operator(x)
            previous, true = true, r.norm(dim=1) / b_norm
            stalled = ((true > tol) & (true > previous / 2)).any()
            if bool((true <= tol).all()) or it >= max_iter or stalled:
                return x, true, it


@register_strategy
class CGStrategy(CurvatureStrategy):
    """Solves `(H_b + λ I) x = v` by conjugate gradient, batched over test examples.

    Nothing is fitted: every `inverse_hvp` runs CG, one pass over the training set per
    iteration, with exact Hessian-vector products. Its accuracy is that of `exact` up to
    `tol`; `self.iterations[b]` and `self.residuals[b]` (true relative residuals) record
    the last solve per block.
    """

    name = "cg"
    Settings: ClassVar[type] = CGSettings
    shardable = True

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Validates the training set once; CG itself runs at `inverse_hvp`."""
        ctx.validate()
        self._set_up(ctx, blocks)

    def _set_up(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Every block's Hessian-vector operator, and the tolerance for the model's dtype."""
        self.blocks = blocks
        self.ctx = ctx
        self.operators = [BlockHessian(ctx, b, self.settings.hvp_chunk_size) for b in blocks]
        self.iterations: dict[int, int] = {}
        self.residuals: dict[int, Tensor] = {}
        dtype = next(ctx.model.parameters()).dtype
        self.tol = self.settings.tol or (1e-10 if dtype == torch.float64 else 1e-5)

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """`(H_b + λ I)^{-1} v` for each row of `vectors [m, P]`, float64."""
        return self._solve(block, vectors, None)

    def _solve(
        self, block: int, vectors: Tensor, preconditioner: Callable[[Tensor], Tensor] | None
    ) -> Tensor:
        """Runs (preconditioned) CG on block `block`; records and warns as documented."""
        name = self.blocks[block].name or "<model>"
        label = self.name.upper()
        x, residual, it = conjugate_gradient(
            self.operators[block],
            vectors,
            self.tol,
            self.settings.max_iter,
            f"{label} {name}",
            self.ctx.show_progress,
            preconditioner=preconditioner,
        )
        self.iterations[block], self.residuals[block] = it, residual
        worst = float(residual.max())
        if worst > self.tol:
            warnings.warn(
                f"{label} on block {name!r} stopped after {it} iterations at relative "
                f"residual {worst:.1e} > tol {self.tol:.0e}; raise "
                f"{type(self.settings).__name__}(max_iter=...) or damping (or tol, in float32).",
                stacklevel=3,
            )
        return x
