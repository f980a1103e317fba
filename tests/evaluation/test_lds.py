"""LDS and leave-one-out helpers on a linear datamodel, where the answer is known.

The "model" outputs, for test example k, `Σ_j A[k, j] w_j`, and "retraining" on `keep`
sets `w = 1 - keep` (plus a constant drift): the test loss change when a set R is removed is
exactly `Σ_{j ∈ R} A[k, j]`, so the scores `n A` predict it perfectly.
"""

import pytest
import torch
from torch import nn

from captum_layerinf.evaluation import (
    leave_one_out,
    linear_datamodeling_score,
    loo_correlations,
    retraining_effects,
    subset_retraining,
)

N_TEST, N_TRAIN = 3, 40


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(N_TRAIN, dtype=torch.float64))

    def forward(self, a):
        return a @ self.w


def identity_loss(outputs, labels):
    return outputs


def retrain(model, keep, seed):
    with torch.no_grad():
        model.w.copy_(1.0 - keep.double() + 0.3 + 0.01 * seed)  # + drift, subtracted
    return model


def problem():
    a = torch.randn(N_TEST, N_TRAIN, generator=torch.Generator().manual_seed(0)).double()
    return Linear(), (a, torch.zeros(N_TEST)), a


def test_exact_datamodel_has_lds_one_and_reversed_minus_one():
    model, test, a = problem()
    effects = subset_retraining(
        model, retrain, test, N_TRAIN, n_subsets=20, seed=1, seeds=(0, 1), loss_fn=identity_loss
    )
    assert effects.keep.shape == (20, N_TRAIN)
    assert (effects.keep.sum(1) == N_TRAIN // 2).all()
    torch.testing.assert_close(effects.actual, effects.predicted(N_TRAIN * a))
    # Drift: the full-set retraining moved w by 0.3 + 0.01 * mean seed.
    torch.testing.assert_close(effects.drift, a.sum(1) * 0.305)
    lds = linear_datamodeling_score(N_TRAIN * a, effects)
    assert lds.per_test.shape == (N_TEST,)
    assert lds.mean == pytest.approx(1.0) and lds.sem == pytest.approx(0.0, abs=1e-12)
    assert linear_datamodeling_score(-a, effects).mean == pytest.approx(-1.0)
    # Scores unrelated to A: far from a perfect ranking.
    noise = torch.randn(N_TEST, N_TRAIN, generator=torch.Generator().manual_seed(5))
    assert abs(linear_datamodeling_score(noise, effects).mean) < 0.8


def test_leave_one_out_on_the_datamodel():
    model, test, a = problem()
    removals = torch.tensor([3, 0, 17, 39, 8])
    effects = leave_one_out(model, retrain, test, removals, N_TRAIN, loss_fn=identity_loss)
    torch.testing.assert_close(effects.actual, a[:, removals])
    pearson, spearman = loo_correlations(N_TRAIN * a + 5.0, effects)
    assert pearson.mean == pytest.approx(1.0) and spearman.mean == pytest.approx(1.0)
    # Per-test selections through `columns`.
    cols = torch.tensor([[0, 1, 2], [2, 3, 4], [0, 2, 4]])
    p, _ = loo_correlations(-a, effects, columns=cols)
    assert p.mean == pytest.approx(-1.0)
    assert model.w.abs().sum() == 0  # the given model is left unchanged
    # The general form with explicit masks gives the same effects.
    keep = torch.ones(len(removals), N_TRAIN, dtype=torch.bool)
    keep[torch.arange(len(removals)), removals] = False
    general = retraining_effects(model, retrain, test, keep, loss_fn=identity_loss)
    torch.testing.assert_close(general.actual, effects.actual)
    # A baseline from an earlier chunk is reused: the same effects, no full-set retraining.
    calls = []

    def counting(model, keep, seed):
        calls.append(bool(keep.all()))
        return retrain(model, keep, seed)

    chunk = retraining_effects(
        model, counting, test, keep[2:], loss_fn=identity_loss, baseline=general.baseline
    )
    torch.testing.assert_close(chunk.actual, effects.actual[:, 2:])
    assert calls == [False] * 3


def test_bad_input_names_the_problem():
    model, test, a = problem()
    with pytest.raises(ValueError, match=r"removals must be training indices in \[0, 40\)"):
        leave_one_out(model, retrain, test, torch.tensor([40]), N_TRAIN, loss_fn=identity_loss)
    effects = leave_one_out(
        model, retrain, test, torch.tensor([1, 2]), N_TRAIN, loss_fn=identity_loss
    )
    with pytest.raises(ValueError, match="aggregate_layers"):
        linear_datamodeling_score(a[None], effects)
    with pytest.raises(ValueError, match="seeds"):
        subset_retraining(model, retrain, test, N_TRAIN, seeds=(), loss_fn=identity_loss)
    with pytest.raises(ValueError, match="fraction"):
        subset_retraining(model, retrain, test, N_TRAIN, fraction=1.0, loss_fn=identity_loss)
