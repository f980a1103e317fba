"""Memory-bounded scoring: per-example block gradients in chunks, and preconditioned queries.

Nothing here holds `n_train x P` gradients: training batches are split into sub-batches
whose per-example gradients fit `chunk_bytes`, and Linear/Conv2d gradients are formed from
their `inputs x output-gradients` pieces one sub-batch at a time. The test side is held as
preconditioned gradients `[n_test, P]`, or, with `query_rank=r`, as a rank-r factorisation
per test example and layer, `r (d_out + d_in)` numbers instead of `d_out d_in`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from .._utils.losses import ExampleLoss
from ._blocks import Block
from ._gradients import GradientEngine
from ._taps import StructuredLayer, Taps, structured_layer

GRAD_CHUNK_BYTES = 256 * 2**20
# query_rank's randomized SVD draws from its own generator with this seed: scores do not
# depend on, nor change, the caller's global RNG, and a resumed run gets the same factors.
QUERY_SEED = 0

InverseHVP = Callable[[int, Tensor], Tensor]
"""`(block, vectors [m, P]) -> (H_b + λ I)^{-1} v` per row, float64."""


class BlockGradients:
    """Per-example loss gradients of each block, produced in memory-bounded chunks.

    Args:
        model: The model (eval mode).
        loss: Per-example loss.
        engine: The gradient engine for blocks without Linear/Conv2d structure.
        blocks: The blocks whose gradients are formed.
        chunk_bytes: Largest per-example gradient chunk to form at once.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: ExampleLoss,
        engine: GradientEngine,
        blocks: list[Block],
        chunk_bytes: int = GRAD_CHUNK_BYTES,
    ) -> None:
        self.loss = loss
        self.engine = engine
        self.blocks = blocks
        self.chunk_bytes = chunk_bytes
        self.structure = [structured_layer(model, b.layers, b.param_names) for b in blocks]
        self.taps = Taps(model, [s for s in self.structure if s is not None])
        self.generic = [i for i, s in enumerate(self.structure) if s is None]
        self.itemsize = next(model.parameters()).element_size()

    def _rows(self, numel: int) -> int:
        return max(1, self.chunk_bytes // max(1, numel * self.itemsize))

    def loss_cotangent(self, logits: Tensor, labels: Tensor) -> Tensor:
        """`∂L_b / ∂logits_b`, `Tensor [B, C]`."""
        with torch.no_grad():
            return vmap(grad(self.loss.single))(logits.detach(), labels)

    def factors(
        self, inputs: tuple[Tensor, ...], labels: Tensor
    ) -> dict[int, tuple[Tensor, Tensor]]:
        """`{block: (a [B, T, d_in], g [B, T, d_out])}` for the structured blocks."""
        if not self.taps.layers:
            return {}
        logits = self.taps.forward(inputs)
        g = self.taps.output_grads(logits, self.loss_cotangent(logits, labels), retain=False)
        index = [i for i, s in enumerate(self.structure) if s is not None]
        return dict(zip(index, zip(self.taps.activations(), g, strict=True), strict=True))

    def chunks(
        self, inputs: tuple[Tensor, ...], labels: Tensor, factors: dict | None = None
    ) -> Iterator[tuple[int, slice, Tensor]]:
        """Yields `(block, rows, grads [len(rows), P_block])` covering every block and example.

        `factors` (from `factors`) replaces the structured blocks' forward and backward pass.
        """
        n = len(labels)
        factors = self.factors(inputs, labels) if factors is None else factors
        for i, (a, g) in factors.items():
            structure = self.structure[i]
            assert structure is not None  # factors exist for structured blocks only
            step = self._rows(self.blocks[i].numel)
            for lo in range(0, n, step):
                rows = slice(lo, min(n, lo + step))
                per_example = torch.einsum("...to,...ti->...oi", g[rows], a[rows])
                yield i, rows, structure.to_flat(per_example)
        yield from self.generic_chunks(inputs, labels)

    def generic_chunks(
        self, inputs: tuple[Tensor, ...], labels: Tensor
    ) -> Iterator[tuple[int, slice, Tensor]]:
        """Like `chunks`, for the blocks without Linear/Conv2d structure only."""
        n = len(labels)
        if self.generic:
            blocks = [self.blocks[i] for i in self.generic]
            step = self._rows(sum(b.numel for b in blocks))
            for lo in range(0, n, step):
                rows = slice(lo, min(n, lo + step))
                x = tuple(t[rows] for t in inputs)
                for i, flat in zip(
                    self.generic, self.engine.block_grads(x, labels[rows], blocks), strict=True
                ):
                    yield i, rows, flat


class Queries:
    """Preconditioned test gradients of one block: dense `[m, P]`, or rank-r per example.

    Args:
        structure: The block's Linear/Conv2d structure (needed for a rank).
        rank: Keep a rank-`rank` truncated SVD of each example's `[d_out, d_in]` matrix
            (not for grouped convolutions, whose queries stay dense: `[G, d_out, d_in]`
            per example is small).
    """

    def __init__(self, structure: StructuredLayer | None, rank: int | None) -> None:
        self.structure = structure
        low_rank = structure is not None and structure.groups == 1
        self.rank = rank if low_rank else None
        self.n = 0
        self.dense: list[Tensor] = []
        self.left: list[Tensor] = []
        self.right: list[Tensor] = []

    def add(self, rows: Tensor) -> None:
        """Appends preconditioned gradients `[b, P]`."""
        self.n += len(rows)
        if self.rank is None:
            self.dense.append(rows)
            return
        assert self.structure is not None  # a rank is kept for structured blocks only
        for m in self.structure.from_flat(rows):
            r = min(self.rank, *m.shape)
            u, s, v = _svd_lowrank(m, r) if r < min(m.shape) else _svd(m)
            self.left.append((u[:, :r] * s[:r]).T)
            self.right.append(v[:, :r].T)

    def finish(self) -> None:
        """Stacks the low-rank factors; dense rows stay in the chunks they came in.

        A concatenation would briefly hold them twice: gigabytes for a VGG classifier.
        """
        if self.rank is not None:
            self.left, self.right = [torch.stack(self.left)], [torch.stack(self.right)]

    def score(self, grads: Tensor) -> Tensor:
        """`Tensor [m, b]` against flat per-example gradients `[b, P]`."""
        if self.rank is None:
            g = grads.to(self.dense[0].dtype).T
            return torch.cat([q @ g for q in self.dense])
        assert self.structure is not None  # a rank is kept for structured blocks only
        return self.score_factors(None, None, self.structure.from_flat(grads))

    def from_pieces(self, a: Tensor) -> bool:
        """Whether dense queries score a Linear/Conv block faster from its pieces `a`, `g`.

        With one position per example (T = 1: a Linear layer, a convolution on a 1x1 map)
        `gᵀ Q a` reads each query once per batch, where flat per-example gradients read
        all queries once per example (VGG's 102 M-parameter classifier.0: one example per
        256 MiB chunk).
        """
        s = self.structure
        if self.rank is not None or s is None or s.groups != 1:
            return False
        t, m = a.shape[1], self.n
        return t * m <= t + m

    def score_pieces(self, a: Tensor, g: Tensor, chunk_bytes: int) -> Tensor:
        """`Tensor [m, B]`: `Σ_t g_btᵀ Q_m a_bt` from `a [B, T, d_in]` and `g [B, T, d_out]`."""
        s = self.structure
        assert s is not None and self.rank is None  # dense queries of a structured block
        dtype = self.dense[0].dtype
        a, g = a.to(dtype), g.to(dtype)
        parts = []
        for q in self.dense:
            n_w = s.d_out * (s.d_in - (s.bias is not None))
            w = q[:, :n_w].unflatten(-1, (s.d_out, -1))  # a view of the weight part
            step = max(1, chunk_bytes // max(1, len(q) * a.shape[1] * s.d_out * q.element_size()))
            rows = []
            for lo in range(0, len(a), step):
                ai, gi = a[lo : lo + step], g[lo : lo + step]
                qa = torch.einsum("moi,bti->mbto", w, ai[..., : w.shape[-1]])
                if s.bias is not None:  # the constant-1 column of `a` meets the bias part
                    qa += q[:, None, None, n_w:] * ai[None, :, :, -1:]
                rows.append(torch.einsum("mbto,bto->mb", qa, gi))
            parts.append(torch.cat(rows, dim=1))
        return torch.cat(parts)

    def score_factors(self, a: Tensor | None, g: Tensor | None, dense: Tensor | None = None):
        """`Tensor [m, B]` from a Linear/Conv2d's `a [B, T, d_in]` and `g [B, T, d_out]`."""
        left, right = self.left[0], self.right[0]
        if dense is not None:
            return torch.einsum("mro,boi,mri->mb", left, dense.to(left.dtype), right)
        assert a is not None and g is not None  # the factors, when no dense gradient is given
        ga = torch.einsum("bto,mro->mbtr", g.to(left.dtype), left)
        ar = torch.einsum("bti,mri->mbtr", a.to(left.dtype), right)
        return (ga * ar).sum((2, 3))


def _svd_lowrank(m: Tensor, r: int, niter: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    """`torch.svd_lowrank(m, q=r, niter)`'s randomized range finder, seeded locally.

    Returns `u [a, r]`, `s [r]`, `v [b, r]` with `m ≈ u diag(s) vᵀ`.
    """
    gen = torch.Generator(device=m.device).manual_seed(QUERY_SEED)
    omega = torch.randn(m.shape[1], r, generator=gen, dtype=m.dtype, device=m.device)
    q = torch.linalg.qr(m @ omega).Q
    for _ in range(niter):
        q = torch.linalg.qr(m.T @ q).Q
        q = torch.linalg.qr(m @ q).Q
    ub, s, vh = torch.linalg.svd(q.T @ m, full_matrices=False)
    return q @ ub, s, vh.T


def _svd(m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    return u, s, vh.T


def score_batch(
    source: BlockGradients,
    queries: list[Queries],
    inputs: tuple[Tensor, ...],
    labels: Tensor,
    factors: dict[int, tuple[Tensor, Tensor]] | None = None,
) -> Tensor:
    """Scores `Tensor [n_blocks, n_test, B]` (float64) of one training batch.

    `factors` (as `BlockGradients.factors` returns them) replaces the structured blocks'
    forward and backward pass.
    """
    out = torch.zeros(
        len(queries), queries[0].n, len(labels), dtype=torch.float64, device=labels.device
    )
    factors = source.factors(inputs, labels) if factors is None else dict(factors)
    for i in list(factors):
        a, g = factors[i]
        if queries[i].rank is not None:
            out[i] = _factor_scores(queries[i], a, g, source)
        elif queries[i].from_pieces(a):
            out[i] = queries[i].score_pieces(a, g, source.chunk_bytes)
        else:
            continue
        del factors[i]
    for i, rows, grads in source.chunks(inputs, labels, factors):
        out[i, :, rows] = queries[i].score(grads)
    return out


def _factor_scores(query: Queries, a: Tensor, g: Tensor, source: BlockGradients) -> Tensor:
    m, r = query.left[0].shape[:2]
    step = max(1, source.chunk_bytes // max(1, 2 * m * r * a.shape[1] * source.itemsize))
    parts = [
        query.score_factors(a[lo : lo + step], g[lo : lo + step]) for lo in range(0, len(a), step)
    ]
    return torch.cat(parts, dim=1)


def precondition(
    source: BlockGradients,
    batches: Iterable,
    inverse_hvp: InverseHVP,
    rank: int | None,
) -> list[Queries]:
    """Preconditioned test gradients of every block."""
    queries = [Queries(s, rank) for s in source.structure]
    for inputs, labels in batches:
        for i, _, grads in source.chunks(inputs, labels):
            queries[i].add(inverse_hvp(i, grads))
    for q in queries:
        q.finish()
    return queries


def preconditioned_scores(
    source: BlockGradients,
    inverse_hvp: InverseHVP,
    test_batches: Iterable,
    train_batches: Iterable,
    rank: int | None,
) -> Iterator[Tensor]:
    """Scores `Tensor [n_blocks, n_test, B]` (float64) per training batch.

    The test side is preconditioned at the call; the training batches `(inputs, labels,
    kept pieces or None)` are scored as the returned iterator is consumed.
    """
    queries = precondition(source, test_batches, inverse_hvp, rank)
    return (score_batch(source, queries, x, y, kept) for x, y, kept in train_batches)


def preconditioned_self_scores(
    source: BlockGradients, inverse_hvp: InverseHVP, batches: Iterable
) -> Tensor:
    """Self-influence `gᵀ (H_b + λ I)^{-1} g` of each example, `Tensor [n_blocks, n]` (float64)."""
    out = []
    for x, y in batches:
        scores = torch.zeros(len(source.blocks), len(y), dtype=torch.float64, device=y.device)
        for i, rows, g in source.chunks(x, y):
            q = inverse_hvp(i, g)
            scores[i, rows] = (q * g.to(q.dtype)).sum(-1)
        out.append(scores)
    return torch.cat(out, dim=1)
