"""TexturedShapes: an embedded, generated dataset where shape AND texture both predict the class.

Each class has a shape (circle, square, …) and a typical texture (a pattern in two colours).
An image is the class's silhouette, at a random scale, rotation and position, filled with a
texture on a cluttered background; the foreground mask is exact. In training images the
texture is the class's own with probability `typical` (another class's otherwise), so both
cues are informative and the disturbance study can ask which one a network learned to use.
Everything is generated with numpy from a seed: no files, no downloads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from . import _drawing

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "crescent", "arrow")
TEXTURES = ("stripes", "checks", "dots", "diagonal", "grid", "waves", "zigzag", "speckle")
COLOURS = (
    ((0.85, 0.15, 0.1), (1.0, 0.8, 0.2)),
    ((0.1, 0.2, 0.75), (0.95, 0.95, 0.95)),
    ((0.1, 0.55, 0.2), (0.7, 0.95, 0.4)),
    ((0.5, 0.1, 0.6), (0.95, 0.6, 0.85)),
    ((0.05, 0.05, 0.05), (0.2, 0.85, 0.85)),
    ((0.6, 0.35, 0.1), (0.95, 0.7, 0.45)),
    ((0.9, 0.45, 0.0), (0.15, 0.1, 0.35)),
    ((0.3, 0.3, 0.3), (0.95, 0.25, 0.5)),
)
CLASS_NAMES = tuple(f"{s}/{t}" for s, t in zip(SHAPES, TEXTURES, strict=True))
N_CLASSES = len(SHAPES)


@dataclass(frozen=True)
class ShapesData:
    """A batch of generated images.

    Attributes:
        images: Tensor `[n, 3, size, size]`, float32 in [0, 1].
        labels: Tensor `[n]` (long): the class, i.e. the shape.
        masks: Tensor `[n, size, size]` (bool): the exact foreground.
        texture_labels: Tensor `[n]` (long): whose class texture fills the shape.
    """

    images: Tensor
    labels: Tensor
    masks: Tensor
    texture_labels: Tensor

    def dataset(self) -> TensorDataset:
        """`(images, labels)` as a TensorDataset."""
        return TensorDataset(self.images, self.labels)

    def __len__(self) -> int:
        return len(self.labels)


def texture_patch(cls: int, size: int = 32, seed: int = 0) -> Tensor:
    """The typical texture of class `cls` over a whole image: Tensor `[3, size, size]`."""
    _check_class(cls)
    rng = np.random.default_rng([seed, 7919, cls])
    values = _drawing.pattern(TEXTURES[cls], size, rng)
    return torch.from_numpy(_drawing.colourise(values, COLOURS[cls], rng, 0.0)).float()


def render(
    shape_cls: int, texture_cls: int, size: int, rng: np.random.Generator, background=True
) -> tuple[np.ndarray, np.ndarray]:
    """One image `[3, size, size]` and its mask `[size, size]`; white background if not."""
    _check_class(shape_cls)
    _check_class(texture_cls)
    mask = _drawing.silhouette(SHAPES[shape_cls], size, rng)
    fill = _drawing.colourise(
        _drawing.pattern(TEXTURES[texture_cls], size, rng), COLOURS[texture_cls], rng, 0.08
    )
    back = _drawing.clutter(size, rng) if background else np.ones((3, size, size))
    return np.where(mask[None], fill, back), mask


def make_shapes(
    n_per_class: int,
    size: int = 32,
    seed: int = 0,
    typical: float = 0.9,
    texture_shift: int = 0,
    background: bool = True,
) -> ShapesData:
    """Generates `n_per_class` images of each class.

    Args:
        n_per_class: Images per class.
        size: Side in pixels (the shapes need at least 16).
        seed: Seed; the same arguments give bit-identical images.
        typical: Probability that the shape carries its own class's texture (otherwise a
            uniformly drawn other class's).
        texture_shift: If not 0, every image takes the texture of class
            `(label + texture_shift) % n_classes` instead: a cue-conflict set.
        background: Cluttered background if True, white if False.

    Returns:
        A `ShapesData`, classes in blocks of `n_per_class`.
    """
    if size < 16:
        raise ValueError(
            f"size must be at least 16 pixels for the shapes to be told apart; got {size}."
        )
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1; got {n_per_class}.")
    if not 0.0 <= typical <= 1.0:
        raise ValueError(f"typical is a probability in [0, 1]; got {typical}.")
    rng = np.random.default_rng([seed, size, n_per_class])
    images, masks, labels, textures = [], [], [], []
    for cls in range(N_CLASSES):
        for _ in range(n_per_class):
            if texture_shift:
                tex = (cls + texture_shift) % N_CLASSES
            elif rng.random() < typical:
                tex = cls
            else:
                tex = int((cls + rng.integers(1, N_CLASSES)) % N_CLASSES)
            image, mask = render(cls, tex, size, rng, background)
            images.append(image)
            masks.append(mask)
            labels.append(cls)
            textures.append(tex)
    return ShapesData(
        torch.from_numpy(np.stack(images)).float(),
        torch.tensor(labels),
        torch.from_numpy(np.stack(masks)),
        torch.tensor(textures),
    )


def load_shapes_split(
    n_train_per_class: int = 300, n_test_per_class: int = 5, size: int = 32, seed: int = 0
) -> tuple[ShapesData, ShapesData]:
    """The study's default data: a training set and an original-variant test set.

    The test images always carry their own class's texture, so that a disturbance (texture
    of another class) is a clean cue conflict. Train and test use different seeds.

    Returns:
        `(train, test)` ShapesData.

    Examples:
        >>> train, test = load_shapes_split(4, 1)
        >>> train.images.shape, test.masks.shape
        (torch.Size([32, 3, 32, 32]), torch.Size([8, 32, 32]))
    """
    train = make_shapes(n_train_per_class, size, seed=seed)
    test = make_shapes(n_test_per_class, size, seed=seed + 10_000, typical=1.0)
    return train, test


def _check_class(cls: int) -> None:
    if not 0 <= cls < N_CLASSES:
        raise ValueError(f"class must be in 0..{N_CLASSES - 1}; got {cls}.")
