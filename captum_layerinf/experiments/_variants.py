"""The four test variants of the paper: original, white background, textured, styled."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..transforms import functional as F

VARIANTS = ("original", "white background", "textured", "styled")


def build_variants(
    images: Tensor,
    labels: Tensor,
    masks: Tensor,
    textures: Tensor,
    texture_steps: int,
    texture_strength: float,
    style: str,
    style_steps: int,
    style_weight: float = 1.0,
    show_progress: bool = False,
) -> dict:
    """Every test image in each variant; the textured and styled ones start from white.

    Textured: the object (mask) takes the texture of class `(label + 1) % n_classes` by
    Gatys texture transfer with `texture_strength`, the share s of the loss
    `(1 - s) content + s Gram` (our reading of the paper's "percentage of texture", which it
    does not define); styled: the whole white-background image is
    style-transferred from `style`.

    Returns:
        A dict with `images [4 n, C, H, W]`, `labels [4 n]`, `variants [4 n]` (index into
        `VARIANTS`), `texture_labels [4 n]` (the class whose texture the object shows:
        the other class for "textured", its own otherwise) and `masks [4 n, H, W]`.
    """
    n, n_classes = len(labels), len(textures)
    white = F.white_background(images, masks)
    other = (labels + 1) % n_classes
    textured, styled = [], []
    bar = tqdm(range(n), desc="texture + style transfer", disable=not show_progress)
    for i in bar:
        textured.append(
            F.texture_transfer(
                white[i], textures[other[i]], texture_strength, texture_steps, mask=masks[i]
            )
        )
        styled.append(
            F.style_transfer(white[i], style, style_weight=style_weight, steps=style_steps)
        )
    return {
        "images": torch.cat([images, white, torch.stack(textured), torch.stack(styled)]),
        "labels": labels.repeat(4),
        "variants": torch.arange(4).repeat_interleave(n),
        "texture_labels": torch.cat([labels, labels, other, labels]),
        "masks": masks.repeat(4, 1, 1),
    }
