"""Figure and image helpers shared by every `plots.py`: new figures, pictures, colour maps.

Figures come from pyplot, so that a notebook shows them, except inside `detached_figures()`,
where they are plain `matplotlib.figure.Figure` objects that no backend or pyplot state
ever sees (the study's report writer draws its PNGs that way). Nothing here selects a
backend, and pyplot is imported only when a figure is made outside that context.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
from torch import Tensor

_DETACHED: ContextVar[bool] = ContextVar("captum_layerinf_detached_figures", default=False)
_FIGURE_KEYS = ("figsize", "layout", "dpi")


@contextmanager
def detached_figures() -> Iterator[None]:
    """Within the block, plot functions build figures without pyplot or a backend.

    Such a figure is never displayed and never registered with pyplot; save it with
    `fig.savefig(...)` and drop it (no `plt.close` is needed).
    """
    token = _DETACHED.set(True)
    try:
        yield
    finally:
        _DETACHED.reset(token)


def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    """`plt.subplots(nrows, ncols, **kwargs)`, or a detached figure inside `detached_figures()`.

    Args:
        nrows: Rows of axes.
        ncols: Columns of axes.
        **kwargs: `figsize`, `layout` and `dpi` go to the figure, the rest (`squeeze`,
            `sharey`, `gridspec_kw`, ...) to its `subplots`.

    Returns:
        `(fig, axes)` as `plt.subplots` returns them.
    """
    if not _DETACHED.get():
        import matplotlib.pyplot as plt

        return plt.subplots(nrows, ncols, **kwargs)
    from matplotlib.figure import Figure

    figure_kw = {k: kwargs.pop(k) for k in _FIGURE_KEYS if k in kwargs}
    fig = Figure(**figure_kw)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def figure_and_axes(ax: Any, figsize: tuple[float, float], **kwargs: Any) -> tuple[Any, Any]:
    """`(ax.figure, ax)` for a given Axes, else a new figure with one Axes of `figsize`."""
    if ax is None:
        return subplots(figsize=figsize, **kwargs)
    return ax.figure, ax


def colormap(name: str) -> Any:
    """The registered colour map `name` (without going through pyplot)."""
    import matplotlib

    return matplotlib.colormaps[name]


def hide_ticks(ax: Any) -> None:
    """Removes an Axes' ticks (for images)."""
    ax.set_xticks([])
    ax.set_yticks([])


def to_picture(image: Tensor) -> np.ndarray:
    """An image `[C, H, W]` (C = 1 or 3) or `[H, W]` as an array `imshow` draws in [0, 1].

    One channel gives `[H, W]` (drawn gray), three give `[H, W, 3]`. Values outside [0, 1]
    (normalised inputs) are stretched to it; values inside are kept.

    Raises:
        ValueError: Any other shape; the message says how to draw it.
    """
    x = image.detach().double().cpu()
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(
            f"cannot draw an input of shape {tuple(image.shape)}: images need [1 or 3, H, W]. "
            "Pass to_image= to turn your inputs into pictures."
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        x = (x - lo) / max(hi - lo, 1e-12)
    x = x.clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def show_picture(ax: Any, picture: np.ndarray) -> None:
    """Draws a picture from `to_picture` on a fixed [0, 1] scale, without ticks."""
    ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
    hide_ticks(ax)


def show_image(ax: Any, image: Tensor) -> None:
    """Draws an image `[C, H, W]` (1 or 3 channels) without ticks; see `to_picture`."""
    show_picture(ax, to_picture(image))


def channel_sum(values: Tensor) -> np.ndarray:
    """An attribution map `[C, H, W]` or `[H, W]` as `[H, W]`, summed over channels."""
    v = values.detach().double().cpu()
    return (v.sum(0) if v.dim() == 3 else v).numpy()


def show_heatmap(ax: Any, values: Tensor, title: str) -> None:
    """An attribution map, red positive and blue negative, on a scale symmetric about 0."""
    m = channel_sum(values)
    lim = float(np.abs(m).max()) or 1.0
    ax.imshow(m, cmap="seismic", vmin=-lim, vmax=lim)
    ax.set_title(title, fontsize=8)
    hide_ticks(ax)
