"""Layer discovery: dotted names, forward order, single-layer models."""

import torch
import torchvision
from torch import nn

from captum_layerinf import LayerInfluence


def test_vgg16_has_sixteen_layers_in_forward_order():
    model = torchvision.models.vgg16(weights=None).eval()
    x = torch.rand(2, 3, 32, 32)
    li = LayerInfluence(model, (x, torch.tensor([1, 2])))
    convs = ["features." + str(i) for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]
    assert li.layer_names == convs + ["classifier.0", "classifier.3", "classifier.6"]


class Reordered(nn.Module):
    """Defines `head` before `body` but calls `body` first."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.unused = nn.Linear(4, 4)
        self.body = nn.Linear(5, 4)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def test_layers_follow_the_forward_pass_and_skip_unused_modules():
    li = LayerInfluence(Reordered().eval(), (torch.rand(6, 5), torch.arange(6) % 3))
    assert li.layer_names == ["body", "head"]


def test_a_model_that_is_one_layer_is_named_empty_string():
    li = LayerInfluence(nn.Linear(5, 3), (torch.rand(6, 5), torch.arange(6) % 3))
    assert li.layer_names == [""]
    assert li.influence((torch.rand(2, 5), torch.tensor([0, 1]))).shape == (1, 2, 6)
