"""Every registered strategy keeps the interface's contract, on one small problem.

Parametrised over `available_strategies()`: a new strategy is checked here the moment it is
registered. Strategies that compute the inverse-Hessian product exactly (to a solver
tolerance) must also agree with `exact`.
"""

import dataclasses

import pytest
import torch

from captum_layerinf import LayerInfluence, available_strategies
from captum_layerinf.influence._reference import own_reference
from captum_layerinf.influence.strategies import make_strategy, shardable_strategies
from captum_layerinf.influence.strategies.base import _REGISTRY
from tests.conftest import rel_err

# Iterative solvers get a well-conditioned problem, so that the contract stays cheap to check.
DAMPING = {"cg": 1.0, "pcg": 1.0, "lissa": 1.0}
N_TRAIN = 32
# Exact up to a solver tolerance (Gauss-Newton: on this piecewise-linear model): these must
# reproduce `exact`.
EXACT_FAMILY = {"exact", "gauss-newton", "captum", "cg", "pcg", "auto"}
# Iterative solvers and delegation to Captum: correct but slow on CPU.
SLOW = {"cg", "pcg", "lissa", "captum"}


def _arguments(name: str, model) -> dict:
    if name == "tracin":
        state = {k: v.clone() for k, v in model.state_dict().items()}
        return {"checkpoints": [state, state], "learning_rates": [1.0, 0.5]}
    return {}


def _params():
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
        for name in available_strategies()
    ]


@pytest.mark.parametrize("name", available_strategies())
def test_settings_are_frozen_with_defaults(name):
    cls = _REGISTRY[name]
    assert dataclasses.is_dataclass(cls.Settings) and cls.Settings.__dataclass_params__.frozen
    for field in dataclasses.fields(cls.Settings):
        has_default = field.default is not dataclasses.MISSING
        assert has_default or field.default_factory is not dataclasses.MISSING, field.name
    assert (name in shardable_strategies()) == bool(cls.shardable)


@pytest.mark.parametrize("name", _params())
def test_strategy_keeps_the_contract(name, relu_problem):
    model, train, test = relu_problem
    train = torch.utils.data.TensorDataset(*(t[:N_TRAIN] for t in train.tensors))
    damping = DAMPING.get(name, 0.1)
    extra = _arguments(name, model)
    strategy = make_strategy(name, damping, **extra)
    assert strategy.name == name and strategy.damping == damping
    li = LayerInfluence(model, train, hessian=name, damping=damping, batch_size=16, **extra)
    x, y = test.tensors[0][:3], test.tensors[1][:3]
    scores = li.influence((x, y))
    n_layers, n_train = len(li.layer_names), len(train)
    assert scores.shape == (n_layers, 3, n_train)
    assert torch.isfinite(scores).all()

    top = li.influence((x, y), k=4)
    assert torch.equal(top.indices, torch.topk(scores, 4, dim=-1).indices)
    assert torch.allclose(li.compound_influence((x, y)), scores.sum(0), rtol=1e-10, atol=0)

    self_scores = li.self_influence()
    assert self_scores.shape == (n_layers, n_train) and torch.isfinite(self_scores).all()

    # `check` fits the strategy and the reference on the same curvature subset, or on the
    # whole training set for a strategy whose scores need it.
    report = li.check((x, y), n_test=3, n_train=12, n_curvature=16, warn_below=-1.0)
    n_curvature = 16 if strategy.scores_outside_curvature else N_TRAIN
    assert len(report.curvature_indices) == n_curvature
    assert report.pearson.shape == (n_layers,)
    assert torch.isfinite(report.pearson).all() and torch.isfinite(report.scale).all()
    if name in EXACT_FAMILY:
        assert (report.pearson > 1 - 1e-6).all(), report.pearson
    own = own_reference(strategy, model, li._blocks("layers"))
    assert report.references.count("itself") == sum(own)
    if any(own):  # Its own reference there: computed, it agrees with the reference exactly.
        computed = li.check((x, y), n_test=3, n_train=12, n_curvature=16, reference="exact")
        assert (computed.pearson > 1 - 1e-6).all(), computed.pearson

    if name in EXACT_FAMILY and name != "exact":
        exact = LayerInfluence(model, train, hessian="exact", damping=damping, batch_size=16)
        reference = exact.influence((x, y))
        for i in range(n_layers):
            assert rel_err(scores[i], reference[i]) <= 1e-4, li.layer_names[i]


@pytest.mark.slow
def test_captum_is_exact_only_for_the_examples_its_hessian_was_built_from(relu_problem):
    """Why `check` fits "captum" on the whole training set.

    Captum's `torch.linalg.eig` returns non-orthogonal eigenvectors for the damping, a
    repeated eigenvalue of a block with fewer examples than parameters (the Linear layer:
    650 parameters, 16 examples). Fitted on 16 examples, Captum's scores of those 16 equal
    exact; its scores of 16 others do not.
    """
    model, train, test = relu_problem
    x, y = test.tensors[0][:3], test.tensors[1][:3]
    built, other = (
        torch.utils.data.TensorDataset(*(t[rows] for t in train.tensors))
        for rows in (slice(0, 16), slice(16, 32))
    )
    captum = make_strategy("captum", 0.1)
    exact = make_strategy("exact", 0.1)
    fits = []
    for strategy in (captum, exact):
        li = LayerInfluence(model, built, hessian=strategy.name, damping=0.1, batch_size=16)
        fits.append(li._fit("layers", False))
    scored = [[], []]
    for rows in (built, other):
        batch = [(-1, (rows.tensors[0],), rows.tensors[1])]
        for out, (strategy, ctx) in zip(scored, fits, strict=True):
            loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y))
            out.append(torch.cat(list(strategy.scores(ctx, loader, lambda _, b=batch: b))))
    (captum_built, captum_other), (exact_built, exact_other) = scored
    linear = -1
    assert rel_err(captum_built[linear], exact_built[linear]) <= 1e-6
    assert rel_err(captum_other[linear], exact_other[linear]) > 1e-2
