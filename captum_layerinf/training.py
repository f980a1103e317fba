"""A seeded, deterministic training loop for the small reference models."""

from __future__ import annotations

from collections.abc import Callable, Sized

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


def train_classifier(
    model: nn.Module,
    train: Dataset,
    epochs: int = 60,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
    show_progress: bool = False,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
) -> nn.Module:
    """Trains `model` with Adam on the mean cross-entropy; returns it in eval mode.

    Args:
        model: Classifier returning logits.
        train: Dataset of `(input, label)` pairs.
        epochs: Passes over the data.
        lr: Adam learning rate.
        weight_decay: L2 coefficient added as `weight_decay / 2 * ||θ||²` to the mean loss.
        batch_size: Mini-batch size.
        seed: Seed of the shuffling (the caller seeds the initialisation).
        show_progress: Show a progress bar over epochs.
        on_epoch_end: Called as `f(epoch, model)` after each epoch, e.g. to save a
            checkpoint for TracIn.
    """
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for epoch in tqdm(range(epochs), desc="training", disable=not show_progress, leave=False):
        for x, y in loader:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            if weight_decay:
                loss = loss + 0.5 * weight_decay * sum((p**2).sum() for p in model.parameters())
            loss.backward()
            opt.step()
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset) -> float:
    """Top-1 accuracy of `model` on a Dataset of `(input, label)` pairs."""
    if not isinstance(data, Sized):
        raise TypeError("accuracy needs a map-style Dataset with a length.")
    x, y = next(iter(DataLoader(data, batch_size=len(data))))
    return (model(x).argmax(1) == y).float().mean().item()
