"""Small reference models used by the demo, the tests and the benchmarks."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DigitsVGG(nn.Module):
    """A VGG-style CNN for 8x8 digits: 4 conv + 2 linear layers (6,562 parameters at width 8).

    Layout as torchvision's VGG: `features` = [conv-relu] x2, max-pool, [conv-relu] x2,
    max-pool; `classifier` = linear-relu-linear. The parameterised layers are
    `features.{0,2,5,7}` and `classifier.{0,2}`.

    Args:
        width: Channels of the first two convolutions (doubled for the next two).
        hidden: Width of the hidden linear layer.
        n_classes: Number of outputs.
    """

    def __init__(self, width: int = 8, hidden: int = 32, n_classes: int = 10) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(2 * w * 2 * 2, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits `[batch, n_classes]` of images `[batch, 1, 8, 8]`."""
        return self.classifier(torch.flatten(self.features(x), 1))
