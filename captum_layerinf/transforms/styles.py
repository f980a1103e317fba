"""Offline texture and style images: scikit-image's bundled photos and generated patterns.

The paper styles its images with artworks (Picasso, Hokusai, Matisse, van Gogh) that cannot
ship with a package. In their place: scikit-image photos with a strong look of their own and
three generated patterns that imitate painterly styles (brush strokes, a mosaic, waves).
Every function here returns a float tensor `[C, H, W]` in [0, 1] and downloads nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import cv2
import numpy as np
import torch
from skimage import data
from torch import Tensor

TEXTURES = ("brick", "grass", "gravel")
"""Grayscale textures bundled with scikit-image (512 x 512)."""

PHOTO_STYLES = ("hubble_deep_field", "immunohistochemistry")
"""scikit-image colour photos with a strong look: a star field, stained tissue."""

GENERATED_STYLES = ("brush_strokes", "mosaic", "waves")
"""Patterns drawn by this module (seeded, any size)."""


def _from_numpy(array: np.ndarray) -> Tensor:
    x = torch.from_numpy(np.ascontiguousarray(array)).float() / 255
    return x[None] if x.dim() == 2 else x.permute(2, 0, 1).contiguous()


def load_texture(name: str) -> Tensor:
    """One of scikit-image's bundled textures.

    Args:
        name: "brick", "grass" or "gravel".

    Returns:
        Tensor `[1, 512, 512]`, float in [0, 1] (grayscale).
    """
    if name not in TEXTURES:
        raise ValueError(f"unknown texture {name!r}; available: {list(TEXTURES)}.")
    return _from_numpy(getattr(data, name)())


def brush_strokes(size: int = 256, seed: int = 0) -> Tensor:
    """Curved, thick brush strokes in blues and yellows that follow a swirling flow field.

    A stand-in for post-impressionist painting (van Gogh-like swirls).

    Args:
        size: Side of the square image in pixels.
        seed: Seed of the strokes.

    Returns:
        Tensor `[3, size, size]`, float in [0, 1].
    """
    rng = np.random.default_rng(seed)
    palette = np.array(
        [[22, 45, 110], [40, 80, 160], [90, 140, 200], [235, 200, 70], [245, 230, 150],
         [20, 30, 60], [60, 110, 90]], dtype=np.float64
    )  # fmt: skip
    canvas = np.full((size, size, 3), (30, 50, 100), np.uint8)
    scale = size / 256
    phase = rng.uniform(0, 2 * np.pi, 4)

    def angle(x: float, y: float) -> float:
        u, v = x / size * 2 * np.pi, y / size * 2 * np.pi
        return 2.0 * np.sin(1.5 * u + phase[0]) * np.cos(1.2 * v + phase[1]) + np.sin(
            2.5 * v + phase[2]
        )

    for _ in range(int(1600 * scale**2)):
        x, y = rng.uniform(0, size, 2)
        points = []
        for _ in range(rng.integers(6, 16)):
            points.append((x, y))
            a = angle(x, y)
            x, y = x + 3 * scale * np.cos(a), y + 3 * scale * np.sin(a)
        colour = palette[rng.integers(len(palette))] + rng.normal(0, 12, 3)
        cv2.polylines(
            canvas,
            [np.round(np.array(points) * 16).astype(np.int32)],
            isClosed=False,
            color=tuple(float(c) for c in np.clip(colour, 0, 255)),
            thickness=max(1, int(round(rng.uniform(2, 5) * scale))),
            lineType=cv2.LINE_AA,
            shift=4,
        )
    return _from_numpy(canvas)


def mosaic(size: int = 256, seed: int = 0, tiles: int | None = None) -> Tensor:
    """Irregular tiles in bold flat colours, separated by dark grout (a Voronoi mosaic).

    A stand-in for flat-colour, hard-edged painting (Matisse-like cut-outs, mosaics).

    Args:
        size: Side of the square image in pixels.
        seed: Seed of the tile centres and colours.
        tiles: Number of tiles (default: one per 14 x 14 pixels).

    Returns:
        Tensor `[3, size, size]`, float in [0, 1].
    """
    rng = np.random.default_rng(seed)
    n = tiles or max(4, size * size // 196)
    centres = rng.uniform(0, size, (n, 2))
    palette = np.array(
        [[220, 60, 50], [245, 190, 40], [40, 110, 190], [30, 150, 90], [240, 235, 220],
         [130, 60, 150], [240, 120, 40]], dtype=np.float64
    )  # fmt: skip
    colours = palette[rng.integers(len(palette), size=n)] + rng.normal(0, 10, (n, 3))
    subdiv = cv2.Subdiv2D((0, 0, size, size))
    subdiv.insert([(float(x), float(y)) for x, y in np.clip(centres, 0, size - 1e-3)])
    facets, _ = subdiv.getVoronoiFacetList([])
    canvas = np.zeros((size, size, 3), np.uint8)
    polygons = [np.round(np.asarray(f) * 16).astype(np.int32) for f in facets]
    for polygon, colour in zip(polygons, np.clip(colours, 0, 255), strict=False):
        cv2.fillPoly(canvas, [polygon], tuple(float(c) for c in colour), cv2.LINE_AA, shift=4)
    grout = max(1, int(round(2 * size / 256)))
    cv2.polylines(canvas, polygons, True, (35, 35, 35), grout, cv2.LINE_AA, shift=4)
    return _from_numpy(canvas)


def waves(size: int = 256, seed: int = 0) -> Tensor:
    """Curling bands of deep blue, pale blue and white with dark outlines.

    A stand-in for woodblock prints (Hokusai-like waves).

    Args:
        size: Side of the square image in pixels.
        seed: Seed of the wave phases.

    Returns:
        Tensor `[3, size, size]`, float in [0, 1].
    """
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 2 * np.pi, 3)
    v, u = np.mgrid[0:size, 0:size] / size * 2 * np.pi
    field = (
        v * 3
        + 0.9 * np.sin(2 * u + p[0] + 1.5 * np.sin(3 * v + p[1]))
        + 0.4 * np.sin(7 * u + 5 * v + p[2])
    )
    bands = np.mod(field * 1.6, 4.0)
    palette = np.array([[15, 35, 90], [45, 90, 160], [160, 195, 225], [245, 242, 230]])
    image = palette[np.floor(bands).astype(int)].astype(np.float64)
    edge = np.minimum(bands - np.floor(bands), np.ceil(bands) - bands) < 0.06
    image[edge] = (10, 20, 45)
    return _from_numpy(np.clip(image, 0, 255).astype(np.uint8))


def _photo(name: str) -> Tensor:
    return _from_numpy(getattr(data, name)())


_GENERATORS: dict[str, Callable[[], Tensor]] = {
    "brush_strokes": brush_strokes,
    "mosaic": mosaic,
    "waves": waves,
}


@functools.lru_cache(maxsize=16)
def _cached(name: str) -> Tensor:
    if name in TEXTURES:
        return load_texture(name)
    if name in PHOTO_STYLES:
        return _photo(name)
    return _GENERATORS[name]()


def load_style(name: str) -> Tensor:
    """An offline style image by name.

    Args:
        name: One of `available_images()`: a generated pattern ("brush_strokes",
            "mosaic", "waves", 256 x 256), a scikit-image photo ("hubble_deep_field",
            "immunohistochemistry") or a texture ("brick", "grass", "gravel").

    Returns:
        Tensor `[C, H, W]`, float in [0, 1] (C = 1 for the textures, else 3); a copy.
    """
    if name not in available_images():
        raise ValueError(f"unknown offline image {name!r}; available: {available_images()}.")
    return _cached(name).clone()


def available_images() -> list[str]:
    """Names accepted wherever a texture or style image is expected."""
    return [*GENERATED_STYLES, *PHOTO_STYLES, *TEXTURES]


def offline_images() -> dict[str, Callable[[], Tensor]]:
    """`{name: loader}` of every offline image (loaders return float `[C, H, W]` copies)."""
    return {name: functools.partial(load_style, name) for name in available_images()}
