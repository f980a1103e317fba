"""Models whose output is a tuple, a dict or a HuggingFace-style object: `output_fn`."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from captum_layerinf import LayerInfluence
from tests._threads import one_torch_thread
from tests.conftest import rel_err

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)


class ModelOutput(OrderedDict):
    """Like a HuggingFace output: a dict whose entries are attributes too."""

    def __getattr__(self, name):
        return self[name]


class Wrapped(nn.Module):
    """A classifier returning its logits inside a tuple, a dict or a `ModelOutput`."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
        self.kind = kind

    def forward(self, x):
        logits = self.body(x)
        if self.kind == "tuple":
            return logits, x.mean()
        if self.kind == "dict":
            return {"logits": logits, "features": x}
        return ModelOutput(logits=logits, hidden=x)


PICK = {
    "tuple": lambda out: out[0],
    "dict": lambda out: out["logits"],
    "hf": lambda out: out.logits,
}


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(9, 1, 6, 6, generator=gen, dtype=torch.float64)
    return (x, torch.arange(9) % 3), (x[:2], torch.tensor([0, 2]))


@pytest.mark.parametrize(("kind", "hessian"), [("tuple", "exact"), ("dict", "cg"), ("hf", "ekfac")])
def test_output_fn_gives_the_scores_of_the_plain_model(data, kind, hessian):
    train, test = data
    torch.manual_seed(0)
    model = Wrapped(kind).double().eval()
    plain = LayerInfluence(model.body, train, hessian=hessian)
    li = LayerInfluence(model, train, hessian=hessian, output_fn=PICK[kind])
    assert li.layer_names == ["body.0", "body.3"]
    assert rel_err(li.influence(test), plain.influence(test)) <= 1e-8
    assert rel_err(li.self_influence(test), plain.self_influence(test)) <= 1e-8
    assert not model._forward_hooks, "the output hook must be removed"


@pytest.mark.parametrize("kind", list(PICK))
def test_a_non_tensor_output_without_output_fn_names_the_fix(data, kind):
    train, test = data
    model = Wrapped(kind).double().eval()
    li = LayerInfluence(model, train)
    with pytest.raises(TypeError, match=r"returned a \w+, not a tensor.*pass output_fn="):
        li.influence(test)
    assert not model._forward_hooks
