"""Small images and masks shared by the transform tests (tiny, so the suite stays fast)."""

from __future__ import annotations

import torch

SIZE = 24
STEPS = 3


def image(seed: int = 0, channels: int = 3, size: int = SIZE, batch: tuple = ()) -> torch.Tensor:
    """A smooth random float image in [0, 1] (a blurred noise, so features are not flat)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*batch, channels, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(x.reshape(-1, channels, size // 4, size // 4), size=size,
                                        mode="bilinear", align_corners=False)  # fmt: skip
    return x.reshape(*batch, channels, size, size).clamp(0, 1)


def box_mask(size: int = SIZE, lo: int = 6, hi: int = 18) -> torch.Tensor:
    """A square foreground `[size, size]` (bool)."""
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[lo:hi, lo:hi] = True
    return mask
