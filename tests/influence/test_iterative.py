"""`hessian="cg"` and `hessian="lissa"` against `exact`, with their default settings."""

import copy

import pytest
import torch
from torch import nn

from captum_layerinf import LayerInfluence
from captum_layerinf._utils.stats import pearson
from captum_layerinf.datasets import load_digits_split
from captum_layerinf.influence.strategies import CGSettings, LiSSASettings
from captum_layerinf.training import train_classifier
from tests.conftest import rel_err

pytestmark = pytest.mark.slow


def _float32(model, train, test):
    x, y = train.tensors
    return (
        copy.deepcopy(model).float(),
        torch.utils.data.TensorDataset(x.float(), y),
        (test.tensors[0].float(), test.tensors[1]),
    )


def test_cg_equals_exact_in_float64(relu_problem):
    model, train, test = relu_problem
    exact = LayerInfluence(model, train, hessian="exact").influence(test.tensors)
    li = LayerInfluence(model, train, hessian="cg")
    assert rel_err(li.influence(test.tensors), exact) <= 1e-4
    sub = tuple(t[:5] for t in train.tensors)
    assert (
        rel_err(
            li.self_influence(sub),
            LayerInfluence(model, train, hessian="exact").self_influence(sub),
        )
        <= 1e-4
    )


def test_cg_equals_exact_in_float32(relu_problem):
    model, train, test = _float32(*(p for p in relu_problem))
    try:
        exact = LayerInfluence(model, train, hessian="exact").influence(test)
        cg = LayerInfluence(model, train, hessian="cg").influence(test)
    finally:
        relu_problem[0].double()
    assert cg.dtype == torch.float32
    assert rel_err(cg, exact) <= 1e-3


def test_cg_reports_the_true_residual_in_float32(relu_problem):
    # In float32 the recurrence residual drifts below the true one; CG must report (and
    # stop on) the true `‖(H + λI) x - v‖ / ‖v‖`, here measured in float64.
    model, train, _ = relu_problem
    x32, y = train.tensors
    model32 = copy.deepcopy(model).float()
    train32 = torch.utils.data.TensorDataset(x32.float(), y)
    args = {"hessian": "cg", "damping": 1e-3, "layers": ["0"]}
    cg, _ = LayerInfluence(model32, train32, **args)._fit("layers", False)
    (op64,) = LayerInfluence(model, train, **args)._fit("layers", False)[0].operators
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(3, cg.blocks[0].numel, generator=gen, dtype=torch.float64)
    x = cg.inverse_hvp(0, v)
    true = (op64(x) - v).norm(dim=1) / v.norm(dim=1)
    assert torch.allclose(cg.residuals[0], true, rtol=0.2)
    assert float(true.max()) <= 1.2 * cg.tol


def test_cg_equals_exact_on_a_curved_model_and_globally(tanh_problem):
    model, train, test = tanh_problem
    # 32 training examples: the global CG runs one pass per iteration over them.
    train = torch.utils.data.TensorDataset(*(t[:32] for t in train.tensors))
    test = torch.utils.data.TensorDataset(*(t[:3] for t in test.tensors))
    exact = LayerInfluence(model, train, damping=0.1, hessian="exact")
    cg = LayerInfluence(model, train, damping=0.1, hessian="cg")
    assert rel_err(cg.influence(test.tensors), exact.influence(test.tensors)) <= 1e-4
    assert rel_err(cg.global_influence(test.tensors), exact.global_influence(test.tensors)) <= 1e-4


def test_cg_warns_when_it_stops_early(relu_problem):
    model, train, test = relu_problem
    with pytest.warns(UserWarning, match="CG on block .* stopped after 2 iterations"):
        LayerInfluence(model, train, hessian=CGSettings(max_iter=2)).influence(test.tensors)


def _self_score_errors(li, reference, x, y):
    """True relative errors of the self-scores `gᵀ(H + λI)⁻¹g` of the test gradients."""
    strategy, ctx = li._fit("layers", False)
    exact, _ = reference._fit("layers", False)
    g = torch.cat([grads for _, _, grads in li._source(strategy, ctx).chunks((x,), y)])
    q, q_exact = ((s.inverse_hvp(0, g) * g).sum(1) for s in (strategy, exact))
    return ((q - q_exact) / q_exact).abs()


def test_lissa_at_the_default_damping_is_approximate_and_says_so():
    # A logistic regression on digits: LiSSA's defaults give Pearson ~0.99 but a max
    # relative error ~0.2 against exact; it must say so, at fit and from its score check.
    torch.manual_seed(0)
    train, test = load_digits_split(96, 3, seed=0, dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double()
    train_classifier(model, train, epochs=15, lr=1e-2, seed=0)
    lissa = LayerInfluence(model, train, hessian="lissa")
    with pytest.warns(UserWarning, match="stochastic approximation") as record:
        scores = lissa.influence(test.tensors)
    assert any("score error" in str(w.message) for w in record)
    reference = LayerInfluence(model, train, hessian="exact").influence(test.tensors)
    assert pearson(scores[0], reference[0]) >= 0.98
    assert rel_err(scores, reference) <= 0.3
    strategy, _ = lissa._fit("layers", False)
    assert float(strategy.score_errors[0].max()) > LiSSASettings().warn_score_error


def test_lissas_score_check_sees_what_its_residual_misses(relu_problem):
    # At a shallow depth the small-eigenvalue directions (eigenvalue ~ damping) have not
    # converged: the residual weighs them by ~damping and stays below its warning level,
    # the self-score error weighs them by 1/damping and sees them.
    model, train, test = relu_problem
    x, y = test.tensors[0][:3], test.tensors[1][:3]
    exact = LayerInfluence(model, train, layers=["0"], hessian="exact")
    lissa = LayerInfluence(model, train, layers=["0"], hessian=LiSSASettings(depth=100))
    with pytest.warns(UserWarning, match="score error"):
        lissa.influence((x, y))
    strategy, _ = lissa._fit("layers", False)
    assert float(strategy.residuals[0].max()) < LiSSASettings().warn_residual
    true = _self_score_errors(lissa, exact, x, y)
    ratio = float(strategy.score_errors[0].max() / true.max())
    assert 0.5 <= ratio <= 2
    assert float(true.max()) > 0.1


def test_lissa_warns_when_it_has_not_converged(relu_problem):
    model, train, test = relu_problem
    with pytest.warns(UserWarning, match="LiSSA on block .* has not converged"):
        LayerInfluence(model, train, hessian=LiSSASettings(depth=3)).influence(test.tensors)


def test_lissa_reports_divergence(relu_problem):
    model, train, test = relu_problem
    with pytest.raises(FloatingPointError, match="larger LiSSASettings\\(scale"):
        LayerInfluence(model, train, hessian=LiSSASettings(scale=1e-3, depth=500)).influence(
            test.tensors
        )


@pytest.mark.parametrize(
    "settings, match",
    [
        (lambda: CGSettings(tol=2.0), "tol must be in"),
        (lambda: CGSettings(max_iter=0), "max_iter must be"),
        (lambda: LiSSASettings(depth=0), "depth must be"),
        (lambda: LiSSASettings(scale=-1.0), "scale must be"),
        (lambda: LiSSASettings(repeats=0), "repeats must be"),
        (lambda: LiSSASettings(warn_score_error=0.0), "warn_score_error must be"),
    ],
)
def test_bad_settings_are_rejected(settings, match):
    with pytest.raises(ValueError, match=match):
        settings()


@pytest.mark.cuda
@pytest.mark.parametrize("hessian", ["cg", "pcg", "ekfac"])
def test_scores_on_the_gpu_equal_scores_on_the_cpu(relu_problem, hessian):
    model, train, test = relu_problem
    cpu = LayerInfluence(model, train, hessian=hessian).influence(test.tensors)
    gpu_model = copy.deepcopy(model).cuda()
    gpu_train = tuple(t.cuda() for t in train.tensors)
    gpu = LayerInfluence(gpu_model, gpu_train, hessian=hessian).influence(
        tuple(t.cuda() for t in test.tensors)
    )
    assert gpu.is_cuda
    assert rel_err(gpu.cpu(), cpu) <= 1e-6
