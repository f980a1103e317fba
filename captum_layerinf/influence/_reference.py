"""The default reference of `LayerInfluence.check`: exact, Woodbury Gauss-Newton or CG per block.

Meant for the curvature of a small training subset (m examples), where the damped
Gauss-Newton block of a Linear/Conv2d layer, `G = (1/m) Uᵀ U` with `U [m k, P]`, is inverted
exactly by the Woodbury identity:

    (G + λ I)⁻¹ v = (v - Uᵀ (m λ I + U Uᵀ)⁻¹ U v) / λ

Row `(i, c)` of U is `√μ_ic (J_iᵀ e_ic)`: the per-example gradient of the logits along the
c-th eigen-direction of the loss Hessian in the logits, `Λ_i = Σ_c μ_ic e_ic e_icᵀ`, from
one reverse pass per direction (no forward-mode AD).

The products with U run in the model's dtype (float32 for a float32 model: half the time of
float64, and no copy); their small results, the Gram matrix `U Uᵀ` and its Cholesky solve
are float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._utils.tensors import tensor_sum
from ._taps import Taps, structured_layer
from .strategies import Block, CurvatureStrategy, FitContext, make_strategy

REFERENCE_DENSE_BYTES = 128 * 2**20
"""Blocks whose dense float64 matrix fits this are built exactly."""
REFERENCE_ROWS_BYTES = 512 * 2**20
"""Largest Woodbury factor `U [m k, P]` kept in memory; larger blocks use CG."""
REFERENCE_TOTAL_BYTES = 2**30
"""What the references of one group of blocks may hold together (see `plan_groups`)."""


@dataclass(frozen=True)
class _NoSettings:
    """The reference has no settings."""


def loss_directions(loss, logits: Tensor, labels: Tensor) -> list[Tensor]:
    """Cotangents whose outer products sum to each example's loss Hessian in its outputs.

    Each is shaped like `logits` (`[B, C]`, or `[B]` for one output per example).
    """
    with torch.no_grad():
        lam = loss.output_hessian(logits, labels).double()
        values, vectors = torch.linalg.eigh((lam + lam.transpose(1, 2)) / 2)
        values = values.clamp_min(0)
        keep = values > values.amax(1, keepdim=True) * 1e-12
        roots = vectors * (values * keep).sqrt()[:, None, :]
        cols = [j for j in range(values.shape[1]) if keep[:, j].any()]
        return [roots[:, :, j].to(logits.dtype).view_as(logits) for j in cols]


class GaussNewtonWoodbury(CurvatureStrategy):
    """Exact inverse of the damped Gauss-Newton block of Linear/Conv2d layers (Woodbury).

    A block keeps `U` either as rows `[m k, P]`, or, where that is cheaper, as the pieces
    of each row, `g [m k, T, d_out]` and the activations `a [m, T, d_in]` of its example
    (row `(i, c)` is `Σ_t g_ict a_itᵀ`): with few positions T (Linear layers, the small
    feature maps of the last convolutions) the Gram matrix `U Uᵀ` then costs
    `(m k)² T² (d_in + d_out)` instead of `(m k)² d_in d_out`.
    """

    name = "gauss-newton"
    Settings = _NoSettings

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """One forward and k reverse passes per batch; keeps `U` and `(m λ I + U Uᵀ)`'s factor."""
        self.blocks = blocks
        found = [structured_layer(ctx.model, b.layers, b.param_names) for b in blocks]
        self.layers = [s for s in found if s is not None]
        assert len(self.layers) == len(found)  # chosen for Linear/Conv2d blocks only
        taps = Taps(ctx.model, self.layers)
        rows: list[list[Tensor]] = [[] for _ in blocks]
        acts_kept: list[list[Tensor]] = [[] for _ in blocks]
        examples: list[list[Tensor]] = [[] for _ in blocks]
        self.pieces: list[bool] = []  # per block, chosen on the first batch
        seen = 0
        for inputs, labels in ctx.batches("Gauss-Newton reference"):
            logits = taps.forward(inputs)
            acts = taps.activations()
            dirs = loss_directions(ctx.loss, logits, labels)
            if not self.pieces:
                rows_total = ctx.n_train * len(dirs)
                self.pieces = [
                    _use_pieces(s, a, rows_total, ctx.n_train)
                    for s, a in zip(self.layers, acts, strict=True)
                ]
            index = torch.arange(seen, seen + len(labels), device=labels.device)
            for j, d in enumerate(dirs):
                grads = taps.output_grads(logits, d, retain=j < len(dirs) - 1)
                for b, (a, g) in enumerate(zip(acts, grads, strict=True)):
                    if self.pieces[b]:
                        rows[b].append(g.detach())
                        examples[b].append(index)
                    else:
                        per_example = torch.einsum("...to,...ti->...oi", g, a)
                        rows[b].append(self.layers[b].to_flat(per_example).detach())
            for b, a in enumerate(acts):
                if self.pieces[b]:
                    acts_kept[b].append(a.detach())
            seen += len(labels)
        ctx.check_count(seen)
        self.u = [torch.cat(r) for r in rows]
        self.a = [torch.cat(a) if a else None for a in acts_kept]
        self.rows_of = [torch.cat(e) if e else None for e in examples]
        self.factors = []
        for b, u in enumerate(self.u):
            gram = self._piece_gram(b) if self.pieces[b] else _gram(u)
            eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
            self.factors.append(torch.linalg.cholesky(gram + ctx.n_train * self.damping * eye))

    def _pieces_of(self, b: int) -> tuple[Tensor, Tensor, Tensor]:
        """Block `b`'s pieces: output gradients `g`, activations `a`, row -> example `ex`."""
        a, ex = self.a[b], self.rows_of[b]
        assert a is not None and ex is not None  # kept for the blocks stored as pieces
        return self.u[b], a, ex

    def _piece_gram(self, b: int) -> Tensor:
        """`U Uᵀ` from the pieces, into float64, by the cheaper of two routes.

        Products of the pieces (`_gram_of_products`), or the rows formed from them a slice
        of columns at a time (`_gram_of_rows`: rows that would not fit at once, e.g. the
        middle convolutions of a ResNet at 224x224, 13x fewer operations there).
        """
        g, a, _ = self._pieces_of(b)
        if products_cheaper(self.layers[b], g.shape[1], len(g), len(a)):
            return self._gram_of_products(b)
        return self._gram_of_rows(b)

    def _gram_of_rows(self, b: int) -> Tensor:
        """`U Uᵀ` as `Σ_slices U_s U_sᵀ`, each `U_s` (some output channels) formed from pieces.

        The rows of an example are laid out `[n, k, ...]` (k its most rows; missing ones
        are zero), so that a slice of all rows is one batched product `g_eᵀ a_e` per example.
        """
        g, a, ex = self._pieces_of(b)
        n, (r, t, d_out), d_in = len(a), g.shape, a.shape[-1]
        counts = torch.bincount(ex, minlength=n)
        k = int(counts.max())
        order = torch.argsort(ex, stable=True)
        slot = torch.empty_like(ex)
        slot[order] = torch.arange(r, device=ex.device) - (counts.cumsum(0) - counts)[ex[order]]
        width = max(1, PIECE_CHUNK_ELEMENTS // max(1, n * k * max(t, d_in)))
        padded = torch.zeros(n * k, n * k, dtype=torch.float64, device=g.device)
        for lo in range(0, d_out, width):
            part = g[:, :, lo : lo + width]
            grid = torch.zeros(n, k, part.shape[-1], t, dtype=g.dtype, device=g.device)
            grid[ex, slot] = part.transpose(1, 2)
            u = torch.bmm(grid.flatten(1, 2), a).reshape(n * k, -1)  # [n k, width d_in]
            padded += (u @ u.T).double()
        where = ex * k + slot
        return padded[where][:, where]

    def _gram_of_products(self, b: int) -> Tensor:
        """`U Uᵀ` from the pieces: `Σ_{t,s} (g_rt · g_r's)(a_rt · a_r's)`, into float64.

        The k rows of an example share its activations: rows are taken in order of their
        example, so that a chunk of rows needs the activation products of only its own few
        examples (k² times fewer than one per pair of rows), and the lower triangle is
        the upper one's transpose.
        """
        g, a, ex = self._pieces_of(b)
        order = torch.argsort(ex, stable=True)
        g, ex = g[order], ex[order]
        n, t = g.shape[:2]
        step = max(1, int((PIECE_CHUNK_ELEMENTS / t**2) ** 0.5))
        out = torch.empty(n, n, dtype=torch.float64, device=g.device)
        for lo in range(0, n, step):
            gi, (ai, inv_i) = g[lo : lo + step], _examples(a, ex[lo : lo + step])
            for lo2 in range(lo, n, step):
                gj, (aj, inv_j) = g[lo2 : lo2 + step], _examples(a, ex[lo2 : lo2 + step])
                gg = torch.einsum("ito,juo->itju", gi, gj)
                aa = torch.einsum("itd,jud->itju", ai, aj)[inv_i][:, :, inv_j]
                block = (gg * aa).sum((1, 3)).double()
                out[lo : lo + step, lo2 : lo2 + step] = block
                out[lo2 : lo2 + step, lo : lo + step] = block.T
        back = torch.empty_like(order)
        back[order] = torch.arange(n, device=order.device)
        return out[back][:, back]

    def _u_times(self, b: int, v: Tensor) -> Tensor:
        """`U V` `[r, n]` for flat vectors `v [n, P]`, returned in float64.

        From the pieces, `(U v)_r = Σ_t g_rtᵀ M a_{ex(r)t}`: `M a` once per example (its k
        rows share it), then one dot product per row and position.
        """
        if not self.pieces[b]:
            return _matmul(self.u[b], v.T)
        g, a, ex = self._pieces_of(b)
        layer, flat = self.layers[b], v.to(g.dtype)
        # Views of the weight [n, d_out, d_in (- 1)] and bias [n, d_out] parts: no copy.
        if layer.bias is None:
            m, bias = layer.from_flat(flat), None
        else:
            m, bias = layer.flat_views(flat)
        out = torch.empty(len(g), len(v), dtype=torch.float64, device=g.device)
        step = max(1, PIECE_CHUNK_ELEMENTS // max(1, a.shape[1] * len(v) * m.shape[1]))
        for lo in range(0, len(a), step):
            ai = a[lo : lo + step]
            ma = torch.einsum("noi,eti->etno", m, ai[..., : m.shape[-1]])  # [e, T, n, d_out]
            if bias is not None:  # the constant-1 column of `a` meets the bias
                ma += ai[..., -1, None, None] * bias
            rows = ((ex >= lo) & (ex < lo + step)).nonzero().flatten()
            part = torch.einsum("rto,rtno->rn", g[rows], ma[ex[rows] - lo])
            out[rows] = part.double()
        return out

    def _subtract_u_transposed_times(self, b: int, z: Tensor, out: Tensor) -> None:
        """`out -= Uᵀ Z` for `z [r, n]` and flat vectors `out [n, P]`; products in U's dtype.

        From the pieces, each vector's `[d_out, d_in]` matrix is subtracted from views of
        `out` (no flat copy of it: 0.4 GB per vector on vgg11_bn's `classifier.0`).
        """
        if not self.pieces[b]:
            u, cols = self.u[b], 2**20
            z = z.to(u.dtype)
            for lo in range(0, u.shape[1], cols):
                out[:, lo : lo + cols] -= (u[:, lo : lo + cols].T @ z).T
            return
        g, a, ex = self._pieces_of(b)
        layer = self.layers[b]
        z = z.to(g.dtype)
        for k in range(z.shape[1]):
            # Rows of one example share its activations: sum their weighted g first.
            gz = torch.zeros(len(a), *g.shape[1:], dtype=g.dtype, device=g.device)
            gz.index_add_(0, ex, g * z[:, k, None, None])
            m = gz.flatten(0, 1).T @ a.flatten(0, 1)  # [d_out, d_in]
            if layer.bias is None:
                out[k] -= m.flatten()
            else:
                weight, bias = layer.flat_views(out[k])
                weight -= m[:, :-1]
                bias -= m[:, -1]

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """`(G_b + λ I)^{-1} v` for each row of `vectors [n, P]`, float64.

        One float64 copy of `v`, updated in place (vgg11_bn's `classifier.0`: 0.8 GB per
        vector); the products with U read `v` in U's dtype.
        """
        z = torch.cholesky_solve(self._u_times(block, vectors), self.factors[block])
        out = vectors.to(torch.float64, copy=True)
        self._subtract_u_transposed_times(block, z, out)
        return out.div_(self.damping)


PIECE_CHUNK_ELEMENTS = 2**22
"""Largest intermediate (float64 elements) formed at once from the pieces."""


def _examples(a: Tensor, ex: Tensor) -> tuple[Tensor, Tensor]:
    """The activations of the examples in sorted `ex`, once each, and each row's index into them."""
    unique, inverse = torch.unique_consecutive(ex, return_inverse=True)
    return a[unique], inverse


def _use_pieces(layer, a: Tensor, rows: int, n: int) -> bool:
    """Whether to keep a block's `U` as pieces: cheaper, or its rows would not fit.

    Only ungrouped layers; `a [B, T, d_in]` are the activations of the first batch.
    """
    if layer.groups != 1:
        return False
    too_big = rows * layer.d_in * layer.d_out * a.element_size() > REFERENCE_ROWS_BYTES
    return too_big or pieces_cheaper(layer, a.shape[-2], rows, n)


def pieces_cheaper(layer, positions: int, rows: int, n: int) -> bool:
    """Whether pieces cost fewer operations than rows, for `rows` rows of `n` examples.

    Rows: forming them and their Gram matrix (`_rows_gram_ops`) and products with a few
    queries (`QUERIES r P` each way). Pieces: the cheaper Gram route of `_piece_gram`,
    and the queries once per example (`QUERIES n T P` each way).
    """
    t, p = positions, layer.d_in * layer.d_out
    as_rows = _rows_gram_ops(layer, t, rows) + 2 * QUERIES * rows * p
    gram = min(_products_gram_ops(layer, t, rows, n), _rows_gram_ops(layer, t, rows))
    return gram + 2 * QUERIES * n * t * p < as_rows


def products_cheaper(layer, positions: int, rows: int, n: int) -> bool:
    """Whether the Gram matrix costs fewer operations from products of pieces than rows."""
    return _products_gram_ops(layer, positions, rows, n) < _rows_gram_ops(layer, positions, rows)


def _rows_gram_ops(layer, t: int, r: int) -> int:
    """Forming `r` rows from pieces (`r T P`) and their Gram matrix (`r² P`)."""
    p = layer.d_in * layer.d_out
    return r * t * p + r**2 * p


def _products_gram_ops(layer, t: int, r: int, n: int) -> int:
    """Products of output gradients (`(r T)² d_out`) and of activations (`(n T)² d_in`)."""
    return (r * t) ** 2 * (layer.d_out + 1) + (n * t) ** 2 * layer.d_in


QUERIES = 4
"""Vectors a reference solves for, in the cost model of `pieces_cheaper` (`check`'s n_test)."""


def piece_bytes(layer, positions: int, rows: int, n: int, itemsize: int) -> int:
    """Bytes of a block's pieces: `g [rows, T, d_out]` and `a [n, T, d_in]`."""
    return positions * (rows * layer.d_out + n * layer.d_in) * itemsize


def _gram(u: Tensor, cols: int = 2**20) -> Tensor:
    """`U Uᵀ` in U's dtype, a slice of columns at a time, returned in float64."""
    return tensor_sum(
        (u[:, lo : lo + cols] @ u[:, lo : lo + cols].T).double()
        for lo in range(0, u.shape[1], cols)
    )


def _matmul(u: Tensor, m: Tensor, cols: int = 2**20) -> Tensor:
    """`U M` for `M [P, n]`, in U's dtype, returned in float64."""
    return tensor_sum(
        (u[:, lo : lo + cols] @ m[lo : lo + cols].to(u.dtype)).double()
        for lo in range(0, u.shape[1], cols)
    )


class ReferenceStrategy(CurvatureStrategy):
    """The default reference of `check`, chosen per block (`self.kinds[b]` says which).

    Woodbury Gauss-Newton (Linear/Conv2d whose factor fits); else exact if the dense block
    is small; else CG. Blocks the checked strategy solves exactly are their own reference
    (`own_reference`) and never reach this.

    Args:
        damping: λ.
        kinds: The kind of each block, from `plan` on these blocks (None: planned at `fit`).
    """

    name = "reference"
    Settings = _NoSettings

    def __init__(self, damping: float, kinds: list[str] | None = None) -> None:
        super().__init__(_NoSettings(), damping)
        self.given = kinds

    def _n_directions(self, ctx: FitContext) -> int:
        inputs, labels = ctx.first_batch()
        logits = ctx.engine.outputs(inputs, labels, "train_dataset")
        return len(loss_directions(ctx.loss, logits, labels))

    def _positions(self, ctx: FitContext, blocks: list[Block]) -> dict[int, int]:
        """Positions T per structured block (rows of `a [B, T, d_in]`), from one example."""
        found = {
            i: s
            for i, b in enumerate(blocks)
            if (s := structured_layer(ctx.model, b.layers, b.param_names)) is not None
        }
        taps = Taps(ctx.model, list(found.values()))
        inputs, _ = ctx.first_batch()
        with torch.no_grad():
            taps.forward(tuple(x[:1] for x in inputs))
        acts = taps.activations()
        return {i: a.shape[-2] for i, a in zip(found, acts, strict=True)}

    def plan(self, ctx: FitContext, blocks: list[Block]) -> list[tuple[str, int]]:
        """`(kind, bytes the fit holds)` per block, without fitting."""
        self.blocks = blocks
        itemsize = next(ctx.model.parameters()).element_size()
        rows, positions = None, None
        out = []
        for i, b in enumerate(blocks):
            dense = 8 * b.numel**2
            layer = structured_layer(ctx.model, b.layers, b.param_names)
            if layer is not None:
                rows = rows if rows is not None else ctx.n_train * self._n_directions(ctx)
                need = rows * b.numel * itemsize
                if layer.groups == 1:
                    positions = positions or self._positions(ctx, blocks)
                    t = positions[i]
                    cheaper = pieces_cheaper(layer, t, rows, ctx.n_train)
                    if need > REFERENCE_ROWS_BYTES or cheaper:  # as `_use_pieces` decides
                        need = piece_bytes(layer, t, rows, ctx.n_train, itemsize)
                if need <= REFERENCE_ROWS_BYTES:
                    out.append(("gauss-newton", need))
                    continue
            out.append(("exact", dense) if dense <= REFERENCE_DENSE_BYTES else ("cg", 0))
        return out

    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Chooses and fits the reference of every block."""
        self.blocks = blocks
        self.kinds = self.given or [kind for kind, _ in self.plan(ctx, blocks)]
        self.parts: dict[str, tuple[CurvatureStrategy, list[int]]] = {}
        for kind in dict.fromkeys(self.kinds):
            own = [i for i, k in enumerate(self.kinds) if k == kind]
            part = (
                GaussNewtonWoodbury(_NoSettings(), self.damping)
                if kind == "gauss-newton"
                else make_strategy(kind, self.damping)
            )
            part.fit(ctx, [blocks[i] for i in own])
            self.parts[kind] = (part, own)
        self.route = [(k, self.kinds[:i].count(k)) for i, k in enumerate(self.kinds)]

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """The block's reference `(H_b + λ I)^{-1} v`, float64."""
        kind, local = self.route[block]
        return self.parts[kind][0].inverse_hvp(local, vectors)


def own_reference(strategy: CurvatureStrategy, model, blocks: list[Block]) -> list[bool]:
    """Per block, whether `strategy` is its own reference there.

    Where it solves the block exactly (`CurvatureStrategy.exact_blocks`: its damped
    Hessian, or its Gauss-Newton block, which is this reference's own choice for larger
    Linear/Conv2d layers) and the dense block is small enough to be the reference's exact
    choice, its scores on the same data are the reference's: `check` fits neither there.
    """
    exact = strategy.exact_blocks(model, blocks)
    return [
        e and 8 * b.numel**2 <= REFERENCE_DENSE_BYTES for e, b in zip(exact, blocks, strict=True)
    ]


def plan_groups(plan: list[tuple[str, int]], budget: int | None = None) -> list[list[int]]:
    """Consecutive groups of blocks whose references hold at most `budget` bytes together.

    `check` fits and scores one group at a time, so that a deep network's references (one
    Woodbury factor per layer: 13.6 GiB for densenet121's 120 layers) are never held at
    once. A block larger than `budget` (default `REFERENCE_TOTAL_BYTES`) is a group alone.
    """
    budget = REFERENCE_TOTAL_BYTES if budget is None else budget
    groups: list[list[int]] = []
    held = 0
    for i, (_, need) in enumerate(plan):
        if not groups or (held > 0 and held + need > budget):
            groups.append([])
            held = 0
        groups[-1].append(i)
        held += need
    return groups
