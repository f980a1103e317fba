"""The disturbance variants of the study: one function each, listed in `VARIANT_REGISTRY`.

A variant function takes the test set (`VariantInputs`) and returns its images in that
variant and, per image, the class whose texture it shows. The study builds every
registered variant, in order; tables, figures and the report loop over them. To add one,
write the function and add a `Variant(name, function)` entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..transforms import functional as F
from ._results import Data, Variants
from .config import StudyConfig


@dataclass(frozen=True)
class VariantInputs:
    """What a variant function sees.

    Attributes:
        images: Test images `[n, C, H, W]` in [0, 1].
        labels: Their classes `[n]`.
        masks: Their foreground masks `[n, H, W]`.
        white: The images on a white background `[n, C, H, W]` (the base of the transfers).
        textures: One texture per class `[n_classes, C, H, W]`.
        config: The study's configuration (the transfers' settings).
    """

    images: Tensor
    labels: Tensor
    masks: Tensor
    white: Tensor
    textures: Tensor
    config: StudyConfig

    def each(self, name: str, make: Callable[[int], Tensor]) -> Tensor:
        """`make(i)` for every test image i, stacked, with a progress bar named `name`."""
        bar = tqdm(range(len(self.labels)), desc=name, disable=not self.config.show_progress)
        return torch.stack([make(i) for i in bar])


VariantFunction = Callable[[VariantInputs], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Variant:
    """A registered variant: its name in tables and figures, and the function that builds it."""

    name: str
    build: VariantFunction


def original(x: VariantInputs) -> tuple[Tensor, Tensor]:
    """The test images unchanged."""
    return x.images, x.labels


def white_background(x: VariantInputs) -> tuple[Tensor, Tensor]:
    """The object alone: everything outside the mask white."""
    return x.white, x.labels


def textured(x: VariantInputs) -> tuple[Tensor, Tensor]:
    """The object on white takes the texture of class `(label + 1) % n_classes`.

    Gatys texture transfer with `texture_strength`, the share s of the loss
    `(1 - s) content + s Gram` (our reading of the paper's "percentage of texture", which it
    does not define).
    """
    other = (x.labels + 1) % len(x.textures)
    cfg = x.config
    images = x.each(
        "texture transfer",
        lambda i: F.texture_transfer(
            x.white[i],
            x.textures[other[i]],
            cfg.texture_strength,
            cfg.texture_steps,
            mask=x.masks[i],
        ),
    )
    return images, other


def styled(x: VariantInputs) -> tuple[Tensor, Tensor]:
    """The whole white-background image style-transferred from `config.style`."""
    cfg = x.config
    images = x.each(
        "style transfer",
        lambda i: F.style_transfer(
            x.white[i], cfg.style, style_weight=cfg.style_weight, steps=cfg.style_steps
        ),
    )
    return images, x.labels


VARIANT_REGISTRY: tuple[Variant, ...] = (
    Variant("original", original),
    Variant("white background", white_background),
    Variant("textured", textured),
    Variant("styled", styled),
)
VARIANTS = tuple(v.name for v in VARIANT_REGISTRY)


def build_variants(data: Data, config: StudyConfig) -> Variants:
    """Every test image in each registered variant, variant after variant.

    Returns:
        `Variants` with `images [n_variants n, C, H, W]`, `labels`, `variants` (index into
        `names`), `texture_labels` (the class whose texture the object shows: the other
        class for "textured", its own otherwise) and `masks [n_variants n, H, W]`.
    """
    x = VariantInputs(
        data.test_images,
        data.test_labels,
        data.test_masks,
        F.white_background(data.test_images, data.test_masks),
        data.textures,
        config,
    )
    built = [variant.build(x) for variant in VARIANT_REGISTRY]
    n = len(x.labels)
    return Variants(
        images=torch.cat([images for images, _ in built]),
        labels=x.labels.repeat(len(built)),
        variants=torch.arange(len(built)).repeat_interleave(n),
        texture_labels=torch.cat([texture for _, texture in built]),
        masks=x.masks.repeat(len(built), 1, 1),
        names=list(VARIANTS),
    )
