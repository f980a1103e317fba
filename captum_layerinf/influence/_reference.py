"""The default reference of `LayerInfluence.check`: exact, Woodbury Gauss-Newton or CG per block.

Meant for the curvature of a small training subset (m examples), where the damped
Gauss-Newton block of a Linear/Conv2d layer, `G = (1/m) Uᵀ U` with `U [m k, P]`, is inverted
exactly by the Woodbury identity:

    (G + λ I)⁻¹ v = (v - Uᵀ (m λ I + U Uᵀ)⁻¹ U v) / λ

Row `(i, c)` of U is `√μ_ic (J_iᵀ e_ic)`: the per-example gradient of the logits along the
c-th eigen-direction of the loss Hessian in the logits, `Λ_i = Σ_c μ_ic e_ic e_icᵀ`, from
one reverse pass per direction (no forward-mode AD).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import hessian, vmap

from .._utils.tensors import tensor_sum
from ._taps import Taps, structured_layer
from .strategies import Block, CurvatureStrategy, FitContext, make_strategy

REFERENCE_DENSE_BYTES = 128 * 2**20
"""Blocks whose dense float64 matrix fits this are built exactly."""
REFERENCE_ROWS_BYTES = 512 * 2**20
"""Largest Woodbury factor `U [m k, P]` kept in memory; larger blocks use CG."""


@dataclass(frozen=True)
class _NoSettings:
    """The reference has no settings."""


def loss_directions(loss, logits: Tensor, labels: Tensor) -> list[Tensor]:
    """Cotangents `[B, C]` whose outer products sum to each example's loss Hessian in the logits."""
    with torch.no_grad():
        lam = vmap(hessian(loss.single))(logits.detach(), labels).double()
        values, vectors = torch.linalg.eigh((lam + lam.transpose(1, 2)) / 2)
        values = values.clamp_min(0)
        keep = values > values.amax(1, keepdim=True) * 1e-12
        roots = vectors * (values * keep).sqrt()[:, None, :]
        cols = [j for j in range(values.shape[1]) if keep[:, j].any()]
        return [roots[:, :, j].to(logits.dtype) for j in cols]


class GaussNewtonWoodbury(CurvatureStrategy):
    """Exact inverse of the damped Gauss-Newton block of Linear/Conv2d layers (Woodbury)."""

    name = "gauss-newton"
    Settings = _NoSettings

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """One forward and k reverse passes per batch; keeps `U` and `(m λ I + U Uᵀ)`'s factor."""
        self.blocks = blocks
        found = [structured_layer(ctx.model, b.layers, b.param_names) for b in blocks]
        layers = [s for s in found if s is not None]
        assert len(layers) == len(found)  # chosen for Linear/Conv2d blocks only
        taps = Taps(ctx.model, layers)
        rows: list[list[Tensor]] = [[] for _ in blocks]
        seen = 0
        for inputs, labels in ctx.batches("Gauss-Newton reference"):
            seen += len(labels)
            logits = taps.forward(inputs)
            acts = taps.activations()
            dirs = loss_directions(ctx.loss, logits, labels)
            for j, d in enumerate(dirs):
                grads = taps.output_grads(logits, d, retain=j < len(dirs) - 1)
                for b, (a, g) in enumerate(zip(acts, grads, strict=True)):
                    per_example = torch.einsum("bto,bti->boi", g, a)
                    rows[b].append(layers[b].to_flat(per_example).detach())
        ctx.check_count(seen)
        self.u = [torch.cat(r) for r in rows]
        self.factors = []
        for u in self.u:
            gram = _gram(u)
            eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
            self.factors.append(torch.linalg.cholesky(gram + ctx.n_train * self.damping * eye))

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """`(G_b + λ I)^{-1} v` for each row of `vectors [n, P]`, float64."""
        u, chol = self.u[block], self.factors[block]
        v = vectors.double()
        uv = _matmul(u, v.T)  # [r, n]
        z = torch.cholesky_solve(uv, chol)
        return (v - _matmul_t(u, z).T) / self.damping


def _gram(u: Tensor, cols: int = 2**20) -> Tensor:
    """`U Uᵀ` in float64, a slice of columns at a time."""
    return tensor_sum(
        u[:, lo : lo + cols].double() @ u[:, lo : lo + cols].double().T
        for lo in range(0, u.shape[1], cols)
    )


def _matmul(u: Tensor, m: Tensor, cols: int = 2**20) -> Tensor:
    """`U M` in float64 for `M [P, n]`."""
    return tensor_sum(
        u[:, lo : lo + cols].double() @ m[lo : lo + cols] for lo in range(0, u.shape[1], cols)
    )


def _matmul_t(u: Tensor, z: Tensor, cols: int = 2**20) -> Tensor:
    """`Uᵀ Z` in float64 for `Z [r, n]`."""
    return torch.cat([u[:, lo : lo + cols].double().T @ z for lo in range(0, u.shape[1], cols)])


class ReferenceStrategy(CurvatureStrategy):
    """The default reference of `check`, chosen per block (`self.kinds[b]` says which).

    The checked strategy's own fit where it is exact on the same data; else Woodbury
    Gauss-Newton (Linear/Conv2d whose factor fits); else exact if the dense block is
    small; else CG.
    """

    name = "reference"
    Settings = _NoSettings

    def __init__(self, damping: float, reuse: CurvatureStrategy | None = None) -> None:
        super().__init__(_NoSettings(), damping)
        self.reuse = reuse

    def _exact_in_reuse(self, block: int) -> bool:
        """Whether `reuse` (fitted on the same data) solves this block with "exact"."""
        r = self.reuse
        if r is None or r.blocks != self.blocks:
            return False
        if r.name == "exact":
            return True
        route = getattr(r, "_route", None)
        slices = getattr(r, "_slices", None)
        if r.name != "auto" or slices is not None or route is None:
            return False
        return route[block][1] == "exact"

    def _n_directions(self, ctx: FitContext) -> int:
        inputs, labels = ctx.first_batch()
        logits = ctx.engine.outputs(inputs, labels, "train_dataset")
        return len(loss_directions(ctx.loss, logits, labels))

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Chooses and fits the reference of every block."""
        self.blocks = blocks
        itemsize = next(ctx.model.parameters()).element_size()
        rows = None
        self.kinds = []
        for i, b in enumerate(blocks):
            if 8 * b.numel**2 <= REFERENCE_DENSE_BYTES and self._exact_in_reuse(i):
                # Exact on the same data is deterministic: the checked fit is reused.
                self.kinds.append("reused")
                continue
            if structured_layer(ctx.model, b.layers, b.param_names) is not None:
                rows = rows if rows is not None else ctx.n_train * self._n_directions(ctx)
                if rows * b.numel * itemsize <= REFERENCE_ROWS_BYTES:
                    self.kinds.append("gauss-newton")
                    continue
            self.kinds.append("exact" if 8 * b.numel**2 <= REFERENCE_DENSE_BYTES else "cg")
        self.parts: dict[str, tuple[CurvatureStrategy, list[int]]] = {}
        self.route = []
        for kind in dict.fromkeys(self.kinds):
            own = [i for i, k in enumerate(self.kinds) if k == kind]
            if kind == "reused":
                assert self.reuse is not None  # "reused" is chosen only with a strategy to reuse
                self.parts[kind] = (self.reuse, own)
                continue
            part = (
                GaussNewtonWoodbury(_NoSettings(), self.damping)
                if kind == "gauss-newton"
                else make_strategy(kind, self.damping)
            )
            part.fit(ctx, [blocks[i] for i in own])
            self.parts[kind] = (part, own)
        self.route = [(k, self.parts[k][1].index(i)) for i, k in enumerate(self.kinds)]
        for i, (k, _) in enumerate(self.route):
            if k == "reused":
                self.route[i] = (k, i)  # The reused strategy indexes all blocks.

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """The block's reference `(H_b + λ I)^{-1} v`, float64."""
        kind, local = self.route[block]
        return self.parts[kind][0].inverse_hvp(local, vectors)
