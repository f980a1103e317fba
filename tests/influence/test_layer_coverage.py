"""Conv1d, grouped and depthwise Conv2d, string padding and padding modes, norm layers:
per-example gradients from the taps, EK-FAC factors per group, the exact fallback."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from captum_layerinf import LayerInfluence
from captum_layerinf._utils.losses import ExampleLoss
from captum_layerinf._utils.stats import pearson
from captum_layerinf.influence import _taps
from captum_layerinf.influence._gradients import GradientEngine
from captum_layerinf.influence._scoring import BlockGradients
from captum_layerinf.influence.strategies import EKFACSettings
from captum_layerinf.influence.strategies.base import Block
from tests.conftest import rel_err

from ._reference import dense_hessian, layer_names_of

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

# (name, layer, input shape without batch)
LAYERS = [
    ("grouped", lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (4, 5, 5)),
    ("depthwise", lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), (4, 5, 5)),
    ("depthwise-no-bias", lambda: nn.Conv2d(4, 8, 3, stride=2, groups=4, bias=False), (4, 6, 6)),
    ("same-even-kernel", lambda: nn.Conv2d(3, 4, 4, padding="same", dilation=2), (3, 6, 6)),
    ("valid", lambda: nn.Conv2d(3, 4, 3, padding="valid", stride=2), (3, 7, 7)),
    ("reflect", lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (3, 5, 5)),
    ("circular", lambda: nn.Conv2d(2, 3, 3, padding=(2, 1), padding_mode="circular"), (2, 5, 5)),
    ("conv1d", lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1), (3, 9)),
    ("conv1d-same-grouped", lambda: nn.Conv1d(4, 6, 4, padding="same", groups=2), (4, 8)),
    ("conv1d-replicate", lambda: nn.Conv1d(2, 3, 3, padding=2, padding_mode="replicate"), (2, 7)),
]


def _problem(make, shape, n: int = 12, seed: int = 0):
    """`layer - ReLU - flatten - linear(3)` on random data: piecewise linear in the layer."""
    torch.manual_seed(seed)
    layer = make()
    with torch.no_grad():
        width = layer(torch.zeros(1, *shape)).numel()
    model = nn.Sequential(layer, nn.ReLU(), nn.Flatten(), nn.Linear(width, 3)).double().eval()
    x = torch.randn(n, *shape, dtype=torch.float64)
    y = torch.randint(0, 3, (n,))
    return model, (x, y)


UNGROUPED = [c for c in LAYERS if "grouped" not in c[0] and "depthwise" not in c[0]] + [
    (
        "no-bias-dilated",
        lambda: nn.Conv2d(3, 5, (3, 2), padding=(2, 1), dilation=(2, 1), stride=(1, 2), bias=False),
        (3, 6, 7),
    ),
    ("pointwise", lambda: nn.Conv2d(4, 2, 1), (4, 3, 5)),
    ("conv1d-dilated", lambda: nn.Conv1d(2, 3, 3, padding=3, dilation=3, stride=2), (2, 10)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("kind", "make", "shape"), UNGROUPED, ids=[c[0] for c in UNGROUPED])
def test_positions_first_patches_equal_unfold_transposed(kind, make, shape, dtype):
    torch.manual_seed(0)
    module = make().to(dtype)
    x = torch.randn(4, *shape, dtype=dtype)
    want = _taps._patches(module, x).transpose(1, 2)
    bias = module.bias is not None
    if bias:
        want = torch.cat([want, want.new_ones(want.shape[:-1] + (1,))], dim=-1)
    got = _taps._patches_last(module, x, bias)
    assert got.shape == want.shape and torch.equal(got, want)
    with torch.no_grad():
        assert got.shape[1] == module(x)[0, 0].numel()  # one row per output position


@pytest.mark.parametrize(("kind", "make", "shape"), LAYERS, ids=[c[0] for c in LAYERS])
def test_tap_gradients_equal_torch_func_per_example_gradients(kind, make, shape):
    model, (x, y) = _problem(make, shape, n=5)
    names = layer_names_of(model, "0")
    loss = ExampleLoss()
    block = Block("0", ("0",), tuple(names), sum(model.get_parameter(n).numel() for n in names))
    source = BlockGradients(model, loss, GradientEngine(model, loss), [block], chunk_bytes=1)
    assert source.structure[0] is not None  # the structured path, not the generic one
    got = torch.zeros(len(y), block.numel, dtype=torch.float64)
    for _, rows, g in source.chunks((x,), y):
        got[rows] = g
    params = {n: model.get_parameter(n).detach() for n in names}

    def one(p, xi, yi):
        out = functional_call(model, p, (xi[None],))
        return nn.functional.cross_entropy(out, yi[None])

    want = vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)
    want = torch.cat([want[n].flatten(1) for n in names], dim=1)
    assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize(("kind", "make", "shape"), LAYERS[:1] + LAYERS[7:8], ids=["2d", "1d"])
def test_tap_gradients_are_the_same_with_frozen_weights(kind, make, shape):
    """Frozen weights run through differentiable copies, trainable ones as they are: the
    same per-example gradients, and neither fills a parameter's `.grad`."""
    model, (x, y) = _problem(make, shape, n=5)
    names = layer_names_of(model, "0")
    loss = ExampleLoss()
    block = Block("0", ("0",), tuple(names), sum(model.get_parameter(n).numel() for n in names))

    def gradients():
        source = BlockGradients(model, loss, GradientEngine(model, loss), [block], chunk_bytes=1)
        got = torch.zeros(len(y), block.numel, dtype=torch.float64)
        for _, rows, g in source.chunks((x,), y):
            got[rows] = g
        return got

    trainable = gradients()
    model.requires_grad_(False)
    frozen = gradients()
    assert torch.equal(trainable, frozen)
    assert trainable.abs().max() > 0
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(("kind", "make", "shape"), LAYERS, ids=[c[0] for c in LAYERS])
def test_ekfac_eigenvalues_are_the_hessian_diagonal_per_group(kind, make, shape):
    # Piecewise linear in the layer: its Hessian block is its Gauss-Newton block, so with
    # every direction kept the corrected eigenvalues are diag(Qᵀ H Q) in each group's
    # Kronecker basis (EK-FAC drops the entries of H between groups, as between layers).
    model, (x, y) = _problem(make, shape)
    li = LayerInfluence(model, (x, y), layers=["0"], hessian=EKFACSettings(class_tol=0.0))
    li.influence((x[:2], y[:2]))
    strategy = li._fitted["layers"][0]
    layer = strategy.layers[0]
    h = dense_hessian(model, x, y, layer_names_of(model, "0"))
    values = strategy.eigenvalue_spectrum(0).reshape(layer.groups, *strategy.ranks[0])
    q_g, q_a = strategy._bases[0]
    for k in range(layer.groups):
        basis = torch.einsum("oi,aj->ijoa", q_g[k], q_a[k]).flatten(0, 1)
        full = basis.new_zeros(len(basis), layer.groups, layer.d_out, layer.d_in)
        full[:, k] = basis
        flat = layer.to_flat(full if layer.groups > 1 else full[:, 0])
        diag = torch.einsum("kp,pq,kq->k", flat, h, flat).view_as(values[k])
        assert rel_err(values[k], diag) < 1e-8, k


@pytest.mark.parametrize(("kind", "make", "shape"), LAYERS[:4], ids=[c[0] for c in LAYERS[:4]])
def test_ekfac_scores_track_exact_on_new_layers(kind, make, shape):
    model, (x, y) = _problem(make, shape, n=24)
    test = (x[:3] + 0.1, y[:3])
    exact = LayerInfluence(model, (x, y), damping=1.0).influence(test)
    ekfac = LayerInfluence(model, (x, y), damping=1.0, hessian="ekfac").influence(test)
    assert torch.isfinite(ekfac).all()
    for a, b in zip(ekfac, exact, strict=True):
        assert pearson(a, b) > 0.9
    if model[0].groups > 1:  # grouped queries stay dense at any query_rank
        ranked = LayerInfluence(model, (x, y), damping=1.0, hessian="ekfac", query_rank=1)
        assert rel_err(ranked.influence(test)[0], ekfac[0]) < 1e-10


class Normed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, groups=2)
        self.group = nn.GroupNorm(2, 4)
        self.layer = nn.LayerNorm([4, 4, 4])
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.layer(self.group(self.conv(x)))).flatten(1))


def test_norm_layers_fall_back_to_exact_blocks():
    torch.manual_seed(0)
    model = Normed().double().eval()
    x, y = torch.randn(10, 2, 4, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    test = (x[:2] + 0.1, y[:2])
    exact = LayerInfluence(model, (x, y), hessian="exact").influence(test)
    li = LayerInfluence(model, (x, y), hessian="ekfac")
    ekfac = li.influence(test)
    assert li._fitted["layers"][0].fallback == {1: 0, 2: 1}
    assert rel_err(ekfac[1:3], exact[1:3]) < 1e-10
