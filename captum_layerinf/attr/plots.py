"""Figures of layered explanations; every function returns `(fig, ax)`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .._utils.plotting import colormap, figure_and_axes, show_heatmap, show_image, subplots
from .._utils.stats import spearman
from .layered import LayeredExplanationResult

TRAIN_STATISTICS = ("mean_abs", "top")


def layer_scores_from_influence(scores: Tensor, statistic: str = "mean_abs") -> Tensor:
    """One training-side score per layer and test input, from `LayerInfluence` scores.

    Args:
        scores: `LayerInfluence.influence(...)` output, `Tensor [n_layers, n_test, n_train]`.
        statistic: `"mean_abs"`: mean over the training set of abs(s_l(j, k)) (how much the
            training data act on the test loss through layer l at all), or `"top"`: the
            score of the layer's top proponent, max_j s_l(j, k) (Aamir et al.'s "most
            influential image" per layer).

    Returns:
        `Tensor [n_layers, n_test]`; rank layers by it in decreasing order.
    """
    if scores.dim() != 3:
        raise ValueError(f"scores must be [n_layers, n_test, n_train]; got {tuple(scores.shape)}.")
    if statistic == "mean_abs":
        return scores.abs().mean(2)
    if statistic == "top":
        return scores.max(2).values
    raise ValueError(
        f"unknown statistic {statistic!r}; choose one of {', '.join(TRAIN_STATISTICS)}."
    )


def _ranks(values: Mapping[str, float]) -> dict[str, int]:
    order = sorted(values, key=lambda n: (-values[n], list(values).index(n)))
    return {name: i + 1 for i, name in enumerate(order)}


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) < 2:
        return float("nan")
    return spearman(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))


def plot_layer_rankings(
    train_side: Mapping[str, float],
    test_side: Mapping[str, float],
    ax: Any = None,
    title: str | None = None,
    train_label: str = "training side\n(LayerInfluence)",
    test_label: str = "test side\n(layered expl.)",
) -> tuple[Any, Any]:
    """Two layer rankings of one input side by side, the same layer joined by a line.

    Left: layers ranked by a training-side score (e.g. `layer_scores_from_influence`);
    right: ranked by the test-side layer statistic of `LayeredExplanation`. Rank 1 (most
    influential) is at the top. A layer present on one side only is drawn without a
    line. The title gives Spearman's rank correlation over the common layers.

    Args:
        train_side: `{layer name: score}`; larger = more influential.
        test_side: `{layer name: statistic}`; larger = more influential.
        ax: A matplotlib Axes to draw into; None: a new figure.
        title: Title; the Spearman correlation is appended.
        train_label: Label of the left column.
        test_label: Label of the right column.

    Returns:
        `(fig, ax)`.
    """
    if not train_side or not test_side:
        raise ValueError("both rankings need at least one layer.")
    left = {k: float(v) for k, v in train_side.items()}
    right = {k: float(v) for k, v in test_side.items()}
    rank_l, rank_r = _ranks(left), _ranks(right)
    names = list(dict.fromkeys([*left, *right]))
    fig, ax = figure_and_axes(ax, (4.2, 0.45 * max(len(left), len(right)) + 1.4))
    colors = colormap("tab10")
    for i, name in enumerate(names):
        color = colors(i % 10)
        if name in rank_l and name in rank_r:
            ax.plot([0, 1], [rank_l[name], rank_r[name]], color=color, lw=2, alpha=0.8)
        for x, ranks, values, ha, dx in (
            (0, rank_l, left, "right", -0.06),
            (1, rank_r, right, "left", 0.06),
        ):
            if name in ranks:
                ax.scatter([x], [ranks[name]], color=color, s=36, zorder=3)
                ax.text(
                    x + dx, ranks[name], f"{name} ({values[name]:.2g})",
                    ha=ha, va="center", fontsize=7, color=color,
                )  # fmt: skip
    common = [n for n in names if n in left and n in right]
    rho = _spearman([left[n] for n in common], [right[n] for n in common])
    head = f"{title}\n" if title else ""
    ax.set_title(f"{head}Spearman ρ = {rho:.2f} over {len(common)} layers", fontsize=9)
    depth = max(len(left), len(right))
    ax.set_ylim(depth + 0.6, 0.4)
    ax.set_xlim(-1.6, 2.6)
    ax.set_xticks([0, 1], [train_label, test_label], fontsize=8)
    ax.set_yticks(range(1, depth + 1))
    ax.set_ylabel("rank (1 = most influential)", fontsize=8)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    return fig, ax


def plot_layered_explanation(
    result: LayeredExplanationResult,
    inputs: Tensor,
    index: int = 0,
    axes: Sequence[Any] | None = None,
) -> tuple[Any, Any]:
    """One input's layered explanation in a row of panels.

    Panels: the input; the layer statistic of every candidate layer (the chosen layer
    highlighted); the DeconvNet image of each top unit (red positive, blue negative,
    each scaled to its own maximum); the joint image of the top-k units.

    Args:
        result: `LayeredExplanation.attribute(...)` output.
        inputs: The inputs it explained, `[B, C, H, W]`.
        index: Which input.
        axes: `k + 3` matplotlib Axes to draw into; None: a new figure.

    Returns:
        `(fig, axes)`.
    """
    k = result.top_units.shape[1]
    if axes is None:
        fig, axes = subplots(1, k + 3, figsize=(1.7 * (k + 3) + 1.0, 2.0))
    else:
        if len(axes) != k + 3:
            raise ValueError(f"axes must hold k + 3 = {k + 3} Axes; got {len(axes)}.")
        fig = axes[0].figure
    best = result.best_layer[index]
    show_image(axes[0], inputs[index])
    axes[0].set_title(f"input, target {int(result.target[index])}", fontsize=8)
    stats = result.layer_statistic[:, index].numpy()
    colors = ["tab:red" if n == best else "tab:gray" for n in result.layer_names]
    axes[1].barh(range(len(stats)), stats, color=colors)
    axes[1].set_yticks(range(len(stats)), result.layer_names, fontsize=7)
    axes[1].invert_yaxis()
    axes[1].set_title(f"{result.statistic} of |{result.measure}|", fontsize=8)
    axes[1].tick_params(axis="x", labelsize=7)
    coords = result.unit_coordinates(index)
    for j in range(k):
        score = float(result.top_scores[index, j])
        show_heatmap(
            axes[2 + j], result.projections[index, j], f"{best} {coords[j]}\nφ={score:.3g}"
        )
    show_heatmap(axes[k + 2], result.joint_projection[index], f"top-{k} together")
    return fig, axes
