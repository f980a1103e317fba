"""Layer-selection statistics: how unequal the unit influences of one layer are."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def gini(magnitudes: Tensor) -> Tensor:
    """Gini coefficient of each row of non-negative values `[B, n]` → `[B]`.

    G = Σ_i Σ_j |v_i − v_j| / (2 n² mean(v)): 0 when every unit has the same influence,
    1 − 1/n when one unit carries all of it. Invariant to rescaling the row, so layers
    with differently scaled influences compare; a row of zeros gives 0.
    """
    n = magnitudes.shape[1]
    v, _ = magnitudes.to(torch.float64).sort(dim=1)
    rank = torch.arange(1, n + 1, dtype=v.dtype, device=v.device)
    total = v.sum(1)
    g = ((2 * rank - n - 1) * v).sum(1) / (n * total.clamp_min(torch.finfo(v.dtype).tiny))
    return torch.where(total > 0, g, 0.0)


def coefficient_of_variation(magnitudes: Tensor) -> Tensor:
    """Coefficient of variation std / mean of each row `[B, n]` → `[B]` (zeros give 0).

    Scale-free like the Gini coefficient, but grows as √(n − 1) for a single dominant unit,
    so it favours wide layers.
    """
    v = magnitudes.to(torch.float64)
    mean = v.mean(1)
    cv = v.std(1, correction=0) / mean.clamp_min(torch.finfo(v.dtype).tiny)
    return torch.where(mean > 0, cv, 0.0)


STATISTICS: dict[str, Callable[[Tensor], Tensor]] = {
    "gini": gini,
    "cv": coefficient_of_variation,
}
