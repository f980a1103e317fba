"""Memory-bounded scoring: structured per-example gradients = vmap, chunked = whole, rank."""

import pytest
import torch
from torch import nn

from captum_layerinf import LayerInfluence
from captum_layerinf._utils.losses import ExampleLoss
from captum_layerinf.influence._gradients import GradientEngine
from captum_layerinf.influence._scoring import BlockGradients

from ..conftest import rel_err


class Odd(nn.Module):
    """Linear and Conv2d in the shapes the structure must handle."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, stride=2, padding=2, dilation=2)
        self.nobias = nn.Conv2d(3, 4, 2, bias=False)
        self.tokens = nn.Linear(4, 5)  # applied to [B, T, 4]
        self.shared = nn.Linear(5, 5)  # called twice
        self.norm = nn.LayerNorm(5)  # no structure: vmap path
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.nobias(torch.tanh(self.conv(x))))
        h = self.tokens(h.flatten(2).transpose(1, 2))
        h = self.shared(torch.tanh(self.shared(h)))
        return self.head(self.norm(h).mean(1))


@pytest.fixture(scope="module")
def odd_problem():
    torch.manual_seed(0)
    model = Odd().double().eval()
    x = torch.randn(6, 2, 9, 9, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    return model, x, y


def _blocks(model):
    li = LayerInfluence(model, (torch.zeros(1, 2, 9, 9).double(), torch.zeros(1).long()))
    return li, li._blocks("layers")


def test_structured_gradients_equal_vmap_gradients(odd_problem):
    model, x, y = odd_problem
    li, blocks = _blocks(model)
    engine = GradientEngine(model, ExampleLoss())
    source = BlockGradients(model, ExampleLoss(), engine, blocks)
    assert [s is not None for s in source.structure] == [True, True, True, True, False, True]
    expected = engine.block_grads((x,), y, blocks)
    got = [torch.zeros_like(e) for e in expected]
    for i, rows, g in source.chunks((x,), y):
        got[i][rows] = g
    for name, a, b in zip(li.layer_names, got, expected, strict=True):
        assert rel_err(a, b) < 1e-12, name


def _assembled(source, x, y):
    out = {}
    for i, rows, g in source.chunks((x,), y):
        out.setdefault(i, torch.zeros(len(y), g.shape[1], dtype=g.dtype))[rows] = g
    return [out[i] for i in sorted(out)]


def test_small_chunks_equal_one_chunk(odd_problem):
    model, x, y = odd_problem
    _, blocks = _blocks(model)
    engine = GradientEngine(model, ExampleLoss())
    whole = BlockGradients(model, ExampleLoss(), engine, blocks)
    tiny = BlockGradients(model, ExampleLoss(), engine, blocks, chunk_bytes=1)
    assert {rows.stop - rows.start for _, rows, _ in tiny.chunks((x,), y)} == {1}
    for a, b in zip(_assembled(tiny, x, y), _assembled(whole, x, y), strict=True):
        assert rel_err(a, b) < 1e-12


def test_full_query_rank_equals_dense_queries(relu_problem):
    model, train, test = relu_problem
    x, y = test.tensors
    dense = LayerInfluence(model, train).influence((x, y))
    # rank >= min(d_out, d_in) of every layer keeps the queries exact.
    full = LayerInfluence(model, train, query_rank=64).influence((x, y))
    assert rel_err(full, dense) < 1e-10
    # A real truncation whose error falls as the rank grows.
    errors = [
        rel_err(LayerInfluence(model, train, query_rank=r).influence((x, y)), dense)
        for r in (1, 2, 4)
    ]
    assert errors[0] > errors[1] > errors[2] > 1e-6


def test_self_influence_matches_the_diagonal_of_influence(relu_problem):
    model, train, _ = relu_problem
    x, y = train.tensors
    sub = (x[:10], y[:10])
    li = LayerInfluence(model, train)
    full = LayerInfluence(model, sub).influence(sub)
    selfi = LayerInfluence(model, sub).self_influence()
    assert rel_err(selfi, torch.diagonal(full, dim1=1, dim2=2)) < 1e-10
    assert li.self_influence(sub).shape == (len(li.layer_names), 10)


def test_query_rank_is_validated(relu_problem):
    model, train, _ = relu_problem
    with pytest.raises(ValueError, match="query_rank"):
        LayerInfluence(model, train, query_rank=0)
