"""A generated toy set with exact object masks: one class-specific shape per noisy image.

Used by the attribution tests and by `benchmarks/clrp_evaluation.py`: smaller and plainer than
the embedded TexturedShapes. Each image `[1, S, S]` in [0, 1] has a noisy background,
one bright shape of its class at a random position (the mask marks its pixels) and,
optionally, a class-independent distractor blob elsewhere: clutter that a class-specific
explanation should leave out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

CLASSES = ("square", "disk", "cross", "triangle")


def shape_mask(kind: str, size: int) -> Tensor:
    """Bool `[size, size]` stencil of one class."""
    r = torch.arange(size)[:, None].float()
    c = torch.arange(size)[None, :].float()
    mid = (size - 1) / 2
    if kind == "square":  # hollow square, 2 px thick
        outer = torch.ones(size, size, dtype=torch.bool)
        inner = (r >= 2) & (r <= size - 3) & (c >= 2) & (c <= size - 3)
        return outer & ~inner
    if kind == "disk":
        return (r - mid) ** 2 + (c - mid) ** 2 <= (size / 2) ** 2
    if kind == "cross":  # plus sign, arms 2 px wide
        return ((r - mid).abs() <= 1) | ((c - mid).abs() <= 1)
    if kind == "triangle":  # filled, apex up
        return (c - mid).abs() <= r / 2 + 0.5
    raise ValueError(f"unknown shape {kind!r}; choose from {CLASSES}.")


def make_shapes(
    n: int, size: int = 24, object_size: int = 8, distractor: bool = True, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """`n` seeded images with labels and object masks.

    Returns:
        `(images [n, 1, size, size] float32, labels [n] int64, masks [n, size, size] bool)`.
    """
    gen = torch.Generator().manual_seed(seed)
    images = 0.4 * torch.rand(n, 1, size, size, generator=gen)
    labels = torch.randint(len(CLASSES), (n,), generator=gen)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    stencils = [shape_mask(kind, object_size) for kind in CLASSES]
    span = size - object_size + 1
    for i in range(n):
        r, c = torch.randint(span, (2,), generator=gen).tolist()
        masks[i, r : r + object_size, c : c + object_size] = stencils[labels[i]]
        brightness = 0.7 + 0.3 * torch.rand((), generator=gen)
        images[i, 0][masks[i]] = brightness
        if distractor:
            d = object_size // 2 + 1
            while True:  # a blob of random bright pixels that does not touch the object
                dr, dc = torch.randint(size - d + 1, (2,), generator=gen).tolist()
                if not masks[i, max(dr - 1, 0) : dr + d + 1, max(dc - 1, 0) : dc + d + 1].any():
                    break
            blob = torch.rand(d, d, generator=gen) < 0.6
            patch = images[i, 0, dr : dr + d, dc : dc + d]
            patch[blob] = 0.7 + 0.3 * torch.rand(int(blob.sum()), generator=gen)
    return images, labels, masks


def shapes_cnn(n_classes: int = len(CLASSES), width: int = 8) -> nn.Sequential:
    """A VGG-like `nn.Sequential` (with `nn.Flatten`) for 24 x 24 shapes: 3 conv + 2 linear."""
    w = width
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * w * 3 * 3, 64),
        nn.ReLU(),
        nn.Linear(64, n_classes),
    )


def make_pairs(
    n: int, size: int = 24, object_size: int = 8, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Images with two objects of different classes, one in each half (the paper's Fig. 3).

    Returns:
        `(images [n, 1, size, size], class_a [n], class_b [n], mask_a, mask_b [n, size, size])`;
        object a lies in the left half, object b in the right half.
    """
    gen = torch.Generator().manual_seed(seed)
    images = 0.4 * torch.rand(n, 1, size, size, generator=gen)
    class_a = torch.randint(len(CLASSES), (n,), generator=gen)
    class_b = (class_a + torch.randint(1, len(CLASSES), (n,), generator=gen)) % len(CLASSES)
    mask_a = torch.zeros(n, size, size, dtype=torch.bool)
    mask_b = torch.zeros_like(mask_a)
    half = size // 2
    for i in range(n):
        for mask, cls, c_low in ((mask_a, class_a, 0), (mask_b, class_b, half)):
            r = int(torch.randint(size - object_size + 1, (), generator=gen))
            c = c_low + int(torch.randint(half - object_size + 1, (), generator=gen))
            mask[i, r : r + object_size, c : c + object_size] = shape_mask(
                CLASSES[cls[i]], object_size
            )
            images[i, 0][mask[i]] = 0.85
    return images, class_a, class_b, mask_a, mask_b
