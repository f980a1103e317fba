"""`hessian="exact"` against an independent dense Hessian from torch.func.hessian."""

import copy

import pytest
import torch

from captum_layerinf import ExactSettings, LayerInfluence
from tests.conftest import rel_err

from ._reference import layer_names_of, reference_scores

DAMPING = 1e-2


@pytest.mark.parametrize("problem", ["relu_problem", "tanh_problem"])
def test_exact_equals_dense_torch_func_hessian(problem, request):
    model, train, test = request.getfixturevalue(problem)
    li = LayerInfluence(model, train, hessian="exact", damping=DAMPING, batch_size=32)
    ours = li.influence(test.tensors)
    assert ours.shape == (3, len(test), len(train))
    for i, layer in enumerate(li.layer_names):
        ref = reference_scores(model, train, test, layer_names_of(model, layer), DAMPING)
        assert rel_err(ours[i], ref) <= 1e-4, layer


def test_probe_uses_gauss_newton_exactly_where_the_model_is_piecewise_linear(
    relu_problem, tanh_problem
):
    for (model, train, test), expected in [
        (relu_problem, ["gauss-newton"] * 3),
        # Only the last layer feeds the logits linearly; tanh curves the other two.
        (tanh_problem, ["hessian", "hessian", "gauss-newton"]),
    ]:
        li = LayerInfluence(model, train, hessian="exact", damping=DAMPING)
        li.influence(test.tensors)
        strategy, _ = li._fitted["layers"]
        assert strategy.method == expected


def test_gauss_newton_block_equals_true_hessian_products_on_relu(relu_problem):
    model, train, test = relu_problem
    gn = LayerInfluence(model, train, damping=DAMPING).influence(test.tensors)
    hvp = LayerInfluence(
        model, train, damping=DAMPING, hessian=ExactSettings(gauss_newton="never")
    ).influence(test.tensors)
    assert rel_err(gn, hvp) <= 1e-8


def test_gauss_newton_is_not_exact_on_tanh(tanh_problem):
    # The probe matters: forcing Gauss-Newton where the model is curved changes the scores.
    model, train, test = tanh_problem
    exact = LayerInfluence(model, train, hessian="exact", damping=DAMPING).influence(test.tensors)
    forced = LayerInfluence(
        model, train, damping=DAMPING, hessian=ExactSettings(gauss_newton="always")
    ).influence(test.tensors)
    assert rel_err(forced[:2], exact[:2]) > 1e-3
    assert rel_err(forced[2], exact[2]) <= 1e-8


def test_global_equals_dense_hessian_of_all_parameters(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian="exact", damping=DAMPING)
    ours = li.global_influence(test.tensors)
    names = [n for n, _ in model.named_parameters()]
    ref = reference_scores(model, train, test, names, DAMPING)
    assert rel_err(ours, ref) <= 1e-4
    strategy, _ = li._fitted["<global>"]
    # Products of weights of different layers curve the loss: Gauss-Newton is not exact.
    assert strategy.method == ["hessian"]


def test_float32_model_is_close_to_float64(relu_problem):
    model, train, test = relu_problem
    ref = LayerInfluence(model, train).influence(test.tensors)

    def single(tensors):
        return tuple(t.float() if t.is_floating_point() else t for t in tensors)

    model32 = copy.deepcopy(model).float()
    ours = LayerInfluence(model32, single(train.tensors)).influence(single(test.tensors))
    assert ours.dtype == torch.float32
    assert rel_err(ours.double(), ref) <= 1e-3
