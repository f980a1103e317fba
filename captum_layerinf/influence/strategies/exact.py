"""`hessian="exact"`: a dense, damped Hessian block per layer, factorised once."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .._gradients import flatten
from .._linearity import curving_ops
from .base import Block, CurvatureStrategy, FitContext, register_strategy

JACOBIAN_BYTES = 2**30
"""Largest per-batch logit Jacobian `[B, C, P]` formed at once for Gauss-Newton blocks."""

SCALABLE_HINT = (
    "use a scalable strategy (hessian='ekfac', 'cg' or 'lissa'), raise "
    "ExactSettings(max_block_bytes=...), or leave the layer out with layers=[...]"
)


@dataclass(frozen=True)
class ExactSettings:
    """Settings of `hessian="exact"`.

    Attributes:
        max_block_bytes: Largest dense float64 block to build; larger blocks are refused.
        gauss_newton: "auto" builds the block as Jᵀ Λ J where the logits are piecewise
            linear in the block (exact there, and cheap): read from the autograd graph
            (`probe_residuals`), else measured by a probe; "never" always uses
            Hessian-vector products; "always" forces Gauss-Newton (an approximation where
            the model is curved in the block).
        residual_tol: "auto" uses Gauss-Newton when the left-out term's relative size on a
            random direction is at most this.
        hvp_chunk_size: Hessian-vector products evaluated at once when building a block
            from true Hessian products; fewer where their activations would take more
            than 1 GiB (`HVP_CHUNK_BYTES`), and a batch too large for one product within
            it is taken a sub-batch of examples at a time.
        probe_seed: Seed of the probe's random direction.
        probe_examples: Examples of the first training batch the probe runs on (the
            left-out term vanishes on every example or on almost none).
    """

    max_block_bytes: int = 2 * 1024**3
    gauss_newton: str = "auto"
    residual_tol: float = 1e-10
    hvp_chunk_size: int = 256
    probe_seed: int = 0
    probe_examples: int = 4

    def __post_init__(self) -> None:
        if self.gauss_newton not in ("auto", "always", "never"):
            raise ValueError(
                f"gauss_newton must be 'auto', 'always' or 'never'; got {self.gauss_newton!r}."
            )


def probe_batch(ctx: FitContext, n: int) -> tuple[tuple[Tensor, ...], Tensor]:
    """The first `n` examples of the first training batch (the same on every rank)."""
    inputs, labels = ctx.first_batch()
    return tuple(x[:n] for x in inputs), labels[:n]


def probe_residuals(
    ctx: FitContext,
    blocks: list[Block],
    settings: ExactSettings,
    look_again: Callable[[Block], bool] | None = None,
    measure: Callable[[Block], bool] | None = None,
    ops: list[str | None] | None = None,
) -> list[float]:
    """The curvature Gauss-Newton leaves out of each block, relative, on the first batch.

    A block the autograd graph shows flat (`block_curving_ops`, or `ops` where given: no
    operation between it and the logits is curved in it) gets 0 without a probe; that
    test costs one forward pass of one example (0.1 s for densenet121 at 32x32, whose 242
    blocks the probe took 40 s to find flat). A curved block is probed where `measure`
    allows (default: all), else gets `inf` (curved, not measured).

    The probe runs on the first example, then again on `settings.probe_examples` examples
    for the blocks that look flat there (their residual at most `residual_tol`) and pass
    `look_again` (default: all): a nonzero left-out term on one example shows the block is
    curved, while a flat one could be an example whose loss gradient vanishes. Where every
    small block is curved, one example is a quarter of the cost (efficientnet_b0 at
    224x224, 73 blocks: 78 CPU s, against 297 s on four examples).
    """
    if ops is None:
        ops = block_curving_ops(ctx, blocks)
    out = [0.0 if op is None else math.inf for op in ops]
    todo = [
        i for i, op in enumerate(ops) if op is not None and (measure is None or measure(blocks[i]))
    ]
    if not todo:
        return out
    names = [list(b.param_names) for b in blocks]
    seed = settings.probe_seed
    found = ctx.engine.curvature_residuals(*probe_batch(ctx, 1), [names[i] for i in todo], seed)
    for i, r in zip(todo, found, strict=True):
        out[i] = r
    again = [
        i
        for i in todo
        if not out[i] > settings.residual_tol and (look_again is None or look_again(blocks[i]))
    ]
    if again and settings.probe_examples > 1:
        batch = probe_batch(ctx, settings.probe_examples)
        found = ctx.engine.curvature_residuals(*batch, [names[i] for i in again], seed)
        for i, r in zip(again, found, strict=True):
            out[i] = r
    return out


def block_curving_ops(ctx: FitContext, blocks: list[Block]) -> list[str | None]:
    """Per block, the first operation curving the logits in it (`curving_ops`), or None.

    Read from the graph of the first training example; a model the graph cannot be read
    from counts as curved everywhere ("unknown"), so that the probe measures every block.
    """
    inputs = probe_batch(ctx, 1)[0]
    try:
        return curving_ops(
            ctx.model, ctx.engine.params, inputs, [list(b.param_names) for b in blocks]
        )
    except Exception:  # noqa: BLE001 (any failure only costs the probe that follows)
        return ["unknown"] * len(blocks)


@register_strategy
class ExactStrategy(CurvatureStrategy):
    """Dense Hessian blocks of the mean training loss, damped and factorised.

    A block is built from per-example logit Jacobians (Gauss-Newton, `Jᵀ Λ J` with Λ the
    Hessian of the loss in the logits) where that is exact, and from true Hessian-vector
    products otherwise. `self.method[b]` says which one each block used.
    """

    name = "exact"
    solves_exactly = True
    Settings: ClassVar[type] = ExactSettings
    shardable = True
    known_residuals: dict[tuple[str, ...], float] | None = None
    """Residuals already probed (by "auto"), per block's parameter names: not probed again."""

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Accumulates each block over the training set, then factorises it.

        A Gauss-Newton block with fewer rows `U = Λ^{1/2} J` (n x outputs) than half its
        parameters keeps them instead of the dense block, and is solved exactly by the
        Woodbury identity (single process, damping > 0; see `_woodbury`).
        """
        self.blocks = blocks
        for block in blocks:
            need = block.numel**2 * 8
            if need > self.settings.max_block_bytes:
                raise MemoryError(
                    f"the dense Hessian block of {block.name or '<model>'!r} has "
                    f"{block.numel:,} parameters and would need {need / 1024**3:,.1f} GiB "
                    f"(limit {self.settings.max_block_bytes / 1024**3:,.1f} GiB): {SCALABLE_HINT}."
                )
        self.method: list[str] = []
        self.residual: list[float] = []
        self._choose_methods(ctx, blocks)
        gn = [i for i, m in enumerate(self.method) if m == "gauss-newton"]
        n_out = _outputs_per_example(ctx) if gn else 0
        low = [i for i in gn if _low_rank(ctx, self.damping, n_out, blocks[i].numel)]
        acc = _Accumulated(
            dense={
                i: torch.zeros(b.numel, b.numel, dtype=torch.float64, device=ctx.device)
                for i, b in enumerate(blocks)
                if i not in low
            },
            rows={i: [] for i in low},
            signs={i: [] for i in low},
        )
        seen = 0
        itemsize = next(ctx.model.parameters()).element_size()
        for inputs, labels in ctx.batches("exact Hessian blocks"):
            seen += len(labels)
            for group in _groups(gn, blocks, len(labels) * n_out * itemsize):
                self._add_gauss_newton(ctx, blocks, group, acc, inputs, labels)
            for i, m in enumerate(self.method):
                if m == "hessian":
                    names = list(blocks[i].param_names)
                    h = ctx.engine.hessian(inputs, labels, names, self.settings.hvp_chunk_size)
                    acc.dense[i] += h.double()
        ctx.check_count(seen)
        self._factors = [
            self._woodbury(torch.cat(acc.rows[i]), torch.cat(acc.signs[i]), ctx.n_train)
            if i in acc.rows
            else self._factorise(ctx.all_reduce(acc.dense[i]) / ctx.n_train, b)
            for i, b in enumerate(blocks)
        ]

    @staticmethod
    def _add_gauss_newton(ctx, blocks, group, acc: _Accumulated, inputs, labels) -> None:
        """Adds one batch's `Jᵀ Λ J` (or its rows `Λ^{1/2} J`) to the blocks of `group`."""
        names = [n for i in group for n in blocks[i].param_names]
        lc = ctx.engine.logit_curvature(inputs, labels, names)
        root = _signed_root(lc.loss_hessian) if any(i in acc.rows for i in group) else None
        for i in group:
            jac = flatten([lc.jacobians[n] for n in blocks[i].param_names], 2)
            if root is not None and i in acc.rows:
                acc.rows[i].append(torch.bmm(root[0], jac.double()).flatten(0, 1))
                acc.signs[i].append(root[1].flatten())
                continue
            lam_jac = torch.bmm(lc.loss_hessian, jac)
            # Per-batch product in the model dtype, accumulated in float64.
            acc.dense[i] += (jac.flatten(0, 1).T @ lam_jac.flatten(0, 1)).double()

    def _woodbury(self, u: Tensor, sign: Tensor, n: int):
        """The factorised Woodbury form of `H = Uᵀ S U / n` (`S = diag(sign)`, entries ±1).

        `(H + λ I)⁻¹ v = (v - Uᵀ (n λ S + U Uᵀ)⁻¹ U v) / λ`, exactly: `("woodbury", U, L)`
        with `L` the Cholesky factor of the inner matrix, or `("woodbury-lu", U, LU,
        pivots)` where a loss that is not convex in the outputs makes it indefinite.
        """
        inner = u @ u.T
        inner.diagonal().add_(n * self.damping * sign)
        if bool((sign > 0).all()):
            return ("woodbury", u, torch.linalg.cholesky(inner))
        lu, pivots = torch.linalg.lu_factor(inner)
        return ("woodbury-lu", u, lu, pivots)

    def _choose_methods(self, ctx: FitContext, blocks: list[Block]) -> None:
        """`self.method` and `self.residual` per block (probed on the first training batch)."""
        mode = self.settings.gauss_newton
        if mode == "auto":  # The same batch on every rank.
            known = self.known_residuals or {}
            todo = [b for b in blocks if b.param_names not in known]
            found = probe_residuals(ctx, todo, self.settings) if todo else []
            known = {**known, **{b.param_names: r for b, r in zip(todo, found, strict=True)}}
            residuals = [known[b.param_names] for b in blocks]
        for i, _ in enumerate(blocks):
            if mode == "auto":
                r = residuals[i]
                self.residual.append(r)
                use_gn = r <= self.settings.residual_tol
            else:
                self.residual.append(float("nan"))
                use_gn = mode == "always"
            self.method.append("gauss-newton" if use_gn else "hessian")

    def _factorise(self, hessian: Tensor, block: Block):
        eye = torch.eye(len(hessian), dtype=hessian.dtype, device=hessian.device)
        damped = hessian + self.damping * eye
        chol, info = torch.linalg.cholesky_ex(damped)
        if info != 0 or self.damping == 0:
            self._check_singular(damped, block)
        if info == 0:
            return ("cholesky", chol)
        # Indefinite (a curved, non-convex block): LU still solves it exactly.
        lu, pivots, info = torch.linalg.lu_factor_ex(damped)
        if info != 0:
            raise ValueError(
                f"the damped Hessian block of {block.name or '<model>'!r} is singular; "
                f"increase damping (now {self.damping})."
            )
        return ("lu", lu, pivots)

    def _check_singular(self, damped: Tensor, block: Block) -> None:
        """Raises when the damped block is numerically singular (its solve would be noise)."""
        if not torch.isfinite(damped).all():
            raise ValueError(
                f"the Hessian block of {block.name or '<model>'!r} has NaN or infinite "
                "entries; check the model's weights and the data for overflow."
            )
        values = torch.linalg.eigvalsh(damped).abs()
        tol = len(values) * torch.finfo(values.dtype).eps * float(values.max())
        if float(values.min()) <= tol:
            rank = int((values > tol).sum())
            raise ValueError(
                f"the damped Hessian block of {block.name or '<model>'!r} is singular "
                f"(numerical rank {rank} of {len(values)}) with damping={self.damping}; pass "
                "damping > 0 (e.g. the weight decay used in training, or 1e-3)."
            )

    def export(self) -> dict:
        """The factorised blocks and the method of each (see `CurvatureStrategy.export`)."""
        return {
            "method": list(self.method),
            "residual": list(self.residual),
            "factors": [list(f) for f in self._factors],
        }

    def restore(self, ctx: FitContext, blocks: list[Block], state: dict) -> None:
        """Takes the factorised blocks of `export` instead of fitting."""
        if len(state["factors"]) != len(blocks):
            raise ValueError(
                f"the saved state has {len(state['factors'])} blocks, not {len(blocks)}."
            )
        self.blocks = blocks
        self.method, self.residual = list(state["method"]), list(state["residual"])
        self._factors = [(f[0], *(t.to(ctx.device) for t in f[1:])) for f in state["factors"]]

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """Solves `(H_b + damping I) x = v` for every row v of `vectors`, in float64."""
        kind, *factor = self._factors[block]
        rhs = vectors.T.to(torch.float64)
        if kind.startswith("woodbury"):
            u, *inner = factor
            z = (
                torch.cholesky_solve(u @ rhs, inner[0])
                if kind == "woodbury"
                else torch.linalg.lu_solve(inner[0], inner[1], u @ rhs)
            )
            return ((rhs - u.T @ z) / self.damping).T
        if kind == "cholesky":
            return torch.cholesky_solve(rhs, factor[0]).T
        return torch.linalg.lu_solve(factor[0], factor[1], rhs).T


@dataclass
class _Accumulated:
    """What a fit sums per block: a dense matrix, or Gauss-Newton rows and their signs."""

    dense: dict[int, Tensor]
    rows: dict[int, list[Tensor]]
    signs: dict[int, list[Tensor]]


def _outputs_per_example(ctx: FitContext) -> int:
    """The number of model outputs per example, from one training example."""
    inputs, labels = ctx.first_batch()
    one = tuple(x[:1] for x in inputs)
    return ctx.engine.outputs(one, labels[:1], "train_dataset")[0].numel()


def _low_rank(ctx: FitContext, damping: float, n_out: int, numel: int) -> bool:
    """Whether a Gauss-Newton block is kept as its rows (Woodbury) rather than dense.

    Its rank is at most `n_train x outputs`: with at most half as many rows as parameters
    the rows are smaller than the block and their Gram matrix cheaper to factorise.
    Under torch.distributed the blocks are summed over processes, so they stay dense.
    """
    return ctx.shard is None and damping > 0 and 2 * ctx.n_train * n_out <= numel


def _signed_root(lam: Tensor) -> tuple[Tensor, Tensor]:
    """`R [B, C, C]` and signs `s [B, C]` (float64) with `lam = Rᵀ diag(s) R` per example."""
    values, vectors = torch.linalg.eigh(lam.double())
    # Rounding leaves a convex loss's zero eigenvalues (softmax: the direction 1) at ±1e-17;
    # only clearly negative ones count as negative.
    tol = values.shape[-1] * torch.finfo(values.dtype).eps * values.abs().amax(-1, keepdim=True)
    negative = values < -tol
    root = values.abs().sqrt()[:, :, None] * vectors.transpose(1, 2)
    return root, torch.where(negative, -1.0, 1.0).to(root)


def _groups(indices: list[int], blocks: list[Block], bytes_per_param: int) -> list[list[int]]:
    """`indices` in consecutive groups whose Jacobians `[B, C, P]` fit `JACOBIAN_BYTES`.

    A block larger than that is a group alone.
    """
    groups: list[list[int]] = []
    size = 0
    for i in indices:
        need = blocks[i].numel * bytes_per_param
        if not groups or size + need > JACOBIAN_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += need
    return groups
