"""Bad input fails early with an error that names the problem and the fix."""

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision import tv_tensors

from captum_layerinf.transforms import (
    StyleTransfer,
    TextureTransfer,
    WhiteBackground,
    style_transfer,
    texture_sweep,
    texture_transfer,
    white_background,
)

from ._helpers import box_mask, image


@pytest.mark.parametrize("bad", [3, [0.5, 0.5], {"brick": 1}, None])
def test_texture_of_the_wrong_type(bad):
    with pytest.raises(TypeError, match="texture` must be an offline image name.*tensor"):
        texture_transfer(image(), bad if bad is not None else object(), 1.0, 1)


@pytest.mark.parametrize("channels", [2, 4])
def test_texture_and_style_with_the_wrong_channel_count(channels):
    bad = torch.rand(channels, 16, 16)
    with pytest.raises(ValueError, match=f"texture` has {channels} channels.*1 or 3"):
        TextureTransfer(bad)
    with pytest.raises(ValueError, match=f"style_image` has {channels} channels.*1 or 3"):
        StyleTransfer(bad)
    with pytest.raises(ValueError, match=f"style` has {channels} channels.*convert\\('RGB'\\)"):
        style_transfer(image(), bad, steps=1)


def test_style_image_of_the_wrong_type_and_a_batch_of_styles():
    with pytest.raises(TypeError, match="style_image` must be an offline image name"):
        StyleTransfer(12)
    with pytest.raises(ValueError, match="one image \\[C, H, W\\].*list of images"):
        StyleTransfer(torch.rand(2, 3, 8, 8))


def test_rgba_numpy_texture_names_the_fix():
    with pytest.raises(ValueError, match="4 channels.*Drop an alpha channel"):
        texture_transfer(image(), np.zeros((16, 16, 4), np.uint8), 1.0, 1)


def test_unknown_name_and_missing_file():
    with pytest.raises(FileNotFoundError, match="neither an offline image name.*gravel"):
        TextureTransfer("marble")


def test_images_with_nan_out_of_range_or_integer_dtype():
    x = image()
    with pytest.raises(ValueError, match="NaN"):
        white_background(x.masked_fill(box_mask(), float("nan")), box_mask())
    with pytest.raises(ValueError, match="outside \\[0, 1\\].*ToDtype"):
        texture_transfer(x * 2 - 1, "brick", 1.0, 1)
    with pytest.raises(TypeError, match="dtype torch.int32"):
        white_background(x.to(torch.int32), box_mask())
    with pytest.raises(ValueError, match="\\[\\.\\.\\., C, H, W\\]"):
        white_background(x[0, 0], box_mask())


def test_texture_on_an_rgba_image_names_the_channels():
    with pytest.raises(ValueError, match="image` has 4 channels"):
        texture_transfer(torch.rand(4, 16, 16), "brick", 1.0, 1)
    assert white_background(torch.rand(4, 16, 16), box_mask(16)).shape == (4, 16, 16)


def test_mask_shape_mismatch_lists_the_accepted_shapes():
    with pytest.raises(ValueError, match="does not match.*\\[24, 24\\].*one per image"):
        white_background(image(batch=(2,)), torch.ones(3, 24, 24, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not match"):
        texture_transfer(image(), "brick", 1.0, 1, mask=torch.ones(20, 20))
    with pytest.raises(ValueError, match="does not match"):
        WhiteBackground()(tv_tensors.Image(image()), tv_tensors.Mask(torch.ones(2, 10, 10)))


def test_two_masks_in_one_sample():
    sample = (tv_tensors.Image(image()), tv_tensors.Mask(box_mask()), tv_tensors.Mask(box_mask()))
    with pytest.raises(ValueError, match="2 tv_tensors.Mask items"):
        WhiteBackground()(*sample)


def test_a_segmenter_that_returns_the_wrong_shape():
    with pytest.raises(ValueError, match="segmenter returned a mask of shape \\(5, 5\\)"):
        white_background(image(), segmenter=lambda x: torch.ones(5, 5))


@pytest.mark.parametrize("strength", [-0.1, 1.5, (0.8, 0.2)])
def test_strength_outside_zero_one(strength):
    with pytest.raises(ValueError, match="strength"):
        TextureTransfer("brick", strength=strength)


def test_bad_fill_steps_and_weights():
    with pytest.raises(ValueError, match="fill is in units of the value range.*255"):
        WhiteBackground(fill=255)
    with pytest.raises(ValueError, match="one number or one per channel \\(3\\)"):
        white_background(image(), box_mask(), fill=(1.0, 1.0))
    with pytest.raises(ValueError, match="steps must be non-negative ints"):
        texture_transfer(image(), "brick", 1.0, steps=2.5)
    with pytest.raises(ValueError, match="style_weight must be a non-negative number"):
        style_transfer(image(), "waves", style_weight=-1)
    with pytest.raises(ValueError, match="needs a `style_image`"):
        StyleTransfer()


def test_kernels_reject_non_images():
    with pytest.raises(TypeError, match="PIL image, a tv_tensors.Image or a tensor"):
        white_background(np.zeros((3, 8, 8)), box_mask(8))
    with pytest.raises(TypeError, match="tv_tensors.Mask; these kernels transform images"):
        white_background(tv_tensors.Mask(box_mask()), box_mask())
    with pytest.raises(ValueError, match="one image \\[C, H, W\\]"):
        texture_sweep(image(batch=(2,)), "brick")


def test_a_style_network_with_the_wrong_output():
    with pytest.raises(ValueError, match="style network must return a tensor of the input's shape"):
        style_transfer(image(), network=lambda x: x[:, :1])


def test_pil_palette_images_are_converted_not_misread():
    pil = PIL.Image.fromarray((image().permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    out = white_background(pil.convert("P"), box_mask())
    assert out.mode == "RGB" and np.asarray(out)[0, 0].tolist() == [255, 255, 255]
