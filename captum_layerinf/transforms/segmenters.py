"""Foreground segmenters for `WhiteBackground` (and the masked texture / style transfer)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from ._images import check_image


@dataclass(frozen=True)
class GrabCutSegmenter:
    """Foreground by OpenCV's GrabCut (Rother et al. 2004), initialised from a rectangle.

    Everything outside the rectangle is taken as background; inside it, GrabCut fits colour
    models (Gaussian mixtures) of foreground and background and cuts along strong edges.

    Limits: it needs the object inside the rectangle and some background outside it; it
    separates by colour, so an object coloured like its background (camouflage, white on
    white, gray on gray) bleeds or vanishes; thin parts (legs, wires, whiskers) and
    holes are often lost; and it knows nothing about object classes. When the cut comes
    back empty the rectangle itself is returned, with a warning. For real experiments,
    supply masks (a `tv_tensors.Mask` in the sample) or a learned segmenter.

    Args:
        box: `(x0, y0, x1, y1)` in pixels (torchvision's XYXY), or None for a centred box
            that leaves `margin` of the width and height free on each side.
        margin: Free border fraction of the default box, in (0, 0.5).
        iterations: GrabCut iterations.
        seed: Seed of OpenCV's random generator, which GrabCut's k-means uses: the same
            image gives the same mask. Set before every call (OpenCV's RNG is global).
        work_size: GrabCut runs on the image resized to this shorter side (its smoothness
            term is tuned for photos of a few hundred pixels; on 64 x 64 images it often
            returns nothing); the mask is resized back. None: the image's own size.

    Examples:
        >>> seg = GrabCutSegmenter(margin=0.1)
        >>> seg(torch.rand(3, 32, 32)).shape
        torch.Size([32, 32])
    """

    box: Sequence[int] | None = None
    margin: float = 0.1
    iterations: int = 5
    seed: int = 0
    work_size: int | None = 256

    def __post_init__(self) -> None:
        if not 0 < self.margin < 0.5:
            raise ValueError(f"margin must be in (0, 0.5); got {self.margin}.")
        if self.box is not None and len(self.box) != 4:
            raise ValueError(f"box must be (x0, y0, x1, y1); got {self.box!r}.")

    def rectangle(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The initial rectangle `(x, y, w, h)` in OpenCV's convention."""
        if self.box is None:
            x0, y0 = round(self.margin * width), round(self.margin * height)
            x1, y1 = width - x0, height - y0
        else:
            x0, y0, x1, y1 = (int(round(v)) for v in self.box)
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(width, x1), min(height, y1)
        if x1 - x0 < 2 or y1 - y0 < 2 or (x1 - x0 == width and y1 - y0 == height):
            raise ValueError(
                f"the GrabCut box {(x0, y0, x1, y1)} must lie inside the {width} x {height} "
                "image, span at least 2 pixels and leave some background outside it."
            )
        return x0, y0, x1 - x0, y1 - y0

    def __call__(self, image: Tensor) -> Tensor:
        """The foreground of one image `[C, H, W]` (C in {1, 3}; uint8 or float in [0, 1]).

        Returns:
            Bool tensor `[H, W]`, True on the object.
        """
        if not isinstance(image, Tensor) or image.dim() != 3:
            raise ValueError(
                "GrabCutSegmenter takes one image [C, H, W]; got "
                f"{getattr(image, 'shape', type(image).__name__)}."
            )
        check_image(image, "image", channels=(1, 3))
        height, width = image.shape[-2:]
        work = image.float() / 255 if image.dtype == torch.uint8 else image.float()
        scale = 1.0 if self.work_size is None else self.work_size / min(height, width)
        if scale != 1.0:
            size = [max(2, round(height * scale)), max(2, round(width * scale))]
            work = TF.resize(work, size, antialias=True).clamp(0, 1)
        pixels = (work * 255).round().to(torch.uint8).expand(3, -1, -1).permute(1, 2, 0)
        array = np.ascontiguousarray(pixels.cpu().numpy()[..., ::-1])  # OpenCV wants BGR
        rect = self.rectangle(height, width)
        x, y, w, h = rect
        work_rect = (round(x * scale), round(y * scale), round(w * scale), round(h * scale))
        labels = np.zeros(array.shape[:2], np.uint8)
        cv2.setRNGSeed(self.seed)
        cv2.grabCut(
            array,
            labels,
            work_rect,
            np.zeros((1, 65), np.float64),
            np.zeros((1, 65), np.float64),
            self.iterations,
            cv2.GC_INIT_WITH_RECT,
        )
        fg = torch.from_numpy((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD))
        if scale != 1.0:
            fg = TF.resize(fg[None].float(), [height, width], antialias=True)[0] > 0.5
        if not fg.any():
            warnings.warn(
                "GrabCut found no foreground; using its initial box as the mask. Pass a "
                "tv_tensors.Mask or a tighter box.",
                stacklevel=2,
            )
            fg[y : y + h, x : x + w] = True
        return fg.to(image.device)
