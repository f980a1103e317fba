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
    """Ours, not the paper's: how often the top image over the WHOLE training set is of a class.

    The paper's Table 2 restricts the argmax to the test image's own class (see
    `intra_class_table`); this addition takes it over every training image, so it shows
    which class's training images drive each layer.

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
        "Addition (ours): class of the most influential image over the whole training set",
        columns,
        cells,
        "Share of the test images of each variant whose most influential training image "
        "(per layer, compound, and global where computed) belongs to the reference class.",
    )


def intra_class_top(scores: Tensor, train_labels: Tensor, test_labels: Tensor) -> Tensor:
    """Index of the most influential training image of the test image's OWN class.

    The paper's most influential image is `argmax_j I(x_j, x̂_k)`; its Table 2 and Fig. 2
    show the intra-class one, the argmax over the training images of x̂_k's class only.

    Args:
        scores: `[..., n_test, n_train]` (compound, global or per layer).
        train_labels: `[n_train]` classes of the training images.
        test_labels: `[n_test]` classes of the test images.

    Returns:
        Long tensor `[..., n_test]` of training indices (into the whole training set); -1
        for a test image whose class has no training image.
    """
    if scores.shape[-1] != len(train_labels) or scores.shape[-2] != len(test_labels):
        raise ValueError(
            f"scores must be [..., n_test={len(test_labels)}, n_train={len(train_labels)}]; "
            f"got {tuple(scores.shape)}."
        )
    own = test_labels[:, None] == train_labels[None, :]
    masked = scores.masked_fill(~own, float("-inf"))
    top = masked.argmax(-1)
    return torch.where(own.any(-1), top, torch.full_like(top, -1))


def intra_class_table(
    compound: Tensor,
    train_labels: Tensor,
    test_labels: Tensor,
    variants: Tensor,
    predictions: Tensor,
    class_names: Sequence[str],
    variant_names: Sequence[str],
) -> Table:
    """Table 2: intra-class influential images with the average influence score.

    The paper (§4.2, Table 2): "Intra-class influential images and the corresponding test
    images with their ImageNet class id and class label along with average influence
    score", the influential image found "using I_total among the training set", and
    `I_avg = Σ I_total(for each image per class) / No of images per class`.

    One row per (variant, class). The paper shows one test image per row; with several
    test images per group we list the most frequent predicted class (our choice) and the
    top intra-class training image of the group's summed compound score.

    Args:
        compound: Compound scores I_total `[n_test, n_train]`.
        train_labels: `[n_train]`.
        test_labels: `[n_test]`.
        variants: `[n_test]` variant indices.
        predictions: `[n_test]` predicted classes.
        class_names: Names of the classes.
        variant_names: Names of the variants.

    Returns:
        Columns: variant, class (of the influential image and of the test image), n test
        images, the influential training image's index, the test images' most frequent
        predicted class, the share predicted correctly, and I_avg (mean over the group of
        each test image's intra-class mean I_total), with its SEM.
    """
    n_classes = len(class_names)
    intra, _ = intra_inter(class_average(compound, train_labels, n_classes), test_labels)
    rows = []
    for v, vname in enumerate(variant_names):
        for c, cname in enumerate(class_names):
            sel = (variants == v) & (test_labels == c)
            if not sel.any():
                continue
            summed = compound[sel].sum(0, keepdim=True)
            top = int(intra_class_top(summed, train_labels, test_labels[sel][:1])[0])
            pred = predictions[sel]
            mode = int(torch.mode(pred).values)
            values = intra[sel].double()
            sem = float(values.std() / len(values) ** 0.5) if len(values) > 1 else 0.0
            rows.append(
                [
                    vname,
                    cname,
                    int(sel.sum()),
                    top,
                    class_names[mode],
                    float((pred == c).double().mean()),
                    float(values.mean()),
                    sem,
                ]
            )
    return Table(
        "Table 2: intra-class influential images and average influence score",
        [
            "variant",
            "class",
            "n",
            "influential training image",
            "test images predicted as",
            "correct",
            "I_avg",
            "SEM",
        ],
        rows,
        "Per variant and class: the most influential training image among the class's own "
        "(by compound influence I_total), how the test images are classified, and I_avg, "
        "the mean over the class's training images of I_total.",
    )


def within_class_variance_ratio(
    values: Tensor, test_labels: Tensor, variants: Tensor, n_classes: int, n_variants: int
) -> Tensor:
    """Between-variant over within-variant variance, computed within each class (ours).

    For each row of `values [rows, n_test]` and each class: the variance of the variant
    means over the mean variance inside the variants; then averaged over the classes
    that have at least two images in every variant. Differences between classes do not
    enter (neither term mixes classes). Not in the paper.

    Returns:
        `[rows]`; NaN where no class has two images per variant.
    """
    ratios = []
    for c in range(n_classes):
        groups = [values[:, (test_labels == c) & (variants == v)] for v in range(n_variants)]
        if any(g.shape[1] < 2 for g in groups):
            continue
        means = torch.stack([g.mean(1) for g in groups], 1)
        within = torch.stack([g.var(1) for g in groups], 1).mean(1)
        ratios.append(means.var(1) / within.clamp_min(1e-300))
    if not ratios:
        return torch.full(values.shape[:1], float("nan"), dtype=values.dtype)
    return torch.stack(ratios).mean(0)
