"""Summaries of influence scores: I_avg / I_l_avg, intra- and inter-class, top classes.

Every function takes plain score tensors whose last dimension runs over training examples,
so it works on any `LayerInfluence` output: per layer `[n_layers, n_test, n_train]`,
compound or global `[n_test, n_train]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .table import Table


def _check_train_labels(scores: Tensor, train_labels: Tensor, n_classes: int) -> None:
    if train_labels.dim() != 1 or scores.shape[-1] != len(train_labels):
        raise ValueError(
            f"train_labels must be [n_train] = [{scores.shape[-1]}] (the scores' last "
            f"dimension); got {tuple(train_labels.shape)}."
        )
    if train_labels.numel() and (train_labels.min() < 0 or train_labels.max() >= n_classes):
        raise ValueError(f"train_labels must lie in 0..{n_classes - 1}.")


def class_average(scores: Tensor, train_labels: Tensor, n_classes: int) -> Tensor:
    """Mean score over the training examples of each class: Tensor `[..., n_classes]`.

    On compound scores this is the paper's I_avg per test image and training class; on
    per-layer scores it is I_l_avg. A class without training examples gives NaN.

    Examples:
        >>> class_average(torch.tensor([[1.0, 3.0, 5.0]]), torch.tensor([0, 0, 1]), 2)
        tensor([[2., 5.]])
    """
    _check_train_labels(scores, train_labels, n_classes)
    onehot = torch.nn.functional.one_hot(train_labels, n_classes).to(scores.dtype)
    counts = onehot.sum(0)
    return (scores @ onehot) / counts


def intra_inter(class_avg: Tensor, test_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Intra-class (the test image's own class) and inter-class (mean of the others) averages.

    Args:
        class_avg: `[..., n_test, n_classes]` from `class_average`.
        test_labels: `[n_test]` classes of the test images.

    Returns:
        `(intra, inter)`, each `[..., n_test]`.
    """
    n_classes = class_avg.shape[-1]
    if test_labels.shape != class_avg.shape[-2:-1]:
        raise ValueError(
            f"test_labels must be [n_test] = [{class_avg.shape[-2]}]; got "
            f"{tuple(test_labels.shape)}."
        )
    own = torch.nn.functional.one_hot(test_labels, n_classes).bool()
    intra = class_avg.masked_fill(~own, 0).sum(-1)
    inter = class_avg.masked_fill(own, 0).sum(-1) / (n_classes - 1)
    return intra, inter


def top_class(scores: Tensor, train_labels: Tensor) -> Tensor:
    """Class of the most influential (highest-scoring) training example: `[...]` long."""
    if scores.shape[-1] != len(train_labels):
        raise ValueError("the scores' last dimension must match train_labels.")
    return train_labels[scores.argmax(-1)]


def group_mean(values: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """Mean of `values [..., n]` within each group `groups [n]`: `[..., n_groups]`.

    An empty group gives NaN.
    """
    if groups.shape != values.shape[-1:]:
        raise ValueError("groups must be [n], one group per value of the last dimension.")
    onehot = torch.nn.functional.one_hot(groups, n_groups).to(values.dtype)
    return (values @ onehot) / onehot.sum(0)


def top_class_table(
    top_classes: Tensor,
    row_names: Sequence[str],
    variants: Tensor,
    variant_names: Sequence[str],
    reference: dict[str, Tensor],
) -> Table:
    """Table 2 summary: how often the top training image's class is a reference class.

    Args:
        top_classes: `[n_rows, n_test]` class of the most influential training image, one
            row per layer (and compound / global).
        row_names: Names of the rows.
        variants: `[n_test]` variant index of each test image.
        variant_names: Names of the variants.
        reference: Named reference classes `[n_test]`, e.g. {"true class": labels,
            "texture class": texture_labels}; one column per (variant, reference).
    """
    if top_classes.shape[0] != len(row_names):
        raise ValueError("top_classes needs one row per entry of row_names.")
    columns = ["layer"]
    cells: list[list] = [[name] for name in row_names]
    for v, vname in enumerate(variant_names):
        sel = variants == v
        for rname, ref in reference.items():
            columns.append(f"{vname}: {rname}")
            share = (top_classes[:, sel] == ref[sel]).double().mean(1)
            for row, value in zip(cells, share.tolist(), strict=True):
                row.append(value)
    return Table(
        "Table 2 (summary): class of the most influential training image",
        columns,
        cells,
        "Share of the test images of each variant whose most influential training image "
        "(per layer, compound and global) belongs to the reference class.",
    )
