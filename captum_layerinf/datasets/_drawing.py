"""Silhouettes, textures and clutter for the generated shapes dataset (numpy, seeded)."""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path

SUPERSAMPLE = 3


def _star(points: int = 5, inner: float = 0.45) -> Path:
    angles = np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return Path(np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1))


_TRIANGLE = Path(np.array([[0.0, 1.0], [0.93, -0.6], [-0.93, -0.6]]))
_STAR = _star()
_ARROW = Path(
    np.array(
        [
            [-0.9, 0.25],
            [0.2, 0.25],
            [0.2, 0.7],
            [0.95, 0.0],
            [0.2, -0.7],
            [0.2, -0.25],
            [-0.9, -0.25],
        ]
    )
)


def _in_path(path: Path, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    pts = np.stack([u.ravel(), v.ravel()], 1)
    return path.contains_points(pts).reshape(u.shape)


def inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether shape-frame points `(u, v)` (unit scale, centred) lie inside `shape`."""
    r = np.hypot(u, v)
    if shape == "circle":
        return r < 0.95
    if shape == "square":
        return np.maximum(abs(u), abs(v)) < 0.78
    if shape == "triangle":
        return _in_path(_TRIANGLE, u, v)
    if shape == "star":
        return _in_path(_STAR, u, v)
    if shape == "cross":
        return ((abs(u) < 0.3) & (abs(v) < 0.95)) | ((abs(v) < 0.3) & (abs(u) < 0.95))
    if shape == "ring":
        return (r < 0.98) & (r > 0.55)
    if shape == "crescent":
        return (r < 0.98) & (np.hypot(u - 0.5, v - 0.2) > 0.72)
    if shape == "arrow":
        return _in_path(_ARROW, u, v)
    raise ValueError(f"unknown shape {shape!r}.")


def silhouette(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A bool mask `[size, size]` of `shape` at a random scale, rotation and position."""
    scale = rng.uniform(0.28, 0.4) * size
    angle = rng.uniform(-0.35, 0.35)
    cx, cy = rng.uniform(0.4, 0.6, size=2) * size
    n = size * SUPERSAMPLE
    grid = (np.arange(n) + 0.5) / SUPERSAMPLE
    x, y = np.meshgrid(grid, grid)
    dx, dy = (x - cx) / scale, (cy - y) / scale
    c, s = np.cos(angle), np.sin(angle)
    cover = inside(shape, c * dx + s * dy, -s * dx + c * dy).astype(np.float32)
    cover = cover.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean((1, 3))
    return cover >= 0.5


def _coords(size: int, rng: np.random.Generator, period: float) -> tuple[np.ndarray, ...]:
    angle = rng.uniform(-0.2, 0.2)
    freq = 2 * np.pi / (period * rng.uniform(0.85, 1.15))
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    u = (np.cos(angle) * x + np.sin(angle) * y) * freq + rng.uniform(0, 2 * np.pi)
    v = (-np.sin(angle) * x + np.cos(angle) * y) * freq + rng.uniform(0, 2 * np.pi)
    return u, v


def _smooth_noise(size: int, rng: np.random.Generator, cells: int) -> np.ndarray:
    coarse = rng.random((cells + 1, cells + 1))
    pos = np.linspace(0, cells, size)
    i = np.minimum(pos.astype(int), cells - 1)
    f = pos - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
    return rows[:, i] * (1 - f) + rows[:, i + 1] * f


def pattern(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A texture pattern `[size, size]` in [0, 1] with random phase and frequency jitter."""
    if kind == "stripes":
        u, _ = _coords(size, rng, 4.0)
        return (np.sin(u) > 0).astype(np.float64)
    if kind == "checks":
        u, v = _coords(size, rng, 6.0)
        return ((np.sin(u) > 0) ^ (np.sin(v) > 0)).astype(np.float64)
    if kind == "dots":
        u, v = _coords(size, rng, 5.0)
        return ((np.cos(u) + np.cos(v)) > 1.0).astype(np.float64)
    if kind == "diagonal":
        u, v = _coords(size, rng, 4.5)
        return (np.sin((u + v) / np.sqrt(2)) > 0).astype(np.float64)
    if kind == "grid":
        u, v = _coords(size, rng, 5.0)
        return ((np.cos(u) > 0.7) | (np.cos(v) > 0.7)).astype(np.float64)
    if kind == "waves":
        u, v = _coords(size, rng, 6.0)
        return 0.5 + 0.5 * np.sin(u + 1.5 * np.sin(v / 2))
    if kind == "zigzag":
        u, v = _coords(size, rng, 5.0)
        return (np.sin(u + 2.0 * np.abs(((v / np.pi) % 2) - 1)) > 0).astype(np.float64)
    if kind == "speckle":
        return (_smooth_noise(size, rng, max(2, size // 3)) > 0.55).astype(np.float64)
    raise ValueError(f"unknown texture {kind!r}.")


def colourise(
    values: np.ndarray, colours: tuple[tuple[float, ...], tuple[float, ...]], rng, jitter: float
) -> np.ndarray:
    """Maps a pattern in [0, 1] between two RGB colours (jittered): `[3, H, W]`."""
    a = np.clip(np.asarray(colours[0]) + rng.uniform(-jitter, jitter, 3), 0, 1)
    b = np.clip(np.asarray(colours[1]) + rng.uniform(-jitter, jitter, 3), 0, 1)
    return a[:, None, None] * (1 - values) + b[:, None, None] * values


def clutter(size: int, rng: np.random.Generator) -> np.ndarray:
    """A cluttered background `[3, size, size]`: smooth colour noise and random bars."""
    base = np.stack([_smooth_noise(size, rng, 4) for _ in range(3)])
    image = 0.25 + 0.5 * base
    for _ in range(rng.integers(3, 7)):
        colour = rng.uniform(0.1, 0.9, 3)
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(1, max(2, size // 4), 2)
        if rng.random() < 0.5:
            w, h = h, w
        image[:, y0 : y0 + h, x0 : x0 + w] = colour[:, None, None]
    return image
