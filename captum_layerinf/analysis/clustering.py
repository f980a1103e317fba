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
