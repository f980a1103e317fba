"""torchvision v2 transform properties, checked for all three disturbance transforms.

torchvision's own check_transform helpers are not in the wheel; these are their
equivalent: types preserved, masks and labels passed through, batched = per image, input
untouched, pickle round trip, determinism.
"""

import pickle

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from captum_layerinf.transforms import StyleTransfer, TextureTransfer, WhiteBackground

from ._helpers import SIZE, STEPS, box_mask, image

MAKERS = {
    "white": lambda: WhiteBackground(),
    "texture": lambda: TextureTransfer("gravel", strength=0.9, steps=STEPS),
    "style": lambda: StyleTransfer("mosaic", steps=STEPS, use_mask=True),
}


@pytest.fixture(params=sorted(MAKERS))
def make(request):
    return MAKERS[request.param]


def test_types_are_preserved_and_masks_and_labels_pass_through(make):
    img = tv_tensors.Image(image())
    mask = tv_tensors.Mask(box_mask())
    boxes = tv_tensors.BoundingBoxes([[1, 2, 10, 12]], format="XYXY", canvas_size=(SIZE, SIZE))
    out = make()({"image": img, "mask": mask, "boxes": boxes, "label": 7})
    assert type(out["image"]) is tv_tensors.Image
    assert out["image"].shape == img.shape and out["image"].dtype == img.dtype
    assert not torch.equal(out["image"], img)  # it did transform the image
    assert type(out["mask"]) is tv_tensors.Mask and torch.equal(out["mask"], mask)
    assert type(out["boxes"]) is tv_tensors.BoundingBoxes and torch.equal(out["boxes"], boxes)
    assert out["label"] == 7


def test_uint8_images_stay_uint8(make):
    img = tv_tensors.Image((image() * 255).round().to(torch.uint8))
    out, _ = make()(img, tv_tensors.Mask(box_mask()))
    assert out.dtype == torch.uint8 and out.shape == img.shape
    assert not torch.equal(out, img)


def test_pil_in_pil_out(make):
    array = (image().permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    for pil in (PIL.Image.fromarray(array), PIL.Image.fromarray(array[..., 0])):
        out, _ = make()(pil, tv_tensors.Mask(box_mask()))
        assert isinstance(out, PIL.Image.Image)
        assert out.size == pil.size and out.mode == pil.mode
        assert not np.array_equal(np.asarray(out), np.asarray(pil))


def test_plain_tensor_image_is_transformed_and_a_tensor_label_passes(make):
    img, label = image(), torch.tensor(3)
    out, out_label = make()(img, label, tv_tensors.Mask(box_mask()))[:2]
    assert type(out) is torch.Tensor and out.shape == img.shape
    assert not torch.equal(out, img)
    assert out_label is label


def test_batched_equals_per_image(make):
    batch = image(batch=(2,))
    masks = torch.stack([box_mask(), box_mask(lo=4, hi=20)])
    out, _ = make()(tv_tensors.Image(batch), tv_tensors.Mask(masks))
    for i in range(2):
        one, _ = make()(tv_tensors.Image(batch[i]), tv_tensors.Mask(masks[i]))
        assert torch.equal(out[i], one)


def test_video_frames_are_images(make):
    frames = image(batch=(2,))
    masks = tv_tensors.Mask(torch.stack([box_mask(), box_mask()]))
    out, _ = make()(tv_tensors.Video(frames), masks)
    assert type(out) is tv_tensors.Video and out.shape == frames.shape
    one, _ = make()(tv_tensors.Image(frames[1]), tv_tensors.Mask(box_mask()))
    assert torch.equal(out[1], one)


def test_input_is_not_modified_in_place(make):
    img, mask = image(), box_mask()
    img_before, mask_before = img.clone(), mask.clone()
    make()(tv_tensors.Image(img), tv_tensors.Mask(mask))
    assert torch.equal(img, img_before) and torch.equal(mask, mask_before)


def test_pickle_round_trip(make):
    transform = make()
    clone = pickle.loads(pickle.dumps(transform))
    sample = (tv_tensors.Image(image()), tv_tensors.Mask(box_mask()))
    assert type(clone) is type(transform)
    assert torch.equal(clone(*sample)[0], transform(*sample)[0])


def test_works_inside_compose(make):
    pipeline = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), make()])
    array = (image().permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    out, mask = pipeline(PIL.Image.fromarray(array), tv_tensors.Mask(box_mask()))
    assert type(out) is tv_tensors.Image and out.dtype == torch.float32
    assert torch.equal(mask, box_mask())


@pytest.mark.parametrize(
    "make_random",
    [
        lambda g: TextureTransfer(["gravel", "brick"], strength=(0.3, 1.0), steps=2, generator=g),
        lambda g: StyleTransfer(["mosaic", "waves", "brush_strokes"], steps=2, generator=g),
    ],
    ids=["texture", "style"],
)
def test_random_draws_are_deterministic_given_a_generator_or_seed(make_random):
    def params(transform, n=6):
        return [transform.make_params([]) for _ in range(n)]

    a = params(make_random(torch.Generator().manual_seed(5)))
    b = params(make_random(torch.Generator().manual_seed(5)))
    c = params(make_random(torch.Generator().manual_seed(6)))
    assert a == b and a != c
    assert len({p["reference"] for p in a}) > 1  # it does draw different images
    torch.manual_seed(0)
    d = params(make_random(None))
    torch.manual_seed(0)
    assert params(make_random(None)) == d
    # whole outputs, too: same generator seed, same images
    img = tv_tensors.Image(image())
    t1, t2 = (
        make_random(torch.Generator().manual_seed(1)),
        make_random(torch.Generator().manual_seed(1)),
    )
    for _ in range(2):
        assert torch.equal(t1(img), t2(img))


def test_deterministic_transforms_give_the_same_output_twice(make):
    sample = (tv_tensors.Image(image()), tv_tensors.Mask(box_mask()))
    transform = make()
    assert torch.equal(transform(*sample)[0], transform(*sample)[0])


def test_a_pickled_transform_continues_its_generator_stream():
    transform = TextureTransfer(
        ["gravel", "brick", "grass"],
        strength=(0.2, 0.9),
        generator=torch.Generator().manual_seed(3),
    )
    transform.make_params([])
    clone = pickle.loads(pickle.dumps(transform))
    assert [clone.make_params([]) for _ in range(4)] == [
        transform.make_params([]) for _ in range(4)
    ]
