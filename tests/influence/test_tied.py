"""Tied parameters (`b.weight = a.weight`) are attributed once, to their first owner."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from captum_layerinf import LayerInfluence
from tests._threads import one_torch_thread
from tests.conftest import rel_err

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)

DAMPING = 0.05


class Tied(nn.Module):
    """`head(b(tanh(a(x))))` with `b.weight` the same tensor as `a.weight`."""

    def __init__(self, b_bias: bool = True) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4, bias=False)
        self.b = nn.Linear(4, 4, bias=b_bias)
        self.b.weight = self.a.weight
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = Tied().double().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    y = torch.arange(12) % 3
    return model, (x, y), (x[:3], y[:3])


def shared_weight_reference(model, train, test):
    """Scores `[n_test, n_train]` of the shared weight, from its full derivatives."""
    w = model.a.weight.detach()

    def loss(weight, x, y):
        out = functional_call(model, {"a.weight": weight}, (x[None],))
        return nn.functional.cross_entropy(out, y[None])

    def mean_loss(weight):
        return vmap(loss, in_dims=(None, 0, 0))(weight, *train).mean()

    h = torch.autograd.functional.hessian(mean_loss, w).reshape(w.numel(), w.numel())
    g = vmap(grad(loss), in_dims=(None, 0, 0))(w, *train).flatten(1)
    gt = vmap(grad(loss), in_dims=(None, 0, 0))(w, *test).flatten(1)
    eye = torch.eye(w.numel(), dtype=w.dtype)
    return gt @ torch.linalg.solve(h + DAMPING * eye, g.T)


@pytest.mark.parametrize("hessian", ["exact", "cg"])
def test_shared_weight_is_scored_once_with_all_its_uses(problem, hessian):
    model, train, test = problem
    li = LayerInfluence(model, train, hessian=hessian, damping=DAMPING)
    assert li.layer_names == ["a", "b", "head"]
    assert li._blocks("layers")[1].param_names == ("b.bias",)
    scores = li.influence(test)
    assert rel_err(scores[0], shared_weight_reference(model, train, test)) <= 1e-6
    assert torch.isfinite(li.global_influence(test)).all()


def test_identity_scores_the_full_gradient_of_the_shared_weight(problem):
    # Gradient similarity: the per-example gradient must sum both uses of the weight,
    # also where the scoring would otherwise use one module's inputs and output gradients.
    model, train, test = problem
    scores = LayerInfluence(model, train, hessian="identity").influence(test)[0]
    w = model.a.weight.detach()

    def loss(weight, x, y):
        out = functional_call(model, {"a.weight": weight}, (x[None],))
        return nn.functional.cross_entropy(out, y[None])

    g = vmap(grad(loss), in_dims=(None, 0, 0))(w, *train).flatten(1)
    gt = vmap(grad(loss), in_dims=(None, 0, 0))(w, *test).flatten(1)
    assert rel_err(scores, gt @ g.T) <= 1e-10


def test_a_layer_whose_parameters_are_all_shared_is_explained(problem):
    _, train, _ = problem
    model = Tied(b_bias=False).double().eval()
    li = LayerInfluence(model, train)
    assert li.layer_names == ["a", "head"]
    with pytest.raises(ValueError, match=r"'b' is a Linear whose parameters are shared.*a.weight"):
        LayerInfluence(model, train, layers=["b"])
