"""TextureTransfer / texture_sweep: strength and steps behave as the paper's Fig. 6 needs."""

import torch
from torchvision import tv_tensors

from captum_layerinf.transforms import (
    TextureTransfer,
    gram_distance,
    load_texture,
    texture_sweep,
    texture_transfer,
)

from ._helpers import box_mask, image


def test_strength_zero_returns_the_content_image():
    x = image()
    x8 = (x * 255).round().to(torch.uint8)
    assert torch.equal(texture_transfer(x, "brick", strength=0.0, steps=5), x)
    assert torch.equal(texture_transfer(x8, "brick", strength=0.0, steps=5), x8)
    assert torch.equal(texture_transfer(x, "brick", strength=1.0, steps=0), x)
    x64 = x.double() / 3  # values float32 cannot hold: no float round trip either
    assert torch.equal(texture_transfer(x64, "brick", strength=0.0, steps=5), x64)


def test_gram_distance_falls_as_strength_and_steps_rise():
    sweep = texture_sweep(image(), "gravel", strengths=(0.0, 0.3, 1.0), steps=(3, 12, 40))
    d = sweep.gram_distance
    assert d.shape == (3, 3) and sweep.images.shape == (3, 3, 3, 24, 24)
    assert (d[0] == d[0, 0]).all()  # strength 0: the content, whatever the steps
    assert (d[1:] < d[0]).all()
    # the first steps are capped in size, so strengths part only after a few of them
    assert (d[2, 1:] < 0.5 * d[1, 1:]).all(), d  # more texture, closer to it
    assert (d[1:, 1:] < d[1:, :-1]).all(), d  # more steps, closer, for every strength > 0


def test_sweep_cells_equal_separate_runs():
    x, fg = image(), box_mask()
    sweep = texture_sweep(x, "brick", strengths=(0.5, 1.0), steps=(3, 7), mask=fg)
    for i, s in enumerate((0.5, 1.0)):
        for j, k in enumerate((3, 7)):
            assert torch.equal(sweep.images[i, j], texture_transfer(x, "brick", s, k, mask=fg))


def test_mask_changes_only_the_object():
    x8 = (image() * 255).round().to(torch.uint8)
    fg = box_mask()
    out = texture_transfer(x8, "gravel", strength=1.0, steps=5, mask=fg)
    assert torch.equal(out[:, ~fg], x8[:, ~fg])
    assert (out[:, fg] != x8[:, fg]).float().mean() > 0.5


def test_the_object_result_does_not_depend_on_the_background():
    fg = box_mask()
    a, b = image(seed=1), image(seed=2)
    b = torch.where(fg, a, b)  # same object, other background
    out_a = texture_transfer(a, "grass", 1.0, 5, mask=fg)
    out_b = texture_transfer(b, "grass", 1.0, 5, mask=fg)
    assert torch.equal(out_a[:, fg], out_b[:, fg])


def test_masked_texture_moves_the_object_towards_the_texture():
    x, fg = image(), box_mask()
    before = gram_distance(x, "brick", mask=fg)
    after = gram_distance(texture_transfer(x, "brick", 1.0, 10, mask=fg), "brick", mask=fg)
    assert after < 0.5 * before


def test_grayscale_images_and_textures():
    gray = image(channels=1)
    out = texture_transfer(gray, "gravel", 1.0, 5)  # gravel is grayscale
    assert out.shape == gray.shape
    assert gram_distance(out, "gravel") < gram_distance(gray, "gravel")
    rgb_texture = torch.rand(3, 16, 16)
    assert texture_transfer(gray, rgb_texture, 1.0, 2).shape == gray.shape  # luminance used


def test_texture_as_numpy_pil_path_and_tensor_agree(tmp_path):
    import PIL.Image

    brick = load_texture("brick")
    array = (brick[0] * 255).round().to(torch.uint8).numpy()
    PIL.Image.fromarray(array).save(tmp_path / "brick.png")
    x = image()
    ref = texture_transfer(x, "brick", 1.0, 3)
    for texture in (brick, array, PIL.Image.fromarray(array), tmp_path / "brick.png"):
        assert torch.equal(texture_transfer(x, texture, 1.0, 3), ref)


def test_transform_textures_the_mask_of_the_sample_only():
    x, fg = image(), box_mask()
    out, _ = TextureTransfer("brick", steps=4)(tv_tensors.Image(x), tv_tensors.Mask(fg))
    assert torch.equal(out[:, ~fg], x[:, ~fg])
    whole = TextureTransfer("brick", steps=4, use_mask=False)(tv_tensors.Image(x))
    assert torch.equal(whole, texture_transfer(x, "brick", 1.0, 4))
