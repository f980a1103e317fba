"""`hessian="captum"`: every block delegated to Captum's `NaiveInfluenceFunction`.

This is the cross-check. Captum's Hessian is that of the SUMMED training loss, and it
keeps only the top `projection_dim` eigenpairs above `hessian_inverse_tol`. With
`hessian_reg = damping * n`, `projection_dim = P` (all eigenpairs) and its scores
multiplied by `n`, it computes our convention exactly (see `LayerInfluence`) whenever the
damped block is positive definite. Negative eigenvalues of a curved, non-convex block
are dropped by Captum, while `"exact"` keeps them: the fit warns where Captum dropped any
(`CaptumStrategy.kept`: the eigenpairs kept per block).

Captum decomposes the damped Hessian with the general solver `torch.linalg.eig`. Where a
block's Hessian has rank below its size (fewer examples than parameters), the damping is a
repeated eigenvalue on its null space, and `eig`'s eigenvectors there need not be
orthogonal. Scores of training examples whose gradients lie in the block's range (those the
Hessian was built from) stay exact; others do not (a Pearson of 0.92 with exact was measured
for a 650-parameter Linear layer whose Hessian came from 16 other examples). So `check`
fits this strategy on the whole training set (`scores_outside_curvature = False`).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from captum.influence import NaiveInfluenceFunction
from torch import Tensor
from torch.utils.data import DataLoader

from .._gradients import twice_differentiable
from .base import Block, CurvatureStrategy, FitContext, TrainPasses, register_strategy


@dataclass(frozen=True)
class CaptumSettings:
    """Settings of `hessian="captum"`.

    Attributes:
        hessian_inverse_tol: Captum's eigenvalue cut-off; eigenvalues of the damped,
            summed-loss Hessian at or below it are dropped.
    """

    hessian_inverse_tol: float = 1e-12


@register_strategy
class CaptumStrategy(CurvatureStrategy):
    """One `captum.influence.NaiveInfluenceFunction` per block, rescaled to our convention."""

    name = "captum"
    Settings = CaptumSettings
    scores_outside_curvature = False

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Builds one Captum instance per block (Captum computes its Hessian here)."""
        self.blocks = blocks
        self.n_train = ctx.n_train
        # Captum loads its checkpoint from a file; it is our current state, saved here.
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "checkpoint.pt")
            torch.save(ctx.model.state_dict(), path)
            # Captum reseeds the global RNG (torch.manual_seed(42)) while it builds.
            # Captum builds the Hessian by double backward, which some kernels lack.
            with torch.random.fork_rng(devices=[]), twice_differentiable():
                self._captum = [self._make(ctx, block, path) for block in blocks]
        self.kept = [int(c.R.shape[1]) for c in self._captum]
        dropped = [
            f"{b.name or '<model>'} ({b.numel - k} of {b.numel})"
            for b, k in zip(blocks, self.kept, strict=True)
            if k < b.numel
        ]
        if dropped:
            warnings.warn(
                "Captum dropped eigenvalues of the damped Hessian at or below "
                f"hessian_inverse_tol={self.settings.hessian_inverse_tol:g} in "
                f"{len(dropped)} block(s): {', '.join(dropped)}. These blocks are curved and "
                "not positive definite; Captum's scores there differ from hessian='exact', "
                "which keeps negative curvature. Raise damping to make them positive "
                "definite, or use hessian='exact' or 'cg'.",
                stacklevel=4,
            )

    def _make(self, ctx: FitContext, block: Block, path: str) -> NaiveInfluenceFunction:
        # A model that is itself the layer has the name "", which Captum cannot look up.
        layers = None if block.layers in (None, ("",)) else list(block.layers)
        return NaiveInfluenceFunction(
            ctx.model,
            ctx.train_loader,
            path,
            layers=layers,
            loss_fn=ctx.loss.fn,
            batch_size=ctx.train_loader.batch_size,
            projection_dim=block.numel,
            hessian_reg=self.damping * ctx.n_train,
            hessian_inverse_tol=self.settings.hessian_inverse_tol,
            show_progress=ctx.show_progress,
        )

    def scores(
        self, ctx: FitContext, test: DataLoader, train: TrainPasses, query_rank: int | None = None
    ) -> Iterator[Tensor]:
        """Captum's influence per block, times n, `Tensor [n_blocks, n_test, B]` per batch.

        As Captum's `influence` computes it: the dot products of Captum's embeddings
        (`compute_intermediate_quantities`) of test and training examples, here of the
        training batches of `train`. `query_rank` does not apply.
        """
        # Captum iterates DataLoaders of its own, which draw from the global RNG.
        with torch.random.fork_rng(devices=[]):
            tests = [
                [c.compute_intermediate_quantities((*x, y), test=True) for c in self._captum]
                for x, y in ctx.checked(test, "inputs", "Captum influence")
            ]
            for x, y, _ in self.scoring_batches(ctx, train("influence")):
                keys = [c.compute_intermediate_quantities((*x, y)) for c in self._captum]
                scores = torch.stack(
                    [torch.cat([t[b] @ k.T for t in tests]) for b, k in enumerate(keys)]
                )
                yield (scores * self.n_train).double()

    def self_scores(self, ctx: FitContext, loader: DataLoader) -> Tensor:
        """Captum's self-influence per block, times n, `Tensor [n_blocks, n]`."""
        with torch.random.fork_rng(devices=[]):
            return torch.stack([c.self_influence(loader) for c in self._captum]) * self.n_train
