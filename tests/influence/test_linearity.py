"""Flat blocks read from the autograd graph agree with the measured curvature probe."""

import pytest
import torch
from torch import nn

from captum_layerinf import LayerInfluence
from captum_layerinf._utils.losses import ExampleLoss
from captum_layerinf.influence._gradients import GradientEngine
from captum_layerinf.influence._linearity import curving_ops
from captum_layerinf.influence.strategies import ExactSettings
from tests.conftest import tiny_cnn


class SqueezeExcite(nn.Module):
    """conv-ReLU, times a sigmoid gate of its own pooled features, then a classifier."""

    def __init__(self, gate: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Conv2d(4, 4, 1)
        self.gate = gate()
        self.head = nn.Linear(4 * 64, 10)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = h * self.gate(self.fc(h.mean((2, 3), keepdim=True)))
        return self.head(h.flatten(1))


class Residual(nn.Module):
    """x + Linear(ReLU6(BN(Linear(x)))), concatenated with a max, then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn, self.b = nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Linear(16, 64)
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        x = x.flatten(1)
        h = x + self.b(nn.functional.relu6(self.bn(self.a(x))))
        return self.head(torch.cat([h, torch.maximum(h, x)], 1))


class Tied(nn.Module):
    """The same square weight twice, around a ReLU: quadratic in it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.head(nn.functional.linear(torch.relu(self.a(x)), self.a.weight))


class Normalised(nn.Module):
    """Linear features divided by their L1 norm plus one (a curved division), then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.head = nn.Linear(64, 8), nn.Linear(8, 10)

    def forward(self, x):
        h = self.a(x.flatten(1))
        return self.head(h / (1 + h.abs().sum(1, keepdim=True)))


def _attention() -> nn.Module:
    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(8, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            h = self.embed(x.view(len(x), 8, 8))
            return self.head(self.attn(h, h, h, need_weights=False)[0].flatten(1))

    return Attention()


MODELS = {
    "relu": lambda: tiny_cnn(nn.ReLU),
    "tanh": lambda: tiny_cnn(nn.Tanh),
    "leaky-relu": lambda: tiny_cnn(nn.LeakyReLU),
    "gelu": lambda: tiny_cnn(nn.GELU),
    "squeeze-excite": SqueezeExcite,
    "hardsigmoid-gate": lambda: SqueezeExcite(nn.Hardsigmoid),
    "residual-bn": Residual,
    "tied": Tied,
    "normalised": Normalised,
    "layer-norm": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 10)
    ),
    "group-norm": lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)
    ),
    "attention": _attention,
}


def _blocks(model: nn.Module) -> list[list[str]]:
    """One block per module that owns parameters (each parameter once)."""
    out: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        out.setdefault(name.rpartition(".")[0], []).append(name)
    return list(out.values())


@pytest.mark.parametrize("kind", MODELS)
def test_the_graph_finds_the_blocks_the_probe_finds_curved(kind):
    # The probe measures the second-order term Gauss-Newton leaves out, on 4 examples and a
    # random direction per block; the graph must call exactly those blocks flat.
    torch.manual_seed(0)
    model = MODELS[kind]().double().eval()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    y = torch.arange(4) % 10
    blocks = _blocks(model)
    params = dict(model.named_parameters())
    ops = curving_ops(model, params, (x[:1],), blocks)
    engine = GradientEngine(model, ExampleLoss(nn.CrossEntropyLoss()))
    measured = engine.curvature_residuals((x,), y, blocks)
    tol = ExactSettings().residual_tol
    assert [op is None for op in ops] == [r <= tol for r in measured], (ops, measured)


def test_the_graph_names_the_operation_and_flags_products_of_a_block_with_itself():
    torch.manual_seed(0)
    for model, expected in [
        (SqueezeExcite(), ["Sigmoid", "Sigmoid", None]),
        # A piecewise-linear gate: the conv is curved by the gate's product with its input.
        (SqueezeExcite(nn.Hardsigmoid), ["Mul", None, None]),
        (Tied(), ["Mm", None]),
        (Normalised(), ["Div", None]),
        (tiny_cnn(nn.ReLU), [None, None, None]),
    ]:
        model = model.eval()
        x = torch.randn(1, 1, 8, 8)
        ops = curving_ops(model, dict(model.named_parameters()), (x,), _blocks(model))
        assert ops == expected, type(model).__name__


def test_the_whole_relu_model_as_one_block_is_curved():
    # Two layers in one block: a convolution whose input and weight both depend on it.
    model = tiny_cnn(nn.ReLU).eval()
    params = dict(model.named_parameters())
    ops = curving_ops(model, params, (torch.randn(1, 1, 8, 8),), [list(params)])
    assert ops == ["Convolution"]


def test_exact_reads_flat_blocks_from_the_graph_without_probing(relu_problem, monkeypatch):
    # Every layer of the ReLU CNN is flat: `exact` builds them all as Gauss-Newton blocks
    # and never runs the probe's Hessian-vector products.
    def fail(*args, **kwargs):
        raise AssertionError("probed")

    monkeypatch.setattr(GradientEngine, "curvature_residuals", fail)
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian="exact")
    li.influence(test.tensors)
    strategy, _ = li._fitted["layers"]
    assert strategy.method == ["gauss-newton"] * 3
    assert strategy.residual == [0.0] * 3
