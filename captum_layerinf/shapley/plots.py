"""`plot_bidirectional`: a test image, its SHAP maps and its influential training images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

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
    if to_image is not None:
        return np.asarray(to_image(image))
    x = image.detach().double().cpu()
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(
            f"cannot draw an input of shape {tuple(image.shape)}: images need [1 or 3, H, W]. "
            "Pass to_image= to turn your inputs into pictures."
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:  # normalised inputs: stretch to [0, 1]
        x = (x - lo) / max(hi - lo, 1e-12)
    x = x.clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def _gray(picture: np.ndarray) -> np.ndarray:
    return picture if picture.ndim == 2 else picture.mean(-1)


def _map(values: Tensor) -> np.ndarray:
    """A SHAP map `[H, W]`: values summed over channels, as shap's image plot does."""
    v = values.detach().double().cpu()
    return (v.sum(0) if v.dim() == 3 else v).numpy()


def _show_image(ax: Any, picture: np.ndarray) -> None:
    ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)


def _show_map(ax: Any, picture: np.ndarray, shap_map: np.ndarray, vmax: float) -> Any:
    from shap.plots import colors

    h, w = shap_map.shape
    ax.imshow(_gray(picture), cmap="gray", alpha=0.15, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    return ax.imshow(shap_map, cmap=colors.red_transparent_blue, vmin=-vmax, vmax=vmax)


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
    import matplotlib.pyplot as plt

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
    names = list(class_names) if class_names is not None else result.class_names

    def name_of(c: int) -> str:
        return names[c] if names else str(c)

    pred, true = int(result.predictions[index]), int(result.labels[index])
    left = [("test image", None), (f"SHAP: {name_of(pred)}\n(predicted)", 0)]
    if pred != true:
        left.append((f"SHAP: {name_of(true)}\n(true)", 1))
    per_row = 2 if train_shap else 1
    n_rows = max(len(rows) * per_row, len(left))
    blocks = [("proponents", result.proponents, result.proponent_scores)]
    if opponents:
        blocks.append(("opponents", result.opponents, result.opponent_scores))
    n_cols = 2 + len(blocks) * k + (len(blocks) - 1)
    ratios = [1, 0.25] + ([1] * k + [0.25]) * (len(blocks) - 1) + [1] * k
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(cell * sum(ratios) + 0.8, cell * 1.25 * n_rows + 0.6),
        gridspec_kw={"width_ratios": ratios},
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_visible(False)

    # One colour scale for every SHAP map in the figure (as shap.image_plot does).
    maps = [_map(result.shap_values[index, slot]) for _, slot in left if slot is not None]
    cells: list[tuple[int, int, Tensor, float, int]] = []  # (row, col, position, score, label)
    for r, rid in enumerate(row_ids):
        for b, (_, positions, scores) in enumerate(blocks):
            for j in range(k):
                col = 2 + b * (k + 1) + j
                pos = positions[rid, index, j]
                cells.append((r * per_row, col, pos, float(scores[rid, index, j]), rid))
    train_rows = result.train_index(torch.stack([c[2] for c in cells]))
    if train_shap:
        assert result.train_shap_values is not None
        maps += [_map(result.train_shap_values[t]) for t in train_rows]
    vmax = float(np.nanpercentile(np.abs(np.stack([m.ravel() for m in maps])), 99.9)) or 1.0

    test_picture = _display(result.inputs[index], to_image)
    mappable = None
    for r, (title, slot) in enumerate(left):
        ax = axes[r, 0]
        ax.set_visible(True)
        if slot is None:
            _show_image(ax, test_picture)
            title = f"test #{index}: {name_of(true)}\npredicted {name_of(pred)}"
        else:
            mappable = _show_map(ax, test_picture, _map(result.shap_values[index, slot]), vmax)
        ax.set_title(title, fontsize=8)

    for (r, col, _, score, rid), t in zip(cells, train_rows.tolist(), strict=True):
        label = int(result.train_labels[t])
        picture = _display(result.train_inputs[t], to_image)
        ax = axes[r, col]
        ax.set_visible(True)
        _show_image(ax, picture)
        ax.set_title(
            ("\n" if r == 0 else "") + f"{name_of(label)}  {score:+.3g}",
            fontsize=7,
            color="tab:green" if label == pred else "tab:orange" if label == true else "black",
        )
        if col in (2, 3 + k):
            block = "proponents" if col == 2 else "opponents"
            if col == 2:
                ax.set_ylabel(result.layer_names[rid], fontsize=8)
            if r == 0:
                ax.set_title(f"top-{k} {block}\n ", loc="left", fontsize=8, weight="bold")
        if train_shap and result.train_shap_values is not None:
            below = axes[r + 1, col]
            below.set_visible(True)
            _show_map(below, picture, _map(result.train_shap_values[t]), vmax)
            if col == 2:
                below.set_ylabel("SHAP, own class", fontsize=7)
    if mappable is not None:
        holder = axes[len(left) - 1, 0].inset_axes((0.0, -0.16, 1.0, 0.07))
        bar = fig.colorbar(mappable, cax=holder, orientation="horizontal")
        bar.set_label("SHAP value", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return fig, axes
