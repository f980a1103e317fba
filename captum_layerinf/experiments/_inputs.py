"""The study's inputs from its configuration: data, texture references and the model."""

from __future__ import annotations

import importlib
import importlib.util

import torch
from torch import Tensor, nn

from ..datasets import local, shapes
from ..models import ShapesCNN, load_torchvision_model
from ..training import train_classifier
from ..transforms import GrabCutSegmenter
from ._io import hash_path
from ._results import Data
from .config import ConfigError, StudyConfig


def _masks(images: Tensor) -> Tensor:
    segmenter = GrabCutSegmenter()
    return torch.stack([segmenter(image) for image in images]).bool()


def load_data(config: StudyConfig) -> Data:
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
        return Data(
            train_images=train.images,
            train_labels=train.labels,
            train_texture_labels=train.texture_labels,
            test_images=test.images,
            test_labels=test.labels,
            test_masks=test.masks,
            textures=textures,
            class_names=list(shapes.CLASS_NAMES),
        )
    if config.data == "imagefolder":
        root = f"{config.data_path}/train", f"{config.data_path}/test"
        x, y, names = local.load_image_folder(root[0], config.size, config.n_train_per_class)
        xt, yt, names_t = local.load_image_folder(root[1], config.size, config.n_test_per_class)
        if names != names_t:
            raise ValueError(f"train/ and test/ class folders differ: {names} vs {names_t}.")
    else:
        assert config.data_path is not None  # StudyConfig requires it for data != "shapes"
        x, y, names = local.load_cifar10(config.data_path, True, config.n_train_per_class)
        xt, yt, _ = local.load_cifar10(config.data_path, False, config.n_test_per_class)
    first = [int(torch.nonzero(y == c)[0, 0]) for c in range(len(names))]
    return Data(
        train_images=x,
        train_labels=y,
        test_images=xt,
        test_labels=yt,
        test_masks=_masks(xt),
        textures=x[first],
        class_names=names,
    )


def build_model(config: StudyConfig, data: Data) -> nn.Module:
    """The model to explain, in eval mode: trained here, or loaded from local weights."""
    n_classes = len(data.class_names)
    if config.model == "shapes_cnn":
        torch.manual_seed(config.seed)
        model = ShapesCNN(width=config.width, n_classes=n_classes)
        if config.weights:
            model.load_state_dict(torch.load(config.weights, weights_only=True))
            return model.eval()
        dataset = torch.utils.data.TensorDataset(data.train_images, data.train_labels)
        return train_classifier(
            model,
            dataset,
            epochs=config.epochs,
            lr=config.lr,
            batch_size=config.train_batch_size,
            seed=config.seed,
            show_progress=config.show_progress,
        )
    assert config.weights is not None  # StudyConfig requires it for model != "shapes_cnn"
    if ":" in config.model:
        return load_factory_model(config.model, config.weights, n_classes)
    return load_torchvision_model(config.model, config.weights, num_classes=n_classes)


GLOBAL_LABELS = {
    "gauss-newton": "Eq. 5 with the Gauss-Newton matrix (cross-layer second-order terms left out)",
    "hessian": "Eq. 5 with the true Hessian (dense, from Hessian-vector products)",
    "cg": "Eq. 5 with the true Hessian (conjugate gradients)",
    "lissa": "Eq. 5 with the true Hessian (LiSSA)",
    "none": "not computed",
}


def _factory(spec: str):
    module_name, _, function = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"model={spec!r}: cannot import {module_name!r} ({err}); put its folder on "
            "PYTHONPATH or install it."
        ) from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise ValueError(f"model={spec!r}: {module_name} has no function {function!r}.")
    return factory


def load_factory_model(spec: str, weights, n_classes: int) -> nn.Module:
    """Your own `nn.Module` from an importable factory "package.module:function".

    Args:
        spec: "package.module:function"; the function is called as
            `function(num_classes=n_classes)` and returns an `nn.Module`.
        weights: A state dict, or the path of one (loaded with `weights_only=True`).
        n_classes: Classes of the data.

    Returns:
        The model with the weights loaded, in eval mode.
    """
    model = _factory(spec)(num_classes=n_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={spec!r} returned {type(model).__name__}, not an nn.Module.")
    if not isinstance(weights, dict):
        weights = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(weights)
    return model.eval()


def _module_file(spec: str) -> str | None:
    if ":" not in spec:
        return None
    found = importlib.util.find_spec(spec.partition(":")[0])
    return found.origin if found is not None else None


def source_keys(config: StudyConfig) -> tuple[str, str]:
    """Content hashes `(data, model)` of the data files, and of the weights and factory source.

    Generated data ("shapes") is fixed by the configuration and hashes to "generated".
    """
    data = "generated" if config.data == "shapes" else hash_path(config.data_path)
    model = f"{hash_path(config.weights)}/{hash_path(_module_file(config.model))}"
    return data, model


def check_inputs(config: StudyConfig) -> None:
    """Checks, before any work, that the files and names the configuration points to exist.

    Raises:
        ConfigError: naming the key and the fix.
    """
    from pathlib import Path

    from ..transforms.styles import available_images

    missing = config.data_path is None or not Path(config.data_path).is_dir()
    if config.data != "shapes" and missing:
        raise ConfigError(
            f"key 'data_path': folder {config.data_path!r} not found; point it to your data.",
            "data_path",
        )
    if config.weights is not None and not Path(config.weights).is_file():
        raise ConfigError(
            f"key 'weights': file {config.weights!r} not found; save one with "
            "torch.save(model.state_dict(), path) (nothing is downloaded).",
            "weights",
        )
    if ":" in config.model:
        try:
            _factory(config.model)
        except ValueError as err:
            raise ConfigError(f"key 'model': {err}", "model") from None
    if config.style not in available_images() and not Path(config.style).is_file():
        raise ConfigError(
            f"key 'style': {config.style!r} is neither an offline image "
            f"({available_images()}) nor an image file.",
            "style",
        )
