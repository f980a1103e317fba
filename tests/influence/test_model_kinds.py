"""Models beyond CNNs: weights used without calling their module, attention, scalar outputs."""

import warnings

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from captum_layerinf import LayerInfluence
from tests.conftest import rel_err

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Projected(nn.Module):
    """`inp - ReLU - proj`, `proj` called as a module or through `F.linear` on its weights."""

    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.functional = functional
        self.inp = nn.Linear(6, 5)
        self.proj = nn.Linear(5, 3)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        if self.functional:
            return nn.functional.linear(h, self.proj.weight, self.proj.bias)
        return self.proj(h)


def _data(shape, n=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, dtype=torch.float64, generator=g)
    return x, torch.randint(0, classes, (n,), generator=g)


def test_a_layer_whose_weights_are_used_without_calling_it_is_left_out_with_a_warning():
    model = Projected(functional=True).double().eval()
    with pytest.warns(UserWarning, match=r"\['proj'\] are used by the forward pass without"):
        li = LayerInfluence(model, _data((6,)))
    assert li.layer_names == ["inp"]


@pytest.mark.parametrize("hessian", ["exact", "gauss-newton", "identity"])
def test_a_layer_whose_weights_are_used_without_calling_it_is_scored(hessian):
    torch.manual_seed(0)
    called = Projected(functional=False).double().eval()
    functional = Projected(functional=True).double().eval()
    functional.load_state_dict(called.state_dict())
    x, y = _data((6,))
    test = (x[:2] + 0.1, y[:2])
    want = LayerInfluence(called, (x, y), hessian=hessian)
    got = LayerInfluence(functional, (x, y), layers=["inp", "proj"], hessian=hessian)
    assert want.layer_names == ["inp", "proj"]
    assert rel_err(got.influence(test), want.influence(test)) < 1e-10
    assert rel_err(got.global_influence(test), want.global_influence(test)) < 1e-10


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.attn(x, x, x)[0].mean(1))


def test_multihead_attention_output_projection_is_scored_when_named():
    # `out_proj` is never called (its weights go to F.linear): no Kronecker structure, so
    # EK-FAC solves it with the exact block.
    torch.manual_seed(0)
    model = Attention().double().eval()
    x, y = _data((3, 4))
    test = (x[:2] + 0.1, y[:2])
    layers = ["attn", "attn.out_proj", "fc"]
    exact = LayerInfluence(model, (x, y), layers=layers, hessian="exact")
    ekfac = LayerInfluence(model, (x, y), layers=layers, hessian="ekfac")
    scores = ekfac.influence(test)
    assert rel_err(scores[1], exact.influence(test)[1]) < 1e-10
    assert torch.isfinite(ekfac.global_influence(test)).all()


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.enc(x).mean(1))


@pytest.mark.parametrize("hessian", ["exact", "captum"])
def test_attention_hessians_do_not_depend_on_the_fused_kernel(hessian):
    # PyTorch's fused attention kernels have no second derivatives; the reference one does.
    torch.manual_seed(0)
    model = Encoder().double().eval()
    x, y = _data((3, 4), n=8)
    test = (x[:2] + 0.1, y[:2])
    layers = ["enc.self_attn", "enc.linear1"]
    with sdpa_kernel(SDPBackend.MATH):
        want = LayerInfluence(model, (x, y), layers=layers, hessian=hessian).influence(test)
    got = LayerInfluence(model, (x, y), layers=layers, hessian=hessian).influence(test)
    assert rel_err(got, want) < 1e-8


def test_check_on_a_regression_with_one_output_per_example():
    # Outputs `[n]` (with targets `[n]`) are the same problem as `[n, 1]`.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1)).double().eval()
    flat = nn.Sequential(net, nn.Flatten(0))
    x = _data((6,), n=16)[0]
    y = torch.randn(16, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = LayerInfluence(net, (x, y[:, None]), loss_fn=nn.MSELoss(), hessian="identity")
        got = LayerInfluence(flat, (x, y), loss_fn=nn.MSELoss(), hessian="identity")
        a = got.check((x[:3], y[:3]), n_train=8)
        b = want.check((x[:3], y[:3, None]), n_train=8)
    assert torch.isfinite(a.pearson).all()
    assert rel_err(a.pearson, b.pearson) < 1e-10


class Recurrent(nn.Module):
    def __init__(self, cell) -> None:
        super().__init__()
        self.rnn = cell(3, 4, batch_first=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_recurrent_layers_that_cannot_run_under_vmap_are_scored_per_example(cell):
    # nn.LSTM / nn.GRU fail under torch.func.vmap; per-example gradients fall back to a
    # loop, so exact scores equal CG's (batched Hessian-vector products, no per-example vmap).
    torch.manual_seed(0)
    model = Recurrent(cell).double().eval()
    x, y = _data((4, 3), n=8)
    test = (x[:2] + 0.1, y[:2])
    exact = LayerInfluence(model, (x, y), hessian="exact").influence(test)
    cg = LayerInfluence(model, (x, y), hessian="cg").influence(test)
    assert rel_err(exact, cg) < 1e-8
