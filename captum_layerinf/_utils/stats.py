"""Agreement statistics shared by the package, its tests, tutorials and benchmarks."""

from __future__ import annotations

import torch
from torch import Tensor


def rel_err(a: Tensor, b: Tensor) -> float:
    """`max |a - b| / max |b|`: a norm-wise relative error that ignores near-zero entries."""
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two tensors' entries, in float64 (0 where one is constant)."""
    a = torch.as_tensor(a).detach().flatten().double()
    b = torch.as_tensor(b).detach().flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-300))


def ranks(t: Tensor) -> Tensor:
    """Ranks 0..n-1 of a tensor's entries `[n]` (float64), tied entries sharing their mean rank."""
    t = torch.as_tensor(t).detach().flatten()
    order = t.argsort(stable=True)
    r = torch.empty(len(t), dtype=torch.float64)
    r[order] = torch.arange(len(t), dtype=torch.float64)
    values, inverse = torch.unique(t, return_inverse=True)
    total = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, r)
    count = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(r))
    return (total / count)[inverse]


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two tensors' entries (ties get their mean rank)."""
    return pearson(ranks(a), ranks(b))
