"""The embedded shapes data and the loaders of the user's own data (files the tests write)."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from captum_layerinf.datasets import (
    load_cifar10,
    load_image_folder,
    load_shapes_split,
    make_shapes,
    texture_patch,
)
from captum_layerinf.datasets.shapes import N_CLASSES
from captum_layerinf.models import ShapesCNN, load_torchvision_model


def test_shapes_are_deterministic_with_exact_masks():
    a = make_shapes(2, seed=3)
    b = make_shapes(2, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert a.images.shape == (2 * N_CLASSES, 3, 32, 32) and a.images.dtype == torch.float32
    assert 0 <= a.images.min() and a.images.max() <= 1
    assert not torch.equal(a.images, make_shapes(2, seed=4).images)
    # exact masks: on a white background every non-object pixel is exactly white
    white = make_shapes(2, seed=3, background=False)
    assert (white.images.permute(1, 0, 2, 3)[:, ~white.masks] == 1).all()
    assert white.masks.flatten(1).any(1).all()


def test_texture_shift_gives_a_cue_conflict_set_and_typical_controls_it():
    conflict = make_shapes(3, texture_shift=1)
    assert torch.equal(conflict.texture_labels, (conflict.labels + 1) % N_CLASSES)
    own = make_shapes(3, typical=1.0)
    assert torch.equal(own.texture_labels, own.labels)
    mixed = make_shapes(40, typical=0.5, seed=1)
    share = (mixed.texture_labels == mixed.labels).float().mean()
    assert 0.35 < share < 0.65


def test_split_and_patches():
    train, test = load_shapes_split(3, 2, size=24)
    assert len(train) == 3 * N_CLASSES and len(test) == 2 * N_CLASSES
    assert torch.equal(test.texture_labels, test.labels)
    patch = texture_patch(2, 24)
    assert patch.shape == (3, 24, 24) and torch.equal(patch, texture_patch(2, 24))
    with pytest.raises(ValueError, match="at least 16"):
        make_shapes(1, size=8)


def test_image_folder_loader_reads_a_tree_the_test_writes(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
    x, y, names = load_image_folder(tmp_path, size=16, per_class=2)
    assert names == ["cat", "dog"] and x.shape == (4, 3, 16, 16)
    assert torch.equal(y, torch.tensor([0, 0, 1, 1])) and 0 <= x.min() and x.max() <= 1
    with pytest.raises(FileNotFoundError, match="ImageFolder"):
        load_image_folder(tmp_path / "missing")


def test_cifar10_loader_reads_python_batches_without_downloading(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (6, 3072), dtype=np.uint8)
    labels = [0, 1, 1, 2, 9, 0]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": data, b"labels": labels}, f)
    x, y, names = load_cifar10(tmp_path, train=False, per_class=1)
    assert x.shape == (4, 3, 32, 32) and names[9] == "truck"
    assert torch.equal(y, torch.tensor([0, 1, 2, 9]))
    assert torch.equal((x[0] * 255).round().to(torch.uint8).flatten(), torch.from_numpy(data[0]))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_cifar10(tmp_path, train=True)


def test_torchvision_model_loads_local_weights_only(tmp_path):
    torch.manual_seed(0)
    from torchvision.models import get_model

    source = get_model("resnet18", weights=None, num_classes=5)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    model = load_torchvision_model("resnet18", path, num_classes=5)
    assert not model.training
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(model(x), source.eval()(x))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_torchvision_model("resnet18", tmp_path / "none.pt")
    with pytest.raises(ValueError, match="unknown torchvision model"):
        load_torchvision_model("not_a_model", path)


def test_shapes_cnn_layers_fit_exact_blocks():
    model = ShapesCNN()
    sizes = [sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()]
    assert max(sizes) == 4640 and model(torch.rand(2, 3, 32, 32)).shape == (2, 8)
