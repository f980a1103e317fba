"""StyleTransfer: the style loss falls, user networks and masks are honoured."""

import torch
from torch import nn
from torchvision import tv_tensors

from captum_layerinf.transforms import StyleTransfer, gram_distance, style_transfer

from ._helpers import box_mask, image


def test_style_loss_falls_during_optimisation():
    x = image()
    distances = [gram_distance(style_transfer(x, "waves", steps=k), "waves") for k in (0, 4, 16)]
    assert distances[0] > distances[1] > distances[2]


def test_more_style_weight_gives_more_style():
    x = image()
    light = gram_distance(style_transfer(x, "mosaic", style_weight=0.5, steps=10), "mosaic")
    heavy = gram_distance(style_transfer(x, "mosaic", style_weight=50.0, steps=10), "mosaic")
    assert heavy < light


class Invert(nn.Module):
    def forward(self, x):
        return 1 - x


def test_a_trained_feed_forward_network_replaces_the_optimisation():
    x = image(batch=(2,))
    out = StyleTransfer(network=Invert())(tv_tensors.Image(x))
    assert type(out) is tv_tensors.Image
    assert torch.allclose(out, 1 - x)
    fg = box_mask()
    masked = style_transfer(x, network=Invert(), mask=fg)
    assert torch.equal(masked[..., ~fg], x[..., ~fg])
    assert torch.allclose(masked[..., fg], 1 - x[..., fg])


def test_style_on_the_object_keeps_the_background():
    x, fg = image(), box_mask()
    out, _ = StyleTransfer("brush_strokes", steps=4, use_mask=True)(
        tv_tensors.Image(x), tv_tensors.Mask(fg)
    )
    assert torch.equal(out[:, ~fg], x[:, ~fg]) and not torch.equal(out[:, fg], x[:, fg])
    whole, _ = StyleTransfer("brush_strokes", steps=4)(tv_tensors.Image(x), tv_tensors.Mask(fg))
    assert not torch.equal(whole[:, ~fg], x[:, ~fg])  # default: the whole image
