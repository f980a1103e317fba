"""`BidirectionalResult`: SHAP maps of test images with their influential training images."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

COMPOUND = "compound"
_FORMAT = "captum_layerinf.BidirectionalResult/1"


@dataclass
class BidirectionalResult:
    """Both directions of an explanation, for `n` test images, as plain CPU tensors.

    Shapes use `S` for the shape of one input (`C, H, W` for images), `R = n_layers + 1`
    for the influence rows (every layer in forward order, then the compound score Σ_l s_l,
    paper Eq. 7, named `"compound"`), and `m` for the distinct training images that appear
    among the top-k of any row. Training images are named by their position in the
    training set of the `LayerInfluence` (its DataLoader order).

    Attributes:
        inputs: `Tensor [n, *S]` the test inputs.
        labels: `Tensor [n]` (long) their true classes.
        logits: `Tensor [n, n_classes]` the model's outputs.
        predictions: `Tensor [n]` (long) the predicted classes, `logits.argmax(1)`.
        shap_values: `Tensor [n, 2, *S]` (float32) SHAP values of each input feature;
            `[:, 0]` for the logit of the predicted class, `[:, 1]` for the true class.
            They sum to the logit minus its mean over the background (exactly for
            "deep", in expectation for "gradient"), or minus the logit of the fill image
            for "partition".
        layer_names: The `R` row names: the layers, then `"compound"`.
        proponents: `Tensor [R, n, k]` (long) training positions with the largest
            influence (positive = removing it would raise the test loss), best first.
        proponent_scores: `Tensor [R, n, k]` their influence scores.
        proponent_labels: `Tensor [R, n, k]` (long) their classes.
        opponents: `Tensor [R, n, k]` (long) training positions with the smallest
            (most negative) influence, most negative first.
        opponent_scores: `Tensor [R, n, k]`.
        opponent_labels: `Tensor [R, n, k]` (long).
        train_positions: `Tensor [m]` (long, sorted) every training position above.
        train_inputs: `Tensor [m, *S]` those training inputs.
        train_labels: `Tensor [m]` (long) their classes.
        train_shap_values: `Tensor [m, *S]` (float32) SHAP values of each training
            input for its own class, or None (`explain(..., explain_train=False)`).
        masks: `Tensor [n, H, W]` (bool) foreground masks, or None.
        foreground_share: `Tensor [n]` share of the positive SHAP mass (predicted class,
            summed over channels) inside the foreground mask; NaN without a mask.
        positive_spread: `Tensor [n]` radius of gyration of the positive SHAP mass over
            the pixel grid, divided by that of a uniform map: 0 = one pixel, 1 = as spread
            as a uniform map, up to ~1.4 for mass in the corners. NaN if there is none.
        positive_area: `Tensor [n]` smallest fraction of pixels holding 80 % of the
            positive SHAP mass. NaN if there is none.
        layer_agreement: `Tensor [n]` share of the layers (compound excluded) whose
            top-1 proponent has the most frequent top-1 class across layers: 1 = all
            layers point to the same class.
        prediction_agreement: `Tensor [n]` share of the layers whose top-1 proponent has
            the predicted class.
        class_names: Names of the classes, or None.
        settings: How the result was made (SHAP backend, samples, seed, k, ...).

    Examples:
        >>> result = BidirectionalExplainer(model, li).explain((x, y), k=3)
        >>> result.shap_values.shape          # [n, 2, C, H, W]
        >>> result.row("compound")            # index of the compound row
        >>> result.save("runs/bidirectional.pt"); BidirectionalResult.load(...)
    """

    inputs: Tensor
    labels: Tensor
    logits: Tensor
    predictions: Tensor
    shap_values: Tensor
    layer_names: list[str]
    proponents: Tensor
    proponent_scores: Tensor
    proponent_labels: Tensor
    opponents: Tensor
    opponent_scores: Tensor
    opponent_labels: Tensor
    train_positions: Tensor
    train_inputs: Tensor
    train_labels: Tensor
    train_shap_values: Tensor | None
    masks: Tensor | None
    foreground_share: Tensor
    positive_spread: Tensor
    positive_area: Tensor
    layer_agreement: Tensor
    prediction_agreement: Tensor
    class_names: list[str] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def k(self) -> int:
        """Number of proponents and opponents kept per row and test image."""
        return self.proponents.shape[-1]

    def row(self, name: str) -> int:
        """Row index of a layer name or `"compound"` in the `[R, n, k]` tensors."""
        if name not in self.layer_names:
            raise KeyError(f"unknown row {name!r}; rows are {self.layer_names}.")
        return self.layer_names.index(name)

    def train_index(self, positions: Tensor) -> Tensor:
        """Rows of `train_inputs` / `train_labels` holding the given training positions."""
        found = torch.searchsorted(self.train_positions, positions.contiguous())
        found = found.clamp(max=len(self.train_positions) - 1)
        if not torch.equal(self.train_positions[found], positions):
            raise KeyError("some training positions are not stored in this result.")
        return found

    def class_name(self, c: int) -> str:
        """The name of class `c`, or its number."""
        return self.class_names[c] if self.class_names else str(c)

    def save(self, path: str | Path) -> None:
        """Writes the result with `torch.save` (a dict of tensors, lists and numbers)."""
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        state["format"] = _FORMAT
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)

    @classmethod
    def load(cls, path: str | Path) -> BidirectionalResult:
        """Reads a result written by `save` (`torch.load(..., weights_only=True)`)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.pop("format", None) != _FORMAT:
            raise ValueError(f"{path} was not written by BidirectionalResult.save.")
        return cls(**state)
