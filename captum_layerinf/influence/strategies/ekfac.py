"""`hessian="ekfac"`: eigenvalue-corrected Kronecker-factored curvature per Linear/Conv2d layer.

K-FAC (Martens & Grosse 2015; Grosse & Martens 2016 for convolutions) approximates a
layer's Gauss-Newton block by `A ⊗ G`, with `A = Σ a aᵀ` over the layer's inputs (unfolded
patches for a conv; a constant 1 for the bias) and `G = Σ g gᵀ` over its output gradients.
EK-FAC (George et al. 2018; Grosse et al. 2023) keeps the eigenbasis `Q_A ⊗ Q_G` and
replaces the Kronecker eigenvalues by the exact second moments of the per-example
gradients in that basis, `Λ_ij = (1/n) Σ_z (Q_Gᵀ DW_z Q_A)_ij²`:

    (H_l + λ I)⁻¹ v  ≈  Q_G [ (Q_Gᵀ V Q_A) / (Λ + λ) ] Q_Aᵀ        (V = v as [d_out, d_in])

The Gauss-Newton block `Σ_z Jᵀ Λ_z J` is a sum over the eigen-directions of the loss
Hessian in the logits, `Λ_z = Σ_c u_c u_cᵀ`; with `fisher="expected"` (the default) each
example contributes one backward pass per direction it needs, which is the expectation
over the model's predicted classes, not one sampled label (kronfluence's choice). A
confident example needs few directions (`EKFACSettings.class_tol`); directions most of a
batch needs run through the batch's graph, the others are gathered into sub-batches of
(example, direction) pairs, so the passes scale with the directions actually needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..._utils.data import batch_count
from .._scoring import GRAD_CHUNK_BYTES
from .._taps import StructuredLayer, Taps, structured_layer
from ._kronecker import (
    KroneckerFactor,
    as_matrix,
    expected_directions,
    grouped,
    grouped_all,
    layer_blocks,
    rotates_first,
    sampled_or_true_cotangents,
    sandwich,
    squared_moments,
    ungrouped,
)
from .base import Block, CurvatureStrategy, FitContext, register_strategy
from .exact import ExactSettings, ExactStrategy

FISHERS = ("expected", "sampled", "empirical")


@dataclass(frozen=True)
class EKFACSettings:
    """Settings of `hessian="ekfac"`.

    Attributes:
        fisher: Which Gauss-Newton factors: "expected" (exact expectation over the
            model's predicted classes: one backward pass per eigen-direction of the loss
            Hessian in the logits), "sampled" (one label drawn from the model's softmax per
            example and pass; cross-entropy only), or "empirical" (the true labels: the
            empirical Fisher, cheapest and least faithful).
        class_tol: With "expected": per example, the smallest directions whose
            eigenvalues add up to at most `class_tol` of the trace of its logit Hessian are
            dropped (0 keeps all but exact zeros: the exact expectation). A trained
            classifier then needs 1-3 directions per example instead of C - 1; on the
            digits CNN of the benchmarks 0.01 changes the scores by 0.3 % of their largest
            (Pearson 0.99999 with 0) and halves the fit.
        max_dense_dim: A Kronecker factor of larger dimension is not accumulated densely
            while it has fewer data rows than dimensions: its eigenbasis then comes from
            the rows themselves (exact: `A` has at most that rank), and its null space has
            eigenvalue 0, i.e. `1 / damping` in the inverse.
        low_rank_rows: Keep a factor's data rows, not its dense matrix, while they number
            at most half its dimension (few training examples, wide layers): its eigenbasis
            is then the rows' span from one small SVD, exactly (`A` has at most that rank),
            instead of a dense `eigh` (4.5 s for a 4,097-wide factor on one CPU core).
            Off: dense below `max_dense_dim`. Single process only.
        fallback_max_params: A block that is not one Linear or Conv2d (e.g. batch-norm)
            falls back to `exact` (a dense block) when it has at most this many
            parameters; larger ones raise an error.
        fallback_gauss_newton: How the fallback builds its blocks (see
            `ExactSettings.gauss_newton`): "auto" (the Hessian, from Gauss-Newton where a
            probe shows it is exact), or "always" (the Gauss-Newton block: one reverse pass
            per output and example, where the Hessian of a curved block needs one product
            per parameter; `hessian="pcg"` preconditions with it).
        chunk_bytes: Largest per-example gradient chunk formed at once.
        merge_bytes: Consecutive training batches are fitted as one while the layers'
            inputs of the merged batch take at most this many bytes (judged by the first
            batch): fewer and larger passes and products where batches are small (the
            digits CNN of the benchmarks: batches of 64 fitted three at a time, a fifth
            less CPU time). The sums are the same up to rounding; batches whose inputs
            differ in shape are not merged, nor any with `fisher="sampled"` (its labels
            are drawn batch by batch). 0 fits every batch on its own.
        cache_bytes: The layers' inputs and output gradients of the first pass are kept
            for the second (no second forward and backward passes) while they fit in this
            many bytes; beyond, the second pass recomputes them. Within the same bytes,
            the strategy `LayerInfluence` scores with then keeps each training batch's
            inputs and true-label output gradients, so that scoring the training set
            needs no forward or backward pass (see `kept_factors`).
        seed: Seed of the labels drawn by `fisher="sampled"`.
    """

    fisher: str = "expected"
    class_tol: float = 0.01
    max_dense_dim: int = 8192
    low_rank_rows: bool = True
    fallback_max_params: int = 4096
    fallback_gauss_newton: str = "auto"
    chunk_bytes: int = GRAD_CHUNK_BYTES
    merge_bytes: int = 2**23
    cache_bytes: int = 2**30
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fisher not in FISHERS:
            raise ValueError(f"fisher must be one of {FISHERS}; got {self.fisher!r}.")
        if not 0 <= self.class_tol < 1:
            raise ValueError(f"class_tol must be in [0, 1); got {self.class_tol!r}.")
        if self.merge_bytes < 0:
            raise ValueError(f"merge_bytes must be >= 0; got {self.merge_bytes!r}.")
        ExactSettings(gauss_newton=self.fallback_gauss_newton)


@register_strategy
class EKFACStrategy(CurvatureStrategy):
    """EK-FAC per Linear/Conv1d/Conv2d block; small blocks of other modules fall back to `exact`.

    A grouped convolution gets Kronecker factors per group: its curvature is taken
    block-diagonal over the groups (as over the layers), `G` small blocks
    `A_k ⊗ G_k` instead of one whose factors would mix the groups' parameters.

    The global (all-parameter) influence is block-diagonal over the layers: the sum of
    the layers' EK-FAC scores, as in kronfluence.

    `self.ranks[b]` gives `(r_out, r_in)`, the sizes of block b's eigenbases (smaller than
    `(d_out, d_in)` where a factor was kept low-rank), `self.fallback` the blocks
    computed by `exact`, and `self.seconds` the time of each stage of the fit.
    """

    name = "ekfac"
    Settings = EKFACSettings
    shardable = True

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Two passes over the training set: Kronecker factors, then eigenvalue correction."""
        self.blocks = blocks
        self.ctx = ctx
        self.seconds: dict[str, float] = {}
        self._global: list[slice] | None = None
        self._kept: dict[int, dict[int, tuple[Tensor, Tensor]]] = {}
        self.ranks: dict[int, tuple[int, int]] = {}
        if len(blocks) == 1 and blocks[0].layers is None:
            # All parameters: EK-FAC is block-diagonal over the layers, as everywhere.
            sub_blocks, self._global = layer_blocks(ctx.model, blocks[0])
            self._inner = EKFACStrategy(self.settings, self.damping)
            self._inner.fit(ctx, sub_blocks)
            return
        self.dtype = next(ctx.model.parameters()).dtype
        if ctx.shard is not None and self.settings.fisher == "sampled":
            raise ValueError(
                "EKFACSettings(fisher='sampled') draws labels in sequence over the training "
                "set, which differs once it is split across processes; use fisher='expected' "
                "(the default) under torchrun, or run in one process."
            )
        self._sort_blocks()
        if self.layers:
            self._check_dense_under_shard()
            self._fit_layers()

    def kept_factors(self, batch: int) -> dict[int, tuple[Tensor, Tensor]] | None:
        """Training batch `batch`'s layer inputs and true-label output gradients, if kept.

        The fit keeps them (with `keep_factors`, within `cache_bytes`): its first pass
        already has the inputs, and the true-label loss is one more backward pass through
        the batch's graph, so scoring needs no forward or backward pass of its own.
        """
        return self._kept.get(batch) if self._global is None else None

    def _sort_blocks(self) -> None:
        """Linear/Conv blocks into `self.layers`; small others fitted by `exact`."""
        self.layers: dict[int, StructuredLayer] = {}
        other: list[int] = []
        limit = self.settings.fallback_max_params
        for i, b in enumerate(self.blocks):
            s = structured_layer(self.ctx.model, b.layers, b.param_names)
            if s is not None:
                self.layers[i] = s
            elif b.numel <= limit:
                other.append(i)
            else:
                module = self.ctx.model.get_submodule(b.layers[0]) if b.layers else None
                kind = type(module).__name__ if module is not None else "all"
                raise ValueError(
                    f"hessian='ekfac' supports nn.Linear, nn.Conv1d and nn.Conv2d layers; "
                    f"{b.name or '<model>'!r} ({kind}, {b.numel:,} parameters) is neither "
                    "and too large for the exact fallback (EKFACSettings("
                    f"fallback_max_params={limit})). Use hessian='cg', or leave the layer out "
                    "with layers=[...]."
                )
        self.fallback: dict[int, int] = {i: j for j, i in enumerate(other)}
        if other:
            exact = ExactSettings(gauss_newton=self.settings.fallback_gauss_newton)
            self._exact = ExactStrategy(exact, self.damping)
            self._exact.fit(self.ctx, [self.blocks[i] for i in other])

    def _check_dense_under_shard(self) -> None:
        if self.ctx.shard is None:
            return
        limit = self.settings.max_dense_dim
        wide = [
            f"{self.blocks[i].name!r} ({max(s.d_in, s.d_out)})"
            for i, s in self.layers.items()
            if max(s.d_in, s.d_out) > limit
        ]
        if wide:
            raise ValueError(
                "under torch.distributed the Kronecker factors are summed over processes "
                f"as dense matrices; {', '.join(wide)} exceed(s) EKFACSettings("
                f"max_dense_dim={limit}). Raise max_dense_dim, or run in one process."
            )

    def _fit_layers(self) -> None:
        """The Linear/Conv blocks: factors, their eigenbases, corrected eigenvalues."""
        index = list(self.layers)
        taps = Taps(self.ctx.model, [self.layers[i] for i in index])
        start = time.perf_counter()
        factors = self._first_pass(taps, index)
        self.seconds["first pass"] = time.perf_counter() - start
        start = time.perf_counter()
        self._bases = self._eigenbases(factors, index)
        self.seconds["eigenbases"] = time.perf_counter() - start
        start = time.perf_counter()
        self._eigenvalues = self._fit_eigenvalues(taps)
        self.seconds["second pass"] = time.perf_counter() - start
        self._keep(index)

    # ------------------------------------------------------------------ passes

    def _directions(self, logits: Tensor, labels: Tensor, gen: torch.Generator):
        """Cotangents `[B, K, *outputs]` whose outer products sum to each example's curvature.

        Returns `(cotangents, keep)`, `keep [B, K]` marking the directions each example
        needs (a prefix: directions come largest eigenvalue first).
        """
        fisher = self.settings.fisher
        with torch.no_grad():
            logits = logits.detach()
            if fisher == "expected":
                return expected_directions(self.ctx.loss, logits, labels, self.settings.class_tol)
            cot = sampled_or_true_cotangents(self.ctx.loss, logits, labels, fisher, gen)[:, None]
            return cot, torch.ones(cot.shape[:2], dtype=torch.bool, device=cot.device)

    def _passes(self, taps: Taps, desc: str, with_labels: Callable[[], bool]):
        """Per merged batch, `(segments, activations, iterator of (rows, output grads), true)`.

        `segments` gives each training batch's `(index, start, stop)` in the merged
        batch's rows (see `EKFACSettings.merge_bytes` and `_merged_batches`).

        Each example's curvature directions are backward passes of their own; `rows [R]`
        maps each output-gradient row to its example (its row in the activations). A
        direction most examples of the batch need is one backward pass through the batch's
        graph; the rest are gathered, (example, direction) pairs, into sub-batches of at
        most the batch size, each one forward and one backward pass. Only one sub-batch of
        output gradients is held at once. `true` holds the output gradients of the
        true-label loss while `with_labels()` (one more backward pass), else None.
        """
        gen = torch.Generator().manual_seed(self.settings.seed)
        seen = 0
        merge = self.settings.merge_bytes if self.settings.fisher != "sampled" else 0
        per_merge = [1]  # read by `_merged_batches` as each merged batch fills
        for segments, inputs, labels in self._merged_batches(desc, per_merge):
            seen += len(labels)
            logits = self._checked_forward(taps, inputs, labels)
            cot, keep = self._directions(logits, labels, gen)
            acts = grouped_all(taps.activations(), taps.layers)
            if merge and seen == len(labels):  # the first batch: how many to merge
                per_merge[0] = max(1, merge // max(1, _nbytes(acts)))
            true = None
            if with_labels():
                cot_true = _loss_gradient(self.ctx.loss, logits, labels)
                true = grouped_all(taps.output_grads(logits, cot_true, True), taps.layers)
            parts = self._direction_grads(taps, inputs, logits, cot, keep)
            yield segments, acts, ((rows, grouped_all(g, taps.layers)) for rows, g in parts), true
            # Released before the next batch's forward pass: two batches' layer inputs are
            # never held at once (densenet121 at 224x224, batch 32: 6 GB each).
            del logits, acts, true, parts
        self.ctx.check_count(seen)

    def _merged_batches(self, desc: str, per_merge: list[int]):
        """`(segments, inputs, labels)`: up to `per_merge[0]` consecutive batches as one.

        `per_merge[0]` is read as each merged batch fills, so that the caller can set it
        after the first batch. Batches whose inputs or labels differ in shape (beyond the
        batch dimension) or dtype are not merged.
        """
        pending: list = []
        for batch in self._batches(desc):
            if pending and _signature(batch) != _signature(pending[0]):
                yield _joined(pending)
                pending = []
            pending.append(batch)
            if len(pending) >= per_merge[0]:
                yield _joined(pending)
                pending = []
        if pending:
            yield _joined(pending)

    def _batches(self, desc: str):
        ctx = self.ctx
        total = batch_count(ctx.train_loader)
        with tqdm(total=total, desc=desc, disable=not ctx.show_progress, leave=False) as bar:
            for batch in ctx.own_indexed_batches():
                bar.update()
                yield batch

    def _checked_forward(self, taps: Taps, inputs: tuple[Tensor, ...], labels: Tensor) -> Tensor:
        """The logits of a training batch, checked as `FitContext.batches` checks them.

        The checks read the pass's own logits; only a batch that fails them is run again
        by `FitContext.validate_batch`, for its error message.
        """
        try:
            logits = taps.forward(inputs)
            self.ctx.loss.check_labels(labels, logits, "train_dataset")
            with torch.no_grad():
                losses = self.ctx.loss(logits.detach(), labels)
        except (RuntimeError, ValueError, TypeError):
            self.ctx.validate_batch(inputs, labels, "train_dataset")  # its clearer error
            raise
        if not torch.isfinite(losses).all():
            self.ctx.validate_batch(inputs, labels, "train_dataset")  # raises
        return logits

    def _direction_grads(self, taps: Taps, inputs, logits: Tensor, cot: Tensor, keep: Tensor):
        n = len(keep)
        counts = keep.sum(0).tolist()
        # Through the batch's graph while at least half the batch needs the direction.
        shared = [j for j, c in enumerate(counts) if 2 * c >= n or j == 0]
        for step, j in enumerate(shared):
            rows = keep[:, j].nonzero().flatten()
            grads = taps.output_grads(logits, cot[:, j], retain=step < len(shared) - 1)
            yield rows, [g.index_select(0, rows) for g in grads] if len(rows) < n else grads
        rest = keep.clone()
        rest[:, shared] = False
        ex, col = rest.nonzero(as_tuple=True)
        for lo in range(0, len(ex), n):
            rows, dirs = ex[lo : lo + n], col[lo : lo + n]
            sub = taps.forward(tuple(x.index_select(0, rows) for x in inputs))
            yield rows, taps.output_grads(sub, cot[rows, dirs], retain=False)

    def _first_pass(self, taps: Taps, index: list[int]) -> tuple[list, list]:
        """The Kronecker factors `(G, A)` of every layer, summed over the training set.

        The pass's pieces are kept for the second pass while they fit in `cache_bytes`,
        with the true-label output gradients where the fit keeps factors for scoring.
        """
        s, dev = self.settings, self.ctx.device
        layers = [self.layers[i] for i in index]
        # Under torch.distributed the factors are summed over processes: dense from the start.
        solo = self.ctx.shard is None and s.low_rank_rows
        cov_a = [KroneckerFactor(t.d_in, s.max_dense_dim, dev, t.groups, solo) for t in layers]
        cov_g = [KroneckerFactor(t.d_out, s.max_dense_dim, dev, t.groups, solo) for t in layers]
        self._cache: list | None = []
        cached = 0
        with_labels = lambda: self.keep_factors and self._cache is not None  # noqa: E731
        for segments, acts, parts, true in self._passes(taps, "EK-FAC factors", with_labels):
            for j, a in enumerate(acts):
                cov_a[j].add(a.transpose(0, 1).flatten(1, 2))
            pieces, cached = self._held(segments, acts, parts, true, cached)
            grads: list[Tensor] = []
            for _, grads in pieces:
                for j, g in enumerate(grads):
                    cov_g[j].add(g.transpose(0, 1).flatten(1, 2))
            del acts, parts, true, pieces, grads  # before the next batch (see `_passes`)
        for cov in (*cov_a, *cov_g):
            if cov.dense is not None:
                cov.dense = self.ctx.all_reduce(cov.dense)
        return cov_g, cov_a

    def _held(self, segments, acts: list, parts, true, cached: int):
        """A batch's `(rows, output grads)` parts to sum into G, and the bytes now cached.

        The parts are held (merged: fewer, larger products) and cached for the second pass
        only while the cache fits; beyond, the cache is dropped and the parts are taken one
        direction at a time (densenet121 at 224x224, batch 32: about 0.7 GB per direction,
        nine directions on a random-init model).
        """
        held: list = []
        if self._cache is not None:
            limit = self.settings.cache_bytes
            cached += _nbytes(acts, true or [])
            for part in parts if cached <= limit else ():
                held.append(part)
                cached += _nbytes(part[1])
                if cached > limit:
                    break
            if cached > limit:
                self._cache = None
        if self._cache is None:
            return _drained(held, parts), cached
        kept = [_merged(held)] if held else []
        self._cache.append((segments, acts, kept, true))
        return iter(kept), cached

    def _eigenbases(self, factors: tuple[list, list], index: list[int]) -> list:
        """Per layer `(Q_G, Q_A)`, in the model's dtype; records `self.ranks`."""
        bases = []
        bar = tqdm(index, desc="EK-FAC eigenbases", leave=False, disable=not self.ctx.show_progress)
        for cov_g, cov_a, i in zip(*factors, bar, strict=True):
            q_g, q_a = cov_g.eigenbasis(self.dtype), cov_a.eigenbasis(self.dtype)
            self.ranks[i] = (q_g.shape[-1], q_a.shape[-1])
            if self.damping <= 0 and self.ranks[i] != (self.layers[i].d_out, self.layers[i].d_in):
                raise ValueError(
                    f"the Kronecker factors of {self.blocks[i].name!r} are low-rank (fewer "
                    "data rows than dimensions): damping must be > 0."
                )
            bases.append((q_g.to(self.dtype), q_a.to(self.dtype)))
        return bases

    def _fit_eigenvalues(self, taps: Taps) -> list[Tensor]:
        """`Λ` per layer: the mean squared per-example gradients in the Kronecker basis."""
        dev, chunk = self.ctx.device, self.settings.chunk_bytes
        shapes = [(q_g.shape[0], q_g.shape[-1], q_a.shape[-1]) for q_g, q_a in self._bases]
        sums = [torch.zeros(shape, dtype=torch.float64, device=dev) for shape in shapes]
        passes = self._cache
        if passes is None:
            passes = self._passes(taps, "EK-FAC Λ", lambda: False)
        for _, acts, parts, _ in passes:
            first = [rotates_first(b, a) for b, a in zip(self._bases, acts, strict=True)]
            acts = [
                a @ as_matrix(q_a) if f else a
                for a, f, (_, q_a) in zip(acts, first, self._bases, strict=True)
            ]
            grads = []
            for rows, grads in parts:
                for j, total in enumerate(sums):
                    total += squared_moments(
                        self._bases[j], grads[j], acts[j], rows, first[j], chunk
                    )
            del acts, parts, grads  # before the next batch (see `_passes`)
        return [self.ctx.all_reduce(s) / self.ctx.n_train for s in sums]

    def _keep(self, index: list[int]) -> None:
        """Keeps the cached inputs and true-label output gradients for scoring, per batch."""
        cache, self._cache = self._cache, None
        layers = [self.layers[b] for b in index]
        for segments, acts, _, true in cache or []:
            if true is None:
                continue
            for i, lo, hi in segments:
                self._kept[i] = {
                    b: (ungrouped(a[lo:hi], s), ungrouped(g[lo:hi], s))
                    for b, s, a, g in zip(index, layers, acts, true, strict=True)
                }

    # ------------------------------------------------------------------ products

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """EK-FAC estimate of `(H_b + λ I)^{-1} v` for each row of `vectors [m, P]`."""
        if self._global is not None:
            parts = [
                self._inner.inverse_hvp(k, vectors[:, part]) for k, part in enumerate(self._global)
            ]
            return torch.cat(parts, dim=1)
        if block in self.fallback:
            return self._exact.inverse_hvp(self.fallback[block], vectors)
        j = list(self.layers).index(block)
        layer, (q_g, q_a) = self.layers[block], self._bases[j]
        v = grouped(layer.from_flat(vectors.to(self.dtype)), layer)  # [m, G, d_out, d_in]
        rotated = sandwich(q_g.mT, v, q_a)
        scaled = rotated / (self._eigenvalues[j] + self.damping).to(self.dtype)
        if self.ranks[block] == (layer.d_out, layer.d_in):
            out = sandwich(q_g, scaled, q_a.mT)
        else:
            # The factors' null spaces have eigenvalue 0: (0 + λ)⁻¹ there, i.e.
            # Q S Qᵀ + (v - Q R Qᵀ) / λ, with one product back instead of two.
            out = sandwich(q_g, scaled - rotated / self.damping, q_a.mT) + v / self.damping
        return layer.to_flat(out if layer.groups > 1 else out.squeeze(1))

    def eigenvalue_spectrum(self, block: int) -> Tensor:
        """The corrected eigenvalues `Λ [r_out, r_in]` of a Linear/Conv block (float64).

        A grouped convolution has one set per group: `[G, r_out, r_in]`.
        """
        if block not in self.layers:
            raise ValueError(f"block {block} is not a Linear/Conv block with EK-FAC factors.")
        values = self._eigenvalues[list(self.layers).index(block)]
        return values if self.layers[block].groups > 1 else values[0]


def _nbytes(*lists: list[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for pieces in lists for t in pieces)


def _signature(batch) -> tuple:
    """What must agree for training batches `(index, inputs, labels)` to be merged."""
    _, inputs, labels = batch
    return tuple((t.shape[1:], t.dtype, t.device) for t in (*inputs, labels))


def _joined(batches: list) -> tuple[tuple[tuple[int, int, int], ...], tuple[Tensor, ...], Tensor]:
    """Training batches `(index, inputs, labels)` as one: `(segments, inputs, labels)`."""
    if len(batches) == 1:
        i, inputs, labels = batches[0]
        return ((i, 0, len(labels)),), inputs, labels
    segments, start = [], 0
    for i, _, labels in batches:
        segments.append((i, start, start + len(labels)))
        start += len(labels)
    inputs = tuple(torch.cat(xs) for xs in zip(*(b[1] for b in batches), strict=True))
    return tuple(segments), inputs, torch.cat([b[2] for b in batches])


def _drained(held: list, rest):
    """The parts in `held` (released as they are taken), then those `rest` still yields."""
    while held:
        yield held.pop(0)
    yield from rest


def _merged(parts: list[tuple[Tensor, list[Tensor]]]) -> tuple[Tensor, list[Tensor]]:
    """One `(rows, output grads)` of a batch's parts."""
    if len(parts) == 1:
        return parts[0]
    rows = torch.cat([r for r, _ in parts])
    return rows, [torch.cat(g) for g in zip(*(g for _, g in parts), strict=True)]


def _loss_gradient(loss, logits: Tensor, labels: Tensor) -> Tensor:
    """`∂L_b / ∂logits_b` per example: one backward pass of the summed per-example losses."""
    leaf = logits.detach().requires_grad_(True)
    with torch.enable_grad():
        return torch.autograd.grad(loss(leaf, labels).sum(), leaf)[0]
