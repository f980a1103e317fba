"""Any per-example loss, as in Captum: regression, multi-label, label smoothing, functions.

The Gauss-Newton blocks must use each loss's own output Hessian: on a ReLU network (where
Gauss-Newton is exact) they must equal the blocks built from true Hessian-vector products.
"""

import pytest
import torch
from torch import nn

from captum_layerinf import ExactSettings, LayerInfluence
from captum_layerinf._utils.losses import ExampleLoss
from tests._threads import one_torch_thread
from tests.conftest import rel_err

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)

N, K = 10, 3


@pytest.fixture(scope="module")
def net():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, K)).double().eval()
    x = torch.randn(N, 4, generator=gen, dtype=torch.float64)
    return model, x, gen


def _targets(kind, gen):
    if kind == "regression":
        return torch.randn(N, K, generator=gen, dtype=torch.float64)
    if kind == "multi-hot":
        return (torch.rand(N, K, generator=gen) > 0.5).double()
    return torch.arange(N) % K


LOSSES = {
    "mse-mean": (nn.MSELoss(), "regression"),
    "mse-sum": (nn.MSELoss(reduction="sum"), "regression"),
    "bce": (nn.BCEWithLogitsLoss(), "multi-hot"),
    "ce-label-smoothing": (nn.CrossEntropyLoss(label_smoothing=0.2), "classes"),
    "huber": (nn.HuberLoss(delta=0.5), "regression"),
    "user-function": (lambda out, t: (out - t) ** 2 + 0.1 * (out - t) ** 4, "regression"),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_gauss_newton_uses_the_loss_output_hessian(net, name):
    model, x, gen = net
    loss_fn, kind = LOSSES[name]
    data = (x, _targets(kind, gen))
    scores = {}
    for mode in ("always", "never"):
        li = LayerInfluence(
            model,
            data,
            loss_fn=loss_fn,
            hessian=ExactSettings(gauss_newton=mode),
            damping=0.01,
        )
        scores[mode] = li.influence(data)
    assert rel_err(scores["always"], scores["never"]) <= 1e-8


def test_output_hessians_are_those_of_the_losses():
    gen = torch.Generator().manual_seed(1)
    out = torch.randn(4, K, generator=gen, dtype=torch.float64)
    target = torch.randn(4, K, generator=gen, dtype=torch.float64)
    eye = torch.eye(K, dtype=torch.float64).expand(4, K, K)
    assert torch.allclose(ExampleLoss(nn.MSELoss()).output_hessian(out, target), 2 * eye / K)
    summed = ExampleLoss(nn.MSELoss(reduction="sum")).output_hessian(out, target)
    assert torch.allclose(summed, 2 * eye)
    s = torch.sigmoid(out)
    bce = ExampleLoss(nn.BCEWithLogitsLoss()).output_hessian(out, target.sigmoid())
    assert torch.allclose(bce, torch.diag_embed(s * (1 - s)) / K)
    p = out.softmax(1)
    softmax_hessian = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    labels = torch.tensor([0, 1, 2, 0])
    smooth = ExampleLoss(nn.CrossEntropyLoss(label_smoothing=0.3)).output_hessian(out, labels)
    assert torch.allclose(smooth, softmax_hessian)
    l1 = ExampleLoss(nn.L1Loss()).output_hessian(out, target)
    assert torch.equal(l1, torch.zeros_like(l1))
    factor = ExampleLoss(nn.BCEWithLogitsLoss()).output_hessian_factor(out, target.sigmoid())
    assert torch.allclose(factor @ factor.transpose(1, 2), bce)


def test_per_example_losses_follow_the_reduction_rule():
    gen = torch.Generator().manual_seed(2)
    out = torch.randn(4, K, 2, generator=gen)
    target = torch.randn(4, K, 2, generator=gen)
    sq = ((out - target) ** 2).flatten(1)
    assert torch.allclose(ExampleLoss(nn.MSELoss())(out, target), sq.mean(1))
    assert torch.allclose(ExampleLoss(nn.MSELoss(reduction="sum"))(out, target), sq.sum(1))
    assert torch.allclose(ExampleLoss(nn.MSELoss(reduction="none"))(out, target), sq.sum(1))
    assert torch.allclose(ExampleLoss(lambda o, t: (o - t) ** 2)(out, target), sq.sum(1))
    # The batch of per-example losses adds up to the module's own value.
    assert torch.allclose(ExampleLoss(nn.MSELoss())(out, target).mean(), nn.MSELoss()(out, target))


def test_multi_label_scores_equal_a_hand_written_loss(net):
    model, x, gen = net
    data = (x, _targets("multi-hot", gen))

    def by_hand(out, t):
        return -(t * nn.functional.logsigmoid(out) + (1 - t) * nn.functional.logsigmoid(-out))

    ours = LayerInfluence(model, data, loss_fn=nn.BCEWithLogitsLoss(reduction="sum"))
    theirs = LayerInfluence(model, data, loss_fn=by_hand)
    assert rel_err(ours.influence(data), theirs.influence(data)) <= 1e-10


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_integer_class_labels_of_any_dtype_are_accepted(net, dtype):
    model, x, gen = net
    y = _targets("classes", gen)
    expected = LayerInfluence(model, (x, y), layers=["2"]).influence((x[:3], y[:3]))
    li = LayerInfluence(model, (x, y.to(dtype)), layers=["2"])
    assert torch.equal(li.influence((x[:3], y[:3].to(dtype))), expected)


def test_cross_entropy_takes_class_probabilities(net):
    model, x, gen = net
    y = _targets("classes", gen)
    onehot = nn.functional.one_hot(y, K).double()
    expected = LayerInfluence(model, (x, y), layers=["2"]).influence((x[:3], y[:3]))
    li = LayerInfluence(model, (x, onehot), layers=["2"])
    assert rel_err(li.influence((x[:3], onehot[:3])), expected) <= 1e-12


def test_cross_entropy_on_one_dimensional_outputs_names_the_fix(net):
    _, x, _ = net
    flat = nn.Sequential(nn.Linear(4, 1), nn.Flatten(0)).double().eval()
    y = torch.zeros(N, dtype=torch.long)
    with pytest.raises(ValueError, match=r"logits of shape \[batch, classes\].*nn.MSELoss"):
        LayerInfluence(flat, (x, y)).influence((x[:2], y[:2]))


@pytest.mark.parametrize("shape", [(), (1,), (2,)], ids=["[n]", "[n,1]", "[n,2]"])
def test_ekfac_takes_the_output_hessian_of_regression_outputs(shape):
    # The last Linear layer under MSE: its Hessian block is A ⊗ 2I/k, which EK-FAC's
    # eigenvalue-corrected Kronecker factors represent exactly, for outputs of any shape.
    torch.manual_seed(0)
    k = shape[0] if shape else 1
    head = [nn.Linear(5, k)] + ([nn.Flatten(0)] if not shape else [])
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), *head).double().eval()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randn(20, *shape, dtype=torch.float64)
    args = {"loss_fn": nn.MSELoss(), "damping": 0.1, "layers": ["2"]}
    ekfac = LayerInfluence(model, (x, y), hessian="ekfac", **args).influence((x[:3], y[:3]))
    exact = LayerInfluence(model, (x, y), hessian="exact", **args).influence((x[:3], y[:3]))
    assert rel_err(ekfac, exact) <= 1e-10
