"""Hessian-vector products where PyTorch lacks forward-mode AD (MobileNetV3-style ops)."""

import pytest
import torch
from torch import nn

from captum_layerinf import LayerInfluence
from captum_layerinf._utils.losses import ExampleLoss
from captum_layerinf.influence._gradients import GradientEngine
from tests._threads import one_torch_thread
from tests.conftest import rel_err

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)


class HandHardsigmoid(nn.Module):
    """hardsigmoid written as `relu6(x + 3) / 6`: the same function, from other ops."""

    def forward(self, x):
        return nn.functional.relu6(x + 3) / 6


class SquashFn(torch.autograd.Function):
    """`x / (1 + |x|)` with a hand-written backward and no forward-mode derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x / (1 + x.abs())

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (1 + x.abs()) ** 2


class Squash(nn.Module):
    def forward(self, x):
        return SquashFn.apply(x)


class SqueezeExcite(nn.Module):
    """MobileNetV3's squeeze-excitation: channel gates through hardsigmoid."""

    def __init__(self, channels: int, gate: type[nn.Module]) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, 2, 1)
        self.fc2 = nn.Conv2d(2, channels, 1)
        self.gate = gate()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(torch.relu(self.fc1(s))))


def mobile(gate: type[nn.Module] = nn.Hardsigmoid, act: type[nn.Module] = nn.Hardswish):
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(1, 3, 3),
            act(),
            SqueezeExcite(3, gate),
            nn.Flatten(),
            nn.Linear(27, 3),
        )
        .double()
        .eval()
    )


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 1, 5, 5, generator=gen, dtype=torch.float64)
    return (x, torch.arange(10) % 3), (x[:3], torch.tensor([0, 1, 2]))


@pytest.mark.slow
def test_cg_equals_exact_with_hardswish_and_hardsigmoid(data):
    train, test = data
    model = mobile()
    exact = LayerInfluence(model, train, damping=0.1, hessian="exact").influence(test)
    cg = LayerInfluence(model, train, damping=0.1, hessian="cg").influence(test)
    assert rel_err(cg, exact) <= 1e-5
    # The same network with hardsigmoid written by hand needs no rewriting.
    by_hand = mobile(gate=HandHardsigmoid)
    assert (
        rel_err(LayerInfluence(by_hand, train, damping=0.1, hessian="exact").influence(test), exact)
        <= 1e-8
    )


def test_reverse_over_reverse_equals_forward_over_reverse(data):
    (x, y), _ = data
    model = mobile(act=nn.Tanh, gate=nn.Sigmoid)
    names = [n for n, _ in model.named_parameters()]
    vectors = torch.randn(4, sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    forward = GradientEngine(model, ExampleLoss())
    reverse = GradientEngine(model, ExampleLoss())
    reverse._forward_ad = False
    products = [e.hvp((x,), y, names, vectors) for e in (forward, reverse)]
    assert rel_err(products[1], products[0]) < 1e-12
    residuals = [e.curvature_residual((x,), y, ["2.fc1.weight"]) for e in (forward, reverse)]
    assert residuals[0] > 1e-3
    assert residuals[1] == pytest.approx(residuals[0], rel=1e-10)
    assert forward._forward_ad is True


def test_an_op_without_forward_mode_ad_falls_back_to_reverse_mode(data):
    train, test = data
    model = mobile(act=Squash, gate=nn.Sigmoid)
    li = LayerInfluence(model, train, damping=0.1, layers=["0", "2.fc2"], hessian="exact")
    scores = li.influence(test)
    strategy, ctx = li._fitted["layers"]
    assert ctx.engine._forward_ad is False
    assert strategy.method == ["hessian", "hessian"]
    # The same function from differentiable ops, through forward-over-reverse.
    smooth = mobile(act=lambda: _SmoothSquash(), gate=nn.Sigmoid)
    expected = LayerInfluence(
        smooth, train, damping=0.1, layers=["0", "2.fc2"], hessian="exact"
    ).influence(test)
    assert rel_err(scores, expected) <= 1e-10


class _SmoothSquash(nn.Module):
    def forward(self, x):
        return x / (1 + x.abs())


def test_hvp_chunks_follow_the_memory_bound_and_give_the_same_products(relu_problem, monkeypatch):
    """Fewer products, then fewer examples, at once where their activations would pass
    `HVP_CHUNK_BYTES`: the products of the summed loss are the same."""
    from captum_layerinf.influence import _gradients

    model, train, _ = relu_problem
    li = LayerInfluence(model, train, hessian="exact")
    _, ctx = li._fit("layers", False)
    x, y = (train.tensors[0][:8],), train.tensors[1][:8]
    names = [n for n, _ in model.named_parameters()][:2]
    size = sum(p.numel() for n, p in model.named_parameters() if n in names)
    vectors = torch.randn(5, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    want = ctx.engine.hvp(x, y, names, vectors)
    assert ctx.engine.hvp_chunk(x, 5) == 5
    assert ctx.engine.examples_per_pass(x) == 8
    per_example = ctx.engine.activation_bytes(x) // 8
    # Room for one product of 3 examples: chunks of one product, sub-batches 3, 3, 2.
    monkeypatch.setattr(_gradients, "HVP_CHUNK_BYTES", 3 * _gradients.HVP_COPIES * per_example)
    assert ctx.engine.examples_per_pass(x) == 3
    assert ctx.engine.hvp_chunk(x, 5) == 1
    assert torch.allclose(ctx.engine.hvp(x, y, names, vectors), want, rtol=1e-12, atol=0)
    monkeypatch.setattr(_gradients, "HVP_CHUNK_BYTES", 1)
    assert ctx.engine.hvp_chunk(x, 5) == ctx.engine.examples_per_pass(x) == 1
    assert torch.allclose(ctx.engine.hvp(x, y, names, vectors), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("forward_ad", [True, False])
def test_probes_split_into_sub_batches_of_examples_give_the_same_residuals(
    data, forward_ad, monkeypatch
):
    """A batch whose single product would pass `HVP_CHUNK_BYTES` is probed in sub-batches."""
    from captum_layerinf.influence import _gradients

    (x, y), _ = data
    model = mobile(act=nn.Tanh, gate=nn.Sigmoid)
    blocks = [["0.weight"], ["2.fc1.weight", "2.fc1.bias"]]

    def residuals() -> list[float]:
        engine = GradientEngine(model, ExampleLoss())
        engine._forward_ad = forward_ad
        return engine.curvature_residuals((x[:6],), y[:6], blocks, seed=1)

    want = residuals()
    monkeypatch.setattr(_gradients, "HVP_CHUNK_BYTES", 1)  # one example at a time
    got = residuals()
    assert got == pytest.approx(want, rel=1e-10, abs=1e-14)
    assert max(got) > 1e-3  # a curved block: the sums over examples are compared


@pytest.mark.parametrize("forward_ad", [True, False])
def test_probes_of_several_blocks_at_once_equal_one_at_a_time(data, forward_ad):
    (x, y), _ = data
    model = mobile(act=nn.Tanh, gate=nn.Sigmoid)
    modules = dict.fromkeys(n.rpartition(".")[0] for n, _ in model.named_parameters())
    blocks = [[n for n, _ in model.named_parameters() if n.startswith(m + ".")] for m in modules]
    together = GradientEngine(model, ExampleLoss())
    together._forward_ad = forward_ad
    got = together.curvature_residuals((x,), y, blocks, seed=3)
    want = []
    for block in blocks:
        alone = GradientEngine(model, ExampleLoss())
        alone._forward_ad = forward_ad
        want.append(alone.curvature_residual((x,), y, block, seed=3))
    assert got == pytest.approx(want, rel=1e-10, abs=1e-14)
    assert min(got) < 1e-12 < 1e-3 < max(got)  # Both kinds of block are present.
    # Answers are remembered: a single probe of a block probed with others is not rerun.
    together._curvature_residuals = None
    assert together.curvature_residual((x,), y, blocks[1], seed=3) == got[1]


def test_per_example_gradients_a_few_examples_at_a_time_are_the_same(data, monkeypatch):
    """Per-example gradients are vectorised over fewer examples when activations are large."""
    from captum_layerinf.influence import _gradients

    (x, y), _ = data
    model = mobile(act=nn.Tanh, gate=nn.Sigmoid)
    names = [n for n, _ in model.named_parameters()]
    want = GradientEngine(model, ExampleLoss()).grads((x[:6],), y[:6], names)
    monkeypatch.setattr(_gradients, "HVP_CHUNK_BYTES", 1)
    engine = GradientEngine(model, ExampleLoss())
    assert engine.examples_per_pass((x[:6],)) == 1
    got = engine.grads((x[:6],), y[:6], names)
    for n in names:
        assert torch.allclose(got[n], want[n], rtol=1e-12, atol=1e-15)
