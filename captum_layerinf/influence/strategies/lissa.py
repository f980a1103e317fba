"""`hessian="lissa"`: Koh & Liang's stochastic Neumann-series recursion (Agarwal et al. 2017)."""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..._utils.data import batch_count
from ._hvp import BlockHessian
from .base import Block, CurvatureStrategy, FitContext, register_strategy


@dataclass(frozen=True)
class LiSSASettings:
    """Settings of `hessian="lissa"`.

    The recursion `h_t = v + (I - (H_t + λI) / scale) h_{t-1}`, with H_t the Hessian of
    one training batch (cycling through the loader), gives `(H + λI)^{-1} v ≈ h_depth / scale`.
    Its error along an eigenvalue μ of `H + λI` shrinks as `(1 - μ / scale)^depth`, but the
    batch Hessians' noise does not average out: LiSSA is an approximation. Measured on a
    small trained CNN (96 digits, batches of 64) at damping 1e-2 with these defaults: max
    relative score error 0.03-0.12 per layer against `exact` (Pearson >= 0.99). For scores
    equal to `exact`, use `hessian="cg"` or `"pcg"`.

    Attributes:
        depth: Recursion steps. None: enough that the slowest direction (μ = λ) has
            shrunk below `target`, i.e. `ceil(log(target) / log(1 - λ / scale))`,
            at most `max_depth`.
        repeats: Independent recursions averaged (each starts at another batch).
        scale: Must exceed the largest eigenvalue of every batch's `H_t + λI`. None:
            `scale_margin` times a power-iteration estimate on the full training set.
        scale_margin: Safety factor of the automatic scale.
        target: Error target of the automatic depth.
        max_depth: Cap of the automatic depth.
        power_iterations: Power-iteration steps of the automatic scale.
        warn_residual: Warn when the estimate's relative residual
            `‖(H + λI) x - v‖ / ‖v‖` (measured on the full training set) exceeds this.
        warn_score_error: Warn when either score check exceeds this: the first-order
            error of the self-score `vᵀx`, `|xᵀ r| / |vᵀ x|` with r the residual (it weighs
            r by x ≈ (H + λI)⁻¹ v, i.e. by 1/μ: the small-eigenvalue directions the
            residual under-weights), or the change of `vᵀx` between depth/2 and depth.
        seed: Seed of the power iteration.
    """

    depth: int | None = None
    repeats: int = 1
    scale: float | None = None
    scale_margin: float = 1.5
    target: float = 1e-3
    max_depth: int = 20000
    power_iterations: int = 20
    warn_residual: float = 0.3
    warn_score_error: float = 1e-2
    seed: int = 0

    def __post_init__(self) -> None:
        for field in ("repeats", "max_depth", "power_iterations"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be a positive int; got {getattr(self, field)!r}.")
        if self.depth is not None and self.depth < 1:
            raise ValueError(f"depth must be a positive int or None; got {self.depth!r}.")
        if self.scale is not None and self.scale <= 0:
            raise ValueError(f"scale must be > 0 or None; got {self.scale!r}.")
        if not self.warn_score_error > 0:
            raise ValueError(f"warn_score_error must be > 0; got {self.warn_score_error!r}.")
        if not 0 < self.target < 1:
            raise ValueError(f"target must be in (0, 1); got {self.target!r}.")


@register_strategy
class LiSSAStrategy(CurvatureStrategy):
    """Stochastic inverse-Hessian-vector products by Koh & Liang's LiSSA recursion.

    An approximation (see `LiSSASettings`): `fit` warns so. It estimates each block's
    scale (power iteration) and depth. `inverse_hvp` runs the recursion batched over test
    vectors, then checks its result on the full training set and warns when the residual
    or a score check is too large. Per block, of the last solve: `self.residuals[b]`
    (relative residuals), `self.score_errors[b]` (first-order relative error of each
    self-score `vᵀx`) and `self.depth_changes[b]` (relative change of `vᵀx` from
    depth/2 to depth).
    """

    name = "lissa"
    Settings = LiSSASettings
    shardable = True

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Chooses scale and depth per block."""
        self.blocks = blocks
        self.ctx = ctx
        if ctx.damping <= 0 and self.settings.depth is None:
            raise ValueError(
                "hessian='lissa' with damping=0 needs an explicit LiSSASettings(depth=...): "
                "the automatic depth is set by the damping."
            )
        warnings.warn(
            "hessian='lissa' is a stochastic approximation: its scores deviate from exact "
            "ones (on a small CNN at damping 1e-2, 3-12% max relative error with the "
            "default settings). Use hessian='cg' or 'pcg' for exact scores.",
            stacklevel=4,
        )
        ctx.validate()
        self.operators = [BlockHessian(ctx, b) for b in blocks]
        self.scales, self.depths = [], []
        s = self.settings
        for op in tqdm(self.operators, desc="LiSSA scales", disable=not ctx.show_progress):
            scale = s.scale or s.scale_margin * op.largest_eigenvalue(s.power_iterations, s.seed)
            depth = s.depth
            if depth is None:
                rate = 1 - ctx.damping / scale
                depth = min(s.max_depth, math.ceil(math.log(s.target) / math.log(rate)))
            self.scales.append(scale)
            self.depths.append(max(1, depth))
        self.residuals: dict[int, Tensor] = {}
        self.score_errors: dict[int, Tensor] = {}
        self.depth_changes: dict[int, Tensor] = {}

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """LiSSA estimate of `(H_b + λ I)^{-1} v` for each row of `vectors [m, P]`, float64."""
        op, scale, depth = self.operators[block], self.scales[block], self.depths[block]
        name = self.blocks[block].name or "<model>"
        v = vectors.double()
        n_batches = batch_count(self.ctx.train_loader) or sum(1 for _ in op.batches())
        total = torch.zeros_like(v)
        half = torch.zeros_like(v)
        for r in range(self.settings.repeats):
            h = v.clone()
            start = (r * n_batches) // self.settings.repeats
            batches = itertools.islice(_cycle(op), start, start + depth)
            bar = tqdm(
                batches,
                total=depth,
                desc=f"LiSSA {name}",
                leave=False,
                disable=not self.ctx.show_progress,
            )
            for t, (inputs, labels) in enumerate(bar, 1):
                if t == depth // 2 + 1:
                    half += h / scale
                hv = op.batch(inputs, labels, h) + self.ctx.damping * h
                h = v + h - hv / scale
                if not torch.isfinite(h).all() or h.norm() > 1e12 * v.norm():
                    raise FloatingPointError(
                        f"LiSSA diverged on block {name!r}: a batch Hessian has eigenvalues "
                        f"above scale={scale:.3g}, or below -damping (the Hessian of an "
                        "untrained model, or of a layer before a normalisation or a smooth "
                        "activation, is often indefinite). Pass a larger "
                        "LiSSASettings(scale=...) or raise damping, or use hessian='exact', "
                        "which solves an indefinite block exactly."
                    )
            total += h / scale
        x = total / self.settings.repeats
        x_half = half / self.settings.repeats
        res = op(x) - v
        residual = res.norm(dim=1) / v.norm(dim=1).clamp_min(1e-300)
        score = (v * x).sum(1)
        # vᵀ(x - x*) = x*ᵀ res exactly (H symmetric); x stands in for x*.
        score_error = (x * res).sum(1).abs() / score.abs().clamp_min(1e-300)
        depth_change = (score - (v * x_half).sum(1)).abs() / score.abs().clamp_min(1e-300)
        self.residuals[block] = residual
        self.score_errors[block], self.depth_changes[block] = score_error, depth_change
        s = self.settings
        worst = float(residual.max())
        worst_score = float(torch.maximum(score_error, depth_change).max())
        if worst > s.warn_residual or worst_score > s.warn_score_error:
            warnings.warn(
                f"LiSSA on block {name!r} has not converged: relative residual {worst:.2g} "
                f"(warns above {s.warn_residual}), score error {float(score_error.max()):.2g} "
                f"and change from depth {depth // 2} {float(depth_change.max()):.2g} (warn "
                f"above {s.warn_score_error}) after depth {depth}, scale {scale:.3g}. "
                "Raise LiSSASettings(depth=..., repeats=...) or damping, or use hessian='cg' "
                "or 'pcg'.",
                stacklevel=2,
            )
        return x


def _cycle(op: BlockHessian):
    """The training batches, over and over (re-reading the loader, nothing cached)."""
    while True:
        yield from op.batches()
