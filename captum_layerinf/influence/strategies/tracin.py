"""`hessian="tracin"`: layer-wise TracIn (Pruthi et al. 2020) over saved checkpoints.

    s_l(j, k) = Σ_c η_c ∇_{θ_l} L(ẑ_k; θ_c) · ∇_{θ_l} L(z_j; θ_c)

No Hessian and no damping: the training trajectory replaces the converged-optimum
assumption of influence functions. Per layer it equals Captum's `TracInCP` with
`layers=[l]` on the same checkpoints and learning rates (tests/influence/test_tracin.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .._gradients import GradientEngine
from .._scoring import GRAD_CHUNK_BYTES, BlockGradients
from .base import Block, CurvatureStrategy, FitContext, TrainPasses, register_strategy


def load_checkpoint(model: nn.Module, checkpoint: Any) -> None:
    """Loads a state dict, or a file holding one, into `model` (`weights_only=True`).

    A dict with a "model_state_dict" or "state_dict" entry (a training checkpoint) is
    unwrapped first.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        device = next(model.parameters()).device
        checkpoint = torch.load(checkpoint, map_location=device, weights_only=True)
    for key in ("model_state_dict", "state_dict"):
        if isinstance(checkpoint, dict) and key in checkpoint:
            checkpoint = checkpoint[key]
    model.load_state_dict(checkpoint)


@contextlib.contextmanager
def restored_weights(model: nn.Module) -> Iterator[None]:
    """Restores the model's state dict on exit, also when an exception is raised."""
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        yield
    finally:
        model.load_state_dict(original)


def _checkpoint_files(path: str | os.PathLike) -> list[str]:
    """The checkpoint files of a directory in natural order, or a single file."""
    folder = Path(path)
    if folder.is_file():
        return [os.fspath(folder)]
    if not folder.is_dir():
        raise FileNotFoundError(
            f"checkpoints={os.fspath(path)!r} is neither a directory of checkpoint files nor "
            "a file; pass a directory, or a list of paths or state dicts."
        )
    files = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")]
    if not files:
        raise ValueError(f"the checkpoint directory {os.fspath(path)!r} holds no files.")

    def natural(f: Path) -> list:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", f.name)]

    return [os.fspath(f) for f in sorted(files, key=natural)]


@dataclass(frozen=True)
class TracInSettings:
    """Settings of `hessian="tracin"`.

    Attributes:
        checkpoints: Checkpoint paths or state dicts θ_1..θ_C along training, or (as in
            Captum) a directory: its files, in natural sort order ("epoch2" before
            "epoch10"), hidden files left out.
        learning_rates: η_c per checkpoint; default 1.0 each.
        checkpoints_load_func: `f(model, checkpoint)` that loads one checkpoint.
        projection_dim: If set, per-layer gradients of layers with more parameters are
            multiplied by a seeded Gaussian matrix `[P, d] / sqrt(d)` (Johnson-Lindenstrauss):
            inner products are kept up to about `sqrt(2 / d) · ‖a‖ ‖b‖` (one standard
            deviation) at `d / P` of the memory and time.
        seed: Seed of the projection matrices.
        chunk_bytes: Largest per-example gradient chunk formed at once (Linear and Conv2d
            gradients are formed from their layer inputs and output gradients per chunk).
    """

    checkpoints: Sequence[Any] | str | os.PathLike = ()
    learning_rates: Sequence[float] | None = None
    checkpoints_load_func: Callable[[nn.Module, Any], Any] = load_checkpoint
    projection_dim: int | None = None
    seed: int = 0
    chunk_bytes: int = GRAD_CHUNK_BYTES

    def __post_init__(self) -> None:
        checkpoints = self.checkpoints
        if isinstance(checkpoints, (str, os.PathLike)):
            checkpoints = _checkpoint_files(checkpoints)
        object.__setattr__(self, "checkpoints", tuple(checkpoints))
        if not self.checkpoints:
            raise ValueError(
                "hessian='tracin' needs checkpoints=[...]: paths or state dicts saved along "
                "training, e.g. one per epoch."
            )
        if self.learning_rates is not None:
            object.__setattr__(self, "learning_rates", tuple(float(x) for x in self.learning_rates))
            if len(self.learning_rates) != len(checkpoints):
                raise ValueError(
                    f"got {len(self.learning_rates)} learning_rates for "
                    f"{len(checkpoints)} checkpoints; give one per checkpoint."
                )
        if self.projection_dim is not None and self.projection_dim < 1:
            raise ValueError(f"projection_dim must be a positive int; got {self.projection_dim}.")


@register_strategy
class TracInStrategy(CurvatureStrategy):
    """Sums learning-rate-weighted gradient dot products over checkpoints, per block."""

    name = "tracin"
    Settings = TracInSettings

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Draws the projection matrices (nothing else is fitted)."""
        self.blocks = blocks
        d = self.settings.projection_dim
        self._projections: list[Tensor | None] = []
        dtype = next(ctx.model.parameters()).dtype
        for i, block in enumerate(blocks):
            if d is None or block.numel <= d:
                self._projections.append(None)
                continue
            gen = torch.Generator().manual_seed(self.settings.seed + i)
            proj = torch.randn(block.numel, d, generator=gen, dtype=dtype) / math.sqrt(d)
            self._projections.append(proj.to(ctx.device))

    def _checkpoints(self, ctx: FitContext) -> Iterator[tuple[float, GradientEngine]]:
        """Yields (η_c, engine at θ_c); use inside `restored_weights(ctx.model)`."""
        rates = self.settings.learning_rates or (1.0,) * len(self.settings.checkpoints)
        for checkpoint, rate in zip(self.settings.checkpoints, rates, strict=True):
            self.settings.checkpoints_load_func(ctx.model, checkpoint)
            yield rate, GradientEngine(ctx.model, ctx.loss)

    def _projected(
        self, source: BlockGradients, x: tuple[Tensor, ...], y: Tensor
    ) -> Iterator[tuple[int, slice, Tensor]]:
        """`(block, rows, grads [len(rows), d])` in float64, projected where set, in chunks."""
        for i, rows, g in source.chunks(x, y):
            p = self._projections[i]
            yield i, rows, (g if p is None else g @ p).double()

    def _source(self, ctx: FitContext, engine: GradientEngine) -> BlockGradients:
        return BlockGradients(ctx.model, ctx.loss, engine, self.blocks, self.settings.chunk_bytes)

    def scores(
        self, ctx: FitContext, test: DataLoader, train: TrainPasses, query_rank: int | None = None
    ) -> Iterator[Tensor]:
        """TracIn scores `Tensor [n_blocks, n_test, B]` (float64) per training batch.

        One pass over the training batches per checkpoint; `query_rank` does not apply.
        """
        total: list[Tensor] = []
        with restored_weights(ctx.model):
            for c, (rate, engine) in enumerate(self._checkpoints(ctx)):
                source = self._source(ctx, engine)
                queries = self._queries(ctx, source, test)
                passed = self.scoring_batches(ctx, train(f"TracIn checkpoint {c + 1}"))
                scores = [rate * self._batch_scores(source, queries, x, y) for x, y, _ in passed]
                total = [a + b for a, b in zip(total, scores, strict=True)] if c else scores
        yield from total

    def _queries(
        self, ctx: FitContext, source: BlockGradients, test_loader: DataLoader
    ) -> list[Tensor]:
        """Per block, the (projected) test gradients `[n_test, d]` at the loaded checkpoint."""
        test: list[list[Tensor]] = [[] for _ in self.blocks]
        for x, y in ctx.checked(test_loader, "inputs", "test"):
            for i, _, g in self._projected(source, x, y):
                test[i].append(g)
        return [torch.cat(t) for t in test]

    def _batch_scores(
        self, source: BlockGradients, queries: list[Tensor], x: tuple[Tensor, ...], y: Tensor
    ) -> Tensor:
        """Gradient dot products `[n_blocks, n_test, B]` of one training batch."""
        out = torch.zeros(
            len(self.blocks), len(queries[0]), len(y), dtype=torch.float64, device=y.device
        )
        for i, rows, g in self._projected(source, x, y):
            out[i, :, rows] = queries[i] @ g.T
        return out

    def self_scores(self, ctx: FitContext, loader: DataLoader) -> Tensor:
        """Σ_c η_c ‖∇_{θ_l} L(z; θ_c)‖², `Tensor [n_blocks, n]`."""
        total = None
        with restored_weights(ctx.model):
            for rate, engine in self._checkpoints(ctx):
                source = self._source(ctx, engine)
                parts = []
                for x, y in ctx.checked(loader, "inputs", "TracIn self-influence"):
                    out = torch.zeros(
                        len(self.blocks), len(y), dtype=torch.float64, device=y.device
                    )
                    for i, rows, g in self._projected(source, x, y):
                        out[i, rows] = (g**2).sum(-1)
                    parts.append(out)
                scores = rate * torch.cat(parts, dim=1)
                total = scores if total is None else total + scores
        assert total is not None  # the settings refuse an empty list of checkpoints
        return total
