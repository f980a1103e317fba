"""EK-FAC's pieces: Kronecker factors, logit-curvature directions, rotated second moments."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from .._taps import StructuredLayer
from .base import Block

# Factors at most this wide are always decomposed in float64.
EIGH_FLOAT64_DIM = 2048


class KroneckerFactor:
    """`Σ x xᵀ` over rows x per group: dense `[G, d, d]`, or the rows themselves.

    With one group, the rows are kept while they are few: at most half the dimension
    (their span is then found by an SVD of the rows, far cheaper than the dense `eigh`),
    or, for factors wider than `max_dense_dim`, at most the dimension. `rows_ok=False`
    (factors summed over processes) makes every factor dense from the start.
    """

    def __init__(
        self, dim: int, max_dense_dim: int, device: torch.device, groups: int, rows_ok: bool = True
    ) -> None:
        self.dim = dim
        wide = dim > max_dense_dim
        self.max_rows = dim if wide else dim // 2
        dense = groups > 1 or (not wide and not rows_ok)
        self.dense: Tensor | None = (
            torch.zeros(groups, dim, dim, dtype=torch.float64, device=device) if dense else None
        )
        self.wide = wide
        self.rows: list[Tensor] = []
        self.n_rows = 0

    def add(self, x: Tensor) -> None:
        """Adds rows `x [G, n, d]`."""
        if self.dense is not None:
            self.dense += (x.transpose(1, 2) @ x).double()
            return
        self.rows.append(x[0])
        self.n_rows += x.shape[1]
        if self.n_rows > self.max_rows:
            rows = torch.cat(self.rows)
            # Too many rows: dense, in float64 (a wide factor: in the rows' dtype, to bound
            # memory).
            rows = rows if self.wide else rows.double()
            self.dense, self.rows = (rows.T @ rows)[None], []

    def eigenbasis(self, dtype: torch.dtype) -> Tensor:
        """Orthonormal eigenvectors `[G, dim, r]`: all of them, or a basis of the rows' span.

        Factors wider than `EIGH_FLOAT64_DIM` are decomposed in `dtype` (the model's): a
        float32 basis is orthonormal to ~1e-6, plenty for a preconditioner, at a fraction
        of float64's time.
        """
        if self.dense is None:
            return _row_basis(torch.cat(self.rows).double())
        # Scaled to unit trace: the eigenvectors are the same, the numbers tamer.
        trace = self.dense.diagonal(dim1=1, dim2=2).sum(1).clamp_min(1e-300)
        m = self.dense / trace[:, None, None]
        if self.dim > EIGH_FLOAT64_DIM and dtype != torch.float64:
            try:
                return torch.linalg.eigh(m.to(dtype))[1]
            except torch.linalg.LinAlgError:
                pass  # Rank-deficient factors can defeat float32; float64 copes.
        return _symmetric_eigenvectors(m.double())


def _symmetric_eigenvectors(m: Tensor) -> Tensor:
    """Eigenvectors of symmetric positive semi-definite `m [G, d, d]`, by columns.

    LAPACK's `eigh` can fail to converge on a rank-deficient factor with many repeated
    zero eigenvalues (a densenet121 factor of dimension 1,152 and rank 73, in float64);
    the left singular vectors of such a matrix are its eigenvectors, from another algorithm.
    """
    try:
        return torch.linalg.eigh(m)[1]
    except torch.linalg.LinAlgError:
        return torch.linalg.svd(m)[0]


def _row_basis(rows: Tensor) -> Tensor:
    """An orthonormal basis `[1, dim, r]` of the span of `rows [n, dim]` (float64).

    From the eigenvectors of the rows' Gram matrix: `R = U S Vᵀ` gives `V = Rᵀ U S⁻¹`, one
    matrix product and an `n x n` `eigh`, several times faster than an SVD of the rows
    (2.7 s against 7.8 s for 2,304 x 4,096 rows on 2 cores). Directions whose singular
    value is below `ROW_BASIS_RTOL` of the largest are left to the null space (factor
    eigenvalue 0, as the dense decomposition gives them to rounding); above it the basis
    is orthonormal to about `1e-16 / ROW_BASIS_RTOL**2`.
    """
    values, vectors = torch.linalg.eigh(rows @ rows.T)
    keep = values > values.max().clamp_min(1e-300) * ROW_BASIS_RTOL**2
    basis = rows.T @ (vectors[:, keep] / values[keep].sqrt())
    return basis.flip(-1)[None]  # largest first, as from an SVD


ROW_BASIS_RTOL = 1e-5
"""Singular values of a factor's rows below this fraction of the largest are dropped."""


def sampled_or_true_cotangents(loss, logits: Tensor, labels: Tensor, fisher: str, gen) -> Tensor:
    """`∂L/∂logits [B, C]` at the true labels ("empirical") or labels drawn ("sampled")."""
    if fisher == "sampled":
        if not loss.class_indices:
            raise ValueError(
                "EKFACSettings(fisher='sampled') needs a class-index loss such as "
                "cross-entropy; use fisher='expected'."
            )
        probs = torch.softmax(logits.double(), dim=1).cpu()
        labels = torch.multinomial(probs, 1, generator=gen).flatten().to(labels.device)
    return vmap(grad(loss.single))(logits, labels)


def expected_directions(loss, logits: Tensor, labels: Tensor, class_tol: float):
    """Cotangents `[B, K, *outputs]` whose outer products sum to each example's logit curvature.

    Returns `(cotangents, keep)`, `keep [B, K]` marking the directions each example needs
    (a prefix: directions come largest eigenvalue first).
    """
    values, vectors = torch.linalg.eigh(logit_hessian(loss, logits, labels))
    values, vectors = values.flip(1).clamp_min(0), vectors.flip(2)
    # Exact zeros (to rounding: the softmax Hessian's null vector 1) carry nothing;
    # beyond them, drop the smallest while their sum stays within class_tol.
    eps = values.shape[1] * torch.finfo(values.dtype).eps
    tail = values.flip(1).cumsum(1).flip(1)
    keep = (tail > class_tol * values.sum(1, keepdim=True)) & (values > eps * values[:, :1])
    k = max(1, int(keep.sum(1).max()))
    cot = (vectors * values.sqrt()[:, None, :]).transpose(1, 2)[:, :k]
    # Directions live in the flattened outputs; a cotangent has the outputs' shape.
    cot = cot.reshape(len(cot), k, *logits.shape[1:])
    return cot.to(logits.dtype), keep[:, :k]


def logit_hessian(loss, logits: Tensor, labels: Tensor) -> Tensor:
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


def rotates_first(basis: tuple[Tensor, Tensor], a: Tensor) -> bool:
    """Whether to rotate `a` and `g` rather than each example's `Σ_t g_t a_tᵀ`.

    Rotating the pieces costs per position t, the matrices per example: the first is
    cheaper for few positions (Linear layers, small feature maps).
    """
    (q_g, q_a), (t, d_in) = basis, a.shape[2:]
    d_out, r_out, r_in = q_g.shape[-2], q_g.shape[-1], q_a.shape[-1]
    return t == 1 or t * (d_in * r_in + d_out * r_out) <= r_out * d_in * (d_out + r_in)


def squared_moments(
    basis: tuple[Tensor, Tensor], g: Tensor, a: Tensor, rows: Tensor, first: bool, chunk: int
) -> Tensor:
    """`Σ_r (Q_Gᵀ (Σ_t g_rt a_{rows[r]}tᵀ) Q_A)²` per group, elementwise (float64).

    `g [R, G, T, d_out]`, `a [B, G, T, ·]`; with `first`, `a` is already rotated
    (`a Q_A`) and `g` is rotated here. Chunks of rows of at most `chunk` bytes.
    """
    q_g, q_a = (as_matrix(q) for q in basis)
    if first:
        g = g @ q_g
    gather: Tensor | None = rows
    if len(rows) == len(a) and bool((rows[1:] > rows[:-1]).all()):
        gather = None  # every row, in order: no gather
    if first and g.shape[2] == 1:
        a = (a if gather is None else a.index_select(0, gather))[:, :, 0]
        return torch.einsum("bgo,bgi->goi", g[:, :, 0] ** 2, a**2).double()
    per = g.shape[1] * g.shape[3] * a.shape[3] * g.element_size()
    step = max(1, chunk // per)
    total = torch.zeros((), dtype=torch.float64, device=g.device)
    for lo in range(0, len(g), step):
        part = a[lo : lo + step] if gather is None else a.index_select(0, gather[lo : lo + step])
        m = torch.einsum("bgto,bgti->bgoi", g[lo : lo + step], part)
        if not first:
            m = sandwich(q_g.mT, m, q_a)
        total = total + (m**2).sum(0).double()
    return total


def sandwich(left: Tensor, m: Tensor, right: Tensor) -> Tensor:
    """`left @ m @ right`, multiplied in the cheaper order.

    With a thin basis on one side (a low-rank factor: vgg11_bn's `classifier.0` has
    `d_in` 25,088 and a few dozen activation rows) the order decides the cost: ten times
    fewer operations there when the thin side goes first.
    """
    left, right = as_matrix(left), as_matrix(right)
    a, b = left.shape[-2:]
    c, d = right.shape[-2:]
    if a * c * (b + d) <= b * d * (a + c):
        return (left @ m) @ right
    return left @ (m @ right)


def as_matrix(q: Tensor) -> Tensor:
    """A basis `[1, d, r]` (one group) as the matrix `[d, r]`, others unchanged.

    The same products, but `[..., n, d] @ [d, r]` runs as one matrix product over all
    leading axes, where `[1, d, r]` is broadcast to a batch of small ones: the rotations
    and sandwiches of EK-FAC's second pass take about a quarter less time.
    """
    return q[0] if q.dim() == 3 and q.shape[0] == 1 else q


def grouped(t: Tensor, layer: StructuredLayer) -> Tensor:
    """Pieces or matrices with a group axis at dim 1 (added for an ungrouped layer)."""
    return t if layer.groups > 1 else t.unsqueeze(1)


def ungrouped(t: Tensor, layer: StructuredLayer) -> Tensor:
    """The inverse of `grouped`."""
    return t if layer.groups > 1 else t.squeeze(1)


def grouped_all(pieces: list[Tensor], layers: list[StructuredLayer]) -> list[Tensor]:
    return [grouped(t, s) for t, s in zip(pieces, layers, strict=True)]


def layer_blocks(model, block: Block) -> tuple[list[Block], list[slice]]:
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
