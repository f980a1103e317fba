"""`hessian="exact"` against an independent dense Hessian from torch.func.hessian."""

import copy

import pytest
import torch
from torch.utils.data import TensorDataset

from captum_layerinf import ExactSettings, LayerInfluence
from tests.conftest import rel_err

from ._reference import flat_params, layer_names_of, reference_scores

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


def _few_examples_wide_layer():
    """A ReLU MLP whose middle layer has far more parameters than examples x classes."""
    torch.manual_seed(0)
    model = (
        torch.nn.Sequential(
            torch.nn.Linear(6, 40),
            torch.nn.ReLU(),
            torch.nn.Linear(40, 30),
            torch.nn.ReLU(),
            torch.nn.Linear(30, 4),
        )
        .double()
        .eval()
    )
    x, y = torch.randn(13, 6, dtype=torch.float64), torch.arange(13) % 4
    return model, TensorDataset(x[:9], y[:9]), TensorDataset(x[9:], y[9:])


@pytest.mark.parametrize("batch_size", [4, 9])
def test_low_rank_gauss_newton_blocks_are_solved_from_their_rows_exactly(batch_size):
    """9 examples x 4 outputs = 36 rows against 1,230 parameters: Woodbury, = dense."""
    model, train, test = _few_examples_wide_layer()
    li = LayerInfluence(model, train, hessian="exact", damping=DAMPING, batch_size=batch_size)
    ours = li.influence(test.tensors)
    strategy, _ = li._fitted["layers"]
    assert [f[0] for f in strategy.export()["factors"]] == ["woodbury"] * 3
    for i, layer in enumerate(li.layer_names):
        ref = reference_scores(model, train, test, layer_names_of(model, layer), DAMPING)
        assert rel_err(ours[i], ref) <= 1e-9, layer


def test_woodbury_rows_keep_the_sign_of_an_indefinite_output_hessian():
    """A loss not convex in the outputs: `Jᵀ Λ J` with Λ indefinite, = the dense product."""
    model, train, test = _few_examples_wide_layer()

    def loss_fn(out, target):  # per example; its output Hessian has both signs
        return (out[:, 0] * out[:, 1]) + torch.nn.functional.cross_entropy(
            out, target, reduction="none"
        )

    names = layer_names_of(model, "2")
    kw = dict(hessian=ExactSettings(gauss_newton="always"), damping=1.0, layers=["2"])
    rows = LayerInfluence(model, train, loss_fn=loss_fn, **kw)
    got = rows.influence(test.tensors)[0]
    strategy, _ = rows._fitted["layers"]
    assert strategy.export()["factors"][0][0] == "woodbury-lu"
    # The same Gauss-Newton block, dense: from the output Jacobians and Hessians directly.
    flat, unflatten = flat_params(model, names)
    x, y = train.tensors
    out = lambda v, xs: torch.func.functional_call(model, unflatten(v), (xs,))  # noqa: E731
    jac = torch.func.jacrev(out)(flat, x)
    lam = torch.stack(
        [
            torch.func.hessian(lambda o, t=t: loss_fn(o[None], t[None])[0])(o)
            for o, t in zip(model(x).detach(), y, strict=True)
        ]
    )
    block = torch.einsum("icp,icd,idq->pq", jac, lam, jac) / len(y)
    g_tr, g_te = (
        torch.func.vmap(
            torch.func.grad(lambda v, a, t: loss_fn(out(v, a[None]), t[None])[0]), (None, 0, 0)
        )(flat, *d.tensors)
        for d in (train, test)
    )
    want = g_te @ torch.linalg.solve(block + torch.eye(len(block), dtype=block.dtype), g_tr.T)
    assert rel_err(got, want) <= 1e-9


def test_probe_looks_again_where_the_first_example_shows_no_curvature():
    # The first example is fitted exactly (zero loss gradient), so the curved term vanishes
    # on it alone; the probe must still find the tanh layer curved on the next examples.
    torch.manual_seed(0)
    model = (
        torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        .double()
        .eval()
    )
    x = torch.randn(12, 3, dtype=torch.float64)
    y = torch.randn(12, 1, dtype=torch.float64)
    with torch.no_grad():
        y[0] = model(x[:1])[0]
    train = (x, y)

    def methods(settings: ExactSettings) -> list[str]:
        li = LayerInfluence(model, train, hessian=settings, loss_fn=torch.nn.MSELoss())
        li.influence((x[:2], y[:2]))
        return li._fitted["layers"][0].method

    assert methods(ExactSettings(probe_examples=1)) == ["gauss-newton", "gauss-newton"]
    assert methods(ExactSettings()) == ["hessian", "gauss-newton"]
