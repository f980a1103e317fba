"""One intra-op thread and a hand-built toy network for the attribution tests."""

import pytest
import torch
from torch import nn

from .._threads import one_torch_thread

SQUARE = (slice(0, 4), slice(0, 4))  # the pixels that drive the evidence unit
EVIDENCE_UNIT = 2


_one_thread = pytest.fixture(autouse=True, scope="package")(one_torch_thread)


def evidence_net() -> nn.Sequential:
    """conv-relu-maxpool-flatten-linear(6)-relu-linear(2), float64, hand-set weights.

    Conv channel 0 is a centre-weighted blur; channels 1 and 2 are random. Hidden unit
    `EVIDENCE_UNIT` of the linear layer "4" sums channel 0 over the pooled 2x2 block
    covering the top-left 4x4 pixels (minus 2); the other five hidden units are random
    and have zero weight in the output. Class 1's logit is 4 h - 2, class 0's is 2 - 4 h:
    that single unit carries all the class evidence.
    """
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(48, 6),
        nn.ReLU(),
        nn.Linear(6, 2),
    ).double()
    with torch.no_grad():
        conv, hidden, out = net[0], net[4], net[6]
        conv.weight.copy_(0.3 * torch.randn(3, 1, 3, 3, generator=g, dtype=torch.float64))
        conv.weight[0, 0] = torch.tensor([[0, 0.1, 0], [0.1, 0.6, 0.1], [0, 0.1, 0]])
        conv.bias.zero_()
        hidden.weight.copy_(0.2 * torch.randn(6, 48, generator=g, dtype=torch.float64))
        hidden.bias.zero_()
        hidden.weight[EVIDENCE_UNIT] = 0.0
        for r in range(2):
            for c in range(2):
                hidden.weight[EVIDENCE_UNIT, r * 4 + c] = 1.0  # channel 0, pooled (r, c)
        hidden.bias[EVIDENCE_UNIT] = -2.0
        out.weight.zero_()
        out.weight[1, EVIDENCE_UNIT], out.weight[0, EVIDENCE_UNIT] = 4.0, -4.0
        out.bias.copy_(torch.tensor([2.0, -2.0]))
    return net.eval()


def evidence_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise in [0, 0.3]; every other image has a bright top-left square (class 1)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.arange(n) % 2
    x[y == 1, 0, SQUARE[0], SQUARE[1]] = 1.0
    return x, y


@pytest.fixture(scope="package")
def evidence():
    """The toy network, 64 reference images and 6 test images (3 per class)."""
    net = evidence_net()
    ref = evidence_images(64, seed=1)
    test = evidence_images(6, seed=2)
    assert torch.equal(net(ref[0]).argmax(1), ref[1]), "the toy net must classify its data"
    assert torch.equal(net(test[0]).argmax(1), test[1])
    return net, ref, test
