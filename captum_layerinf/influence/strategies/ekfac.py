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
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import grad, vmap
from tqdm.auto import tqdm

from .._scoring import GRAD_CHUNK_BYTES
from .._taps import StructuredLayer, Taps, structured_layer
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
        fallback_max_params: A block that is not one Linear or Conv2d (e.g. batch-norm)
            falls back to `exact` (a dense block) when it has at most this many
            parameters; larger ones raise an error.
        chunk_bytes: Largest per-example gradient chunk formed at once.
        cache_bytes: The layers' inputs and output gradients of the first pass are kept
            for the second (no second forward and backward passes) while they fit in this
            many bytes; beyond, the second pass recomputes them.
        seed: Seed of the labels drawn by `fisher="sampled"`.
    """

    fisher: str = "expected"
    class_tol: float = 0.01
    max_dense_dim: int = 8192
    fallback_max_params: int = 4096
    chunk_bytes: int = GRAD_CHUNK_BYTES
    cache_bytes: int = 2**30
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fisher not in FISHERS:
            raise ValueError(f"fisher must be one of {FISHERS}; got {self.fisher!r}.")
        if not 0 <= self.class_tol < 1:
            raise ValueError(f"class_tol must be in [0, 1); got {self.class_tol!r}.")


class _Covariance:
    """`Σ x xᵀ` over rows x per group: dense `[G, d, d]`, or the rows themselves.

    The rows are kept (one group only) while fewer than the dimension.
    """

    def __init__(self, dim: int, max_dense_dim: int, device: torch.device, groups: int) -> None:
        self.dim = dim
        dense = groups > 1 or dim <= max_dense_dim
        self.dense = (
            torch.zeros(groups, dim, dim, dtype=torch.float64, device=device) if dense else None
        )
        self.rows: list[Tensor] = []
        self.n_rows = 0

    def add(self, x: Tensor) -> None:
        """Adds rows `x [G, n, d]`."""
        if self.dense is not None:
            self.dense += (x.transpose(1, 2) @ x).double()
            return
        self.rows.append(x[0])
        self.n_rows += x.shape[1]
        if self.n_rows > self.dim:
            # More rows than dimensions: dense in the rows' dtype to bound memory.
            rows = torch.cat(self.rows)
            self.dense, self.rows = (rows.T @ rows)[None], []

    def eigenbasis(self, dtype: torch.dtype) -> Tensor:
        """Orthonormal eigenvectors `[G, dim, r]`: all of them, or a basis of the rows' span.

        Factors wider than 2048 are decomposed in `dtype` (the model's): a float32 basis is
        orthonormal to ~1e-6, plenty for a preconditioner, at a third of float64's time.
        """
        if self.dense is not None:
            # Scaled to unit trace: the eigenvectors are the same, the numbers tamer.
            trace = self.dense.diagonal(dim1=1, dim2=2).sum(1).clamp_min(1e-300)
            m = self.dense / trace[:, None, None]
            if self.dim > 2048 and dtype != torch.float64:
                try:
                    return torch.linalg.eigh(m.to(dtype))[1]
                except torch.linalg.LinAlgError:
                    pass  # Rank-deficient factors can defeat float32; float64 copes.
            return torch.linalg.eigh(m.double())[1]
        rows = torch.cat(self.rows).double()
        _, sv, vh = torch.linalg.svd(rows, full_matrices=False)
        keep = sv > sv.max() * max(rows.shape) * torch.finfo(torch.float64).eps
        return vh[keep].T[None]


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
        if len(blocks) == 1 and blocks[0].layers is None:
            # All parameters: EK-FAC is block-diagonal over the layers, as everywhere.
            sub_blocks, self._global = _layer_blocks(ctx.model, blocks[0])
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
        self.layers: dict[int, StructuredLayer] = {}
        other: list[int] = []
        for i, b in enumerate(blocks):
            s = structured_layer(ctx.model, b.layers, b.param_names)
            if s is not None:
                self.layers[i] = s
            elif b.numel <= self.settings.fallback_max_params:
                other.append(i)
            else:
                kind = type(ctx.model.get_submodule(b.layers[0])).__name__ if b.layers else "all"
                raise ValueError(
                    f"hessian='ekfac' supports nn.Linear, nn.Conv1d and nn.Conv2d layers; "
                    f"{b.name or '<model>'!r} ({kind}, {b.numel:,} "
                    f"parameters) is neither and too large for the exact fallback "
                    f"(EKFACSettings(fallback_max_params={self.settings.fallback_max_params})). "
                    "Use hessian='cg', or leave the layer out with layers=[...]."
                )
        self.fallback: dict[int, int] = {i: j for j, i in enumerate(other)}
        if other:
            self._exact = ExactStrategy(ExactSettings(), self.damping)
            self._exact.fit(ctx, [blocks[i] for i in other])
        self.ranks: dict[int, tuple[int, int]] = {}
        if not self.layers:
            return
        if ctx.shard is not None:
            wide = [
                f"{blocks[i].name!r} ({max(s.d_in, s.d_out)})"
                for i, s in self.layers.items()
                if max(s.d_in, s.d_out) > self.settings.max_dense_dim
            ]
            if wide:
                raise ValueError(
                    "under torch.distributed the Kronecker factors are summed over processes "
                    f"as dense matrices; {', '.join(wide)} exceed(s) EKFACSettings("
                    f"max_dense_dim={self.settings.max_dense_dim}). Raise max_dense_dim, or "
                    "run in one process."
                )
        index = list(self.layers)
        taps = Taps(ctx.model, [self.layers[i] for i in index])
        start = time.perf_counter()
        self._bases = self._fit_bases(taps, index)
        self.seconds["eigenbases"] = time.perf_counter() - start - self.seconds["first pass"]
        start = time.perf_counter()
        self._eigenvalues = self._fit_eigenvalues(taps, index)
        self.seconds["second pass"] = time.perf_counter() - start

    # ------------------------------------------------------------------ passes

    def _directions(self, logits: Tensor, labels: Tensor, gen: torch.Generator):
        """Cotangents `[B, K, C]` whose outer products sum to each example's logit curvature.

        Returns `(cotangents, keep)`, `keep [B, K]` marking the directions each example
        needs (a prefix: directions come largest eigenvalue first).
        """
        loss = self.ctx.loss
        fisher = self.settings.fisher
        with torch.no_grad():
            logits = logits.detach()
            if fisher != "expected":
                if fisher == "sampled":
                    if not loss.class_indices:
                        raise ValueError(
                            "EKFACSettings(fisher='sampled') needs a class-index loss such as "
                            "cross-entropy; use fisher='expected'."
                        )
                    probs = torch.softmax(logits.double(), dim=1).cpu()
                    labels = torch.multinomial(probs, 1, generator=gen).flatten().to(labels.device)
                cot = vmap(grad(loss.single))(logits, labels)[:, None]
                return cot, torch.ones(cot.shape[:2], dtype=torch.bool, device=cot.device)
            values, vectors = torch.linalg.eigh(_logit_hessian(loss, logits, labels))
            values, vectors = values.flip(1).clamp_min(0), vectors.flip(2)
            # Exact zeros (to rounding: the softmax Hessian's null vector 1) carry nothing;
            # beyond them, drop the smallest while their sum stays within class_tol.
            eps = values.shape[1] * torch.finfo(values.dtype).eps
            tail = values.flip(1).cumsum(1).flip(1)
            keep = (tail > self.settings.class_tol * values.sum(1, keepdim=True)) & (
                values > eps * values[:, :1]
            )
            k = max(1, int(keep.sum(1).max()))
            cot = (vectors * values.sqrt()[:, None, :]).transpose(1, 2)[:, :k]
            # Directions live in the flattened outputs; a cotangent has the outputs' shape.
            cot = cot.reshape(len(cot), k, *logits.shape[1:])
            return cot.to(logits.dtype), keep[:, :k]

    def _passes(self, taps: Taps, desc: str):
        """Per training batch, `(activations, iterator of (rows, output grads))`.

        Each example's curvature directions are backward passes of their own; `rows [R]`
        maps each output-gradient row to its example (its row in the activations). A
        direction most examples of the batch need is one backward pass through the batch's
        graph; the rest are gathered, (example, direction) pairs, into sub-batches of at
        most the batch size, each one forward and one backward pass. Only one sub-batch of
        output gradients is held at once.
        """
        gen = torch.Generator().manual_seed(self.settings.seed)
        seen = 0
        for inputs, labels in self._batches(desc):
            seen += len(labels)
            logits = self._checked_forward(taps, inputs, labels)
            cot, keep = self._directions(logits, labels, gen)
            acts = [_grouped(a, s) for a, s in zip(taps.activations(), taps.layers, strict=True)]
            parts = self._direction_grads(taps, inputs, logits, cot, keep)
            yield acts, ((rows, _grouped_all(g, taps.layers)) for rows, g in parts)
        self.ctx.check_count(seen)

    def _batches(self, desc: str):
        ctx = self.ctx
        total = len(ctx.train_loader)
        with tqdm(total=total, desc=desc, disable=not ctx.show_progress, leave=False) as bar:
            for batch in ctx.own_batches():
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
            yield rows, [g[rows] for g in grads] if len(rows) < n else grads
        rest = keep.clone()
        rest[:, shared] = False
        ex, col = rest.nonzero(as_tuple=True)
        for lo in range(0, len(ex), n):
            rows, dirs = ex[lo : lo + n], col[lo : lo + n]
            sub = taps.forward(tuple(x[rows] for x in inputs))
            yield rows, taps.output_grads(sub, cot[rows, dirs], retain=False)

    def _fit_bases(self, taps: Taps, index: list[int]) -> list[tuple[Tensor, Tensor]]:
        s, dev = self.settings, self.ctx.device
        layers = [self.layers[i] for i in index]
        cov_a = [_Covariance(t.d_in, s.max_dense_dim, dev, t.groups) for t in layers]
        cov_g = [_Covariance(t.d_out, s.max_dense_dim, dev, t.groups) for t in layers]
        # The first pass's pieces are kept for the second while they fit in cache_bytes.
        self._cache: list | None = []
        cached = 0
        start = time.perf_counter()
        for acts, parts in self._passes(taps, "EK-FAC factors"):
            for j in range(len(index)):
                cov_a[j].add(acts[j].transpose(0, 1).flatten(1, 2))
            kept = []
            for rows, grads in parts:
                for j in range(len(index)):
                    cov_g[j].add(grads[j].transpose(0, 1).flatten(1, 2))
                if self._cache is not None:
                    kept.append((rows, grads))
                    cached += sum(t.numel() * t.element_size() for t in grads)
            if self._cache is not None:
                cached += sum(t.numel() * t.element_size() for t in acts)
                if cached <= s.cache_bytes:
                    self._cache.append((acts, kept))
                else:
                    self._cache = None
        self.seconds["first pass"] = time.perf_counter() - start
        for cov in (*cov_a, *cov_g):
            if cov.dense is not None:
                cov.dense = self.ctx.all_reduce(cov.dense)
        bases = []
        for j, i in enumerate(
            tqdm(index, desc="EK-FAC eigenbases", leave=False, disable=not self.ctx.show_progress)
        ):
            q_g, q_a = cov_g[j].eigenbasis(self.dtype), cov_a[j].eigenbasis(self.dtype)
            self.ranks[i] = (q_g.shape[-1], q_a.shape[-1])
            if self.damping <= 0 and self.ranks[i] != (self.layers[i].d_out, self.layers[i].d_in):
                raise ValueError(
                    f"the Kronecker factors of {self.blocks[i].name!r} are low-rank (fewer "
                    "data rows than dimensions): damping must be > 0."
                )
            bases.append((q_g.to(self.dtype), q_a.to(self.dtype)))
        return bases

    def _fit_eigenvalues(self, taps: Taps, index: list[int]) -> list[Tensor]:
        dev = self.ctx.device
        shapes = [(q_g.shape[0], q_g.shape[-1], q_a.shape[-1]) for q_g, q_a in self._bases]
        sums = [torch.zeros(shape, dtype=torch.float64, device=dev) for shape in shapes]
        passes = self._cache if self._cache is not None else self._passes(taps, "EK-FAC Λ")
        self._cache = None
        for acts, parts in passes:
            first = [self._rotates_first(j, a) for j, a in enumerate(acts)]
            acts = [
                a @ q_a if f else a for a, f, (_, q_a) in zip(acts, first, self._bases, strict=True)
            ]
            for rows, grads in parts:
                for j in range(len(sums)):
                    sums[j] += self._squared_moments(j, grads[j], acts[j], rows, first[j])
        return [self.ctx.all_reduce(s) / self.ctx.n_train for s in sums]

    def _rotates_first(self, j: int, a: Tensor) -> bool:
        """Whether to rotate `a` and `g` rather than each example's `Σ_t g_t a_tᵀ`.

        Rotating the pieces costs per position t, the matrices per example: the first is
        cheaper for few positions (Linear layers, small feature maps).
        """
        (q_g, q_a), (t, d_in) = self._bases[j], a.shape[2:]
        d_out, r_out, r_in = q_g.shape[-2], q_g.shape[-1], q_a.shape[-1]
        return t == 1 or t * (d_in * r_in + d_out * r_out) <= r_out * d_in * (d_out + r_in)

    def _squared_moments(self, j: int, g: Tensor, a: Tensor, rows: Tensor, first: bool):
        """`Σ_r (Q_Gᵀ (Σ_t g_rt a_{rows[r]}tᵀ) Q_A)²` per group, elementwise (float64).

        `g [R, G, T, d_out]`, `a [B, G, T, ·]`; with `first`, `a` is already rotated
        (`a Q_A`) and `g` is rotated here. Memory-bounded chunks of rows.
        """
        q_g, q_a = self._bases[j]
        if first:
            g = g @ q_g
        if first and g.shape[2] == 1:
            return torch.einsum("bgo,bgi->goi", g[:, :, 0] ** 2, a[rows, :, 0] ** 2).double()
        per = g.shape[1] * g.shape[3] * a.shape[3] * g.element_size()
        step = max(1, self.settings.chunk_bytes // per)
        total = torch.zeros((), dtype=torch.float64, device=g.device)
        for lo in range(0, len(g), step):
            m = torch.einsum("bgto,bgti->bgoi", g[lo : lo + step], a[rows[lo : lo + step]])
            if not first:
                m = q_g.mT @ m @ q_a
            total = total + (m**2).sum(0).double()
        return total

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
        v = _grouped(layer.from_flat(vectors.to(self.dtype)), layer)  # [m, G, d_out, d_in]
        rotated = q_g.mT @ v @ q_a
        scaled = rotated / (self._eigenvalues[j] + self.damping).to(self.dtype)
        out = q_g @ scaled @ q_a.mT
        if self.ranks[block] != (layer.d_out, layer.d_in):
            # The factors' null spaces have eigenvalue 0: (0 + λ)⁻¹ there.
            out += (v - q_g @ rotated @ q_a.mT) / self.damping
        return layer.to_flat(out if layer.groups > 1 else out.squeeze(1))

    def eigenvalue_spectrum(self, block: int) -> Tensor:
        """The corrected eigenvalues `Λ [r_out, r_in]` of a Linear/Conv block (float64).

        A grouped convolution has one set per group: `[G, r_out, r_in]`.
        """
        if block not in self.layers:
            raise ValueError(f"block {block} is not a Linear/Conv block with EK-FAC factors.")
        values = self._eigenvalues[list(self.layers).index(block)]
        return values if self.layers[block].groups > 1 else values[0]


def _grouped(t: Tensor, layer: StructuredLayer) -> Tensor:
    """Pieces or matrices with a group axis at dim 1 (added for an ungrouped layer)."""
    return t if layer.groups > 1 else t.unsqueeze(1)


def _grouped_all(pieces: list[Tensor], layers: list[StructuredLayer]) -> list[Tensor]:
    return [_grouped(t, s) for t, s in zip(pieces, layers, strict=True)]


def _logit_hessian(loss, logits: Tensor, labels: Tensor) -> Tensor:
    """Each example's loss Hessian in the logits, `Tensor [B, C, C]` (float64, symmetric).

    Cross-entropy without class weights (label smoothing or not) has the closed form
    `diag(p) - p pᵀ`, `p` the softmax; other losses (regression, multi-label, a user's
    function, outputs of any shape flattened to C) take the loss's own output Hessian.
    """
    fn = loss.fn
    if (
        type(fn) is nn.CrossEntropyLoss
        and fn.weight is None
        and not 0 <= fn.ignore_index < logits.shape[1]
    ):
        p = torch.softmax(logits.double(), dim=1)
        return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    lam = loss.output_hessian(logits, labels).double()
    return (lam + lam.transpose(1, 2)) / 2


def _layer_blocks(model, block: Block) -> tuple[list[Block], list[slice]]:
    """Splits an all-parameter block into one block per module, with its flat slices."""
    params = dict(model.named_parameters())
    groups: dict[str, list[str]] = {}
    for name in block.param_names:
        groups.setdefault(name.rpartition(".")[0], []).append(name)
    blocks, slices, start = [], [], 0
    for module, names in groups.items():
        numel = sum(params[n].numel() for n in names)
        blocks.append(Block(module, (module,), tuple(names), numel))
        slices.append(slice(start, start + numel))
        start += numel
    return blocks, slices
