"""The study's inputs from its configuration: data, texture references and the model."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..datasets import local, shapes
from ..models import ShapesCNN, load_torchvision_model
from ..training import train_classifier
from ..transforms import GrabCutSegmenter
from .config import StudyConfig


def _masks(images: Tensor) -> Tensor:
    segmenter = GrabCutSegmenter()
    return torch.stack([segmenter(image) for image in images]).bool()


def load_data(config: StudyConfig) -> dict:
    """Training and test images, foreground masks of the test images, class textures.

    For "shapes" the masks are exact and each class's texture is its generated patch; for
    the user's data the masks come from GrabCut and a class's texture is its first
    training image (its Gram statistics are what texture transfer imposes).
    """
    if config.data == "shapes":
        train, test = shapes.load_shapes_split(
            config.n_train_per_class, config.n_test_per_class, config.size, config.seed
        )
        textures = torch.stack(
            [shapes.texture_patch(c, config.size, config.seed) for c in range(shapes.N_CLASSES)]
        )
        return {
            "train_images": train.images,
            "train_labels": train.labels,
            "train_texture_labels": train.texture_labels,
            "test_images": test.images,
            "test_labels": test.labels,
            "test_masks": test.masks,
            "textures": textures,
            "class_names": list(shapes.CLASS_NAMES),
        }
    if config.data == "imagefolder":
        root = f"{config.data_path}/train", f"{config.data_path}/test"
        x, y, names = local.load_image_folder(root[0], config.size, config.n_train_per_class)
        xt, yt, names_t = local.load_image_folder(root[1], config.size, config.n_test_per_class)
        if names != names_t:
            raise ValueError(f"train/ and test/ class folders differ: {names} vs {names_t}.")
    else:
        x, y, names = local.load_cifar10(config.data_path, True, config.n_train_per_class)
        xt, yt, _ = local.load_cifar10(config.data_path, False, config.n_test_per_class)
    first = [int(torch.nonzero(y == c)[0, 0]) for c in range(len(names))]
    return {
        "train_images": x,
        "train_labels": y,
        "test_images": xt,
        "test_labels": yt,
        "test_masks": _masks(xt),
        "textures": x[first],
        "class_names": names,
    }


def build_model(config: StudyConfig, data: dict) -> nn.Module:
    """The model to explain, in eval mode: trained here, or loaded from local weights."""
    n_classes = len(data["class_names"])
    if config.model == "shapes_cnn":
        torch.manual_seed(config.seed)
        model = ShapesCNN(width=config.width, n_classes=n_classes)
        if config.weights:
            model.load_state_dict(torch.load(config.weights, weights_only=True))
            return model.eval()
        dataset = torch.utils.data.TensorDataset(data["train_images"], data["train_labels"])
        return train_classifier(
            model,
            dataset,
            epochs=config.epochs,
            lr=config.lr,
            batch_size=config.train_batch_size,
            seed=config.seed,
            show_progress=config.show_progress,
        )
    return load_torchvision_model(config.model, config.weights, num_classes=n_classes)
