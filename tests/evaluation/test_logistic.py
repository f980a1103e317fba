"""The helpers on a convex model: exact influence predicts leave-one-out retraining.

Multinomial logistic regression on digits, trained to the optimum of the mean loss plus
wd/2 ||θ||² by the helper's own L-BFGS retraining; `damping = wd` makes the influence
estimate exact up to second order.
"""

import copy

import pytest
import torch
from torch import nn

from captum_layerinf import LayerInfluence
from captum_layerinf.datasets import load_digits_split
from captum_layerinf.evaluation import (
    LBFGSRetrain,
    leave_one_out,
    linear_datamodeling_score,
    loo_correlations,
    subset_retraining,
)

WD, N_TRAIN, N_TEST = 1e-2, 300, 3
pytestmark = pytest.mark.slow  # L-BFGS retrainings


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    train, test = load_digits_split(N_TRAIN, N_TEST, seed=2, dtype=torch.float64)
    x, y = train.tensors[0].flatten(1), train.tensors[1]
    test = (test.tensors[0].flatten(1), test.tensors[1])
    model = nn.Linear(64, 10).double()
    retrain = LBFGSRetrain(x, y, weight_decay=WD, iters=500)
    retrain(model.eval(), torch.ones(N_TRAIN, dtype=torch.bool))
    scores = LayerInfluence(model, (x, y), damping=WD).global_influence(test)
    return model, LBFGSRetrain(x, y, weight_decay=WD, iters=60), test, scores


def test_exact_influence_predicts_leave_one_out(fitted):
    model, retrain, test, scores = fitted
    gen = torch.Generator().manual_seed(0)
    strongest = scores.abs().sum(0).argsort(descending=True)[:6]
    removals = torch.cat([strongest, torch.randperm(N_TRAIN, generator=gen)[:8]]).unique()
    effects = leave_one_out(model, retrain, test, removals, N_TRAIN)
    assert effects.actual.shape == (N_TEST, len(removals))
    assert effects.drift.abs().max() < 1e-8  # retraining from the optimum stays there
    pearson, spearman = loo_correlations(scores, effects)
    assert pearson.per_test.min() >= 0.99, pearson.per_test
    assert spearman.mean >= 0.9, spearman.per_test
    # A worse estimate (gradient similarity) is measurably worse on the same retrainings.
    plain = LayerInfluence(model, (retrain.inputs, retrain.labels), hessian="identity")
    worse, _ = loo_correlations(plain.global_influence(test), effects)
    assert worse.mean < pearson.mean - 0.01


def test_lds_ranks_exact_influence_above_random(fitted):
    model, retrain, test, scores = fitted
    effects = subset_retraining(model, retrain, test, N_TRAIN, n_subsets=10, seed=0)
    lds = linear_datamodeling_score(scores, effects)
    assert lds.mean >= 0.8, lds.per_test
    noise = torch.randn(scores.shape, generator=torch.Generator().manual_seed(1))
    assert linear_datamodeling_score(noise, effects).mean < lds.mean - 0.3


def test_tolerance_stops_early_at_the_same_answer(fitted):
    model, retrain, test, _ = fitted
    keep = torch.ones(N_TRAIN, dtype=torch.bool)
    keep[:5] = False
    tol = 1e-7
    early = LBFGSRetrain(retrain.inputs, retrain.labels, WD, iters=200, tol=tol)
    full = LBFGSRetrain(retrain.inputs, retrain.labels, WD, iters=200)
    a = early(copy.deepcopy(model), keep)
    b = full(copy.deepcopy(model), keep)
    (iters_early, grad_early), (iters_full, _) = early.log[-1], full.log[-1]
    assert grad_early <= tol and iters_early < iters_full
    # Strong convexity (modulus >= WD) bounds the distance to the optimum by |grad|_2 / WD.
    diff = torch.cat(
        [(p - q).flatten() for p, q in zip(a.parameters(), b.parameters(), strict=True)]
    )
    assert diff.norm() <= (diff.numel() ** 0.5) * tol / WD
    # At the optimum with nothing removed there is nothing to do: no step, no drift.
    early(copy.deepcopy(model), torch.ones(N_TRAIN, dtype=torch.bool))
    assert early.log[-1][0] == 0
