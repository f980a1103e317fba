"""How a classifier answers on each disturbance: the paper's Tables 1 and 3."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .table import Table


def _check_probs(probs: Tensor, labels: Tensor) -> None:
    if probs.dim() != 2:
        raise ValueError(f"probs must be [n, n_classes]; got shape {tuple(probs.shape)}.")
    if labels.shape != probs.shape[:1]:
        raise ValueError(
            f"labels must be [n] = [{probs.shape[0]}] beside probs; got {tuple(labels.shape)}."
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}.")


def sem(values: Tensor) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); 0 for one value."""
    values = values.double()
    if values.numel() < 2:
        return 0.0
    return float(values.std(unbiased=True) / values.numel() ** 0.5)


def true_class_in_top_k(probs: Tensor, labels: Tensor, k: int = 5) -> Tensor:
    """The true class's probability where it is among the top k, else 0: Tensor `[n]`.

    The paper's Table 1 reports the mean of this "top-5 probability" with its SEM.
    """
    _check_probs(probs, labels)
    k = min(k, probs.shape[1])
    top = probs.topk(k, dim=1).indices
    hit = (top == labels[:, None]).any(1)
    return torch.where(hit, probs.gather(1, labels[:, None])[:, 0], torch.zeros(()))


def accuracy_table(
    probs: Tensor,
    labels: Tensor,
    variants: Tensor,
    variant_names: Sequence[str],
    class_names: Sequence[str],
    k: int = 5,
) -> Table:
    """Table 1: per class and variant, mean top-k probability of the true class ± SEM.

    Args:
        probs: Softmax outputs `[n, n_classes]`.
        labels: True classes `[n]`.
        variants: Variant index of each image `[n]` (into `variant_names`).
        variant_names: Names of the variants ("original", "white background", ...).
        class_names: Names of the classes.
        k: The k of top-k.

    Returns:
        One row per (class, variant) that has images, and one "all classes" row per variant:
        `n`, mean top-k probability, its SEM, top-1 and top-k accuracy.
    """
    _check_probs(probs, labels)
    topk_prob = true_class_in_top_k(probs, labels, k)
    ranks = probs.topk(min(k, probs.shape[1]), dim=1).indices
    top1 = (ranks[:, 0] == labels).double()
    topk = (ranks == labels[:, None]).any(1).double()
    rows = []
    groups = [(name, labels == c) for c, name in enumerate(class_names)]
    groups.append(("all classes", torch.ones_like(labels, dtype=torch.bool)))
    for cname, in_class in groups:
        for v, vname in enumerate(variant_names):
            sel = in_class & (variants == v)
            if not sel.any():
                continue
            rows.append(
                [
                    cname,
                    vname,
                    int(sel.sum()),
                    float(topk_prob[sel].mean()),
                    sem(topk_prob[sel]),
                    float(top1[sel].mean()),
                    float(topk[sel].mean()),
                ]
            )
    return Table(
        "Table 1: classification of each disturbance",
        ["class", "variant", "n", f"top-{k} probability", "SEM", "top-1 acc", f"top-{k} acc"],
        rows,
        f"Mean probability of the true class where it is within the top {k} (0 otherwise), "
        "its standard error, and accuracies, per class and variant.",
    )


def cue_conflict_table(
    predictions: Tensor,
    content_labels: Tensor,
    texture_labels: Tensor,
    class_names: Sequence[str],
) -> Table:
    """Table 3 (right): whether images whose texture is another class's are classified by shape.

    Args:
        predictions: Predicted classes `[n]`.
        content_labels: The class of the object's shape `[n]`.
        texture_labels: The class whose texture was transferred `[n]`.
        class_names: Names of the classes.

    Returns:
        Per content class and overall: the share predicted as the content class, as the
        texture class, and as neither.
    """
    if not predictions.shape == content_labels.shape == texture_labels.shape:
        raise ValueError("predictions, content_labels and texture_labels must have one shape.")
    rows = []
    groups = [(name, content_labels == c) for c, name in enumerate(class_names)]
    groups.append(("all classes", torch.ones_like(content_labels, dtype=torch.bool)))
    for name, sel in groups:
        if not sel.any():
            continue
        pred, content, texture = predictions[sel], content_labels[sel], texture_labels[sel]
        as_content = (pred == content).double().mean()
        as_texture = (pred == texture).double().mean()
        rows.append(
            [
                name,
                int(sel.sum()),
                float(as_content),
                float(as_texture),
                float(1 - as_content - as_texture),
            ]
        )
    return Table(
        "Table 3b: content images after texture transfer",
        ["content class", "n", "as content", "as texture", "other"],
        rows,
        "Share of the textured images classified as their object's class (shape) or as the "
        "class whose texture they were given.",
    )


def texture_patch_table(probs: Tensor, class_names: Sequence[str]) -> Table:
    """Table 3 (left): how the classifier labels each class's texture patch on its own.

    Args:
        probs: Softmax outputs `[n_classes, n_classes]`, row c for the texture of class c.
        class_names: Names of the classes.
    """
    if probs.dim() != 2 or probs.shape[0] != len(class_names):
        raise ValueError(
            f"probs must be [n_classes, n_classes] = [{len(class_names)}, ...], a row per "
            f"texture patch; got {tuple(probs.shape)}."
        )
    pred = probs.argmax(1)
    rows = [
        [name, class_names[int(pred[c])], float(probs[c, pred[c]]), float(probs[c, c])]
        for c, name in enumerate(class_names)
    ]
    return Table(
        "Table 3a: texture patches classified on their own",
        ["texture of", "predicted", "its probability", "probability of the texture's class"],
        rows,
        "A patch of pure texture, no shape: a texture-driven classifier names its class.",
    )
