"""WhiteBackground: exactly the background turns white, the object keeps its bits."""

import pytest
import torch
from torchvision import tv_tensors

from captum_layerinf.transforms import GrabCutSegmenter, WhiteBackground, white_background

from ._helpers import SIZE, box_mask, image


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8])
def test_given_mask_whitens_exactly_the_background(dtype):
    x = image(batch=(2,))
    x = (x * 255).round().to(dtype) if dtype == torch.uint8 else x.to(dtype)
    masks = torch.stack([box_mask(), box_mask(lo=2, hi=9)])
    out, _ = WhiteBackground()(tv_tensors.Image(x), tv_tensors.Mask(masks))
    white = 255 if dtype == torch.uint8 else 1.0
    fg = masks.unsqueeze(1).expand_as(x)
    assert (out[~fg] == white).all()
    assert torch.equal(out[fg], x[fg])  # bit-identical object
    assert (x[~fg] != white).any()  # the test image had a non-white background to change


def test_fill_is_in_units_of_the_value_range_and_per_channel():
    x, fg = image(), box_mask()
    x8 = (x * 255).round().to(torch.uint8)
    assert (white_background(x8, fg, fill=0.5)[:, ~fg] == 128).all()
    assert (white_background(x, fg, fill=0.0)[:, ~fg] == 0).all()
    out = white_background(x, fg, fill=(1.0, 0.0, 0.25))
    assert (out[:, ~fg] == torch.tensor([1.0, 0.0, 0.25])[:, None]).all()


def test_instance_masks_are_united():
    x = image()
    instances = torch.stack([box_mask(lo=2, hi=8), box_mask(lo=14, hi=20)]).to(torch.uint8) * 5
    out = white_background(x, instances)
    union = instances.bool().any(0)
    assert torch.equal(out[:, union], x[:, union]) and (out[:, ~union] == 1).all()


def test_one_mask_for_a_whole_batch():
    x, fg = image(batch=(3,)), box_mask()
    out = white_background(x, fg)
    for i in range(3):
        assert torch.equal(out[i], white_background(x[i], fg))


def test_the_segmenter_runs_per_image_when_there_is_no_mask():
    calls = []

    def segmenter(one):
        calls.append(one.shape)
        return box_mask()

    x = image(batch=(2,))
    out = WhiteBackground(segmenter=segmenter)(tv_tensors.Image(x))
    assert calls == [torch.Size([3, SIZE, SIZE])] * 2
    assert torch.equal(out, white_background(x, box_mask()))


def test_a_mask_in_the_sample_wins_over_the_segmenter():
    def segmenter(one):
        raise AssertionError("the segmenter must not run when the sample has a Mask")

    WhiteBackground(segmenter=segmenter)(tv_tensors.Image(image()), tv_tensors.Mask(box_mask()))


def _disc_image(size=48):
    """A red disc on a noisy blue-green background, and its true mask."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    g = torch.Generator().manual_seed(0)
    background = torch.tensor([0.1, 0.5, 0.6])[:, None, None] + 0.1 * torch.rand(
        3, size, size, generator=g
    )
    x = torch.where(disc, torch.tensor([0.9, 0.1, 0.1])[:, None, None], background)
    return x.clamp(0, 1), disc


def test_grabcut_default_finds_a_clear_object_and_is_deterministic():
    x, truth = _disc_image()
    found = GrabCutSegmenter()(x)
    iou = (found & truth).sum() / (found | truth).sum()
    assert iou > 0.85
    assert torch.equal(found, GrabCutSegmenter()(x))
    out = WhiteBackground()(tv_tensors.Image(x))  # default segmenter
    assert torch.equal(out, white_background(x, found))


def test_grabcut_box_restricts_the_object():
    x, truth = _disc_image()
    tight = GrabCutSegmenter(box=(10, 10, 38, 38))(x)
    assert (tight & truth).sum() / (tight | truth).sum() > 0.85
    left = GrabCutSegmenter(box=(2, 2, 32, 46))(x)
    assert not left[:, 33:].any()  # outside the box is background by construction
    assert (left & truth).sum() > 0.8 * left.sum() and left.sum() > 0.5 * truth.sum()


def test_grabcut_falls_back_to_its_box_with_a_warning_when_it_finds_nothing():
    flat = torch.full((3, 32, 32), 0.5)
    with pytest.warns(UserWarning, match="no foreground"):
        found = GrabCutSegmenter(margin=0.25)(flat)
    box = torch.zeros(32, 32, dtype=torch.bool)
    box[8:24, 8:24] = True
    assert torch.equal(found, box)
