"""`hessian="auto"` (the default): per layer, the most accurate strategy that fits.

Each block gets:

1. `exact` (a dense damped block, exact) when its float64 block fits
   `AutoSettings.max_block_bytes`, unless it is curved (the logits are not piecewise
   linear in it: a conv or batch-norm followed by SiLU or hardswish, a squeeze-excitation
   product) beyond the budget below;
2. a curved block that fits gets `gauss-newton`, its dense damped Gauss-Newton block
   `(1/n) Σ_i J_iᵀ Λ_i J_i` (the reverse passes, one per output and example, are shared
   by all such blocks), unless it is among the smallest curved blocks whose parameters
   add up to `AutoSettings.max_hvp_params` (default 0: none). `exact` builds a curved
   block from one Hessian-vector product per parameter and example, which costs more
   than everything else together: one 32-parameter block of efficientnet_b0 (32x32, 64
   images) took 95 CPU s of a default call instead of 35. The reason names the operation
   that curves the logits in the block, read from the autograd graph of one example
   (`_linearity.curving_ops`), or, for a block the budget could make exact, the share of
   curvature Gauss-Newton leaves out there, measured by a probe on the first batch;
3. otherwise, for one `nn.Linear` / `nn.Conv2d` (a layer with Kronecker structure), the
   `structured` strategy (EK-FAC by default: a few passes over the training set, memory
   `d_in² + d_out²`; EK-FAC approximates the same Gauss-Newton block);
4. otherwise the first registered name of `generic` (preconditioned CG where available,
   else CG: exact to its tolerance, one pass over the training set per iteration).

The global block (all parameters, paper Eq. 5) follows rules 1-2 when its dense block fits
the same budget. Otherwise it is approximated **block-diagonally**: the Hessian's
off-diagonal blocks between modules are dropped and every module's block is handled as
above, so the global score is the sum of per-module scores over all trainable modules (as
EK-FAC and kronfluence do). The choice and its reason are in `AutoStrategy.choices`.

Why this order: in the leave-one-out and linear-datamodeling benchmark
(`benchmarks/fidelity.py`, `docs/fidelity.md`), blocks that are exact to a tolerance
(`exact`, `cg`, `pcg`: identical scores there) predicted retraining best among the
curvature strategies: on logistic regression (500 images, damping = weight decay) LOO
Pearson 0.99 and LDS 0.93 against EK-FAC's 0.82 and 0.83; on the digits CNN (width 4, 200
images) a common-pool LOO Pearson of 0.69 and LDS 0.51 against EK-FAC's 0.41 and 0.39. On
the residual CNN with batch-norm, EK-FAC was level with exact on LDS (0.54 vs 0.51) but
behind on the pool (0.38 vs 0.44). Curvature-free scores (identity, TracIn) were last on
every model. So a block is exact wherever it fits, and approximated only where a dense
block cannot be held, or, curved, costs more Hessian-vector products than the budget
allows. Gauss-Newton there has support in the same benchmark: on the digits CNN at damping
1e-3 the global true-Hessian score failed (random-removal LOO Pearson -0.27, LDS 0.23)
where the global Gauss-Newton one reached 0.53 and 0.34, and on the residual CNN the
global Gauss-Newton score was the best estimator. Its blocks all fit `exact`, so the
benchmark never exercised the large-block choice between EK-FAC and `pcg`; its evidence on
fidelity favours a solver exact to its tolerance (`pcg`) over EK-FAC, at a cost of many
passes over the training set per batch of test vectors. Only the small mode (one seed) and
logistic regression at full size have run; on the CNNs the retraining noise was as large
as the effects, so these CNN figures are weak evidence.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from .._scoring import BlockGradients, preconditioned_scores, preconditioned_self_scores
from .._taps import structured_layer
from .base import (
    _REGISTRY,
    Block,
    CurvatureStrategy,
    FitContext,
    StrategySettings,
    TrainPasses,
    available_strategies,
    make_strategy,
    register_strategy,
)
from .ekfac import EKFACSettings
from .exact import ExactSettings, ExactStrategy, block_curving_ops, probe_residuals

BLOCK_DIAGONAL = "block-diagonal"
AUTO_EKFAC_DENSE_DIM = 2048
"""EK-FAC's `max_dense_dim` under "auto": wider Kronecker factors with fewer data rows than
dimensions are decomposed from their rows (see `AutoStrategy._make`)."""


@dataclass(frozen=True)
class AutoSettings:
    """Settings of `hessian="auto"`.

    Attributes:
        max_block_bytes: Largest dense float64 block (`8 P²` bytes) computed exactly; the
            default, 128 MiB, is P <= 4096 parameters.
        max_hvp_params: Budget of the curved blocks that fit (the logits are not
            piecewise linear in them, e.g. a conv or batch-norm followed by SiLU or
            hardswish, so `exact` needs one Hessian-vector product per parameter and
            example): they are exact, smallest first, while their parameters add up to at
            most this many; the others get their dense Gauss-Newton block
            (`hessian="gauss-newton"`, whose reverse passes, one per output and example,
            all such blocks share). The autograd graph of the first training example
            shows which blocks are curved (at fit time); those within the budget are
            measured by a probe. The default, 0, gives every curved block Gauss-Newton:
            on efficientnet_b0 (64 images, 32x32) a budget of 64 made one 32-parameter
            block exact, and the default call took 95 CPU s instead of 35 (at 224x224 both
            grow about 50x). Gauss-Newton is also what the fidelity benchmark favours
            where the two differ (the global score on the digits CNN, see above).
        structured: Strategy for larger Linear/Conv2d blocks (Kronecker structure).
        generic: Candidates, in order, for larger blocks without that structure; the
            first registered one is used.
        sub_settings: Optional Settings instances of the sub-strategies (e.g.
            `(EKFACSettings(fisher="sampled"),)`), used in place of their defaults.
    """

    max_block_bytes: int = 128 * 2**20
    max_hvp_params: int = 0
    structured: str = "ekfac"
    generic: tuple[str, ...] = ("pcg", "cg")
    sub_settings: tuple[StrategySettings, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.max_block_bytes, int) or self.max_block_bytes < 0:
            raise ValueError(f"max_block_bytes must be an int >= 0; got {self.max_block_bytes!r}.")
        if isinstance(self.generic, str) or not self.generic:
            raise ValueError(
                f"generic must be a non-empty tuple of strategy names; got {self.generic!r}."
            )


def block_bytes(block: Block) -> int:
    """Bytes of the dense float64 Hessian block, `8 P²`."""
    return 8 * block.numel**2


def split_by_module(block: Block, model) -> list[Block]:
    """An all-parameter block as one block per owning module (the block-diagonal view)."""
    params = dict(model.named_parameters())
    groups: dict[str, list[str]] = {}
    for name in block.param_names:
        groups.setdefault(name.rpartition(".")[0], []).append(name)
    return [
        Block(module, (module,), tuple(names), sum(params[n].numel() for n in names))
        for module, names in groups.items()
    ]


@register_strategy
class AutoStrategy(CurvatureStrategy):
    """Chooses `exact`, the structured or the generic scalable strategy per block.

    After `plan` (or `fit`), `self.choices[block name] = (strategy name, reason)`. Each
    sub-strategy is fitted once on the blocks it got; `inverse_hvp` dispatches.
    """

    name = "auto"
    Settings = AutoSettings
    shardable = True  # Its parts (exact, gauss-newton, ekfac, cg, pcg) are; checked in `fit`.

    def __init__(self, settings: AutoSettings, damping: float) -> None:
        super().__init__(settings, damping)
        for field, name in (("structured", settings.structured), ("generic", self._generic())):
            if name not in _REGISTRY:
                raise ValueError(
                    f"AutoSettings({field}={name!r}) is not a registered strategy; "
                    f"available: {available_strategies()}."
                )
            if not _REGISTRY[name].has_inverse_hvp():
                raise ValueError(
                    f"AutoSettings({field}={name!r}) computes whole scores itself; auto "
                    "needs an inverse-Hessian strategy (e.g. 'ekfac', 'cg')."
                )

    def _generic(self) -> str:
        names = available_strategies()
        for name in self.settings.generic:
            if name in names:
                return name
        raise ValueError(
            f"none of AutoSettings(generic={self.settings.generic}) is a registered strategy; "
            f"available: {names}."
        )

    def _choose(self, model, block: Block) -> tuple[str, str]:
        need = block_bytes(block)
        mib = need / 2**20
        budget = self.settings.max_block_bytes / 2**20
        if need <= self.settings.max_block_bytes:
            return "exact", f"dense block {block.numel:,} params ({mib:,.1f} MiB) <= {budget:g} MiB"
        if structured_layer(model, block.layers, block.param_names) is not None:
            assert block.layers is not None  # a structured block is one named layer
            kind = type(model.get_submodule(block.layers[0])).__name__
            return (
                self.settings.structured,
                f"{kind} with {block.numel:,} params: dense block {mib:,.0f} MiB > {budget:g} MiB",
            )
        return (
            self._generic(),
            f"{block.numel:,} params, no Kronecker structure: dense block {mib:,.0f} MiB "
            f"> {budget:g} MiB",
        )

    def plan(self, model, blocks: list[Block]) -> list[tuple[str, str]]:
        """`(strategy name, reason)` per block, without fitting anything."""
        if len(blocks) == 1 and blocks[0].layers is None:
            block = blocks[0]
            if block_bytes(block) <= self.settings.max_block_bytes:
                return [self._choose(model, block)]
            return [self._block_diagonal(model, block)]
        return [self._choose(model, b) for b in blocks]

    def exact_blocks(self, model, blocks: list[Block]) -> list[bool]:
        """The blocks planned `exact` (at fit time `exact` or `gauss-newton`, both exact)."""
        return [name == "exact" for name, _ in self.plan(model, blocks)]

    def _block_diagonal(
        self, model, block: Block, parts: list[str] | None = None
    ) -> tuple[str, str]:
        """The global choice when the full Hessian does not fit; `parts`: the modules' choices."""
        budget = self.settings.max_block_bytes / 2**20
        if parts is None:
            parts = [self._choose(model, b)[0] for b in split_by_module(block, model)]
        counts = {n: parts.count(n) for n in dict.fromkeys(parts)}
        used = ", ".join(f"{n} x{c}" for n, c in counts.items())
        reason = (
            f"full Hessian of {block.numel:,} params > {budget:g} MiB: block-diagonal over "
            f"{len(parts)} modules ({used}), cross-module curvature dropped"
        )
        return BLOCK_DIAGONAL, reason

    def _make(self, name: str, sharded: bool) -> CurvatureStrategy:
        cls = _REGISTRY[name]
        sub_settings: tuple[StrategySettings, ...] = self.settings.sub_settings
        given = next((s for s in sub_settings if type(s) is cls.Settings), None)
        if given is None and cls.Settings is EKFACSettings and not sharded:
            # A Kronecker factor with fewer data rows than dimensions (the last convolutions
            # of a small training set) is decomposed from its rows: the same eigenbasis
            # (exact, see EKFACSettings.max_dense_dim), at a fraction of a dense
            # eigendecomposition's cost, which can also fail on such rank-deficient factors.
            given = EKFACSettings(max_dense_dim=AUTO_EKFAC_DENSE_DIM)
        strategy = make_strategy(given if given is not None else name, self.damping)
        if not strategy.has_inverse_hvp():
            raise ValueError(
                f"hessian='auto' cannot use {name!r} (it computes whole scores itself); "
                "choose an inverse-Hessian strategy in AutoSettings."
            )
        return strategy

    def _residuals(self, ctx: FitContext, blocks: list[Block]) -> list[float]:
        """The curvature Gauss-Newton leaves out of each block, relative (`exact`'s probe).

        Blocks the autograd graph shows flat get 0 unprobed. Of the curved ones, only those
        the HVP budget could make exact are probed (their number decides it); the others
        get `inf`, their label read from the graph (`self._ops`: the curving operation).
        Above `ExactSettings.residual_tol`, `exact` builds the block from Hessian-vector
        products; infinite where the probe itself needs products the model lacks.
        """
        settings = ExactSettings()
        ops = block_curving_ops(ctx, blocks)
        self._ops.update({b.param_names: op for b, op in zip(blocks, ops, strict=True)})

        def within(block: Block) -> bool:
            # Only a block the HVP budget could make exact needs a number; for the others
            # it would decide a label (their Gauss-Newton block is built either way).
            return block.numel <= self.settings.max_hvp_params

        try:
            return probe_residuals(
                ctx, blocks, settings, look_again=within, measure=within, ops=ops
            )
        except RuntimeError:  # Some block's probe fails: probe them one by one.
            out = []
            for block, op in zip(blocks, ops, strict=True):
                try:
                    out.extend(
                        probe_residuals(
                            ctx, [block], settings, look_again=within, measure=within, ops=[op]
                        )
                    )
                except RuntimeError:
                    out.append(float("inf"))
            return out

    def _curved_within_budget(
        self, ctx: FitContext, blocks: list[Block], candidates: list[int]
    ) -> dict[int, float]:
        """`{i: residual}` of the curved candidates over `max_hvp_params` (smallest first)."""
        if not candidates:
            return {}
        tol = ExactSettings().residual_tol
        found = self._residuals(ctx, [blocks[i] for i in candidates])
        self._probed.update(
            {blocks[i].param_names: r for i, r in zip(candidates, found, strict=True)}
        )
        curved = {i: r for i, r in zip(candidates, found, strict=True) if r > tol}
        spent, over = 0, {}
        for i in sorted(curved, key=lambda i: blocks[i].numel):
            if spent + blocks[i].numel <= self.settings.max_hvp_params:
                spent += blocks[i].numel
            else:
                over[i] = curved[i]
        return over

    def _assign(self, ctx: FitContext, blocks: list[Block]):
        """`(sub-blocks, per sub-block strategy name, slices into the global vector)`."""
        self.choices = {}
        self._probed: dict[tuple[str, ...], float] = {}
        self._ops: dict[tuple[str, ...], str | None] = {}
        plan = self.plan(ctx.model, blocks)
        if plan[0][0] == BLOCK_DIAGONAL:
            subs = split_by_module(blocks[0], ctx.model)
            names = [self._choose(ctx.model, b)[0] for b in subs]
            slices = _positions(blocks[0], subs, ctx.model, ctx.device)
        else:
            subs, names, slices = blocks, [c[0] for c in plan], None
            self.choices = {b.name: c for b, c in zip(blocks, plan, strict=True)}
        exact = [i for i, n in enumerate(names) if n == "exact"]
        for i, r in self._curved_within_budget(ctx, subs, exact).items():
            names[i] = "gauss-newton"
            if slices is None:
                op = self._ops.get(subs[i].param_names)
                how = (
                    f"Gauss-Newton leaves out {r:.2g} of the curvature on a probe"
                    if math.isfinite(r)
                    else f"{op} between it and the logits"
                )
                self.choices[subs[i].name] = (
                    "gauss-newton",
                    f"{subs[i].numel:,} params, curved ({how}): exact needs a "
                    "Hessian-vector product per parameter and batch, and the curved blocks' budget "
                    f"AutoSettings.max_hvp_params={self.settings.max_hvp_params} is spent "
                    "on smaller ones",
                )
        if slices is not None:
            self.choices[blocks[0].name] = self._block_diagonal(ctx.model, blocks[0], names)
        return subs, names, slices

    reuse: AutoStrategy | None = None
    """Another "auto" fitted on the same training set and damping (e.g. the layer-wise one):
    blocks it already fitted, with the same parameters, are solved by it, not refitted."""

    def solver(self, param_names: tuple[str, ...]):
        """`v -> (H_b + λ I)^{-1} v` of the fitted block with these parameters, or None."""
        for i, b in enumerate(getattr(self, "_subs", [])):
            if b.param_names == param_names and self._route[i][1] != "reused":
                _, name, local = self._route[i]
                return lambda v, s=self.strategies[name], k=local: s.inverse_hvp(k, v)
        return None

    def _prepare(self, ctx: FitContext, blocks: list[Block]) -> list[str]:
        self.blocks = blocks
        subs, names, self._slices = self._assign(ctx, blocks)
        self._subs = subs
        self._reused = {}
        if self.reuse is not None:
            for i, b in enumerate(subs):
                found = self.reuse.solver(b.param_names)
                if found is not None:
                    self._reused[i], names[i] = found, "reused"
        used = [n for n in dict.fromkeys(names) if n != "reused"]
        if ctx.shard is not None:
            bad = [n for n in used if not _REGISTRY[n].shardable]
            if bad:
                raise ValueError(
                    f"hessian='auto' chose {bad}, which cannot be split across processes; run "
                    "in one process, or set AutoSettings to shardable strategies."
                )
        self.strategies = {n: self._make(n, ctx.shard is not None) for n in used}
        exact = self.strategies.get("exact")
        if isinstance(exact, ExactStrategy):  # it builds flat blocks as Gauss-Newton
            exact.known_residuals = self._probed
        self._route = []
        for n in dict.fromkeys(names):
            own = [i for i, m in enumerate(names) if m == n]
            for local, i in enumerate(own):
                self._route.append((i, n, local))
        self._route.sort()
        return used

    def _blocks_of(self, name: str) -> list[Block]:
        return [self._subs[i] for i, n, _ in self._route if n == name]

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Fits each chosen sub-strategy on the blocks it got."""
        for name in self._prepare(ctx, blocks):
            self.strategies[name].fit(ctx, self._blocks_of(name))

    def export(self) -> dict[str, Any] | None:
        """The sub-strategies' states (those that have none are refitted at restore)."""
        return {"states": {n: s.export() for n, s in self.strategies.items()}}

    def restore(self, ctx: FitContext, blocks: list[Block], state: dict[str, Any]) -> None:
        """Restores each sub-strategy's state, or fits it where there is none (e.g. CG)."""
        for name in self._prepare(ctx, blocks):
            sub, saved = self.strategies[name], state["states"].get(name)
            if saved is None:
                sub.fit(ctx, self._blocks_of(name))
            else:
                sub.restore(ctx, self._blocks_of(name), saved)

    def _solve(self, i: int, vectors: Tensor) -> Tensor:
        _, name, local = self._route[i]
        if name == "reused":
            return self._reused[i](vectors)
        return self.strategies[name].inverse_hvp(local, vectors)

    def scores(
        self, ctx: FitContext, test: DataLoader, train: TrainPasses, query_rank: int | None = None
    ) -> Iterator[Tensor]:
        """As `CurvatureStrategy.scores`; block-diagonal, the sum of the modules' scores.

        With the Hessian block-diagonal over modules, `gᵀ H⁻¹ g'` is the sum over modules
        of `g_bᵀ H_b⁻¹ g'_b`: each module's gradients are formed as its own block (a
        Linear/Conv2d's from its inputs and output gradients), never as flat per-example
        gradients of all parameters (128 M numbers per example on vgg11_bn).
        """
        if self._slices is None:
            return super().scores(ctx, test, train, query_rank)
        chunks = preconditioned_scores(
            self._module_gradients(ctx),
            self._solve,
            ctx.checked(test, "inputs", "test gradients"),
            self.scoring_batches(ctx, train("influence")),
            query_rank,
        )
        return (c.sum(0, keepdim=True) for c in chunks)

    def self_scores(self, ctx: FitContext, loader: DataLoader) -> Tensor:
        """As `CurvatureStrategy.self_scores`; block-diagonal, the sum over modules."""
        if self._slices is None:
            return super().self_scores(ctx, loader)
        batches = ctx.checked(loader, "inputs", "self-influence")
        parts = preconditioned_self_scores(self._module_gradients(ctx), self._solve, batches)
        return parts.sum(0, keepdim=True)

    def _module_gradients(self, ctx: FitContext) -> BlockGradients:
        return BlockGradients(ctx.model, ctx.loss, ctx.engine, self._subs)

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """`(H_b + λ I)^{-1} v` by the block's sub-strategy (per module if block-diagonal)."""
        if self._slices is None:
            return self._solve(block, vectors)
        out = torch.empty(vectors.shape, dtype=torch.float64, device=vectors.device)
        for i, index in enumerate(self._slices):
            out[:, index] = self._solve(i, vectors[:, index]).to(out.dtype)
        return out


def _positions(block: Block, subs: list[Block], model, device) -> list[Tensor]:
    """Per sub-block, the positions of its parameters in the block's flat vector."""
    params = dict(model.named_parameters())
    start, offsets = 0, {}
    for name in block.param_names:
        offsets[name] = start
        start += params[name].numel()
    return [
        torch.cat(
            [torch.arange(offsets[n], offsets[n] + params[n].numel()) for n in b.param_names]
        ).to(device)
        for b in subs
    ]
