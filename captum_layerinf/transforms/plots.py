"""Figures of the disturbance transforms; every function returns `(fig, ax)`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from .._utils.plotting import figure_and_axes
from ._images import as_tensor, to_float
from .functional import TextureSweep


def _rgb_float(image: Any) -> Tensor:
    x = to_float(as_tensor(image))
    if x.dim() != 3:
        raise ValueError(f"plots take single images [C, H, W]; got {tuple(x.shape)}.")
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]


def _montage(
    rows: Sequence[Sequence[Any]], height: int, pad: int
) -> tuple[np.ndarray, list[float], list[float]]:
    """Rows of images, each resized to `height` (aspect kept), on a white canvas.

    Returns:
        The canvas `[H, W, 3]`, the x centres of the columns and the y centres of the rows.
    """
    cells = [[_rgb_float(img) for img in row] for row in rows]
    cells = [
        [TF.resize(c, [height, max(1, round(c.shape[2] * height / c.shape[1]))]) for c in row]
        for row in cells
    ]
    n_cols = max(len(row) for row in cells)
    widths = [max(row[j].shape[2] for row in cells if j < len(row)) for j in range(n_cols)]
    lefts = [pad + sum(widths[:j]) + j * pad for j in range(n_cols)]
    tops = [pad + i * (height + pad) for i in range(len(cells))]
    canvas = torch.ones(3, tops[-1] + height + pad, lefts[-1] + widths[-1] + pad)
    for top, row in zip(tops, cells, strict=True):
        for left, width, cell in zip(lefts, widths, row, strict=False):
            x0 = left + (width - cell.shape[2]) // 2
            canvas[:, top : top + height, x0 : x0 + cell.shape[2]] = cell.clamp(0, 1)
    xs = [left + w / 2 for left, w in zip(lefts, widths, strict=True)]
    ys = [top + height / 2 for top in tops]
    return canvas.permute(1, 2, 0).numpy(), xs, ys


def plot_disturbances(
    rows: Sequence[Sequence[Any]],
    row_labels: Sequence[str] | None = None,
    column_labels: Sequence[str] | None = None,
    ax: Any = None,
    height: int = 128,
) -> tuple[Any, Any]:
    """A grid of images, e.g. original / white background / textured / styled per photo.

    Args:
        rows: One sequence of images per row (PIL, tv_tensors or tensors `[C, H, W]`,
            uint8 or float in [0, 1]).
        row_labels: Labels on the left, one per row.
        column_labels: Labels on top, one per column.
        ax: A matplotlib Axes to draw into; None: a new figure.
        height: Row height in pixels; images keep their aspect ratio.

    Returns:
        `(fig, ax)`.
    """
    if not rows or not all(len(row) for row in rows):
        raise ValueError("rows must hold at least one non-empty row of images.")
    canvas, xs, ys = _montage(rows, height, pad=max(2, height // 32))
    inches = 1.6 * len(rows)
    fig, ax = figure_and_axes(ax, (inches * canvas.shape[1] / canvas.shape[0] + 1, inches))
    ax.imshow(canvas, interpolation="antialiased")
    ax.set_xticks(xs, list(column_labels or [""] * len(xs)))
    ax.set_yticks(ys, list(row_labels or [""] * len(ys)))
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig, ax


def plot_texture_sweep(sweep: TextureSweep, ax: Any = None, height: int = 96) -> tuple[Any, Any]:
    """The paper's Fig. 6: textured images over strength (rows) and L-BFGS steps (columns).

    Args:
        sweep: The result of `texture_sweep`.
        ax: A matplotlib Axes to draw into; None: a new figure.
        height: Cell height in pixels.

    Returns:
        `(fig, ax)`.
    """
    rows = [list(sweep.images[i]) for i in range(len(sweep.strengths))]
    labels = [f"{s:.0%} texture" for s in sweep.strengths]
    columns = [f"{k} steps" for k in sweep.steps]
    return plot_disturbances(rows, labels, columns, ax=ax, height=height)


def plot_gram_distance(sweep: TextureSweep, ax: Any = None) -> tuple[Any, Any]:
    """Gram distance to the texture against steps, one line per strength (log scale).

    Args:
        sweep: The result of `texture_sweep`.
        ax: A matplotlib Axes to draw into; None: a new figure.

    Returns:
        `(fig, ax)`.
    """
    fig, ax = figure_and_axes(ax, (4.5, 3.2))
    for s, row in zip(sweep.strengths, sweep.gram_distance, strict=True):
        ax.plot(sweep.steps, row.numpy(), marker="o", label=f"{s:.0%}")
    ax.set_yscale("log")
    ax.set_xlabel("L-BFGS steps")
    ax.set_ylabel("Gram distance to texture")
    ax.legend(title="texture", fontsize="small")
    return fig, ax
