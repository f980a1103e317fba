"""Least-squares regression against its closed-form influence.

Ports the idea of Captum's `test_matches_linear_regression`
(tests/influence/_core/test_naive_influence.py): a linear model `[n, 1]` trained with
squared error, whose features come as two unpacked input tensors, has Hessian `2 XᵀX / n`
(of the mean loss) and per-example gradients `2 (f(x) - y) x`, so

    s(j, k) = g_kᵀ (2 XᵀX / n + λ I)⁻¹ g_j

in our convention (docs/influence.md). Checked for a Dataset, a DataLoader and a tuple, for
`exact`, `cg` and the default strategy.
"""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from captum_layerinf import LayerInfluence
from tests._threads import one_torch_thread
from tests.conftest import rel_err

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)

DAMPING = 1e-3


class TwoInputLinear(nn.Module):
    """`f(a, b) = w·[a, b]`, output `[n, 1]` (or `[n]` with `squeeze`)."""

    def __init__(self, d_a: int, d_b: int, squeeze: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(d_a + d_b, 1, bias=False)
        self.squeeze = squeeze

    def forward(self, a, b):
        out = self.linear(torch.cat([a, b], dim=1))
        return out.squeeze(1) if self.squeeze else out


class UnpackDataset(Dataset):
    """Items `(a_i, b_i, y_i)`: two input tensors and a float target."""

    def __init__(self, a, b, y) -> None:
        self.a, self.b, self.y = a, b, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.a[i], self.b[i], self.y[i]


@pytest.fixture(scope="module")
def problem():
    gen = torch.Generator().manual_seed(0)
    n, n_test, d_a, d_b = 20, 4, 3, 2
    x = torch.randn(n + n_test, d_a + d_b, generator=gen, dtype=torch.float64)
    w_true = torch.randn(d_a + d_b, 1, generator=gen, dtype=torch.float64)
    y = x @ w_true + 0.3 * torch.randn(n + n_test, 1, generator=gen, dtype=torch.float64)
    model = TwoInputLinear(d_a, d_b).double().eval()
    with torch.no_grad():  # trained: the least-squares solution
        model.linear.weight.copy_(torch.linalg.lstsq(x[:n], y[:n]).solution.T)
    train = (x[:n, :d_a], x[:n, d_a:], y[:n])
    test = (x[n:, :d_a], x[n:, d_a:], y[n:])
    return model, train, test


def closed_form(model, train, test):
    """Scores `[n_test, n_train]` and self-influence `[n_train]` of least squares."""
    x, xt = torch.cat(train[:2], 1), torch.cat(test[:2], 1)
    w = model.linear.weight.detach().T
    g = 2 * (x @ w - train[2]) * x
    gt = 2 * (xt @ w - test[2]) * xt
    h = 2 * x.T @ x / len(x) + DAMPING * torch.eye(x.shape[1], dtype=x.dtype)
    return gt @ torch.linalg.solve(h, g.T), (g @ torch.linalg.solve(h, g.T)).diagonal()


def _as(kind, data):
    if kind == "tuple":
        return data
    dataset = UnpackDataset(*data)
    return dataset if kind == "dataset" else DataLoader(dataset, batch_size=6)


@pytest.mark.parametrize(
    ("kind", "hessian"),
    [
        ("tuple", "exact"),
        ("dataset", "exact"),
        ("dataloader", "exact"),
        ("dataloader", "cg"),
        ("tuple", None),
        ("dataset", None),
    ],
)
def test_scores_equal_the_closed_form(problem, hessian, kind):
    model, train, test = problem
    expected, expected_self = closed_form(model, train, test)
    strategy = {} if hessian is None else {"hessian": hessian}
    li = LayerInfluence(
        model, _as(kind, train), loss_fn=nn.MSELoss(), damping=DAMPING, batch_size=7, **strategy
    )
    assert li.layer_names == ["linear"]
    scores = li.influence(_as(kind, test))
    assert scores.shape == (1, 4, 20)
    assert rel_err(scores[0], expected) <= 1e-6
    assert rel_err(li.self_influence()[0], expected_self) <= 1e-6
    assert rel_err(li.global_influence(_as(kind, test)), expected) <= 1e-6


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_one_dimensional_outputs_and_any_reduction_give_the_closed_form(problem, reduction):
    model, train, test = problem
    flat = TwoInputLinear(3, 2, squeeze=True).double().eval()
    flat.load_state_dict(model.state_dict(), strict=False)
    expected, _ = closed_form(model, train, test)
    squeeze = (*train[:2], train[2][:, 0]), (*test[:2], test[2][:, 0])
    li = LayerInfluence(flat, squeeze[0], loss_fn=nn.MSELoss(reduction=reduction), damping=DAMPING)
    assert rel_err(li.influence(squeeze[1])[0], expected) <= 1e-6
