"""Aggregating layer-wise influence scores into one score per (test, training) pair.

`"sum"` is the paper's compound influence (Aamir et al. 2023, Eq. 7):
`I_total(j, k) = Σ_l s_l(j, k)`. It is dominated by the layers with the largest scores.

`"rank"` and `"vote"` are ours. Vitel & Chhabra (2025) report that combining layers by
rank or by vote beats averaging their raw scores; we could not consult their exact rule,
so these two follow the textbook rank-aggregation rules:

* `"rank"` (Borda count): each layer ranks the training examples by its score for a test
  example (0 = strongest opponent, n-1 = strongest proponent); the aggregate is the mean
  rank over layers, rescaled to [-1/2, 1/2]. Every layer has the same say, whatever its scale.
* `"vote"` (approval vote): each layer gives +1 to its `top_fraction` strongest proponents
  and -1 to its `top_fraction` strongest opponents; the aggregate is the vote total, ties
  broken by the Borda score (which lies in [-1/2, 1/2], so it never outweighs one vote).

Both are ranking rules: their values have no unit, so only rank-based fidelity measures
(Spearman, LDS) read them fairly.
"""

from __future__ import annotations

import math

from torch import Tensor

from .._utils.stats import average_ranks

AGGREGATIONS = ("sum", "rank", "vote")


def aggregate_layers(scores: Tensor, method: str = "sum", top_fraction: float = 0.1) -> Tensor:
    """Combines per-layer influence scores into one score per test and training example.

    Args:
        scores: `Tensor [n_layers, n_test, n_train]`, e.g. `LayerInfluence.influence(...)`;
            positive = proponent.
        method: `"sum"` (compound influence, Eq. 7), `"rank"` (Borda: mean within-layer
            rank) or `"vote"` (approval vote of each layer's top and bottom examples).
        top_fraction: For `"vote"`: fraction of the training set each layer votes for on
            each side (at least one example).

    Returns:
        `Tensor [n_test, n_train]`; larger = stronger proponent. `"sum"` keeps the dtype
        of `scores`; `"rank"` and `"vote"` return float64.

    Examples:
        >>> layers = li.influence((x_test, y_test))          # [n_layers, n_test, n_train]
        >>> borda = aggregate_layers(layers, method="rank")   # [n_test, n_train]
    """
    if not isinstance(scores, Tensor) or scores.dim() != 3:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(
            f"scores must be a Tensor [n_layers, n_test, n_train]; got {shape}. Pass the "
            "result of LayerInfluence.influence(...), or add a layer dimension with "
            "scores[None]."
        )
    if method not in AGGREGATIONS:
        raise ValueError(f"method must be one of {AGGREGATIONS}; got {method!r}.")
    if not 0 < top_fraction <= 0.5:
        raise ValueError(f"top_fraction must be in (0, 0.5]; got {top_fraction!r}.")
    if method == "sum":
        return scores.sum(0)
    n_train = scores.shape[-1]
    ranks = average_ranks(scores)  # [n_layers, n_test, n_train], 0 = most negative
    borda = ranks.mean(0) / max(n_train - 1, 1) - 0.5
    if method == "rank":
        return borda
    k = max(1, math.floor(top_fraction * n_train))
    votes = (ranks >= n_train - k).double().sum(0) - (ranks < k).double().sum(0)
    # Ties within a vote count are broken by the Borda score, which is below one vote.
    return votes + 0.999 * borda
