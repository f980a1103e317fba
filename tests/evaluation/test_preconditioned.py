"""Retraining in whitened coordinates reaches the same optimum as plain L-BFGS, in fewer steps."""

import copy

import pytest
import torch
from torch import nn

from captum_layerinf.datasets import load_digits_split
from captum_layerinf.evaluation import LBFGSRetrain
from captum_layerinf.evaluation.retraining import gauss_newton_matrix, objective_hessian
from captum_layerinf.training import train_classifier

pytestmark = pytest.mark.slow  # L-BFGS retrainings


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _removal(n: int, k: int, seed: int) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]] = False
    return keep


@pytest.fixture(scope="module")
def logistic():
    wd, n = 1e-3, 200
    train, _ = load_digits_split(n, 10, seed=3, dtype=torch.float64)
    x, y = train.tensors[0].flatten(1), train.tensors[1]
    torch.manual_seed(0)
    model = nn.Linear(64, 10).double().eval()
    LBFGSRetrain(x, y, wd, iters=1000, tol=1e-11)(model, torch.ones(n, dtype=torch.bool))
    return model, x, y, wd


def test_gauss_newton_equals_hessian_for_logistic_regression(logistic):
    model, x, y, wd = logistic
    gn = gauss_newton_matrix(model, x, y)
    gn.diagonal().add_(wd)
    hess = objective_hessian(model, x, y, wd)
    assert torch.allclose(gn, hess, atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("preconditioner", ["gauss-newton", "hessian"])
def test_same_optimum_as_plain_lbfgs_in_fewer_iterations(logistic, preconditioner):
    model, x, y, wd = logistic
    keep = _removal(len(y), 20, 0)
    tol = 1e-9
    plain = LBFGSRetrain(x, y, wd, iters=2000, tol=tol)
    whitened = LBFGSRetrain(x, y, wd, iters=2000, tol=tol, preconditioner=preconditioner)
    a = plain(copy.deepcopy(model), keep)
    b = whitened(copy.deepcopy(model), keep)
    (iters_plain, grad_plain), (iters_white, grad_white) = plain.log[-1], whitened.log[-1]
    assert grad_plain <= tol and grad_white <= tol
    assert iters_white < iters_plain / 2, (plain.log, whitened.log)
    # Strong convexity (modulus >= wd): each is within |grad|_2 / wd of the optimum.
    bound = 2 * (x.shape[1] * 10 + 10) ** 0.5 * tol / wd
    assert (_flat(a) - _flat(b)).norm() <= bound
    # A fixed preconditioner serves every later call, and refits only on request.
    factor = whitened.factor
    whitened(copy.deepcopy(model), _removal(len(y), 1, 1))
    assert whitened.factor is factor and whitened.log[-1][1] <= tol


def test_converges_on_a_small_cnn():
    """A conv-tanh-linear network at its optimum: retraining after a few removals converges to
    the gradient tolerance with the Hessian preconditioner, and plain L-BFGS does not with
    the same budget (the loss's own curvature nearly cancels the weight decay there)."""
    wd, n = 1e-2, 100
    train, _ = load_digits_split(n, 10, seed=0, dtype=torch.float64)
    x, y = train.tensors
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(108, 10))
    model = model.double()
    train_classifier(model, train, epochs=100, lr=1e-2, weight_decay=wd, seed=0)
    LBFGSRetrain(x, y, wd, iters=1000, tol=1e-9)(model.eval(), torch.ones(n, dtype=torch.bool))
    polish = LBFGSRetrain(x, y, wd, iters=50, tol=1e-11, preconditioner="hessian")
    polish(model, torch.ones(n, dtype=torch.bool))
    assert polish.log[-1][1] <= 1e-11, polish.log  # P was formed 1e-9 away: reused
    assert polish.hessian_eigenvalues is not None and polish.hessian_eigenvalues[0] > 0
    for k in (1, 5):
        keep = _removal(n, k, k)
        whitened = LBFGSRetrain(x, y, wd, iters=30, tol=1e-9, preconditioner="hessian")
        whitened.factor = polish.factor
        plain = LBFGSRetrain(x, y, wd, iters=30, tol=1e-9)
        a = whitened(copy.deepcopy(model), keep)
        plain(copy.deepcopy(model), keep)
        assert whitened.log[-1][1] <= 1e-9, whitened.log
        assert plain.log[-1][1] > 1e-9, plain.log
    # The same minimiser as plain L-BFGS run long: near a minimum with smallest Hessian
    # eigenvalue λ, each iterate lies within |gradient|_2 / λ of it.
    long = LBFGSRetrain(x, y, wd, iters=300, tol=1e-9)
    b = long(copy.deepcopy(model), keep)
    radius = len(_flat(a)) ** 0.5 * (whitened.log[-1][1] + long.log[-1][1])
    assert (_flat(a) - _flat(b)).norm() <= radius / polish.hessian_eigenvalues[0], long.log
