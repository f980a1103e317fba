"""`hessian="pcg"` (EK-FAC-preconditioned CG) against `exact`, with its default settings."""

import copy

import pytest
import torch
from torch import nn

from captum_layerinf import LayerInfluence, PCGSettings
from tests.conftest import rel_err


def _fitted(li):
    return li._fitted["layers"][0]


def test_pcg_equals_exact_in_float64(relu_problem):
    model, train, test = relu_problem
    x, y = test.tensors[0][:3], test.tensors[1][:3]
    exact = LayerInfluence(model, train, hessian="exact").influence((x, y))
    li = LayerInfluence(model, train, hessian="pcg")
    assert rel_err(li.influence((x, y)), exact) <= 1e-8
    strategy = _fitted(li)
    assert set(strategy.preconditioners.values()) == {"ekfac"}
    assert all(float(r.max()) <= strategy.tol for r in strategy.residuals.values())


@pytest.mark.slow
def test_pcg_equals_exact_in_float32(relu_problem):
    model, train, test = relu_problem
    x, y = train.tensors
    model32 = copy.deepcopy(model).float()
    train32 = torch.utils.data.TensorDataset(x.float(), y)
    exact = LayerInfluence(model, train, hessian="exact").influence(test.tensors)
    pcg = LayerInfluence(model32, train32, hessian="pcg").influence(
        (test.tensors[0].float(), test.tensors[1])
    )
    assert pcg.dtype == torch.float32
    assert rel_err(pcg.double(), exact) <= 1e-4


@pytest.mark.slow
def test_pcg_equals_exact_on_a_curved_model(tanh_problem):
    model, train, test = tanh_problem
    x, y = test.tensors[0][:3], test.tensors[1][:3]
    exact = LayerInfluence(model, train, damping=0.1, hessian="exact").influence((x, y))
    pcg = LayerInfluence(model, train, damping=0.1, hessian="pcg").influence((x, y))
    assert rel_err(pcg, exact) <= 1e-8


@pytest.mark.slow
def test_the_preconditioner_saves_iterations_on_a_linear_layer(relu_problem):
    # Measured on the benchmark CNN, EK-FAC helps CG on Linear layers; on its Conv2d layers
    # it can cost iterations (docs/curvature.md). This checks the Linear case.
    model, train, test = relu_problem
    counts = {}
    for kind in ("ekfac", "none"):
        settings = PCGSettings(preconditioner=kind)
        li = LayerInfluence(model, train, layers=["6"], hessian=settings)
        li.influence(test.tensors)
        counts[kind] = sum(_fitted(li).iterations.values())
    assert counts["ekfac"] < 0.6 * counts["none"]


def _batch_norm_net(act: type[nn.Module]):
    """conv -> batch-norm -> `act` -> linear (float64, eval), 24 training and 3 test images."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), act(), nn.Flatten(), nn.Linear(108, 4)
    ).double()
    with torch.no_grad():
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
    model.eval()
    x, y = torch.randn(24, 1, 8, 8, dtype=torch.float64), torch.arange(24) % 4
    return model, (x, y), (x[:3] + 0.1, y[:3])


@pytest.mark.slow
def test_other_modules_get_a_diagonal_preconditioner_and_stay_exact():
    # Batch-norm is no Linear/Conv2d: with exact_max_params=0 it gets the Fisher diagonal,
    # in its own block and as one module of the global block.
    model, train, test = _batch_norm_net(nn.ReLU)
    exact = LayerInfluence(model, train, damping=1.0, hessian="exact").influence(test)
    li = LayerInfluence(model, train, damping=1.0, hessian=PCGSettings(exact_max_params=0))
    assert rel_err(li.influence(test), exact) <= 1e-8
    assert _fitted(li).preconditioners == {0: "ekfac", 1: "diagonal", 2: "ekfac"}
    glob = li.global_influence(test)
    reference = LayerInfluence(model, train, damping=1.0, hessian="exact")
    assert rel_err(glob, reference.global_influence(test)) <= 1e-8
    assert li._fitted["<global>"][0].preconditioners == {0: "diagonal+ekfac"}


@pytest.mark.slow
def test_a_curved_module_is_preconditioned_by_its_gauss_newton_block_and_stays_exact():
    # Batch-norm before tanh is curved: its preconditioner is the Gauss-Newton block (one
    # reverse pass per output), not the Hessian (one product per parameter); CG is exact.
    model, train, test = _batch_norm_net(nn.Tanh)
    li = LayerInfluence(model, train, damping=0.1, hessian="pcg", layers=["1"])
    exact = LayerInfluence(model, train, damping=0.1, hessian="exact", layers=["1"])
    assert rel_err(li.influence(test), exact.influence(test)) <= 1e-8
    assert _fitted(li)._ekfac._exact.method == ["gauss-newton"]
    assert exact._fitted["layers"][0].method == ["hessian"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"preconditioner": "jacobi"}, "preconditioner must be one of"),
        ({"tol": 0.0}, "tol must be in"),
        ({"max_iter": 0}, "max_iter must be"),
        ({"exact_max_params": -1}, "exact_max_params must be"),
        ({"fisher": "true"}, "fisher must be one of"),
    ],
)
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PCGSettings(**kwargs)
