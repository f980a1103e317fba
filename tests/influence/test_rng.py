"""No call advances the global torch RNG, whatever the strategy."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_layerinf import LayerInfluence
from captum_layerinf.influence.strategies import (
    CGSettings,
    EKFACSettings,
    LiSSASettings,
    available_strategies,
)
from tests._threads import one_torch_thread

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3)).double()
    x = torch.rand(9, 1, 6, 6, dtype=torch.float64)
    return model.eval(), x, torch.arange(9) % 3


def _strategies(model):
    # Few iterations for the iterative ones: what is checked is the RNG, not convergence.
    quick = {"cg": CGSettings(max_iter=3), "lissa": LiSSASettings(depth=5, power_iterations=3)}
    extra = {"tracin": {"checkpoints": [model.state_dict()]}}
    cases = [(quick.get(name, name), extra.get(name, {})) for name in available_strategies()]
    return [*cases, (EKFACSettings(fisher="sampled"), {})]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_no_strategy_draws_from_the_global_rng(problem):
    model, x, y = problem
    train = DataLoader(TensorDataset(x, y), batch_size=4)  # a user's loader, no generator
    for hessian, kwargs in _strategies(model):
        torch.manual_seed(123)
        state = torch.get_rng_state()
        li = LayerInfluence(model, train, hessian=hessian, damping=0.1, **kwargs)
        li.influence((x[:2], y[:2]))
        li.self_influence((x[:2], y[:2]))
        li.influence((x[:2], y[:2]), k=2)
        assert torch.equal(torch.get_rng_state(), state), hessian


def test_a_single_unbatched_example_names_the_fix(problem):
    model, x, y = problem
    li = LayerInfluence(model, (x, y))
    with pytest.raises(ValueError, match=r"0-d tensor.*x.unsqueeze\(0\), y.unsqueeze\(0\)"):
        li.influence((x[0], y[0]))
    with pytest.raises(ValueError, match=r"same first dimension.*x.unsqueeze\(0\)"):
        li.influence((x[0, 0], y[:1]))
    with pytest.raises(ValueError, match=r"examples of shape \[\(6, 6\)\].*have shape"):
        li.influence((x[0], y[:1]))
    one = li.influence((x[:1], y[:1]))
    assert one.shape == (2, 1, 9)
