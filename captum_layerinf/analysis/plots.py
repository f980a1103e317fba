"""Figures of the disturbance study; every function returns `(fig, ax)` and takes an `ax`."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.cluster.hierarchy import dendrogram
from torch import Tensor

VARIANT_COLOURS = ("tab:blue", "tab:gray", "tab:green", "tab:red", "tab:purple", "tab:orange")


def _axes(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def show_image(image: Tensor, ax) -> None:
    """Draws an image `[C, H, W]` (1 or 3 channels, values in [0, 1]) without axes."""
    x = image.detach().float().clamp(0, 1).permute(1, 2, 0).numpy()
    ax.imshow(x[..., 0] if x.shape[-1] == 1 else x, cmap="gray" if x.shape[-1] == 1 else None)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_dendrogram(linkage_matrix: np.ndarray, names: Sequence[str], ax=None):
    """Fig. 8 (left): the average-linkage dendrogram of the layer profiles."""
    fig, ax = _axes(ax, (7, max(3, 0.22 * len(names))))
    dendrogram(linkage_matrix, labels=list(names), orientation="right", ax=ax)
    ax.set_xlabel("Euclidean distance (average linkage)")
    ax.set_title("Clustering of I_l_avg profiles")
    return fig, ax


def plot_distance_matrix(distance: Tensor, names: Sequence[str], ax=None):
    """Fig. 8 (right): the Pearson correlation distance between layer profiles."""
    fig, ax = _axes(ax, (max(4, 0.25 * len(names) + 2), max(4, 0.25 * len(names) + 1)))
    im = ax.imshow(distance.numpy(), cmap="viridis", vmin=0, vmax=2)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    fig.colorbar(im, ax=ax, label="1 - Pearson r")
    ax.set_title("Correlation distance of I_l_avg profiles")
    return fig, ax


def plot_layer_means(
    values: Tensor, variant_names: Sequence[str], layer_names: Sequence[str], ax=None
):
    """Fig. 9: mean (intra-class) influence per layer, one line per variant.

    Args:
        values: `[n_variants, n_layers]`.
        variant_names: Names of the variants (lines).
        layer_names: Names of the layers (x axis).
        ax: Axes to draw on, or None for a new figure.
    """
    fig, ax = _axes(ax, (6, 3.5))
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
    """Figs. 3, 4, 7: influence of each test image per class and variant, with ranges.

    Two panels, correctly and incorrectly classified images; the red dotted line is the
    median over all images, the green and blue lines the maximum and minimum.

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
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True, layout="constrained")
    else:
        fig = axes[0].figure
    v_all = values.double()
    width = 0.8 / max(1, len(variant_names))
    for ax, ok, title in zip(axes, (True, False), ("correct", "incorrect"), strict=True):
        for v, vname in enumerate(variant_names):
            sel = (variants == v) & (correct == ok)
            x = test_labels[sel].double() + (v - (len(variant_names) - 1) / 2) * width
            ax.scatter(x, v_all[sel], s=14, color=VARIANT_COLOURS[v % 6], label=vname)
        ax.axhline(float(v_all.median()), color="red", ls=":", label="median")
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
        fig, axes = plt.subplots(
            n, k + 1, figsize=(1.2 * (k + 1), 1.45 * n), squeeze=False, layout="constrained"
        )
    else:
        fig = axes[0][0].figure
    for i in range(n):
        show_image(test_images[i], axes[i][0])
        axes[i][0].set_title(test_captions[i], fontsize=6)
        for j in range(k):
            show_image(train_images[i, j], axes[i][j + 1])
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
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
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
    fig, ax = _axes(ax, (9, 3.5))
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
