"""scikit-learn's bundled 8x8 digits as tensors (offline: the data ships with scikit-learn)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset


def load_digits_split(
    n_train: int = 1500, n_test: int | None = None, seed: int = 0, dtype=torch.float32
) -> tuple[TensorDataset, TensorDataset]:
    """Splits the 1797 digits into a training and a test set with a seeded permutation.

    Args:
        n_train: Number of training images.
        n_test: Number of test images (default: all remaining).
        seed: Seed of the permutation.
        dtype: Floating dtype of the images.

    Returns:
        `(train, test)` TensorDatasets of images `[n, 1, 8, 8]` scaled to [0, 1] and labels
        `[n]` (torch.long, 0-9).
    """
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=dtype).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    if n_train >= len(y):
        raise ValueError(f"n_train must be below {len(y)}; got {n_train}.")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train, rest = perm[:n_train], perm[n_train:]
    test = rest if n_test is None else rest[:n_test]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])
