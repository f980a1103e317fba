"""Disturbance transforms that probe what a decision rests on: object, texture or style.

torchvision v2 transforms (`WhiteBackground`, `TextureTransfer`, `StyleTransfer`) over
functional kernels (`captum_layerinf.transforms.functional`), the feature extractors of
the Gram losses, offline texture / style images and plots. Nothing downloads at run time.
"""

from . import functional
from ._features import GramFeatures, RandomFilterCNN, VGGFeatures, cached_weights_path
from ._transforms import StyleTransfer, TextureTransfer, WhiteBackground
from .functional import (
    TextureSweep,
    gram_distance,
    style_transfer,
    texture_sweep,
    texture_transfer,
    white_background,
)
from .plots import plot_disturbances, plot_gram_distance, plot_texture_sweep
from .segmenters import GrabCutSegmenter
from .styles import available_images, brush_strokes, load_style, load_texture, mosaic, waves

__all__ = [
    "GrabCutSegmenter",
    "GramFeatures",
    "RandomFilterCNN",
    "StyleTransfer",
    "TextureSweep",
    "TextureTransfer",
    "VGGFeatures",
    "WhiteBackground",
    "available_images",
    "brush_strokes",
    "cached_weights_path",
    "functional",
    "gram_distance",
    "load_style",
    "load_texture",
    "mosaic",
    "plot_disturbances",
    "plot_gram_distance",
    "plot_texture_sweep",
    "style_transfer",
    "texture_sweep",
    "texture_transfer",
    "waves",
    "white_background",
]
