"""`plot_bidirectional`: a test image, its SHAP maps and its influential training images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._utils.plotting import channel_sum, hide_ticks, show_picture, subplots, to_picture
from .result import COMPOUND, BidirectionalResult


def default_rows(layer_names: Sequence[str], n_layers: int = 3) -> list[str]:
    """The compound row and up to `n_layers` layers spread from the first to the last."""
    layers = [name for name in layer_names if name != COMPOUND]
    if len(layers) <= n_layers:
        picked = layers
    else:
        picked = [layers[round(i)] for i in np.linspace(0, len(layers) - 1, n_layers)]
    return [COMPOUND, *dict.fromkeys(picked)]


def _display(image: Tensor, to_image: Callable[[Tensor], Any] | None) -> np.ndarray:
    """An input `[C, H, W]` (C = 1 or 3) as a displayable `[H, W]` or `[H, W, 3]` array."""
    return np.asarray(to_image(image)) if to_image is not None else to_picture(image)


def _gray(picture: np.ndarray) -> np.ndarray:
    return picture if picture.ndim == 2 else picture.mean(-1)


def _show_map(ax: Any, picture: np.ndarray, shap_map: np.ndarray, vmax: float) -> Any:
    from shap.plots import colors

    h, w = shap_map.shape
    ax.imshow(_gray(picture), cmap="gray", alpha=0.15, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    return ax.imshow(shap_map, cmap=colors.red_transparent_blue, vmin=-vmax, vmax=vmax)


@dataclass(frozen=True)
class _Layout:
    """Where everything goes: left column (test side), blocks of k columns (training side)."""

    row_ids: list[int]
    k: int
    per_row: int  # grid rows per influence row: 2 with the training images' SHAP maps
    left: list[tuple[str, int | None]]  # (title, SHAP slot or None for the image itself)
    blocks: list[tuple[str, Tensor, Tensor]]  # (name, positions, scores)

    @property
    def n_rows(self) -> int:
        return max(len(self.row_ids) * self.per_row, len(self.left))

    @property
    def ratios(self) -> list[float]:
        return [1, 0.25] + ([1] * self.k + [0.25]) * (len(self.blocks) - 1) + [1] * self.k

    def column(self, block: int, j: int) -> int:
        return 2 + block * (self.k + 1) + j


@dataclass(frozen=True)
class _Cell:
    """One training image of the figure: its grid place, its score and its influence row."""

    row: int
    col: int
    position: Tensor
    score: float
    row_id: int


def _layout(
    result: BidirectionalResult,
    index: int,
    layers: Sequence[str] | None,
    k: int | None,
    opponents: bool,
    train_shap: bool,
    name_of: Callable[[int], str],
) -> _Layout:
    """Checks the arguments and places the panels."""
    if not 0 <= index < len(result):
        raise IndexError(f"index {index} is out of range for {len(result)} test images.")
    rows = list(layers) if layers is not None else default_rows(result.layer_names)
    if not rows:
        raise ValueError("layers is empty; pass None for the default rows.")
    row_ids = [result.row(name) for name in rows]
    k = result.k if k is None else k
    if not 1 <= k <= result.k:
        raise ValueError(f"k must lie in [1, {result.k}] for this result; got {k}.")
    if train_shap and result.train_shap_values is None:
        raise ValueError(
            "train_shap=True needs the training images' SHAP maps: run "
            "explain(..., explain_train=True)."
        )
    pred, true = int(result.predictions[index]), int(result.labels[index])
    left: list[tuple[str, int | None]] = [
        ("test image", None),
        (f"SHAP: {name_of(pred)}\n(predicted)", 0),
    ]
    if pred != true:
        left.append((f"SHAP: {name_of(true)}\n(true)", 1))
    blocks = [("proponents", result.proponents, result.proponent_scores)]
    if opponents:
        blocks.append(("opponents", result.opponents, result.opponent_scores))
    return _Layout(row_ids, k, 2 if train_shap else 1, left, blocks)


def _cells(result: BidirectionalResult, index: int, layout: _Layout) -> list[_Cell]:
    return [
        _Cell(
            r * layout.per_row,
            layout.column(b, j),
            positions[rid, index, j],
            float(scores[rid, index, j]),
            rid,
        )
        for r, rid in enumerate(layout.row_ids)
        for b, (_, positions, scores) in enumerate(layout.blocks)
        for j in range(layout.k)
    ]


def _grid(layout: _Layout, cell: float) -> tuple[Any, np.ndarray]:
    """The figure and its `[n_rows, n_cols]` axes, all hidden until drawn into."""
    ratios = layout.ratios
    fig, axes = subplots(
        layout.n_rows,
        len(ratios),
        figsize=(cell * sum(ratios) + 0.8, cell * 1.25 * layout.n_rows + 0.6),
        gridspec_kw={"width_ratios": ratios},
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat:
        hide_ticks(ax)
        ax.set_visible(False)
    return fig, axes


def _shap_scale(maps: list[np.ndarray]) -> float:
    """One colour scale for every SHAP map in the figure (as shap.image_plot does)."""
    return float(np.nanpercentile(np.abs(np.stack([m.ravel() for m in maps])), 99.9)) or 1.0


def _draw_test_side(
    axes: np.ndarray,
    result: BidirectionalResult,
    index: int,
    layout: _Layout,
    picture: np.ndarray,
    vmax: float,
    name_of: Callable[[int], str],
) -> Any:
    """The test image and its SHAP maps down the first column; returns the last map."""
    pred, true = int(result.predictions[index]), int(result.labels[index])
    mappable = None
    for r, (title, slot) in enumerate(layout.left):
        ax = axes[r, 0]
        ax.set_visible(True)
        if slot is None:
            show_picture(ax, picture)
            title = f"test #{index}: {name_of(true)}\npredicted {name_of(pred)}"
        else:
            mappable = _show_map(ax, picture, channel_sum(result.shap_values[index, slot]), vmax)
        ax.set_title(title, fontsize=8)
    return mappable


def _draw_train_cell(
    axes: np.ndarray,
    result: BidirectionalResult,
    index: int,
    layout: _Layout,
    cell: _Cell,
    train_row: int,
    picture: np.ndarray,
    name_of: Callable[[int], str],
) -> None:
    """One training image with its class and score; green: predicted, orange: true class."""
    pred, true = int(result.predictions[index]), int(result.labels[index])
    label = int(result.train_labels[train_row])
    ax = axes[cell.row, cell.col]
    ax.set_visible(True)
    show_picture(ax, picture)
    ax.set_title(
        ("\n" if cell.row == 0 else "") + f"{name_of(label)}  {cell.score:+.3g}",
        fontsize=7,
        color="tab:green" if label == pred else "tab:orange" if label == true else "black",
    )
    first = {layout.column(b, 0): name for b, (name, _, _) in enumerate(layout.blocks)}
    if cell.col == layout.column(0, 0):
        ax.set_ylabel(result.layer_names[cell.row_id], fontsize=8)
    if cell.col in first and cell.row == 0:
        ax.set_title(f"top-{layout.k} {first[cell.col]}\n ", loc="left", fontsize=8, weight="bold")


def _draw_train_shap(
    axes: np.ndarray, layout: _Layout, cell: _Cell, picture: np.ndarray, shap_map, vmax: float
) -> None:
    """A training image's own SHAP map, under the image."""
    below = axes[cell.row + 1, cell.col]
    below.set_visible(True)
    _show_map(below, picture, shap_map, vmax)
    if cell.col == layout.column(0, 0):
        below.set_ylabel("SHAP, own class", fontsize=7)


def _colorbar(fig: Any, axes: np.ndarray, layout: _Layout, mappable: Any) -> None:
    holder = axes[len(layout.left) - 1, 0].inset_axes((0.0, -0.16, 1.0, 0.07))
    bar = fig.colorbar(mappable, cax=holder, orientation="horizontal")
    bar.set_label("SHAP value", fontsize=8)
    bar.ax.tick_params(labelsize=7)


def plot_bidirectional(
    result: BidirectionalResult,
    index: int,
    layers: Sequence[str] | None = None,
    k: int | None = None,
    opponents: bool = False,
    train_shap: bool = False,
    class_names: Sequence[str] | None = None,
    to_image: Callable[[Tensor], Any] | None = None,
    cell: float = 1.3,
) -> tuple[Any, np.ndarray]:
    """The bidirectional view of one test image (the paper's Fig. 10, with its training side).

    Left: the test image and its SHAP maps for the predicted and (when different) the true
    class, in shap's colours (red pushes the class score up, blue down; one symmetric scale
    for every map in the figure, clipped at the 99.9th percentile of the absolute values, as in
    `shap.image_plot`). Right: one row per influence row with the top-k proponents
    (and opponents), titled with their class and score: green for the predicted class,
    orange for the true class of a misclassified image, black for any other.

    Args:
        result: A `BidirectionalResult`.
        index: Which test image.
        layers: Row names to show (layers and/or "compound"); default: the compound score
            and the first, a middle and the last layer.
        k: Training images per row (at most `result.k`; default all).
        opponents: Also show the k opponents of each row.
        train_shap: Under each row, the training images' own SHAP maps (needs
            `explain(..., explain_train=True)`).
        class_names: Class names; default `result.class_names`, else numbers.
        to_image: Turns an input `[C, H, W]` into something `imshow` draws (e.g. to undo a
            normalisation); default: 1-channel as gray, 3-channel as RGB, stretched to
            [0, 1] when outside it.
        cell: Size of one image cell in inches.

    Returns:
        `(fig, axes)`: axes `[n_rows, n_cols]` (numpy array; unused cells are hidden).
    """
    names = list(class_names) if class_names is not None else result.class_names

    def name_of(c: int) -> str:
        return names[c] if names else str(c)

    layout = _layout(result, index, layers, k, opponents, train_shap, name_of)
    fig, axes = _grid(layout, cell)
    cells = _cells(result, index, layout)
    train_rows = result.train_index(torch.stack([c.position for c in cells])).tolist()
    maps = [channel_sum(result.shap_values[index, s]) for _, s in layout.left if s is not None]
    train_maps = []
    if train_shap:
        assert result.train_shap_values is not None
        train_maps = [channel_sum(result.train_shap_values[t]) for t in train_rows]
    vmax = _shap_scale(maps + train_maps)
    test_picture = _display(result.inputs[index], to_image)
    mappable = _draw_test_side(axes, result, index, layout, test_picture, vmax, name_of)
    for i, (c, t) in enumerate(zip(cells, train_rows, strict=True)):
        picture = _display(result.train_inputs[t], to_image)
        _draw_train_cell(axes, result, index, layout, c, t, picture, name_of)
        if train_shap:
            _draw_train_shap(axes, layout, c, picture, train_maps[i], vmax)
    if mappable is not None:
        _colorbar(fig, axes, layout, mappable)
    return fig, axes
