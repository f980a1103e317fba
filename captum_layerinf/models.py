"""Small reference models used by the demo, the tests and the benchmarks."""

from __future__ import annotations

from pathlib import Path

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


class ShapesCNN(nn.Module):
    """A VGG-style CNN for 32x32 RGB images: 5 conv + 2 linear layers (10,808 parameters).

    `features` = [conv-relu] x2, max-pool, [conv-relu] x2, max-pool, conv-relu, global
    average pool; `classifier` = linear-relu-linear. Global pooling keeps every layer small
    enough for exact per-layer Hessians (the largest block has 4,640 parameters). The
    parameterised layers are `features.{0,2,5,7,10}` and `classifier.{0,2}`.

    Args:
        width: Channels of the first two convolutions (doubled twice further on).
        hidden: Width of the hidden linear layer.
        n_classes: Number of outputs.
    """

    def __init__(self, width: int = 8, hidden: int = 32, n_classes: int = 8) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(
            nn.Linear(4 * w, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits `[batch, n_classes]` of images `[batch, 3, H, W]`."""
        return self.classifier(torch.flatten(self.features(x), 1))


def load_torchvision_model(
    name: str, weights: str | Path | dict, num_classes: int | None = None
) -> nn.Module:
    """A torchvision model built without weights, then loaded from a LOCAL state dict.

    Nothing is downloaded: `weights` is a path to a state dict (loaded with
    `weights_only=True`) or the dict itself. The model is returned in eval mode.

    Args:
        name: A torchvision model name, e.g. "resnet18" or "vgg16".
        weights: Path of a `.pt` / `.pth` state dict, or a state dict.
        num_classes: Output classes if not torchvision's default (1000).

    Returns:
        The model in eval mode.
    """
    from torchvision import models

    if name not in models.list_models():
        raise ValueError(f"unknown torchvision model {name!r}; e.g. {models.list_models()[:8]}.")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    model = models.get_model(name, weights=None, **kwargs)
    if not isinstance(weights, dict):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"weights file {path} not found; save one with torch.save(model.state_dict(), "
                "path) (nothing is downloaded)."
            )
        weights = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(weights)
    return model.eval()
