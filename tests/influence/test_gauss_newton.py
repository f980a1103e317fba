"""`hessian="gauss-newton"` against an independent dense Gauss-Newton matrix (torch.func)."""

import pytest

from captum_layerinf import GaussNewtonSettings, LayerInfluence
from tests.conftest import rel_err

from ._reference import dense_gauss_newton, layer_names_of, reference_scores

DAMPING = 1e-2


def test_gauss_newton_equals_the_dense_jacobian_product_on_a_curved_model(tanh_problem):
    model, train, test = tanh_problem
    li = LayerInfluence(model, train, hessian="gauss-newton", damping=DAMPING, batch_size=32)
    ours = li.influence(test.tensors)
    for i, layer in enumerate(li.layer_names):
        names = layer_names_of(model, layer)
        ref = reference_scores(model, train, test, names, DAMPING, dense_gauss_newton)
        assert rel_err(ours[i], ref) <= 1e-8, layer
    names = [n for n, _ in model.named_parameters()]
    ref = reference_scores(model, train, test, names, DAMPING, dense_gauss_newton)
    assert rel_err(li.global_influence(test.tensors), ref) <= 1e-8


def test_gauss_newton_refuses_blocks_over_its_budget(relu_problem):
    model, train, test = relu_problem
    settings = GaussNewtonSettings(max_block_bytes=8 * 100**2)
    li = LayerInfluence(model, train, hessian=settings, layers=["6"])
    with pytest.raises(MemoryError, match=r"'6' has 650 parameters"):
        li.influence(test.tensors)
