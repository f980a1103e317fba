"""Leave-one-out retraining and the linear datamodeling score (LDS).

Leave-one-out (Koh & Liang 2017): remove one training example z_j, retrain, and compare
the change of each test loss with the prediction `s(j, k) / n` (`LayerInfluence` sign:
positive = removing z_j raises the test loss).

LDS (Park et al. 2023, TRAK, Sec. 2; computed the same way by dattri and kronfluence):
draw m random subsets S_1..S_m holding a fraction α of the training set, retrain on each,
and for each test example ẑ take the Spearman correlation, over the m subsets, between the
attribution's group prediction `g(ẑ, S_i) = Σ_{j ∈ S_i} τ(ẑ)_j` and the actual model
output on ẑ after training on S_i; LDS is its mean over test examples. Here the output is
the test loss and the prediction is the predicted change when the complement of S_i is
removed, `Σ_{j ∉ S_i} s(j, k) / n` — the TRAK sum up to sign and a constant per test
example, which a Spearman correlation ignores. Our choice, stated: subsets are retrained
from the full-data optimum (as leave-one-out), not from scratch as in TRAK and dattri,
which measures the local response that influence functions model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._utils.stats import mean_and_sem
from .._utils.stats import pearson_rows as pearson
from .._utils.stats import spearman_rows as spearman
from .retraining import Retrain, losses_on, retrained_losses


@dataclass(frozen=True)
class RetrainingEffects:
    """Actual changes of the test losses after retraining on subsets of the training set.

    Attributes:
        keep: `Tensor [m, n_train]` bool: the examples each retraining kept.
        actual: `Tensor [n_test, m]`: test loss after retraining on `keep[i]` minus the
            test loss after the same retraining on the full set (drift subtracted).
        baseline: `Tensor [n_test]`: test loss after retraining on the full set.
        drift: `Tensor [n_test]`: baseline minus the test loss at the given optimum.
    """

    keep: Tensor
    actual: Tensor
    baseline: Tensor
    drift: Tensor

    def predicted(self, scores: Tensor) -> Tensor:
        """Predicted changes `Tensor [n_test, m]` from scores `[n_test, n_train]`.

        The prediction for retraining i is `Σ_{j removed in i} s(j, k) / n`.
        """
        n_train = self.keep.shape[1]
        if scores.dim() != 2 or scores.shape[1] != n_train:
            raise ValueError(
                f"scores must be a Tensor [n_test, {n_train}]; got {tuple(scores.shape)}. "
                "For layer-wise scores pick a layer (scores[l]) or aggregate_layers(scores)."
            )
        if scores.shape[0] != self.actual.shape[0]:
            raise ValueError(
                f"scores has {scores.shape[0]} test examples; the retrainings measured "
                f"{self.actual.shape[0]}."
            )
        return scores.double().cpu() @ (~self.keep).double().T / n_train


def retraining_effects(
    model: nn.Module,
    retrain: Retrain,
    test: tuple[Tensor, ...],
    keep: Tensor,
    seeds: tuple[int, ...] = (0,),
    loss_fn=None,
    baseline: Tensor | None = None,
) -> RetrainingEffects:
    """Retrains once per row of `keep` and measures each test loss change (drift subtracted).

    The general form of `leave_one_out` and `subset_retraining`, for any removal sets,
    e.g. to retrain in chunks and keep finished ones on disk.

    Args:
        model: The trained model (left unchanged).
        retrain: `retrain(model, keep, seed) -> model`.
        test: Test batch `(*inputs, labels)`.
        keep: `Tensor [m, n_train]` bool, the examples each retraining keeps.
        seeds: Seeds passed to `retrain`; losses are averaged over them.
        loss_fn: Per-example test loss; default cross-entropy.
        baseline: The test losses `[n_test]` after retraining on the full set, from an
            earlier call with the same `retrain`, seeds and test batch (e.g. the previous
            chunk's `RetrainingEffects.baseline`); None: retrained here.

    Returns:
        `RetrainingEffects` with `actual [n_test, m]`.
    """
    keep = torch.as_tensor(keep, dtype=torch.bool)
    if keep.dim() != 2:
        raise ValueError(f"keep must be a bool Tensor [m, n_train]; got {tuple(keep.shape)}.")
    _check(model, test, keep.shape[1], seeds)
    return _effects(model, retrain, test, keep, tuple(seeds), loss_fn, baseline)


def _effects(model, retrain, test, keep, seeds, loss_fn, baseline=None) -> RetrainingEffects:
    n_train = keep.shape[1]
    at_optimum = losses_on(model, test, loss_fn)
    if baseline is None:
        full = torch.ones(n_train, dtype=torch.bool)
        baseline = retrained_losses(model, retrain, full, test, seeds, loss_fn)
    actual = torch.stack(
        [retrained_losses(model, retrain, k, test, seeds, loss_fn) - baseline for k in keep], 1
    )
    return RetrainingEffects(keep, actual, baseline, baseline - at_optimum)


def _check(model: nn.Module, test, n_train: int, seeds) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}.")
    if not isinstance(test, (tuple, list)) or len(test) < 2:
        raise ValueError("test must be a tuple (*inputs, labels) of tensors.")
    if not isinstance(n_train, int) or n_train < 2:
        raise ValueError(f"n_train must be an int >= 2; got {n_train!r}.")
    if not seeds:
        raise ValueError("seeds must name at least one retraining seed, e.g. seeds=(0,).")


def leave_one_out(
    model: nn.Module,
    retrain: Retrain,
    test: tuple[Tensor, ...],
    removals: Tensor,
    n_train: int,
    seeds: tuple[int, ...] = (0,),
    loss_fn=None,
) -> RetrainingEffects:
    """Actual change of each test loss when each of `removals` is removed alone.

    Each removal is one retraining of a copy of `model` (the optimum) by `retrain` with
    that example's `keep` entry False; the same retraining with nothing removed is
    subtracted. With several seeds, losses are averaged over seeds first.

    Args:
        model: The trained model (left unchanged).
        retrain: `retrain(model, keep, seed) -> model`, e.g. `LBFGSRetrain(x, y, wd)`.
        test: Test batch `(*inputs, labels)`.
        removals: `Tensor [m]` of training indices.
        n_train: Size of the training set.
        seeds: Seeds passed to `retrain`.
        loss_fn: Per-example test loss; default cross-entropy.

    Returns:
        `RetrainingEffects` with `actual [n_test, m]`; `effects.predicted(scores)`
        gives the matching predictions from influence scores `[n_test, n_train]`.

    Examples:
        >>> retrain = LBFGSRetrain(x_train, y_train, weight_decay=1e-3)
        >>> loo = leave_one_out(model, retrain, (x_test, y_test), torch.arange(20), len(y_train))
        >>> loo_correlations(li.global_influence((x_test, y_test)), loo)
    """
    _check(model, test, n_train, seeds)
    removals = torch.as_tensor(removals, dtype=torch.long).flatten()
    if len(removals) and (removals.min() < 0 or removals.max() >= n_train):
        raise ValueError(f"removals must be training indices in [0, {n_train}).")
    keep = torch.ones(len(removals), n_train, dtype=torch.bool)
    keep[torch.arange(len(removals)), removals] = False
    return _effects(model, retrain, test, keep, tuple(seeds), loss_fn)


def random_subsets(n_train: int, n_subsets: int = 50, fraction: float = 0.5, seed: int = 0):
    """Masks `Tensor [n_subsets, n_train]` (bool) of seeded random subsets of one size.

    Each keeps `round(fraction * n_train)` examples.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1); got {fraction!r}.")
    if n_subsets < 2:
        raise ValueError(f"n_subsets must be >= 2 to rank subsets; got {n_subsets!r}.")
    gen = torch.Generator().manual_seed(seed)
    size = round(fraction * n_train)
    keep = torch.zeros(n_subsets, n_train, dtype=torch.bool)
    for i in range(n_subsets):
        keep[i, torch.randperm(n_train, generator=gen)[:size]] = True
    return keep


def subset_retraining(
    model: nn.Module,
    retrain: Retrain,
    test: tuple[Tensor, ...],
    n_train: int,
    n_subsets: int = 50,
    fraction: float = 0.5,
    seed: int = 0,
    seeds: tuple[int, ...] = (0,),
    loss_fn=None,
) -> RetrainingEffects:
    """Retrains on `n_subsets` random subsets keeping `fraction` of the training set.

    Args:
        model: The trained model (left unchanged).
        retrain: `retrain(model, keep, seed) -> model`, e.g. `LBFGSRetrain(x, y, wd)`.
        test: Test batch `(*inputs, labels)`.
        n_train: Size of the training set.
        n_subsets: Number of random subsets m (TRAK and dattri use 50 to 100s).
        fraction: α, the kept fraction of the training set (0.5 in TRAK and dattri).
        seed: Seed of the subset draw.
        seeds: Seeds passed to `retrain`; losses are averaged over them.
        loss_fn: Per-example test loss; default cross-entropy.

    Returns:
        `RetrainingEffects` with `keep [m, n_train]` and `actual [n_test, m]`, the input of
        `linear_datamodeling_score`.
    """
    _check(model, test, n_train, seeds)
    keep = random_subsets(n_train, n_subsets, fraction, seed)
    return _effects(model, retrain, test, keep, tuple(seeds), loss_fn)


@dataclass(frozen=True)
class Fidelity:
    """A correlation per test example and its summary.

    Attributes:
        per_test: `Tensor [n_test]` (NaN where a side was constant).
        mean: Mean over test examples (NaNs left out).
        sem: Standard error of that mean.
    """

    per_test: Tensor
    mean: float
    sem: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.sem:.3f}"


def _summary(values: Tensor) -> Fidelity:
    mean, sem = mean_and_sem(values)
    return Fidelity(values, mean, sem)


def linear_datamodeling_score(scores: Tensor, effects: RetrainingEffects) -> Fidelity:
    """LDS: Spearman, over retrainings, of predicted vs actual change, per test example.

    Args:
        scores: Influence scores `Tensor [n_test, n_train]` (positive = proponent), e.g.
            `LayerInfluence.global_influence(test)` or `aggregate_layers(...)`.
        effects: From `subset_retraining` (or any `RetrainingEffects`).

    Returns:
        `Fidelity`: Spearman per test example `[n_test]`, mean ± SEM over test examples.

    Examples:
        >>> effects = subset_retraining(model, retrain, (x_test, y_test), n_train)
        >>> print(linear_datamodeling_score(scores, effects))     # "0.512 ± 0.031"
    """
    return _summary(spearman(effects.predicted(scores), effects.actual))


def loo_correlations(
    scores: Tensor, effects: RetrainingEffects, columns: Tensor | None = None
) -> tuple[Fidelity, Fidelity]:
    """Pearson and Spearman of predicted vs actual leave-one-out change, per test example.

    Args:
        scores: Influence scores `Tensor [n_test, n_train]`.
        effects: From `leave_one_out`.
        columns: Optional `Tensor [n_test, r]` of indices into the removals, to correlate
            each test example on its own selection (e.g. an estimator's top examples).

    Returns:
        `(pearson, spearman)` as `Fidelity`, each per test example and mean ± SEM.
    """
    pred, actual = effects.predicted(scores), effects.actual
    if columns is not None:
        pred, actual = pred.gather(1, columns), actual.gather(1, columns)
    return _summary(pearson(pred, actual)), _summary(spearman(pred, actual))
