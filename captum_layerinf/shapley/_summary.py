"""Per-image summary numbers of a bidirectional explanation (all `Tensor [n]`)."""

from __future__ import annotations

import torch
from torch import Tensor

NAN = float("nan")


def positive_mass(shap_map: Tensor) -> Tensor:
    """Positive SHAP mass per pixel, `[n, H, W]`, from values `[n, C, H, W]` or `[n, H, W]`.

    Channels are summed first (as shap's image plot does), then clipped at zero.
    """
    if shap_map.dim() == 4:
        shap_map = shap_map.sum(1)
    if shap_map.dim() != 3:
        raise ValueError(f"summaries need image maps [n, C, H, W]; got {tuple(shap_map.shape)}.")
    return shap_map.double().clamp(min=0)


def foreground_share(mass: Tensor, masks: Tensor | None) -> Tensor:
    """Share of the positive mass inside each mask; NaN without mask or positive mass."""
    total = mass.sum((1, 2))
    if masks is None:
        return torch.full_like(total, NAN)
    inside = (mass * masks.to(mass.dtype)).sum((1, 2))
    return torch.where(total > 0, inside / total.clamp(min=1e-300), NAN)


def positive_spread(mass: Tensor) -> Tensor:
    """Radius of gyration of the mass over the pixel grid, relative to a uniform map."""
    n, h, w = mass.shape
    rows = torch.arange(h, dtype=mass.dtype).view(1, h, 1)
    cols = torch.arange(w, dtype=mass.dtype).view(1, 1, w)
    total = mass.sum((1, 2))
    p = mass / total.clamp(min=1e-300).view(n, 1, 1)
    r0 = (p * rows).sum((1, 2)).view(n, 1, 1)
    c0 = (p * cols).sum((1, 2)).view(n, 1, 1)
    gyration = (p * ((rows - r0) ** 2 + (cols - c0) ** 2)).sum((1, 2)).sqrt()
    uniform = ((h**2 - 1) / 12 + (w**2 - 1) / 12) ** 0.5
    return torch.where(total > 0, gyration / max(uniform, 1e-300), NAN)


def positive_area(mass: Tensor, level: float = 0.8) -> Tensor:
    """Smallest fraction of pixels whose positive mass reaches `level` of the total."""
    flat = mass.flatten(1)
    total = flat.sum(1)
    ranked = flat.sort(dim=1, descending=True).values.cumsum(1)
    needed = (ranked < level * total.unsqueeze(1)).sum(1) + 1
    return torch.where(total > 0, needed.to(mass.dtype) / flat.shape[1], NAN)


def agreement(top_labels: Tensor, predictions: Tensor) -> tuple[Tensor, Tensor]:
    """Agreement of the top-1 proponents' classes across layers.

    Args:
        top_labels: `Tensor [n_layers, n]` class of each layer's top-1 proponent.
        predictions: `Tensor [n]` predicted classes.

    Returns:
        `(layer_agreement, prediction_agreement)`, each `Tensor [n]`: the share of layers
        whose class equals the most frequent one, and the share equal to the prediction.
    """
    mode = top_labels.mode(dim=0).values
    layer = (top_labels == mode).double().mean(0)
    prediction = (top_labels == predictions).double().mean(0)
    return layer, prediction
