"""Agreement statistics shared by the package, its tests, tutorials and benchmarks.

`pearson`, `spearman` and `rel_err` compare two tensors' entries and return a float;
`pearson_rows` and `spearman_rows` correlate along the last dimension, batched.
"""

from __future__ import annotations

import math

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


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two tensors' entries (ties get their mean rank)."""
    a, b = torch.as_tensor(a).detach().flatten(), torch.as_tensor(b).detach().flatten()
    return pearson(average_ranks(a), average_ranks(b))


def average_ranks(values: Tensor) -> Tensor:
    """Ranks 0..n-1 along the last dimension, tied values sharing their mean rank.

    Args:
        values: `Tensor [..., n]`.

    Returns:
        `Tensor [..., n]` (float64): the smallest value gets rank 0.
    """
    v = values.double()
    order = v.argsort(dim=-1, stable=True)
    sorted_v = v.gather(-1, order)
    n = v.shape[-1]
    pos = torch.arange(n, dtype=torch.float64).expand_as(v).contiguous()
    # Start of each run of equal values, carried forward; end likewise, carried backward.
    new_run = torch.ones_like(sorted_v, dtype=torch.bool)
    new_run[..., 1:] = sorted_v[..., 1:] != sorted_v[..., :-1]
    start = torch.where(new_run, pos, torch.zeros_like(pos)).cummax(-1).values
    run_end = torch.ones_like(new_run)
    run_end[..., :-1] = new_run[..., 1:]
    end = torch.where(run_end, pos, torch.full_like(pos, n)).flip(-1).cummin(-1).values.flip(-1)
    ranks = torch.empty_like(v)
    ranks.scatter_(-1, order, (start + end) / 2)
    return ranks


def pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation along the last dimension; NaN where either side is constant.

    Args:
        a: `Tensor [..., n]`.
        b: `Tensor [..., n]`, same shape.

    Returns:
        `Tensor [...]` (float64).
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}.")
    if a.shape[-1] < 2:
        raise ValueError(f"need at least 2 values to correlate; got {a.shape[-1]}.")
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    denom = (a.square().sum(-1) * b.square().sum(-1)).sqrt()
    out = (a * b).sum(-1) / denom
    return torch.where(denom > 0, out, torch.full_like(out, math.nan))


def spearman_rows(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation along the last dimension (Pearson of average ranks)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}.")
    return pearson_rows(average_ranks(a), average_ranks(b))


def mean_and_sem(values: Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean of a 1-D tensor, NaNs left out.

    Returns:
        `(mean, sem)`; the SEM is NaN with fewer than two finite values.
    """
    v = values.double().flatten()
    v = v[~v.isnan()]
    if len(v) == 0:
        return math.nan, math.nan
    sem = float(v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), sem
