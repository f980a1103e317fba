"""`hessian="gauss-newton"`: the dense damped Gauss-Newton block per layer.

The Hessian of the training loss in a block's parameters is

    H = (1/n) Σ_i J_iᵀ Λ_i J_i  +  (1/n) Σ_i Σ_c (∂L_i/∂f_ic) ∇²f_ic,

with `J_i` the Jacobian of example i's outputs in the block and `Λ_i` the Hessian of its
loss in the outputs. This strategy keeps the first term, the Gauss-Newton matrix `G`
(positive semi-definite, so `G + λI` is positive definite for any damping λ > 0), and
inverts its damped block exactly. Where the outputs are piecewise linear in the block
(ReLU, max-pool, eval-mode batch-norm after it) the second term vanishes and `G = H`:
the scores equal `hessian="exact"`. Elsewhere (tanh, SiLU, hardswish, a squeeze-excitation
product) `G` is an approximation of `H`, the one EK-FAC and kronfluence approximate in turn,
and the one whose global score predicted leave-one-out retraining best on the benchmarks'
CNNs (`docs/fidelity.md`). It costs one reverse pass per output and example, however many
parameters the block has, where `exact` on a curved block needs one Hessian-vector product
per parameter and batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Block, FitContext, register_strategy
from .exact import ExactStrategy


@dataclass(frozen=True)
class GaussNewtonSettings:
    """Settings of `hessian="gauss-newton"`.

    Attributes:
        max_block_bytes: Largest dense float64 block to build; larger blocks are refused.
    """

    max_block_bytes: int = 2 * 1024**3


@register_strategy
class GaussNewtonStrategy(ExactStrategy):
    """Dense damped Gauss-Newton blocks `(1/n) Σ_i J_iᵀ Λ_i J_i + λ I`, factorised once."""

    name = "gauss-newton"
    Settings = GaussNewtonSettings
    shardable = True

    def _choose_methods(self, ctx: FitContext, blocks: list[Block]) -> None:
        self.method = ["gauss-newton"] * len(blocks)
        self.residual = [float("nan")] * len(blocks)
