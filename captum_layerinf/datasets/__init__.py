"""Offline datasets: generated, shipped inside an installed package, or the user's local files."""

from .digits import load_digits_split
from .local import load_cifar10, load_image_folder
from .shapes import CLASS_NAMES, ShapesData, load_shapes_split, make_shapes, texture_patch

__all__ = [
    "CLASS_NAMES",
    "ShapesData",
    "load_cifar10",
    "load_digits_split",
    "load_image_folder",
    "load_shapes_split",
    "make_shapes",
    "texture_patch",
]
