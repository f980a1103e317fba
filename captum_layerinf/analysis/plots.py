"""Figures of the disturbance study; every function returns `(fig, ax)` and takes an `ax`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.cluster.hierarchy import dendrogram
from torch import Tensor

from .._utils.plotting import figure_and_axes, show_image, subplots

VARIANT_COLOURS = ("tab:blue", "tab:gray", "tab:green", "tab:red", "tab:purple", "tab:orange")


def middle(values: Tensor) -> float:
    """The median as the mean of the two middle values for an even count.

    `torch.median` returns the lower of the two; the paper's median reference line is the
    usual statistical median.
    """
    return float(torch.quantile(values.double().flatten(), 0.5))


def plot_dendrogram(linkage_matrix: np.ndarray, names: Sequence[str], ax=None):
    """An average-linkage dendrogram of layer profiles (the study's joint tree: ours)."""
    fig, ax = figure_and_axes(ax, (7, max(3, 0.22 * len(names))), layout="constrained")
    dendrogram(linkage_matrix, labels=list(names), orientation="right", ax=ax)
    ax.set_xlabel("Euclidean distance (average linkage)")
    ax.set_title("Clustering of I_l_avg profiles")
    return fig, ax


def plot_distance_matrix(distance: Tensor, names: Sequence[str], ax=None):
    """The Pearson correlation distance between layer profiles, as a matrix."""
    fig, ax = figure_and_axes(
        ax, (max(4, 0.25 * len(names) + 2), max(4, 0.25 * len(names) + 1)), layout="constrained"
    )
    im = ax.imshow(distance.numpy(), cmap="viridis", vmin=0, vmax=2)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    fig.colorbar(im, ax=ax, label="1 - Pearson r")
    ax.set_title("Correlation distance of I_l_avg profiles")
    return fig, ax


def plot_class_clustering(
    per_class: Sequence[tuple[str, np.ndarray, Tensor, Sequence[str]]], axes=None
):
    """Fig. 8, per class: dendrogram of the variants' I_l_avg profiles and their correlations.

    The paper's caption: "Layer-wise intra-class cluster analysis of the influence score
    ... shown for three classes ... Parts (A,C,E) show three clusters ... Panels (B,D,F)
    shows their corresponding correlation matrix based on intra-class average layer-wise
    influence scores (I_l_avg)."

    Args:
        per_class: One `(class name, linkage matrix, correlation distance [v, v], variant
            names)` per class.
        axes: A `[n_classes, 2]` grid of axes, or None for a new figure.
    """
    n = len(per_class)
    if axes is None:
        fig, axes = subplots(n, 2, figsize=(8, 2.1 * n), squeeze=False, layout="constrained")
    else:
        fig = axes[0][0].figure
    for row, (cname, link, dist, names) in zip(axes, per_class, strict=True):
        if len(names) >= 2:
            dendrogram(link, labels=list(names), orientation="right", ax=row[0])
        row[0].set_title(f"{cname}: average linkage, Euclidean", fontsize=8)
        row[0].tick_params(labelsize=7)
        im = row[1].imshow(dist.numpy(), cmap="viridis", vmin=0, vmax=2)
        row[1].set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=6)
        row[1].set_yticks(range(len(names)), names, fontsize=6)
        row[1].set_title(f"{cname}: 1 - Pearson r", fontsize=8)
    fig.colorbar(im, ax=[r[1] for r in axes], shrink=0.5, label="1 - Pearson r")
    return fig, axes


def plot_layer_means_per_class(
    values: Tensor,
    class_names: Sequence[str],
    variant_names: Sequence[str],
    layer_names: Sequence[str],
    axes=None,
):
    """Fig. 9, per class: mean intra-class I_l_avg per layer, one line per variant.

    The paper: "we present the results of three classes showing the mean influence score
    of different layers of all types of images" (one panel per class).

    Args:
        values: `[n_classes, n_variants, n_layers]` (NaN where a group is empty).
        class_names: Names of the classes (panels).
        variant_names: Names of the variants (lines).
        layer_names: Names of the layers (x axis).
        axes: A flat sequence of `n_classes` axes, or None for a new figure.
    """
    fig, axes = _panels(len(class_names), axes, (3.2, 2.6))
    x = np.arange(len(layer_names))
    for c, (ax, cname) in enumerate(zip(axes, class_names, strict=False)):
        for v, vname in enumerate(variant_names):
            colour = VARIANT_COLOURS[v % 6]
            ax.plot(x, values[c, v].numpy(), "o-", ms=3, label=vname, color=colour)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xticks(x, layer_names, rotation=60, ha="right", fontsize=6)
        ax.set_title(cname, fontsize=8)
        ax.tick_params(axis="y", labelsize=6)
    axes[0].set_ylabel("mean intra-class I_l_avg", fontsize=7)
    axes[0].legend(fontsize=6)
    return fig, axes


def plot_inter_class(
    class_avg: Tensor,
    test_labels: Tensor,
    variants: Tensor,
    correct: Tensor,
    class_names: Sequence[str],
    variant_names: Sequence[str],
    test_classes: Sequence[int],
    axes=None,
):
    """Fig. 7: influence of each OTHER class's training set on one class's test images.

    The paper's caption: "Results of inter-class influence score (A) influence of training
    set of different classes on testing set of bicycle class ... Red dotted lines show the
    median, whereas the green and blue line show the min-max range of influence scores of
    the whole dataset." One panel per test class; x: the training class; filled markers
    correct predictions, hollow ones incorrect (the paper splits them into panels).

    Args:
        class_avg: `[n_test, n_classes]` I_avg of each test image per training class.
        test_labels: `[n_test]` classes.
        variants: `[n_test]` variant indices (colours).
        correct: `[n_test]` bool.
        class_names: Names of the classes.
        variant_names: Names of the variants.
        test_classes: The test classes to show, one panel each.
        axes: A flat sequence of axes, or None for a new figure.
    """
    fig, axes = _panels(len(test_classes), axes, (3.4, 2.8))
    values = class_avg.double()
    n_classes = len(class_names)
    width = 0.8 / max(1, len(variant_names))
    for ax, c in zip(axes, test_classes, strict=False):
        others = [k for k in range(n_classes) if k != c]
        mine = test_labels == c
        shown = values[mine][:, others]
        for v, vname in enumerate(variant_names):
            for ok in (True, False):
                sel = (variants[mine] == v) & (correct[mine] == ok)
                if not sel.any():
                    continue
                x = np.arange(len(others)) + (v - (len(variant_names) - 1) / 2) * width
                y = shown[sel]
                colour = VARIANT_COLOURS[v % 6]
                ax.scatter(
                    np.tile(x, (len(y), 1)).ravel(),
                    y.numpy().ravel(),
                    s=10,
                    color=colour if ok else "none",
                    edgecolors=colour,
                    label=vname if ok else f"{vname} (wrong)",
                )
        if shown.numel():
            ax.axhline(middle(shown), color="red", ls=":", lw=0.8)
            ax.axhline(float(shown.max()), color="green", lw=0.6)
            ax.axhline(float(shown.min()), color="blue", lw=0.6)
        ax.set_xticks(range(len(others)), [class_names[k] for k in others], rotation=60, fontsize=6)
        ax.set_title(f"test class {class_names[c]}", fontsize=8)
        ax.tick_params(axis="y", labelsize=6)
    axes[0].set_ylabel("inter-class I_avg", fontsize=7)
    axes[0].legend(fontsize=5)
    return fig, axes


def plot_layer_means(
    values: Tensor, variant_names: Sequence[str], layer_names: Sequence[str], ax=None
):
    """Mean (intra-class) influence per layer, one line per variant, pooled over classes.

    The paper's Fig. 9 is per class: see `plot_layer_means_per_class`.

    Args:
        values: `[n_variants, n_layers]`.
        variant_names: Names of the variants (lines).
        layer_names: Names of the layers (x axis).
        ax: Axes to draw on, or None for a new figure.
    """
    fig, ax = figure_and_axes(ax, (6, 3.5), layout="constrained")
    x = np.arange(len(layer_names))
    for v, name in enumerate(variant_names):
        ax.plot(x, values[v].numpy(), "o-", label=name, color=VARIANT_COLOURS[v % 6])
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xticks(x, layer_names, rotation=45, ha="right")
    ax.set_ylabel("mean intra-class I_l_avg")
    ax.set_title("Mean influence per layer and variant")
    ax.legend(fontsize=8)
    return fig, ax


def plot_influence_ranges(
    values: Tensor,
    test_labels: Tensor,
    variants: Tensor,
    correct: Tensor,
    class_names: Sequence[str],
    variant_names: Sequence[str],
    axes=None,
    ylabel: str = "intra-class I_avg",
):
    """Figs. 3, 4: influence of each test image per class and variant, with ranges.

    The paper's Fig. 3 caption: "Comparison of intra-class scores showing a plot between
    average influence scores (I_avg) of original, styled, textured images and white
    background images ... Red dotted reference line indicates median whereas green and blue
    lines indicate max and min ranges for the spread of the whole dataset". Two panels,
    correctly and incorrectly classified images (Fig. 4's split).

    Args:
        values: `[n_test]`, e.g. the intra-class I_avg of each test image.
        test_labels: `[n_test]` classes (x axis).
        variants: `[n_test]` variant indices (colours).
        correct: `[n_test]` bool, whether the prediction was right.
        class_names: Names of the classes.
        variant_names: Names of the variants.
        axes: Two axes, or None for a new figure.
        ylabel: Label of the y axis.
    """
    if axes is None:
        fig, axes = subplots(1, 2, figsize=(11, 3.8), sharey=True, layout="constrained")
    else:
        fig = axes[0].figure
    v_all = values.double()
    width = 0.8 / max(1, len(variant_names))
    for ax, ok, title in zip(axes, (True, False), ("correct", "incorrect"), strict=True):
        for v, vname in enumerate(variant_names):
            sel = (variants == v) & (correct == ok)
            x = test_labels[sel].double() + (v - (len(variant_names) - 1) / 2) * width
            ax.scatter(x, v_all[sel], s=14, color=VARIANT_COLOURS[v % 6], label=vname)
        ax.axhline(middle(v_all), color="red", ls=":", label="median")
        ax.axhline(float(v_all.max()), color="green", lw=0.8, label="max")
        ax.axhline(float(v_all.min()), color="blue", lw=0.8, label="min")
        ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{title} predictions ({int((correct == ok).sum())} images)")
    axes[0].set_ylabel(ylabel)
    axes[1].legend(fontsize=7, loc="upper right")
    return fig, axes


def plot_gallery(
    test_images: Tensor,
    test_captions: Sequence[str],
    train_images: Tensor,
    train_captions: Sequence[Sequence[str]],
    axes=None,
):
    """Fig. 2: each test image beside its most influential training images.

    Args:
        test_images: `[n, C, H, W]`.
        test_captions: `n` captions.
        train_images: `[n, k, C, H, W]`, the top-k training images of each test image.
        train_captions: `n` lists of `k` captions.
        axes: A `[n, k + 1]` grid of axes, or None for a new figure.
    """
    n, k = train_images.shape[:2]
    if axes is None:
        fig, axes = subplots(
            n, k + 1, figsize=(1.2 * (k + 1), 1.45 * n), squeeze=False, layout="constrained"
        )
    else:
        fig = axes[0][0].figure
    for i in range(n):
        show_image(axes[i][0], test_images[i])
        axes[i][0].set_title(test_captions[i], fontsize=6)
        for j in range(k):
            show_image(axes[i][j + 1], train_images[i, j])
            axes[i][j + 1].set_title(train_captions[i][j], fontsize=7)
    return fig, axes


def plot_sweep(
    strengths: Sequence[float],
    steps: Sequence[int],
    probability: Tensor,
    influence: Tensor,
    axes=None,
):
    """Fig. 6: probability of the true class and its influence against % texture and steps.

    Args:
        strengths: Fractions of texture (x axis).
        steps: Transfer iterations (one line each).
        probability: `[n_strengths, n_steps]` probability of the true class.
        influence: `[n_strengths, n_steps]` intra-class I_avg.
        axes: Two axes, or None for a new figure.
    """
    if axes is None:
        fig, axes = subplots(1, 2, figsize=(10, 3.5), layout="constrained")
    else:
        fig = axes[0].figure
    pct = 100 * np.asarray(strengths)
    for j, k in enumerate(steps):
        axes[0].plot(pct, probability[:, j].numpy(), "o-", label=f"{k} steps")
        axes[1].plot(pct, influence[:, j].numpy(), "o-", label=f"{k} steps")
    axes[0].set_ylabel("probability of the true class")
    axes[1].set_ylabel("intra-class I_avg")
    for ax in axes:
        ax.set_xlabel("% texture")
        ax.legend(fontsize=7)
    return fig, axes


def plot_accuracy(
    values: Tensor,
    errors: Tensor,
    class_names: Sequence[str],
    variant_names: Sequence[str],
    ax=None,
):
    """Table 1 as bars: mean top-5 probability of the true class ± SEM per class and variant.

    Args:
        values: `[n_classes, n_variants]`.
        errors: `[n_classes, n_variants]` SEMs.
        class_names: Names of the classes.
        variant_names: Names of the variants.
        ax: Axes to draw on, or None for a new figure.
    """
    fig, ax = figure_and_axes(ax, (9, 3.5), layout="constrained")
    width = 0.8 / len(variant_names)
    x = np.arange(len(class_names))
    for v, name in enumerate(variant_names):
        ax.bar(
            x + (v - (len(variant_names) - 1) / 2) * width,
            values[:, v].numpy(),
            width,
            yerr=errors[:, v].numpy(),
            label=name,
            color=VARIANT_COLOURS[v % 6],
        )
    ax.set_xticks(x, class_names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("top-5 probability of true class")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncols=len(variant_names))
    return fig, ax


def as_tensor(values) -> Tensor:
    """Converts lists to a float tensor (a helper for callers building plot inputs)."""
    return torch.as_tensor(values, dtype=torch.float64)


def _panels(n: int, axes, size: tuple[float, float]):
    """`(fig, axes)`: the given flat axes, or a new grid of `n` panels, 4 to a row."""
    if axes is not None:
        return axes[0].figure, axes
    cols = min(4, n)
    rows = -(-n // cols)
    fig, grid = subplots(
        rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False, layout="constrained"
    )
    axes = list(grid.flat)
    for ax in axes[n:]:
        ax.axis("off")
    return fig, axes
