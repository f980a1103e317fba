"""`hessian="identity"`: plain gradient dot products (no curvature, damping unused)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .base import Block, CurvatureStrategy, FitContext, register_strategy


@dataclass(frozen=True)
class IdentitySettings:
    """`hessian="identity"` has no settings: scores are `∇L(ẑ)ᵀ ∇L(z)` per layer."""


@register_strategy
class IdentityStrategy(CurvatureStrategy):
    """Gradient similarity: the curvature is taken as the identity and damping is ignored."""

    name = "identity"
    Settings = IdentitySettings
    shardable = True

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Nothing to fit."""
        self.blocks = blocks

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """Returns the vectors unchanged (in float64)."""
        return vectors.double()
