"""`hessian="pcg"`: conjugate gradient on each damped block, preconditioned by EK-FAC.

CG's iteration count grows with the square root of the damped block's condition number,
`(μ_max + λ) / λ`, which is large at small damping. EK-FAC (see `ekfac.py`) is an
inexpensive approximate inverse of the same damped block; used as the preconditioner M,
CG works on `M (H + λI)`, whose spectrum is clustered where EK-FAC is accurate, and
still converges to the exact solution where it is not. Each iteration costs one pass of
exact Hessian-vector products over the training set, as in `hessian="cg"`, plus one
EK-FAC product (a few small matrix products).

Blocks that EK-FAC does not structure (not one Linear or Conv2d) are preconditioned by
the inverse of their dense damped Gauss-Newton block while they are small (positive
definite, and one reverse pass per output and example where the Hessian of a curved
block would need one product per parameter), otherwise by a diagonal
`1 / (diag F + λ)` with F the empirical Fisher (mean squared per-example gradient), one
extra pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._taps import structured_layer
from ._kronecker import layer_blocks
from .base import Block, FitContext, register_strategy
from .cg import CGStrategy
from .ekfac import EKFACSettings, EKFACStrategy

PRECONDITIONERS = ("ekfac", "none")


@dataclass(frozen=True)
class PCGSettings:
    """Settings of `hessian="pcg"`.

    Attributes:
        preconditioner: "ekfac" (EK-FAC inverse per Linear/Conv2d layer; exact or
            diagonal on other modules) or "none" (plain CG, as `hessian="cg"`).
        tol: Stop when the true relative residual `‖(H + λI) x - v‖ / ‖v‖ <= tol` for
            every test vector. None: 1e-10 for float64 models, 1e-5 for float32 ones.
        max_iter: Iteration cap per block; each iteration is one pass over the training
            set. A warning names the blocks that did not reach `tol`.
        hvp_chunk_size: Test vectors per vectorised Hessian-vector product (None: all).
        exact_max_params: A block (or, for the global influence, a module) that is not one
            Linear or Conv2d is preconditioned by the exact inverse of its damped
            Gauss-Newton block when it has at most this many parameters, else by the
            Fisher diagonal.
        fisher: EK-FAC's factors ("expected", "sampled" or "empirical", see
            `EKFACSettings`); any choice gives exact scores, a better one fewer iterations.
    """

    preconditioner: str = "ekfac"
    tol: float | None = None
    max_iter: int = 1000
    hvp_chunk_size: int | None = None
    exact_max_params: int = 4096
    fisher: str = "expected"

    def __post_init__(self) -> None:
        if self.preconditioner not in PRECONDITIONERS:
            raise ValueError(
                f"preconditioner must be one of {PRECONDITIONERS}; got {self.preconditioner!r}."
            )
        if self.tol is not None and not 0 < self.tol < 1:
            raise ValueError(f"tol must be in (0, 1); got {self.tol!r}.")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive int; got {self.max_iter!r}.")
        if self.exact_max_params < 0:
            raise ValueError(f"exact_max_params must be >= 0; got {self.exact_max_params!r}.")
        EKFACSettings(fisher=self.fisher)


@register_strategy
class PCGStrategy(CGStrategy):
    """Solves `(H_b + λ I) x = v` by EK-FAC-preconditioned CG, batched over test examples.

    `fit` fits EK-FAC (two passes over the training set) as the preconditioner; every
    `inverse_hvp` then runs CG with exact Hessian-vector products, so its accuracy is
    that of `exact` up to `tol`, whatever EK-FAC's. `self.iterations[b]` and
    `self.residuals[b]` (true residuals) record the last solve per block;
    `self.preconditioners[b]` names what block b was preconditioned with.
    """

    name = "pcg"
    Settings = PCGSettings
    shardable = True

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Validates the training set and fits the preconditioner of every block."""
        self._set_up(ctx, blocks)
        # Every block as parts (one per module for the all-parameter block), each part
        # preconditioned by EK-FAC (structured or small) or by a Fisher diagonal.
        self._parts: list[list[tuple[slice, str, int]]] = []
        self.preconditioners: dict[int, str] = {}
        ekfac_parts: list[Block] = []
        diag_parts: list[Block] = []
        for i, block in enumerate(blocks):
            entry = self._plan(block, ekfac_parts, diag_parts)
            self._parts.append(entry)
            self.preconditioners[i] = "+".join(sorted({kind for _, kind, _ in entry})) or "none"
        if ekfac_parts:
            s = self.settings
            settings = EKFACSettings(
                fisher=s.fisher,
                fallback_max_params=s.exact_max_params,
                fallback_gauss_newton="always",
            )
            self._ekfac = EKFACStrategy(settings, self.damping)
            self._ekfac.fit(ctx, ekfac_parts)
        else:
            ctx.validate()
        self._diagonals = _fisher_diagonals(ctx, diag_parts) if diag_parts else []

    def _plan(self, block: Block, ekfac_parts: list[Block], diag_parts: list[Block]) -> list:
        """`[(slice, "ekfac" or "diagonal", index in that list)]` for the block's parts."""
        if self.settings.preconditioner == "none":
            return []
        model = self.ctx.model
        parts, slices = ([block], [slice(0, block.numel)])
        if block.layers is None:
            parts, slices = layer_blocks(model, block)
        entry = []
        for part, sl in zip(parts, slices, strict=True):
            structured = structured_layer(model, part.layers, part.param_names) is not None
            if structured or part.numel <= self.settings.exact_max_params:
                entry.append((sl, "ekfac", len(ekfac_parts)))
                ekfac_parts.append(part)
            else:
                entry.append((sl, "diagonal", len(diag_parts)))
                diag_parts.append(part)
        return entry

    def _precondition(self, block: int, r: Tensor) -> Tensor:
        out = torch.empty_like(r)
        for sl, kind, k in self._parts[block]:
            if kind == "ekfac":
                out[:, sl] = self._ekfac.inverse_hvp(k, r[:, sl]).double()
            else:
                out[:, sl] = r[:, sl] / (self._diagonals[k] + self.damping)
        return out

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """`(H_b + λ I)^{-1} v` for each row of `vectors [m, P]`, float64."""
        pre = (lambda r: self._precondition(block, r)) if self._parts[block] else None
        return self._solve(block, vectors, pre)


def _fisher_diagonals(ctx: FitContext, parts: list[Block]) -> list[Tensor]:
    """Per part, the empirical Fisher diagonal `(1/n) Σ_z g_z²` (float64), one pass."""
    sums = [torch.zeros(p.numel, dtype=torch.float64, device=ctx.device) for p in parts]
    seen = 0
    for inputs, labels in ctx.batches("PCG diagonal preconditioner"):
        seen += len(labels)
        for total, g in zip(sums, ctx.engine.block_grads(inputs, labels, parts), strict=True):
            total += (g.double() ** 2).sum(0)
    ctx.check_count(seen)
    return [ctx.all_reduce(t) / ctx.n_train for t in sums]
