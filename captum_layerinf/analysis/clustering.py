"""Hierarchical clustering of layer-influence profiles (the paper's Fig. 8)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from torch import Tensor


def group_profiles(
    per_layer: Tensor,
    test_labels: Tensor,
    variants: Tensor,
    class_names: Sequence[str],
    variant_names: Sequence[str],
) -> tuple[Tensor, list[str]]:
    """Mean layer profile (I_l_avg vector) of each (class, variant) group of test images.

    Args:
        per_layer: `[n_layers, n_test]`, e.g. the intra-class I_l_avg of each test image.
        test_labels: `[n_test]` classes.
        variants: `[n_test]` variant indices.
        class_names: Names of the classes.
        variant_names: Names of the variants.

    Returns:
        `(profiles [n_groups, n_layers], names)`, groups without images left out, named
        "class | variant".
    """
    if per_layer.dim() != 2 or per_layer.shape[1] != len(test_labels):
        raise ValueError(
            f"per_layer must be [n_layers, n_test] with n_test = {len(test_labels)}; got "
            f"{tuple(per_layer.shape)}."
        )
    rows, names = [], []
    for c, cname in enumerate(class_names):
        for v, vname in enumerate(variant_names):
            sel = (test_labels == c) & (variants == v)
            if sel.any():
                rows.append(per_layer[:, sel].mean(1))
                names.append(f"{cname} | {vname}")
    return torch.stack(rows), names


def cluster_profiles(profiles: Tensor) -> np.ndarray:
    """Average-linkage hierarchical clustering on Euclidean distances, as the paper.

    Returns:
        SciPy's linkage matrix `[n - 1, 4]` (plot with `plot_dendrogram`).
    """
    if profiles.dim() != 2 or profiles.shape[0] < 2:
        raise ValueError(f"profiles must be [n >= 2, n_features]; got {tuple(profiles.shape)}.")
    return linkage(profiles.double().numpy(), method="average", metric="euclidean")


def clusters(linkage_matrix: np.ndarray, n_clusters: int) -> np.ndarray:
    """Flat cluster ids (1-based) when the tree is cut into `n_clusters` clusters."""
    return fcluster(linkage_matrix, n_clusters, criterion="maxclust")


def correlation_distance(profiles: Tensor) -> Tensor:
    """Pearson correlation distance `1 - r` between the rows: `[n, n]`, in [0, 2].

    A row with zero variance has no defined correlation; its distances are NaN.
    """
    x = profiles.double()
    x = x - x.mean(1, keepdim=True)
    norm = x.norm(dim=1, keepdim=True)
    r = (x @ x.T) / (norm * norm.T)
    return (1 - r).clamp(0, 2)


def class_profiles(
    per_layer: Tensor, test_labels: Tensor, variants: Tensor, cls: int, n_variants: int
) -> tuple[Tensor, list[int]]:
    """The layer profiles of one class's variants: the leaves of the paper's Fig. 8.

    The paper (§3.2): "We took an average of the individual layers from (I_l_avg = l_1_avg,
    ..., l_16_avg) for all the class images in the testing dataset ... as feature vectors.
    The clustering was based on 4 cases: original image, image with white background,
    textured and styled images." Fig. 8 shows one dendrogram and one correlation matrix per
    class, with the four variants as leaves.

    Args:
        per_layer: `[n_layers, n_test]` intra-class I_l_avg of each test image.
        test_labels: `[n_test]` classes.
        variants: `[n_test]` variant indices.
        cls: The class.
        n_variants: Number of variants.

    Returns:
        `(profiles [n_present, n_layers], variant indices present)`: per variant, the mean
        over the class's test images of I_l_avg (the pooling is our choice; the paper does
        not say how the five images are combined).
    """
    if per_layer.dim() != 2 or per_layer.shape[1] != len(test_labels):
        raise ValueError(
            f"per_layer must be [n_layers, n_test] with n_test = {len(test_labels)}; got "
            f"{tuple(per_layer.shape)}."
        )
    rows, present = [], []
    for v in range(n_variants):
        sel = (test_labels == cls) & (variants == v)
        if sel.any():
            rows.append(per_layer[:, sel].mean(1))
            present.append(v)
    if not rows:
        raise ValueError(f"class {cls} has no test images.")
    return torch.stack(rows), present


def leaf_order(linkage_matrix: np.ndarray) -> list[int]:
    """The leaves of a linkage tree in dendrogram order (to compare trees)."""
    from scipy.cluster.hierarchy import leaves_list

    return [int(i) for i in leaves_list(linkage_matrix)]


def merge_sets(linkage_matrix: np.ndarray, names: Sequence[str]) -> list[frozenset[str]]:
    """Every merge of the tree as the set of leaf names it joins (order-free tree shape)."""
    n = len(names)
    members: list[frozenset[str]] = [frozenset([name]) for name in names]
    for a, b, *_ in linkage_matrix:
        members.append(members[int(a)] | members[int(b)])
    return members[n:]
